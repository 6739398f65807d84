//! GH Archive hours against a stand-in that serves the real hour files with faults: after
//! every fault and the attempt that follows it, every valid line of the hour is stored
//! exactly once, and the hour's row says what happened.

use chrono::{DateTime, Utc};
use ghevents_core::archive::{
    ArchiveOptions, Archiver, Hour, HourObjects, HourStatus, HttpOptions,
};
use ghevents_core::clock::ManualClock;
use ghevents_core::deadline::Deadline;
use ghevents_tests::archive_server::{ArchiveServer, Fault};
use ghevents_tests::data_dir;
use ghevents_tests::db::TestDb;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const H2015: &str = "2015-01-01T00";

fn file(name: &str) -> PathBuf {
    data_dir().join("gharchive").join(name)
}

/// The event ids of a gzip NDJSON file, read independently of the code under test.
fn ids_of(path: &std::path::Path) -> Vec<i64> {
    let f = std::fs::File::open(path).unwrap();
    let r = BufReader::new(flate2::read::MultiGzDecoder::new(f));
    r.split(b'\n')
        .map(|l| l.unwrap())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_slice(&l).ok()?;
            v["id"].as_str()?.parse().ok()
        })
        .collect()
}

fn options(server: &ArchiveServer) -> ArchiveOptions {
    ArchiveOptions {
        base_url: server.url.clone(),
        batch_size: 500,
        http: HttpOptions {
            retries: 1,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            read_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
        },
        ..ArchiveOptions::default()
    }
}

/// An archiver whose clock stands `after` past the hour's end.
fn archiver(
    db: &TestDb,
    options: ArchiveOptions,
    hour: Hour,
    after: chrono::Duration,
    objects: Option<Arc<dyn HourObjects>>,
) -> (Archiver, ManualClock) {
    let clock = ManualClock::at(hour.end() + after);
    let a = Archiver::new(db.pool.clone(), Arc::new(clock.clone()), objects, options).unwrap();
    (a, clock)
}

async fn stored_ids(db: &TestDb) -> Vec<i64> {
    db.pool
        .get()
        .await
        .unwrap()
        .query("SELECT event_id FROM github_events ORDER BY event_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every id of the file is stored, once, and nothing else.
async fn assert_exactly_once(db: &TestDb, want: &[i64]) {
    let got = stored_ids(db).await;
    let want: BTreeSet<i64> = want.iter().copied().collect();
    let distinct: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(got.len(), distinct.len(), "a duplicate row");
    assert_eq!(distinct.len(), want.len(), "rows stored vs ids in the file");
    assert!(distinct == want, "the stored ids are not the file's");
    let pushes = db.count("SELECT count(*) FROM push_events").await;
    let distinct_pushes = db
        .count("SELECT count(DISTINCT event_id) FROM push_events")
        .await;
    assert_eq!(pushes, distinct_pushes);
}

fn serve_2015(server: &ArchiveServer) -> Vec<i64> {
    let path = file("2015-01-01-0.json.gz");
    server.serve_file("2015-01-01-0.json.gz", path.clone());
    ids_of(&path)
}

#[tokio::test]
async fn an_hour_is_stored_once_with_its_counts_and_a_second_run_skips_it() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    let ids = serve_2015(&server);
    assert_eq!(ids.len(), 7702);
    let hour = Hour::parse(H2015).unwrap();
    let (a, _) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(1),
        None,
    );
    let r = a.run_hour(hour, false, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done, "{r:?}");
    assert_eq!(
        (r.lines, r.stored, r.already_present, r.rejected),
        (7702, 7702, 0, 0)
    );
    assert_eq!((r.push_events, r.new_rows), (4280, 7702));
    assert_eq!(r.lines_committed, 7702);
    assert_eq!(
        r.bytes,
        std::fs::metadata(file("2015-01-01-0.json.gz"))
            .unwrap()
            .len()
    );
    assert_eq!(r.polled_share, Some(0.0));
    assert_eq!(r.stored_share, Some(1.0));
    assert_exactly_once(&db, &ids).await;
    assert_eq!(
        db.count("SELECT count(*) FROM github_events WHERE source = 'archive' AND raw IS NOT NULL")
            .await,
        7702
    );
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 4280);

    let again = a.run_hour(hour, true, Deadline::NONE).await.unwrap();
    assert_eq!(again.status, HourStatus::Done);
    assert_eq!(
        (again.new_rows, again.attempts),
        (0, 1),
        "a done hour is not read again"
    );
    assert_eq!(server.requests("2015-01-01-0.json.gz"), 1);
}

