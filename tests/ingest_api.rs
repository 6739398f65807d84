//! The ingest path against real Postgres and a local GitHub stand-in replaying recorded
//! exchanges (their real ETag, Link, X-RateLimit and X-Poll-Interval headers) and crafted
//! cases. Time is a manual clock: no test waits for a poll interval.

use chrono::{DateTime, TimeZone, Utc};
use ghevents_core::app::App;
use ghevents_core::budget::Purpose;
use ghevents_core::clock::{Clock, ManualClock};
use ghevents_core::github::{GithubError, RetryPolicy};
use ghevents_core::ingest::{IngestError, Ingestor, Outcome};
use ghevents_tests::data_dir;
use ghevents_tests::db::TestDb;
use ghevents_tests::fixtures::{events_page, ids_of, page_body};
use ghevents_tests::replay::{ReplayServer, Reply};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Harness {
    t0: DateTime<Utc>,
    db: TestDb,
    gh: ReplayServer,
    clock: ManualClock,
    app: App,
    _stop: tokio::sync::watch::Sender<bool>,
    ingestor: Ingestor,
}

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap()
}

async fn harness_with(db: TestDb, token: Option<&str>) -> Harness {
    let t0 = t0();
    let clock = ManualClock::at(t0);
    let gh = ReplayServer::start(Arc::new(clock.clone())).await;
    let app = app_for(&db, &gh, &clock, token);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let ingestor = app.ingestor(None, None, stop);
    Harness {
        t0,
        db,
        gh,
        clock,
        app,
        _stop: stop_tx,
        ingestor,
    }
}

async fn harness() -> Harness {
    harness_with(TestDb::new().await, None).await
}

fn app_for(db: &TestDb, gh: &ReplayServer, clock: &ManualClock, token: Option<&str>) -> App {
    let env: Vec<(&str, &str)> = token.map(|t| ("GITHUB_TOKEN", t)).into_iter().collect();
    let retry = RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    ghevents_tests::app(
        &gh.url,
        &db.pool,
        Arc::new(clock.clone()),
        &env,
        Some(retry),
    )
}

fn recording(name: &str) -> std::path::PathBuf {
    data_dir().join("api-recordings").join(name)
}

/// The real `GET /events` page of 2020 (30 events, ETag, Link to page 2, rate 60/58,
/// X-Poll-Interval 60) without its Link, for single-page cycles.
fn recorded_page_alone() -> Reply {
    let mut r = Reply::pygithub(&recording("pygithub/Github.testGetEvents.json"), 0);
    r.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("link"));
    r
}

const RECORDED_ETAG: &str = "W/\"3a593e38a3ba7d45b1eaaf7b919e070b\"";

