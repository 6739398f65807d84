//! What ghevents says about itself, end to end on real Postgres and github-sim: the
//! Prometheus endpoint of `ghevents run` (`METRICS_ADDR`), the suspected-gap history
//! (`poll_cycles`) and how `ghevents status` and `ghevents check` report it, with feed lag
//! and enrichment backlog. Every wait is bounded.

use ghevents_tests::db::TestDb;
use ghevents_tests::{data_dir, ghevents_bin, output_of};
use github_sim::{Clock, Sim, SimConfig};
use serde_json::Value;
use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

async fn run(db: &TestDb, sim: &Sim, args: &[&str]) -> (i32, String, String) {
    output_of(ghevents(db, sim, args), Duration::from_secs(60)).await
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` (HTTP/1.0: a plain body, no chunks); None while nothing answers.
async fn scrape(addr: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    Some(body.to_owned())
}

/// The samples of a Prometheus text exposition, by series name (no labels here).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn ghevents_run_serves_prometheus_metrics_that_move_with_each_cycle() {
    ghevents_bin(); // built before the feed starts moving
    let db = TestDb::new().await;
    // A live feed: 50 events at start, then 30 per second; polls every second; 60 requests
    // per 10 s window (enough for enrichment too).
    let sim = Sim::start(SimConfig {
        files: vec![data_dir().join("gharchive/2015-01-01-0.json.gz")],
        initial: 50,
        rate_per_sec: 30.0,
        clock: Clock::Real,
        shuffle_block: 8,
        poll_interval_secs: 1,
        window: Duration::from_secs(10),
        limit_anonymous: 60,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = ghevents(&db, &sim, &["run"])
        .env("METRICS_ADDR", &addr)
        .spawn()
        .expect("ghevents run starts");

    // The endpoint answers once the process is up.
    let started = tokio::time::Instant::now();
    let first = loop {
        match scrape(&addr).await {
            Some(body) if samples(&body).contains_key("ghevents_new_events_total") => break body,
            _ => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no ghevents_new_events_total at http://{addr}/metrics within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    let second = scrape(&addr).await.expect("the endpoint still answers");

    let pid = child.id().expect("still running").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("ghevents run stops within 20 s of Ctrl-C")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (a, b) = (samples(&first), samples(&second));
    let get = |s: &HashMap<String, f64>, k: &str| {
        *s.get(k)
            .unwrap_or_else(|| panic!("no {k} in the scrape:\n{second}"))
    };
    for counter in [
        "ghevents_new_events_total",
        "ghevents_ingest_requests_total",
        "ghevents_pages_total",
        "ghevents_events_fetched_total",
    ] {
        assert!(
            get(&b, counter) > get(&a, counter),
            "{counter} moved between two scrapes 6 s apart: {} then {}",
            get(&a, counter),
            get(&b, counter)
        );
    }
    // What the database holds agrees with what the counters say was stored.
    let stored = db.count("SELECT count(*) FROM github_events").await as f64;
    assert!(get(&b, "ghevents_new_events_total") <= stored);
    assert!(
        get(&b, "ghevents_enrich_requests_total") > 0.0,
        "enrichment ran beside ingest:\n{second}"
    );
    // Within one 10 s window enrichment may spend its share on actors and defer every push
    // until the reset; either way each push it took is counted.
    assert!(
        get(&b, "ghevents_enrich_completed_total")
            + get(&b, "ghevents_enrich_gone_total")
            + get(&b, "ghevents_enrich_deferred_total")
            > 0.0,
        "{second}"
    );
    assert!(get(&b, "ghevents_rate_remaining") >= 0.0);
    // The 2015 hour's events are years old: the lag says so.
    assert!(
        get(&b, "ghevents_feed_lag_seconds") > 86_400.0 * 365.0,
        "{second}"
    );
    assert!(b.contains_key("ghevents_enrich_backlog"), "{second}");
    assert!(b.contains_key("ghevents_gaps_last24h"), "{second}");
    assert!(b.contains_key("ghevents_ingest_cycle_duration"), "{second}");
}

#[tokio::test]
async fn a_bad_metrics_addr_is_named() {
    let db = TestDb::new().await;
    let sim = Sim::start(SimConfig {
        files: vec![data_dir().join("gharchive/2015-01-01-0.json.gz")],
        initial: 10,
        clock: Clock::Manual,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut c = ghevents(&db, &sim, &["run"]);
    c.env("METRICS_ADDR", "localhost-9464");
    let out = tokio::time::timeout(Duration::from_secs(30), c.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("localhost-9464") && err.contains("metrics-addr"),
        "{err}"
    );
}

/// `ghevents ingest --once` after letting the next poll go out now.
async fn poll_now(db: &TestDb, sim: &Sim) -> String {
    db.pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE poll_state SET next_poll_at = now()", &[])
        .await
        .unwrap();
    let (code, out, err) = run(db, sim, &["ingest", "--once"]).await;
    assert_eq!(code, 0, "{out}{err}");
    out
}

#[tokio::test]
async fn a_walk_that_meets_no_stored_event_is_a_suspected_gap_in_status_and_check() {
    let db = TestDb::new().await;
    let sim = Sim::start(SimConfig {
        files: vec![data_dir().join("gharchive/2015-01-01-0.json.gz")],
        initial: 300,
        clock: Clock::Manual,
        ..SimConfig::default()
    })
    .await
    .unwrap();

    // The first cycle reads 3 pages of new events: nothing before it to miss.
    poll_now(&db, &sim).await;
    // 400 arrive: the next walk reads its 3 pages (300) without meeting a stored event, and
    // the 100 beyond them are lost to the feed.
    sim.release(400);
    poll_now(&db, &sim).await;
    // 50 arrive: page 1 holds them and 50 stored events, no gap.
    sim.release(50);
    poll_now(&db, &sim).await;

    let c = db.pool.get().await.unwrap();
    let gaps: Vec<(bool, i32, i32)> = c
        .query(
            "SELECT gap_suspected, pages, new_events FROM poll_cycles ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        gaps,
        vec![(false, 3, 300), (true, 3, 300), (false, 1, 50)],
        "one row per cycle"
    );

    let (code, out, err) = run(&db, &sim, &["status", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let o = &v["observed"];
    assert_eq!(o["gaps_24h"], 1, "{o}");
    let pushes = db.count("SELECT count(*) FROM push_events").await;
    assert!(pushes > 0);
    assert_eq!(o["enrich_backlog"], pushes, "nothing enriched yet: {o}");
    let lag_db = db
        .count("SELECT extract(epoch FROM now() - max(created_at))::bigint FROM github_events")
        .await;
    let lag = o["feed_lag_secs"].as_i64().unwrap();
    assert!(
        (lag - lag_db).abs() <= 60,
        "feed lag {lag} s, database {lag_db} s"
    );
    let age_db = db
        .count("SELECT extract(epoch FROM now() - min(created_at))::bigint FROM push_events")
        .await;
    let age = o["enrich_backlog_age_secs"].as_i64().unwrap();
    assert!(
        (age - age_db).abs() <= 60,
        "backlog age {age} s, database {age_db} s"
    );

    let (code, text, _) = run(&db, &sim, &["status"]).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("gaps suspected in the last 24 h: 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!("enrichment backlog: {pushes} push events")),
        "{text}"
    );
    assert!(text.contains("feed lag "), "{text}");

    // check counts the same cycle and exits 1.
    let (code, out, _) = run(&db, &sim, &["check", "--json"]).await;
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let gap = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "suspected_gaps")
        .unwrap();
    assert_eq!(gap["count"], 1, "{gap}");
    assert!(
        gap["examples"][0]
            .as_str()
            .unwrap()
            .starts_with("feed events cycle ended "),
        "{gap}"
    );

    // A day later the gap has left the window, in both.
    c.execute(
        "UPDATE poll_cycles SET ended_at = ended_at - interval '25 hours'",
        &[],
    )
    .await
    .unwrap();
    let (_, out, _) = run(&db, &sim, &["status", "--json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["observed"]["gaps_24h"], 0);
    let (_, out, _) = run(&db, &sim, &["check", "--json"]).await;
    let report: Value = serde_json::from_str(&out).unwrap();
    let gap = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "suspected_gaps")
        .unwrap();
    assert_eq!(gap["count"], 0, "{gap}");
}