#[tokio::test]
async fn a_404_waits_for_its_backoff_then_the_file_is_read() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    let ids = serve_2015(&server);
    server.fault("2015-01-01-0.json.gz", Fault::NotFound);
    let hour = Hour::parse(H2015).unwrap();
    let (a, clock) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::minutes(30),
        None,
    );

    let r = a.run_hour(hour, false, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Pending, "{r:?}");
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("not published yet") && reason.contains("404"),
        "{reason}"
    );
    assert_eq!(
        r.next_attempt_at,
        clock_now(&clock) + chrono::Duration::minutes(10)
    );
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 0);

    // Not due yet: the row is left alone and says so.
    let r = a.run_hour(hour, false, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Pending);
    assert!(r.reason.unwrap().contains("not due before"));
    assert_eq!(server.requests("2015-01-01-0.json.gz"), 1);

    clock.advance(Duration::from_secs(601));
    let r = a.run_hour(hour, false, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done, "{r:?}");
    assert_eq!((r.stored, r.attempts), (7702, 2));
    assert_eq!(r.reason, None);
    assert_exactly_once(&db, &ids).await;
}

fn clock_now(c: &ManualClock) -> DateTime<Utc> {
    use ghevents_core::clock::Clock;
    c.now()
}

#[tokio::test]
async fn a_file_cut_short_never_makes_the_hour_done_and_a_rerun_completes_it() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    let ids = serve_2015(&server);
    server.fault("2015-01-01-0.json.gz", Fault::Truncate(1_300_000));
    let hour = Hour::parse(H2015).unwrap();
    let (a, _) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(1),
        None,
    );

    let e = a.run_hour(hour, true, Deadline::NONE).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let text = e.to_string();
    assert!(text.contains("2015-01-01-0.json.gz"), "{text}");
    let r = ghevents_core::archive::store::report(&db.pool, hour)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, HourStatus::Failed, "{r:?}");
    assert!(r
        .last_error
        .as_deref()
        .unwrap()
        .contains("2015-01-01-0.json.gz"));
    let partial = db.count("SELECT count(*) FROM github_events").await;
    assert!(
        partial > 0 && partial < 7702,
        "committed batches stay: {partial}"
    );
    assert!(r.lines_committed > 0 && r.lines_committed < 7702, "{r:?}");
    assert_eq!(
        r.stored, r.lines_committed,
        "the counters describe the committed prefix"
    );

    let r = a.run_hour(hour, true, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done, "{r:?}");
    assert_eq!((r.lines, r.stored, r.already_present), (7702, 7702, 0));
    assert_eq!(r.new_rows as i64, 7702 - partial);
    assert_exactly_once(&db, &ids).await;
}

#[tokio::test]
async fn a_connection_reset_mid_body_then_a_rerun() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    let ids = serve_2015(&server);
    server.fault("2015-01-01-0.json.gz", Fault::Reset(1_000_000));
    let hour = Hour::parse(H2015).unwrap();
    let (a, _) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(1),
        None,
    );
    let e = a.run_hour(hour, true, Deadline::NONE).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let r = ghevents_core::archive::store::report(&db.pool, hour)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, HourStatus::Failed);
    assert!(
        r.next_attempt_at > r.started_at.unwrap(),
        "a failed hour backs off"
    );
    assert!(db.count("SELECT count(*) FROM github_events").await < 7702);

    let r = a.run_hour(hour, true, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done, "{r:?}");
    assert_eq!((r.stored, r.attempts), (7702, 2));
    assert_exactly_once(&db, &ids).await;
}

