//! The `ghevents` binary end to end against github-sim, a GitHub stand-in serving the real
//! 2015-01-01 00:00 GH Archive hour as a live feed, on rate-limit windows compressed to
//! seconds: every event the simulator served is stored exactly once, no request breaks a
//! primary or secondary limit, and cycles are never closer than `X-Poll-Interval`.
//!
//! Each test runs its own simulator, database and `ghevents` process for a bounded time
//! (under ~30 s of wall time); every wait is bounded.

use ghevents_tests::db::TestDb;
use ghevents_tests::{data_dir, ghevents_bin};
use github_sim::{ClientStats, Clock, Fault, FaultRule, PathKind, Sim, SimConfig, Stats};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// `X-Poll-Interval` the simulator announces, in seconds.
const POLL_INTERVAL_SECS: u64 = 1;

fn hour() -> PathBuf {
    data_dir().join("gharchive/2015-01-01-0.json.gz")
}

/// A live feed of the 2015 hour: `initial` events at start, then `rate` per second, ids
/// shuffled within blocks of 8 (GitHub's are not monotonic), a window of `window_secs` with
/// `limit` requests, `X-Poll-Interval: 1`.
fn live_feed(initial: usize, rate: f64, window_secs: u64, limit: u32) -> SimConfig {
    SimConfig {
        files: vec![hour()],
        initial,
        rate_per_sec: rate,
        clock: Clock::Real,
        shuffle_block: 8,
        poll_interval_secs: POLL_INTERVAL_SECS,
        window: Duration::from_secs(window_secs),
        limit_anonymous: limit,
        ..SimConfig::default()
    }
}

fn ghevents(db: &TestDb, sim: &Sim, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(ghevents_bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("GITHUB_API_URL", sim.url())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// `ghevents run` (with `args`) for `secs`, then Ctrl-C; returns what it printed (a line per
/// cycle).
async fn run_for(db: &TestDb, sim: &Sim, args: &[&str], secs: u64) -> String {
    let child = ghevents(db, sim, &[&["run"], args].concat())
        .spawn()
        .expect("ghevents run starts");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let pid = child
        .id()
        .expect("ghevents run is still running")
        .to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "SIGINT sent to ghevents run");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("ghevents run stops within 20 s of Ctrl-C")
        .expect("ghevents run waited for");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "ghevents run exited with {:?}\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// `ghevents ingest --once`: exit code and its one line.
async fn ingest_once(db: &TestDb, sim: &Sim) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        ghevents(db, sim, &["ingest", "--once"]).output(),
    )
    .await
    .expect("ingest --once finishes within 60 s")
    .expect("ingest --once ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_owned())
}

/// One printed cycle: `outcome: requests=N ... new=N ...`.
#[derive(Debug)]
struct Cycle {
    outcome: String,
    /// Every request the process sent during the cycle, enrichment's included.
    requests: u64,
    not_modified: u64,
    pages: u64,
    new: u64,
}

fn cycles(stdout: &str) -> Vec<Cycle> {
    stdout
        .lines()
        .filter_map(|l| {
            let (outcome, rest) = l.split_once(": ")?;
            let fields: HashMap<&str, &str> = rest
                .split(' ')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let n = |k: &str| fields.get(k).and_then(|v| v.parse().ok());
            Some(Cycle {
                outcome: outcome.to_owned(),
                requests: n("requests")?,
                not_modified: n("not_modified")?,
                pages: n("pages")?,
                new: n("new")?,
            })
        })
        .collect()
}

fn client(stats: &Stats) -> &ClientStats {
    stats.anonymous().expect("ghevents polled the simulator")
}

async fn stored_ids(db: &TestDb) -> Vec<i64> {
    let rows = db
        .pool
        .get()
        .await
        .unwrap()
        .query("SELECT event_id FROM github_events", &[])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// The events the simulator served in complete pages are exactly the events stored, each in
/// one row, and every stored PushEvent has its push_events row.
async fn assert_served_events_stored_once(db: &TestDb, stats: &Stats) {
    let served: BTreeSet<i64> = stats
        .served_ids
        .keys()
        .map(|id| id.parse().expect("numeric id"))
        .collect();
    let rows = stored_ids(db).await;
    let stored: BTreeSet<i64> = rows.iter().copied().collect();
    assert!(!served.is_empty(), "the simulator served no event");
    assert_eq!(rows.len(), stored.len(), "an event stored twice");
    let missing: Vec<_> = served.difference(&stored).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} served events not stored, e.g. {missing:?}",
        served.difference(&stored).count()
    );
    let unserved: Vec<_> = stored.difference(&served).take(5).collect();
    assert!(
        unserved.is_empty(),
        "stored events the simulator never served in a complete page: {unserved:?}"
    );
    let pushes = db
        .count("SELECT count(*) FROM github_events WHERE event_type = 'PushEvent'")
        .await;
    assert!(pushes > 0);
    assert_eq!(
        db.count("SELECT count(*) FROM push_events").await,
        pushes,
        "one push_events row per PushEvent"
    );
}