impl Harness {
    async fn events(&self) -> i64 {
        self.db.count("SELECT count(*) FROM github_events").await
    }
    async fn pushes(&self) -> i64 {
        self.db.count("SELECT count(*) FROM push_events").await
    }
    fn later(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
    /// Moves the clock to the next poll the last cycle planned (its poll interval, or later
    /// when the budget's pacing says so).
    async fn until_next_poll(&self) {
        let due = self.db.next_poll_at().await;
        self.clock.set(due.max(self.clock.now()));
    }
}

#[tokio::test]
async fn recorded_pages_are_stored_with_rate_headers_etag_and_poll_interval() {
    let h = harness().await;
    let page1 = Reply::pygithub(&recording("pygithub/Github.testGetEvents.json"), 0);
    let page1_ids = ids_of(&page1.body);
    h.gh.push("/events", page1);
    // Page 2: the real 2026 events (trimmed PushEvent payloads), the last page.
    let page2_body = std::fs::read(recording("events-2026-07-19.json")).unwrap();
    let page2_ids = ids_of(&page2_body);
    h.gh.push(
        "/events",
        Reply::new(200)
            .header("x-ratelimit-limit", "60")
            .header("x-ratelimit-remaining", "57")
            .header("x-ratelimit-reset", "1587820042")
            .header("x-poll-interval", "60")
            .body(page2_body),
    );

    let s = h.ingestor.run_cycle().await.unwrap();

    assert_eq!(s.outcome, Outcome::Completed);
    assert_eq!((s.requests, s.pages), (2, 2));
    assert_eq!(s.new_events as usize, page1_ids.len() + page2_ids.len());
    assert_eq!(h.events().await as usize, page1_ids.len() + page2_ids.len());
    let pushes_in_source = h
        .db
        .count("SELECT count(*) FROM github_events WHERE event_type = 'PushEvent' AND parse_status = 'parsed'")
        .await;
    assert_eq!(h.pushes().await, pushes_in_source);
    assert!(pushes_in_source > 0);
    // Trimmed 2026 pushes have no counts: NULL, not 0.
    let trimmed = h.db.count("SELECT count(*) FROM push_events WHERE created_at >= '2026-01-01' AND size IS NULL AND commit_count IS NULL AND distinct_size IS NULL").await;
    assert_eq!(
        trimmed,
        h.db.count("SELECT count(*) FROM push_events WHERE created_at >= '2026-01-01'")
            .await
    );
    assert!(trimmed > 0);

    // Rate headers persisted.
    let c = h.db.pool.get().await.unwrap();
    let r = c.query_one("SELECT limit_total, remaining, reset_at FROM rate_limit_state WHERE identity = 'anonymous'", &[]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), 60);
    assert_eq!(r.get::<_, i32>(1), 57);
    assert_eq!(r.get::<_, DateTime<Utc>>(2).timestamp(), 1587820042);
    // ETag and poll interval kept; the next poll is one interval away.
    let p = c
        .query_one(
            "SELECT etag, poll_interval_secs, next_poll_at FROM poll_state WHERE feed = 'events'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(p.get::<_, String>(0), RECORDED_ETAG);
    assert_eq!(p.get::<_, i32>(1), 60);
    assert_eq!(
        p.get::<_, DateTime<Utc>>(2),
        h.clock.now() + chrono::Duration::seconds(60)
    );

    // What went on the wire.
    let got = h.gh.received_on("/events");
    assert_eq!(got[0].query.as_deref(), Some("per_page=100"));
    assert_eq!(
        got[1].query.as_deref(),
        Some("page=2"),
        "page 2 follows the Link header"
    );
    let hdr = |i: usize, k: &str| {
        got[i]
            .headers
            .get(k)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert!(hdr(0, "user-agent").unwrap().starts_with("ghevents/"));
    assert_eq!(
        hdr(0, "accept").as_deref(),
        Some("application/vnd.github+json")
    );
    assert_eq!(
        hdr(0, "x-github-api-version").as_deref(),
        Some("2022-11-28")
    );
    assert_eq!(
        hdr(0, "authorization"),
        None,
        "anonymous without GITHUB_TOKEN"
    );
    assert_eq!(hdr(0, "if-none-match"), None, "nothing to revalidate yet");
}

#[tokio::test]
async fn a_304_stores_nothing_and_fetches_no_second_page() {
    let h = harness().await;
    h.gh.push("/events", recorded_page_alone());
    h.ingestor.run_cycle().await.unwrap();
    let before = h.events().await;
    assert_eq!(before, 30);

    h.later(61);
    // GitHub's real 304 (with its rate headers), then a page that must not be asked for.
    h.gh.push(
        "/events",
        Reply::pygithub(
            &recording("pygithub/ConditionalRequestUpdate.testDidNotUpdate.json"),
            0,
        ),
    );
    h.gh.push(
        "/events",
        events_page(&[1, 2, 3], "W/\"p2\"", 50, 1587820042, None),
    );
    let s = h.ingestor.run_cycle().await.unwrap();

    assert_eq!(s.outcome, Outcome::NotModified);
    assert_eq!((s.requests, s.not_modified, s.new_events), (1, 1, 0));
    assert_eq!(h.events().await, before);
    assert_eq!(h.gh.pending("/events"), 1, "no page 2 after a 304");
    let got = h.gh.received_on("/events");
    assert_eq!(got[1].headers.get("if-none-match").unwrap(), RECORDED_ETAG);
}

#[tokio::test]
async fn pagination_stops_at_the_first_page_holding_a_stored_event() {
    let h = harness().await;
    h.gh.push(
        "/events",
        events_page(
            &(100..110).collect::<Vec<_>>(),
            "W/\"a\"",
            59,
            4102444800,
            None,
        ),
    );
    h.ingestor.run_cycle().await.unwrap();

    h.later(61);
    let page2: Vec<i64> = (150..155).chain(105..110).collect();
    h.gh.push(
        "/events",
        events_page(
            &(200..210).rev().collect::<Vec<_>>(),
            "W/\"b\"",
            58,
            4102444800,
            Some(2),
        ),
    );
    h.gh.push(
        "/events",
        events_page(&page2, "W/\"c\"", 57, 4102444800, Some(3)),
    );
    h.gh.push(
        "/events",
        events_page(&[1, 2], "W/\"d\"", 56, 4102444800, None),
    );
    let s = h.ingestor.run_cycle().await.unwrap();

    assert_eq!((s.requests, s.new_events, s.duplicates), (2, 15, 5));
    assert_eq!(
        h.gh.pending("/events"),
        1,
        "page 3 is not fetched after an overlap"
    );
    assert_eq!(h.events().await, 25);
}

#[tokio::test]
async fn events_this_cycle_stored_on_page_one_do_not_stop_the_walk() {
    let h = harness().await;
    // The feed moves on between two requests: page 2 starts with the last 4 events of page 1.
    let page1: Vec<i64> = (201..=300).rev().collect();
    let page2: Vec<i64> = (197..=204).rev().chain((101..=192).rev()).collect();
    let page3: Vec<i64> = (1..=100).rev().collect();
    h.gh.push(
        "/events",
        events_page(&page1, "W/\"a\"", 59, 4102444800, Some(2)),
    );
    h.gh.push(
        "/events",
        events_page(&page2, "W/\"b\"", 58, 4102444800, Some(3)),
    );
    h.gh.push(
        "/events",
        events_page(&page3, "W/\"c\"", 57, 4102444800, None),
    );

    let s = h.ingestor.run_cycle().await.unwrap();

    assert_eq!((s.requests, s.pages), (3, 3), "the walk goes on to page 3");
    assert_eq!((s.new_events, s.duplicates), (296, 4));
    assert_eq!(h.events().await, 296);
}

#[tokio::test]
async fn pagination_stops_at_page_three_even_when_the_link_says_more() {
    let h = harness().await;
    for (i, chunk) in (1..=300i64).collect::<Vec<_>>().chunks(100).enumerate() {
        h.gh.push(
            "/events",
            events_page(
                chunk,
                &format!("W/\"{i}\""),
                59 - i as i32,
                4102444800,
                Some(i as u32 + 2),
            ),
        );
    }
    h.gh.push(
        "/events",
        events_page(&[999], "W/\"x\"", 50, 4102444800, None),
    );

    let s = h.ingestor.run_cycle().await.unwrap();

    assert_eq!((s.requests, s.pages, s.new_events), (3, 3, 300));
    assert_eq!(h.gh.pending("/events"), 1);
    assert_eq!(h.events().await, 300);
    assert_eq!(h.pushes().await, 300);
}

/// A page of the feed with `X-Poll-Interval: 1` and a reset a minute after `t0`.
fn busy_page(h: &Harness, ids: &[i64], remaining: i32, next_page: Option<u32>) -> Reply {
    let reset = h.t0.timestamp() + 60;
    let mut r = events_page(
        ids,
        &format!("W/\"{}\"", ids[0]),
        remaining,
        reset,
        next_page,
    );
    r.headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("x-poll-interval"));
    r.header("x-poll-interval", "1")
}

#[tokio::test]
async fn when_the_budget_binds_a_cycle_reads_page_one_alone() {
    let h = harness().await;
    // 50 events, then 150 more a second later: more than the budget's request a second reads.
    h.gh.push(
        "/events",
        busy_page(&h, &(1..=50).rev().collect::<Vec<_>>(), 59, None),
    );
    h.ingestor.run_cycle().await.unwrap();
    h.until_next_poll().await;
    let page2: Vec<i64> = (101..=150).rev().chain((1..=50).rev()).collect();
    h.gh.push(
        "/events",
        busy_page(&h, &(151..=250).rev().collect::<Vec<_>>(), 58, Some(2)),
    );
    h.gh.push("/events", busy_page(&h, &page2, 57, Some(3)));
    let s = h.ingestor.run_cycle().await.unwrap();
    assert_eq!(
        (s.requests, s.new_events),
        (2, 150),
        "the walk reaches the stored events"
    );

    // The feed brings more than a page per request the budget allows: page 1 alone, although
    // it is all new and links to page 2 (which would start with events page 1 returned).
    h.until_next_poll().await;
    h.gh.push(
        "/events",
        busy_page(&h, &(400..=499).rev().collect::<Vec<_>>(), 56, Some(2)),
    );
    h.gh.push(
        "/events",
        busy_page(&h, &(300..=399).rev().collect::<Vec<_>>(), 55, Some(3)),
    );
    h.gh.push(
        "/events",
        busy_page(&h, &(200..=299).rev().collect::<Vec<_>>(), 54, None),
    );
    let s = h.ingestor.run_cycle().await.unwrap();

    assert_eq!((s.requests, s.pages, s.new_events), (1, 1, 100));
    assert_eq!(
        h.gh.pending("/events"),
        2,
        "pages 2 and 3 are not requested"
    );
    let at: Vec<DateTime<Utc>> = h.gh.received_on("/events").iter().map(|r| r.at).collect();
    assert!(
        at[3] - at[2] >= chrono::Duration::seconds(1),
        "never sooner than X-Poll-Interval: {at:?}"
    );
}

#[tokio::test]
async fn a_primary_rate_limit_sends_nothing_until_reset() {
    let h = harness().await;
    // GitHub's real 403 with X-RateLimit-Remaining: 0 (no reset header in 2013: an hour).
    h.gh.push(
        "/events",
        Reply::pygithub(
            &recording("pygithub/SpecificExceptions.testRateLimitExceeded.json"),
            1,
        ),
    );

    let s = h.ingestor.run_cycle().await.unwrap();
    assert_eq!(s.outcome, Outcome::RateLimited);
    let resume = s.resume_at.unwrap();
    assert_eq!(resume, h.clock.now() + chrono::Duration::hours(1));

    // Half an hour later: neither the loop nor a direct request sends anything.
    h.later(1800);
    let s = h.ingestor.run_cycle().await.unwrap();
    assert_eq!((s.outcome, s.requests), (Outcome::NotDue, 0));
    let direct = h.app.github.get("/events", None, Purpose::Ingest).await;
    assert!(
        matches!(direct, Err(GithubError::BudgetDenied(_))),
        "{direct:?}"
    );
    assert_eq!(h.gh.received().len(), 1);

    // After the reset the feed is polled again.
    h.clock.set(resume + chrono::Duration::seconds(1));
    h.gh.push(
        "/events",
        events_page(
            &[1, 2, 3],
            "W/\"a\"",
            59,
            (resume + chrono::Duration::hours(1)).timestamp(),
            None,
        ),
    );
    let s = h.ingestor.run_cycle().await.unwrap();
    assert_eq!(
        (s.outcome, s.requests, s.new_events),
        (Outcome::Completed, 1, 3)
    );
}

#[tokio::test]
async fn a_429_with_retry_after_is_respected() {
    let h = harness().await;
    h.gh.push(
        "/events",
        Reply::new(429)
            .header("retry-after", "120")
            .header("x-ratelimit-limit", "60")
            .header("x-ratelimit-remaining", "41")
            .header("x-ratelimit-reset", "4102444800")
            .body(r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}"#),
    );
    let s = h.ingestor.run_cycle().await.unwrap();
    assert_eq!(s.outcome, Outcome::RateLimited);
    assert_eq!(
        s.resume_at,
        Some(h.clock.now() + chrono::Duration::seconds(120))
    );

    h.later(61);
    assert_eq!(h.ingestor.run_cycle().await.unwrap().requests, 0);
    let direct = h.app.github.get("/events", None, Purpose::Ingest).await;
    assert!(
        matches!(direct, Err(GithubError::BudgetDenied(_))),
        "{direct:?}"
    );
    assert_eq!(h.gh.received().len(), 1, "nothing sent before Retry-After");

    h.later(60);
    h.gh.push(
        "/events",
        events_page(&[7, 8], "W/\"a\"", 40, 4102444800, None),
    );
    let s = h.ingestor.run_cycle().await.unwrap();
    assert_eq!(
        (s.outcome, s.requests, s.new_events),
        (Outcome::Completed, 1, 2)
    );
}

#[tokio::test]
async fn a_502_then_200_stores_each_event_once() {
    let h = harness().await;
    h.gh.push(
        "/events",
        Reply::new(502).body(r#"{"message":"Server Error"}"#),
    );
    h.gh.push(
        "/events",
        events_page(
            &(1..=10).collect::<Vec<_>>(),
            "W/\"a\"",
            58,
            4102444800,
            None,
        ),
    );

    let s = h.ingestor.run_cycle().await.unwrap();
    assert_eq!(
        (s.outcome, s.requests, s.new_events),
        (Outcome::Completed, 2, 10)
    );

    // The same page again (an ETag GitHub did not honour): stored once all the same.
    h.until_next_poll().await;
    h.gh.push(
        "/events",
        events_page(
            &(1..=10).collect::<Vec<_>>(),
            "W/\"b\"",
            57,
            4102444800,
            None,
        ),
    );
    let s = h.ingestor.run_cycle().await.unwrap();
    assert_eq!((s.new_events, s.duplicates), (0, 10));
    assert_eq!(h.events().await, 10);
    assert_eq!(h.pushes().await, 10);
}

#[tokio::test]
async fn persistent_5xx_ends_the_cycle_with_an_error_after_bounded_retries() {
    let h = harness().await;
    // GitHub's real 500 (a recorded exchange), more times than the retry policy allows.
    for _ in 0..5 {
        h.gh.push(
            "/events",
            Reply::pygithub(
                &recording("pygithub/Retry.testReturnsRepoAfter1Retry.json"),
                0,
            ),
        );
    }
    let err = h.ingestor.run_cycle().await.unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::Github(GithubError::Server {
                status: 500,
                attempts: 4,
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(h.gh.pending("/events"), 1, "1 try + 3 retries");
    assert_eq!(h.events().await, 0);
}

#[tokio::test]
async fn a_truncated_page_is_rejected_whole_and_the_next_poll_stores_it() {
    let h = harness().await;
    let ids: Vec<i64> = (1..=20).collect();
    let full = events_page(&ids, "W/\"a\"", 58, 4102444800, None);
    let mut cut = full.clone();
    cut.body.truncate(full.body.len() / 2);
    h.gh.push("/events", cut);

    let err = h.ingestor.run_cycle().await.unwrap_err();
    assert!(
        matches!(err, IngestError::MalformedPage { page: 1, .. }),
        "{err}"
    );
    assert_eq!(
        h.events().await,
        0,
        "nothing from a malformed page is stored"
    );

    h.later(61);
    h.gh.push("/events", full);
    let s = h.ingestor.run_cycle().await.unwrap();
    assert_eq!((s.outcome, s.new_events), (Outcome::Completed, 20));
    let got = h.gh.received_on("/events");
    assert_eq!(
        got[1].headers.get("if-none-match"),
        None,
        "the ETag of a rejected page is not kept"
    );
}

#[tokio::test]
async fn a_failure_between_pages_is_completed_by_the_rerun_without_duplicates() {
    let h = harness().await;
    let ids: Vec<i64> = (1..=300).rev().collect();
    h.gh.push(
        "/events",
        events_page(&ids[..100], "W/\"p1\"", 59, 4102444800, Some(2)),
    );
    for _ in 0..4 {
        h.gh.push(
            "/events",
            Reply::new(500).body(r#"{"message":"Server Error"}"#),
        );
    }
    assert!(h.ingestor.run_cycle().await.is_err());
    assert_eq!(
        h.events().await,
        100,
        "the page stored before the failure is kept"
    );

    // Rerun on an unchanged feed: page 1 is all duplicates, yet the walk goes on, because
    // the previous cycle did not complete.
    h.until_next_poll().await;
    h.gh.push(
        "/events",
        events_page(&ids[..100], "W/\"p1\"", 50, 4102444800, Some(2)),
    );
    h.gh.push(
        "/events",
        events_page(&ids[100..200], "W/\"p2\"", 49, 4102444800, Some(3)),
    );
    h.gh.push(
        "/events",
        events_page(&ids[200..], "W/\"p3\"", 48, 4102444800, None),
    );
    let s = h.ingestor.run_cycle().await.unwrap();
    assert_eq!((s.requests, s.new_events, s.duplicates), (3, 200, 100));
    assert_eq!(h.events().await, 300);
    assert_eq!(h.pushes().await, 300);
    let rerun_first = &h.gh.received_on("/events")[5];
    assert_eq!(
        rerun_first.headers.get("if-none-match"),
        None,
        "no ETag after an incomplete cycle"
    );

    // The cycle completed: the next one is conditional again.
    h.until_next_poll().await;
    h.gh.push("/events", Reply::new(304).header("x-poll-interval", "60"));
    let s = h.ingestor.run_cycle().await.unwrap();
    assert_eq!(s.outcome, Outcome::NotModified);
    assert_eq!(
        h.gh.received_on("/events")
            .last()
            .unwrap()
            .headers
            .get("if-none-match")
            .unwrap(),
        "W/\"p1\""
    );
}

#[tokio::test]
async fn two_cycles_at_once_on_one_feed_store_each_event_once_without_error() {
    let h = harness().await;
    let second = app_for(&h.db, &h.gh, &h.clock, None);
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let other = second.ingestor(None, None, stop);
    h.gh.push(
        "/events",
        events_page(
            &(1..=50).collect::<Vec<_>>(),
            "W/\"a\"",
            59,
            4102444800,
            None,
        )
        .delay(Duration::from_millis(300)),
    );
    h.gh.push(
        "/events",
        events_page(
            &(1..=50).collect::<Vec<_>>(),
            "W/\"a\"",
            58,
            4102444800,
            None,
        )
        .delay(Duration::from_millis(300)),
    );

    let (a, b) = tokio::join!(h.ingestor.run_cycle(), other.run_cycle());
    let (a, b) = (a.unwrap(), b.unwrap());

    let mut outcomes = [a.outcome, b.outcome];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert!(outcomes.contains(&Outcome::Completed), "{outcomes:?}");
    assert!(
        outcomes.contains(&Outcome::Busy) || outcomes.contains(&Outcome::NotDue),
        "{outcomes:?}"
    );
    assert_eq!(h.gh.received().len(), 1, "one request for one feed");
    assert_eq!(h.events().await, 50);
}

#[tokio::test]
async fn the_run_loop_never_polls_sooner_than_x_poll_interval() {
    let h = harness().await;
    // A 200 announcing 60 s, then 304s announcing 120, 30 and 90 s.
    h.gh.push(
        "/events",
        events_page(&[1, 2, 3], "W/\"a\"", 59, 4102444800, None),
    );
    for secs in [120, 30, 90, 60] {
        h.gh.push(
            "/events",
            Reply::new(304)
                .header("x-poll-interval", secs.to_string())
                .header("x-ratelimit-limit", "60")
                .header("x-ratelimit-remaining", "59")
                .header("x-ratelimit-reset", "4102444800"),
        );
    }
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let ingestor = h.app.ingestor(None, None, stop);
    let cycles = Arc::new(Mutex::new(0));
    let seen = cycles.clone();
    tokio::time::timeout(
        Duration::from_secs(20),
        ingestor.run_loop(move |r| {
            assert!(r.is_ok(), "{r:?}");
            let mut n = seen.lock().unwrap();
            *n += 1;
            if *n == 5 {
                stop_tx.send(true).unwrap();
            }
        }),
    )
    .await
    .expect("the loop stops when asked")
    .unwrap();

    let at: Vec<DateTime<Utc>> = h.gh.received_on("/events").iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 5);
    let gaps: Vec<i64> = at.windows(2).map(|w| (w[1] - w[0]).num_seconds()).collect();
    assert_eq!(
        gaps,
        vec![60, 120, 30, 90],
        "each wait is the interval the previous answer announced"
    );
}

/// A writer that keeps everything logged, to search it afterwards.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_token_never_reaches_the_logs_or_the_errors() {
    const TOKEN: &str = "ghp_Sup3rSecretTokenValue0123456789abcd";
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = harness_with(TestDb::new().await, Some(TOKEN)).await;
    // Other tests of this binary run at the same time on other threads: one that met a log
    // call site first, while this subscriber was being registered, may have cached it as
    // disabled. Recompute, so this test sees every event it causes.
    tracing::callsite::rebuild_interest_cache();
    for _ in 0..4 {
        h.gh.push(
            "/events",
            Reply::new(500).body(r#"{"message":"Server Error"}"#),
        );
    }
    let e1 = h.ingestor.run_cycle().await.unwrap_err().to_string();
    h.later(61);
    h.gh.push(
        "/events",
        Reply::new(401).body(r#"{"message":"Bad credentials"}"#),
    );
    let e2 = h.ingestor.run_cycle().await.unwrap_err().to_string();
    h.later(61);
    h.gh.push(
        "/events",
        events_page(&[1], "W/\"a\"", 4999, 4102444800, None).header("x-ratelimit-limit", "5000"),
    );
    h.ingestor.run_cycle().await.unwrap();

    let got = h.gh.received_on("/events");
    assert_eq!(
        got[0].headers.get("authorization").unwrap(),
        &format!("Bearer {TOKEN}"),
        "the token is used"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("GitHub request"), "debug logs were captured");
    for haystack in [&text, &e1, &e2, &format!("{:?}", h.app.config)] {
        assert!(
            !haystack.contains("Sup3rSecret"),
            "token leaked into: {haystack}"
        );
    }
    let identity: String =
        h.db.pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT identity FROM rate_limit_state", &[])
            .await
            .unwrap()
            .get(0);
    assert!(
        identity.starts_with("token:") && !identity.contains("Sup3r"),
        "{identity}"
    );
}

#[tokio::test]
async fn the_body_of_a_page_is_kept_byte_for_byte_in_jsonb_form() {
    let h = harness().await;
    let body = page_body(&[42]);
    h.gh.push(
        "/events",
        events_page(&[42], "W/\"a\"", 59, 4102444800, None),
    );
    h.ingestor.run_cycle().await.unwrap();
    let stored: serde_json::Value =
        h.db.pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT raw FROM github_events WHERE event_id = 42", &[])
            .await
            .unwrap()
            .get(0);
    let sent: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(stored, sent[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_loop_outlives_a_database_it_cannot_reach_and_resumes_when_it_is_back() {
    let h = harness().await;
    for ids in [[1, 2, 3], [4, 5, 6]] {
        h.gh.push(
            "/events",
            events_page(&ids, "W/\"a\"", 59, 4102444800, None),
        );
    }
    let admin = {
        let (c, conn) =
            tokio_postgres::connect(&ghevents_tests::db::admin_url(), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        Arc::new(c)
    };
    let name = h.db.name.clone();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let ingestor = h.app.ingestor(None, None, stop);
    let results: Arc<Mutex<Vec<bool>>> = Arc::default();
    let seen = results.clone();
    let loop_result = tokio::time::timeout(
        Duration::from_secs(60),
        ingestor.run_loop(move |r| {
            let mut seen = seen.lock().unwrap();
            seen.push(r.is_ok());
            let (admin, name) = (admin.clone(), name.clone());
            match seen.len() {
                // After a first good cycle the database goes away (a restart, a failover) ...
                1 => {
                    tokio::task::block_in_place(|| {
                        tokio::runtime::Handle::current().block_on(async {
                            admin
                                .batch_execute(&format!(
                                    "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
                                     SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                                ))
                                .await
                                .unwrap();
                        })
                    });
                }
                // ... and comes back after three failed cycles.
                4 => {
                    tokio::task::block_in_place(|| {
                        tokio::runtime::Handle::current().block_on(async {
                            admin
                                .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
                                .await
                                .unwrap();
                        })
                    });
                }
                n if n >= 6 => stop_tx.send(true).unwrap(),
                _ => {}
            }
        }),
    )
    .await
    .expect("the loop stops when asked");

    assert!(loop_result.is_ok(), "{loop_result:?}");
    let results = results.lock().unwrap().clone();
    assert_eq!(
        &results[..4],
        &[true, false, false, false],
        "cycles fail while the database is away, and the loop goes on"
    );
    assert!(
        results[4..].iter().any(|ok| *ok),
        "a cycle succeeds once it is back: {results:?}"
    );
    assert_eq!(
        h.events().await,
        6,
        "the second page is stored after the outage"
    );
}