#[tokio::test]
async fn a_slow_server_is_waited_for_and_a_stalled_one_is_given_up_then_retried() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    let ids = serve_2015(&server);
    server.fault(
        "2015-01-01-0.json.gz",
        Fault::Slow {
            chunk: 256 << 10,
            delay: Duration::from_millis(50),
        },
    );
    let hour = Hour::parse(H2015).unwrap();
    let (a, _) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(1),
        None,
    );
    let r = a.run_hour(hour, true, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done, "{r:?}");
    assert_exactly_once(&db, &ids).await;

    // A second hour whose server stops sending for longer than the read timeout.
    let next = hour.next();
    let path = file("2015-01-01-1.json.gz");
    server.serve_file("2015-01-01-1.json.gz", path.clone());
    server.fault(
        "2015-01-01-1.json.gz",
        Fault::Stall {
            n: 700_000,
            pause: Duration::from_secs(5),
        },
    );
    let e = a.run_hour(next, true, Deadline::NONE).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let r = ghevents_core::archive::store::report(&db.pool, next)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, HourStatus::Failed, "{r:?}");
    let r = a.run_hour(next, true, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done, "{r:?}");
    let mut both = ids.clone();
    both.extend(ids_of(&path));
    assert_eq!(both.len(), 7702 + 7427);
    assert_exactly_once(&db, &both).await;
}

#[tokio::test]
async fn a_hour_never_published_is_pending_then_missing_after_the_age() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    let hour = Hour::parse("2015-01-01T05").unwrap();
    let (a, clock) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(2),
        None,
    );
    let r = a.run_hour(hour, false, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Pending, "{r:?}");
    // 47 h after the hour's end: still "not yet".
    clock.set(hour.end() + chrono::Duration::hours(47));
    let r = a.run_hour(hour, false, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Pending, "{r:?}");
    clock.set(hour.end() + chrono::Duration::hours(48) + chrono::Duration::minutes(1));
    let r = a.run_hour(hour, false, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Missing, "{r:?}");
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("2015-01-01-5.json.gz") && reason.contains("404"),
        "{reason}"
    );
    assert!(r.finished_at.is_some());
    // The scheduler never picks a missing hour again.
    let due = ghevents_core::archive::due_hours(&db.pool, clock_now(&clock), 100)
        .await
        .unwrap();
    assert!(!due.contains(&hour), "{due:?}");
    assert_eq!(server.requests("2015-01-01-5.json.gz"), 3);
}

#[tokio::test]
async fn the_2012_timeline_hour_is_rejected_line_by_line_with_its_reason() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    server.serve_file("2012-10-13-0.json.gz", file("2012-10-13-0.json.gz"));
    let hour = Hour::parse("2012-10-13T00").unwrap();
    let (a, _) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(1),
        None,
    );
    let r = a.run_hour(hour, true, Deadline::NONE).await.unwrap();
    assert_eq!(
        r.status,
        HourStatus::Done,
        "nothing more can be done: {r:?}"
    );
    assert_eq!((r.lines, r.rejected, r.stored), (3086, 3086, 0));
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 0);
    assert_eq!(r.rejections.len(), 1, "{:?}", r.rejections);
    let (code, rej) = r.rejections.iter().next().unwrap();
    assert_eq!(rej.count, 3086);
    assert_eq!(rej.first_lines, vec![1, 2, 3, 4, 5]);
    let reason = r.reason.unwrap();
    assert!(
        reason.starts_with("3086 of 3086 lines rejected"),
        "{reason}"
    );
    assert!(
        reason.contains(code.as_str()) && reason.contains(&rej.message),
        "{reason}"
    );
    assert_eq!(r.stored_share, None, "no valid line, no share");
}