/// Splits the simulator's gaps between `/events` arrivals (in order) by the cycles ghevents
/// printed: the gaps before each cycle's first request, and the gaps between pages of a cycle.
/// For `run --no-enrich`, where a cycle's `requests` are all `/events` requests.
fn gaps_between_and_within_cycles(cycles: &[Cycle], c: &ClientStats) -> (Vec<u64>, Vec<u64>) {
    let counts: Vec<u64> = cycles
        .iter()
        .map(|c| c.requests)
        .filter(|&n| n > 0)
        .collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        c.total(PathKind::Events),
        "every /events request belongs to a printed cycle: {cycles:?}"
    );
    let gaps = &c.poll_gaps_ms;
    let (mut between, mut within, mut i) = (Vec::new(), Vec::new(), 0);
    for (n, count) in counts.iter().enumerate() {
        if n > 0 {
            between.push(gaps[i]);
            i += 1;
        }
        let pages = usize::try_from(*count).unwrap() - 1;
        within.extend_from_slice(&gaps[i..i + pages]);
        i += pages;
    }
    (between, within)
}

fn assert_cycles_respect_poll_interval(cycles: &[Cycle], c: &ClientStats) {
    let (between, _) = gaps_between_and_within_cycles(cycles, c);
    assert!(!between.is_empty(), "more than one cycle polled");
    let min = *between.iter().min().unwrap();
    assert!(min >= POLL_INTERVAL_SECS * 1000, "a cycle started {min} ms after the previous one (X-Poll-Interval {POLL_INTERVAL_SECS} s): {between:?}");
}