#[tokio::test]
async fn a_deadline_stops_between_batches_and_the_next_run_resumes() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    let ids = serve_2015(&server);
    server.fault(
        "2015-01-01-0.json.gz",
        Fault::Slow {
            chunk: 64 << 10,
            delay: Duration::from_millis(60),
        },
    );
    let hour = Hour::parse(H2015).unwrap();
    let mut o = options(&server);
    o.deadline_margin = Duration::from_millis(1);
    let (a, _) = archiver(&db, o, hour, chrono::Duration::hours(1), None);
    let r = a
        .run_hour(hour, true, Deadline::after(Duration::from_millis(1200)))
        .await
        .unwrap();
    assert_eq!(r.status, HourStatus::Pending, "{r:?}");
    assert!(r.reason.as_deref().unwrap().contains("deadline"), "{r:?}");
    assert!(r.lines_committed > 0 && r.lines_committed < 7702, "{r:?}");
    assert_eq!(r.claimed_until, None, "the hour is left claimable");
    let stored = db.count("SELECT count(*) FROM github_events").await;
    assert_eq!(stored as u64, r.stored);

    let due =
        ghevents_core::archive::due_hours(&db.pool, hour.end() + chrono::Duration::hours(1), 10)
            .await
            .unwrap();
    assert!(due.contains(&hour), "{due:?}");
    let r = a.run_hour(hour, false, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done, "{r:?}");
    assert_eq!((r.lines, r.stored), (7702, 7702));
    assert_eq!(r.new_rows as i64, 7702 - stored);
    assert_exactly_once(&db, &ids).await;
}

#[tokio::test]
async fn a_crashed_workers_hour_is_claimable_once_its_lease_ran_out() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    let ids = serve_2015(&server);
    let hour = Hour::parse(H2015).unwrap();
    let (a, clock) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(1),
        None,
    );
    let now = clock_now(&clock);
    // A worker claimed the hour and died.
    let claimed = ghevents_core::archive::store::claim(
        &db.pool,
        hour,
        now,
        now + chrono::Duration::minutes(15),
        true,
    )
    .await
    .unwrap();
    assert!(claimed.is_some());
    let r = a.run_hour(hour, true, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::InProgress, "{r:?}");
    assert!(r.reason.unwrap().contains("being imported elsewhere"));
    assert!(!ghevents_core::archive::due_hours(&db.pool, now, 10)
        .await
        .unwrap()
        .contains(&hour));

    clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(
        ghevents_core::archive::due_hours(&db.pool, clock_now(&clock), 10)
            .await
            .unwrap()
            .into_iter()
            .filter(|h| *h == hour)
            .count(),
        1
    );
    let r = a.run_hour(hour, false, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done, "{r:?}");
    assert_exactly_once(&db, &ids).await;
}

#[tokio::test]
async fn ensure_and_due_hours() {
    let db = TestDb::new().await;
    let from = Hour::parse("2015-01-01T00").unwrap();
    let to = Hour::parse("2015-01-02T00").unwrap();
    assert_eq!(
        ghevents_core::archive::ensure_hours(&db.pool, from, to)
            .await
            .unwrap(),
        24
    );
    assert_eq!(
        ghevents_core::archive::ensure_hours(&db.pool, from, to)
            .await
            .unwrap(),
        0
    );
    let now = Hour::parse("2015-01-03T10").unwrap().start() + chrono::Duration::minutes(5);
    let due = ghevents_core::archive::due_hours(&db.pool, now, 5)
        .await
        .unwrap();
    let names: Vec<String> = due.iter().map(|h| h.to_string()).collect();
    assert_eq!(
        names,
        [
            "2015-01-01T00",
            "2015-01-01T01",
            "2015-01-01T02",
            "2015-01-01T03",
            "2015-01-01T04"
        ]
    );
    let all = ghevents_core::archive::due_hours(&db.pool, now, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 25, "24 hours and the last complete one");
    assert_eq!(all.last().unwrap().to_string(), "2015-01-03T09");
}

/// Archive push events are enriched from fresh cache entries only, the rest `skipped`: none
/// waits for the queue or a worker. With `ENRICH_ARCHIVE=true` they wait like polled ones.
#[tokio::test]
async fn the_enrichment_policy_of_archive_push_events() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    serve_2015(&server);
    let hour = Hour::parse(H2015).unwrap();
    let (a, clock) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(1),
        None,
    );
    // One actor and one repository of the hour's first push event are in the cache, fresh.
    let c = db.pool.get().await.unwrap();
    let (actor, repo) = first_push(&file("2015-01-01-0.json.gz"));
    let now = clock_now(&clock);
    c.execute(
        "INSERT INTO actors (actor_id, login, status, fetched_at) VALUES ($1, 'a', 'ok', $2)",
        &[&actor, &now],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO repositories (repo_id, full_name, status, fetched_at) VALUES ($1, 'a/b', 'ok', $2)",
        &[&repo, &now],
    )
    .await
    .unwrap();
    let r = a.run_hour(hour, true, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done);
    let from_cache = db
        .count(&format!(
            "SELECT count(*) FROM push_events WHERE actor_id = {actor} AND repo_id = {repo}"
        ))
        .await;
    assert!(from_cache >= 1);
    assert_eq!(r.push_cache_enriched as i64, from_cache);
    assert_eq!(r.push_not_enriched as i64, 4280 - from_cache);
    assert_eq!(
        db.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'completed' AND enriched_at IS NOT NULL").await,
        from_cache
    );
    assert_eq!(
        db.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'skipped'")
            .await,
        4280 - from_cache
    );
    assert_eq!(
        ghevents_core::outbox::pending(&db.pool).await.unwrap(),
        0,
        "nothing for the queue"
    );
    let totals = ghevents_core::archive::totals(&db.pool).await.unwrap();
    assert_eq!(totals.push_not_enriched_by_policy, 4280 - from_cache);

    // ENRICH_ARCHIVE=true: the next hour's push events wait for enrichment.
    let db2 = TestDb::new().await;
    let mut o = options(&server);
    o.enrich_archive = true;
    let (a2, _) = archiver(&db2, o, hour, chrono::Duration::hours(1), None);
    let r = a2.run_hour(hour, true, Deadline::NONE).await.unwrap();
    assert_eq!((r.push_events, r.push_not_enriched), (4280, 0));
    assert_eq!(
        db2.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'pending'")
            .await,
        4280
    );
}

fn first_push(path: &std::path::Path) -> (i64, i64) {
    let f = std::fs::File::open(path).unwrap();
    let r = BufReader::new(flate2::read::MultiGzDecoder::new(f));
    for l in r.split(b'\n') {
        let v: serde_json::Value = serde_json::from_slice(&l.unwrap()).unwrap();
        if v["type"] == "PushEvent" {
            return (
                v["actor"]["id"].as_i64().unwrap(),
                v["repo"]["id"].as_i64().unwrap(),
            );
        }
    }
    panic!("no push event");
}

/// Events polled earlier are left as they are and counted as already present: the coverage
/// figure is what polling had stored over the hour's events.
#[tokio::test]
async fn polled_events_are_untouched_and_counted_as_already_present() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    let ids = serve_2015(&server);
    // "Polling" stored every 7th event of the hour (source 'api').
    let path = file("2015-01-01-0.json.gz");
    let lines = raw_lines(&path);
    let polled: Vec<ghevents_core::store::EventInsert> = lines
        .iter()
        .step_by(7)
        .map(|l| ghevents_core::store::EventInsert {
            parsed: ghevents_core::event::parse_event_str(l).unwrap(),
            raw: ghevents_core::raw::RawRef::Inline(l.clone()),
        })
        .collect();
    let t0 = Utc::now() - chrono::Duration::days(1);
    ghevents_core::store::write_events(&db.pool, &polled, ghevents_core::store::Source::Api, t0)
        .await
        .unwrap();
    let n_polled = polled.len() as u64;
    let hour = Hour::parse(H2015).unwrap();
    let (a, _) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(1),
        None,
    );
    let r = a.run_hour(hour, true, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done);
    assert_eq!((r.already_present, r.stored), (n_polled, 7702 - n_polled));
    assert_eq!(r.polled_share, Some(n_polled as f64 / 7702.0));
    assert_exactly_once(&db, &ids).await;
    assert_eq!(
        db.count("SELECT count(*) FROM github_events WHERE source = 'api'")
            .await as u64,
        n_polled
    );
    let ingested_at_unchanged = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM github_events WHERE source = 'api' AND ingested_at = $1",
            &[&t0],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(ingested_at_unchanged as u64, n_polled);
}