#[tokio::test]
async fn a_feed_quieter_than_a_page_per_poll_is_read_one_page_per_poll_and_stored_once() {
    ghevents_bin(); // built before the feed starts moving
    let db = TestDb::new().await;
    // Longer than the run loop's own one-second floor between cycles, so undercutting it shows.
    let poll_secs = 2;
    let sim = Sim::start(SimConfig {
        poll_interval_secs: poll_secs,
        ..live_feed(50, 20.0, 10, 60)
    })
    .await
    .unwrap();

    // Enrichment runs beside ingest (the default): both draw on one budget.
    let out = run_for(&db, &sim, &[], 11).await;

    let stats = sim.stats();
    let cycles = cycles(&out);
    let c = client(&stats);
    assert!(
        c.total(PathKind::Users) + c.total(PathKind::Repos) > 0,
        "enrichment ran: {c:?}"
    );
    assert_eq!(c.violations, 0, "{c:?}");
    // 20 events/s: polls at 0 s (the first 50), 2 s (X-Poll-Interval: the rate is not known
    // yet), then once about 90 events have arrived (~4.5 s later).
    assert!(cycles.len() >= 3, "{out}");
    let polls: Vec<&Cycle> = cycles.iter().filter(|c| c.outcome != "not_due").collect();
    assert!(
        polls.iter().all(|c| c.pages + c.not_modified == 1),
        "fewer than 100 new events per poll: one page (or a 304) per cycle\n{out}"
    );
    assert_eq!(c.total(PathKind::Events), polls.len() as u64, "{out}");
    // One /events request per cycle: every gap between them is a gap between polls.
    let min_gap = c.min_poll_gap_ms.expect("polled more than once");
    assert!(
        min_gap >= poll_secs * 1000,
        "/events polled {min_gap} ms after the previous poll (X-Poll-Interval {poll_secs} s): {:?}",
        c.poll_gaps_ms
    );
    assert_served_events_stored_once(&db, &stats).await;

    // The stored documents are the simulator's (the archive's) events, field for field.
    let source: HashMap<i64, Value> = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
        std::fs::File::open(hour()).unwrap(),
    ))
    .split(b'\n')
    .map(|l| l.unwrap())
    .filter(|l| !l.is_empty())
    .map(|l| serde_json::from_slice::<Value>(&l).unwrap())
    .map(|v| (v["id"].as_str().unwrap().parse().unwrap(), v))
    .collect();
    let rows = db
        .pool
        .get()
        .await
        .unwrap()
        .query("SELECT event_id, raw FROM github_events", &[])
        .await
        .unwrap();
    for r in &rows {
        let id: i64 = r.get(0);
        assert_eq!(&r.get::<_, Value>(1), &source[&id], "raw event {id}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_feed_busier_than_the_budget_is_read_in_full_pages_across_windows_without_a_violation() {
    ghevents_bin();
    let db = TestDb::new().await;
    // 150 events/s against 10 requests per 10 s: at most 100 events/s can be read.
    let sim = Sim::start(live_feed(300, 150.0, 10, 10)).await.unwrap();

    let out = run_for(&db, &sim, &["--no-enrich"], 22).await;

    let stats = sim.stats();
    let cycles = cycles(&out);
    let c = client(&stats);
    assert!(
        cycles.iter().all(|c| c.outcome == "completed"),
        "the budget never ran out: {out}"
    );
    assert_eq!(
        (
            c.violations,
            c.count(PathKind::Events, 403),
            c.count(PathKind::Events, 429)
        ),
        (0, 0, 0),
        "{c:?}"
    );
    let requests = c.total(PathKind::Events);
    assert!(
        requests > 10,
        "the run spans more than one window: {requests} requests\n{out}"
    );
    assert!(
        requests <= 30,
        "at most 10 requests in each of the 3 windows 22 s can touch: {requests}"
    );
    assert_cycles_respect_poll_interval(&cycles, c);
    assert_served_events_stored_once(&db, &stats).await;
    // The budget is spread over each window, so every cycle finds more new events than a page
    // holds: no request is spent on a page of events already stored.
    let stored = u64::try_from(stored_ids(&db).await.len()).unwrap();
    assert!(cycles.iter().all(|c| c.pages < 2 || c.new > 100), "{out}");
    assert!(
        stored * 10 >= requests * 900,
        "{stored} new events for {requests} requests (< 90 a request)\n{out}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_secondary_limit_a_502_and_a_truncated_page_lose_nothing_and_break_no_limit() {
    ghevents_bin();
    let db = TestDb::new().await;
    let mut feed = live_feed(100, 30.0, 10, 30);
    // /events requests 3 → 502 (retried), 6 → truncated (the cycle fails, the next one walks
    // again), 9 → a secondary limit with Retry-After: 3.
    feed.faults = vec![
        FaultRule::new("/events", 1, Fault::Status { code: 502 }).after(2),
        FaultRule::new("/events", 1, Fault::Truncated).after(2),
    ];
    feed.secondary_on_events_requests = vec![9];
    feed.secondary_retry_after = Duration::from_secs(3);
    let sim = Sim::start(feed).await.unwrap();

    // With enrichment beside ingest: the secondary limit stops both.
    let _ = run_for(&db, &sim, &[], 16).await;

    let stats = sim.stats();
    let c = client(&stats);
    assert!(
        c.total(PathKind::Users) + c.total(PathKind::Repos) > 0,
        "enrichment ran: {c:?}"
    );
    assert!(
        sim.pending_faults().is_empty(),
        "every fault was met: {:?}",
        sim.pending_faults()
    );
    assert_eq!(
        (
            c.count(PathKind::Events, 502),
            c.count(PathKind::Events, 429)
        ),
        (1, 1),
        "{c:?}"
    );
    assert_eq!(
        (c.violations_retry_after, c.violations_exhausted),
        (0, 0),
        "nothing sent before Retry-After nor over budget: {c:?}"
    );
    assert!(c.count(PathKind::Events, 200) > 5, "{c:?}");
    assert_served_events_stored_once(&db, &stats).await;
    sim.shutdown().await;
}

/// The `next_poll_at=` of an `ingest --once` line.
fn next_poll_at(line: &str) -> chrono::DateTime<chrono::Utc> {
    let at = line
        .rsplit_once("next_poll_at=")
        .expect("next_poll_at printed")
        .1;
    chrono::DateTime::parse_from_rfc3339(at.trim())
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc)
}

/// Sleeps until `at` (and a little more), at most `POLL_INTERVAL_SECS` × 10.
async fn sleep_until(at: chrono::DateTime<chrono::Utc>) {
    let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
    assert!(
        wait <= Duration::from_secs(POLL_INTERVAL_SECS * 10),
        "next poll {wait:?} away"
    );
    tokio::time::sleep(wait).await;
}

#[tokio::test]
async fn ingest_once_stores_the_feed_then_waits_its_turn_then_revalidates_for_free() {
    let db = TestDb::new().await;
    let sim = Sim::start(SimConfig {
        files: vec![hour()],
        initial: 300,
        clock: Clock::Manual,
        poll_interval_secs: POLL_INTERVAL_SECS,
        window: Duration::from_secs(60),
        limit_anonymous: 60,
        ..SimConfig::default()
    })
    .await
    .unwrap();

    // The whole feed: three pages.
    let (ok, line) = ingest_once(&db, &sim).await;
    assert!(
        ok && line.starts_with(
            "completed: requests=3 not_modified=0 pages=3 fetched=300 new=300 duplicates=0"
        ),
        "{line}"
    );
    let due = next_poll_at(&line);
    assert!(
        due >= chrono::Utc::now() + chrono::Duration::milliseconds(500),
        "X-Poll-Interval is {POLL_INTERVAL_SECS} s: {line}"
    );

    // Before then: not due, nothing sent.
    let (ok, line) = ingest_once(&db, &sim).await;
    assert!(ok && line.starts_with("not_due: requests=0"), "{line}");
    assert_eq!(client(&sim.stats()).total(PathKind::Events), 3);

    // Then, with nothing new: a 304 on page 1, which costs nothing.
    sleep_until(due).await;
    let (ok, line) = ingest_once(&db, &sim).await;
    assert!(
        ok && line.starts_with("not_modified: requests=1 not_modified=1 pages=0"),
        "{line}"
    );
    let status = ghevents(&db, &sim, &["status", "--json"])
        .output()
        .await
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (&status["budget"]["used"], &status["budget"]["remaining"]),
        (&Value::from(3), &Value::from(57)),
        "a 304 is free: {status}"
    );

    // 150 new events: page 1 is all new, page 2 reaches the stored ones and ends the walk.
    sim.release(150);
    sleep_until(next_poll_at(&line)).await;
    let (ok, line) = ingest_once(&db, &sim).await;
    assert!(
        ok && line.starts_with(
            "completed: requests=2 not_modified=0 pages=2 fetched=200 new=150 duplicates=50"
        ),
        "{line}"
    );

    let stats = sim.stats();
    let c = client(&stats);
    assert_eq!(
        (
            c.violations,
            c.count(PathKind::Events, 200),
            c.count(PathKind::Events, 304)
        ),
        (0, 5, 1),
        "{c:?}"
    );
    assert_served_events_stored_once(&db, &stats).await;
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 450);
    sim.shutdown().await;
}