fn raw_lines(path: &std::path::Path) -> Vec<String> {
    let f = std::fs::File::open(path).unwrap();
    BufReader::new(flate2::read::MultiGzDecoder::new(f))
        .split(b'\n')
        .map(|l| String::from_utf8(l.unwrap()).unwrap())
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test]
async fn a_deadline_is_kept_while_the_server_is_silent() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    let ids = serve_2015(&server);
    server.fault(
        "2015-01-01-0.json.gz",
        Fault::Stall {
            n: 700_000,
            pause: Duration::from_secs(6),
        },
    );
    let hour = Hour::parse(H2015).unwrap();
    let mut o = options(&server);
    o.deadline_margin = Duration::from_millis(1);
    o.http.read_timeout = Duration::from_secs(30);
    let (a, _) = archiver(&db, o, hour, chrono::Duration::hours(1), None);
    let started = std::time::Instant::now();
    let r = a
        .run_hour(hour, true, Deadline::after(Duration::from_millis(1500)))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "returned before the server spoke again: {:?}",
        started.elapsed()
    );
    assert_eq!(r.status, HourStatus::Pending, "{r:?}");
    assert!(r.lines_committed > 0 && r.lines_committed < 7702, "{r:?}");
    let r = a.run_hour(hour, true, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done, "{r:?}");
    assert_exactly_once(&db, &ids).await;
}

#[tokio::test]
async fn a_body_that_is_not_gzip_fails_the_hour_with_the_reason() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    // Plain NDJSON where a gzip file is expected (a proxy's page would do the same).
    server.serve_file("2015-01-01-3.json.gz", file("2026-06-01-15-sample7.jsonl"));
    let hour = Hour::parse("2015-01-01T03").unwrap();
    let (a, _) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(1),
        None,
    );
    let e = a.run_hour(hour, true, Deadline::NONE).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("2015-01-01-3.json.gz") && text.contains("gzip"),
        "{text}"
    );
    let r = ghevents_core::archive::store::report(&db.pool, hour)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, HourStatus::Failed);
    assert!(r.reason.unwrap().contains("gzip"));
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 0);
}

#[tokio::test]
async fn a_stop_request_ends_the_attempt_between_batches_and_starts_no_other() {
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    let ids = serve_2015(&server);
    server.fault(
        "2015-01-01-0.json.gz",
        Fault::Slow {
            chunk: 64 << 10,
            delay: Duration::from_millis(60),
        },
    );
    let hour = Hour::parse(H2015).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (a, _) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(1),
        None,
    );
    let a = a.with_stop(rx);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let _ = tx.send(true);
        // Keep the channel open: the archiver must see `true`, not a closed channel.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let r = a.run_hour(hour, true, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Pending, "{r:?}");
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .starts_with("stopped on request"),
        "{r:?}"
    );
    assert!(r.lines_committed > 0 && r.lines_committed < 7702, "{r:?}");
    assert_eq!(r.claimed_until, None);
    let other = a.run_hour(hour.next(), true, Deadline::NONE).await.unwrap();
    assert_eq!(other.reason.as_deref(), Some("not started: stopping"));
    assert_eq!(server.requests("2015-01-01-1.json.gz"), 0);

    let (b, _) = archiver(
        &db,
        options(&server),
        hour,
        chrono::Duration::hours(1),
        None,
    );
    let r = b.run_hour(hour, false, Deadline::NONE).await.unwrap();
    assert_eq!(r.status, HourStatus::Done, "{r:?}");
    assert_exactly_once(&db, &ids).await;
}
