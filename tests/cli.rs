//! The `ghevents` binary end to end, on the real GH Archive files and a local GitHub
//! stand-in.

use ghevents_core::clock::SystemClock;
use ghevents_tests::db::TestDb;
use ghevents_tests::fixtures::events_page;
use ghevents_tests::replay::{ReplayServer, Reply};
use ghevents_tests::{data_dir, ghevents_bin, output_of};
use serde_json::Value;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[path = "aws_support.rs"]
mod aws_support;

fn archive(name: &str) -> PathBuf {
    data_dir().join("gharchive").join(name)
}

fn ghevents(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(ghevents_bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("GITHUB_API_URL", "http://127.0.0.1:9")
        .kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

async fn run(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    output_of(ghevents(db, args, env), Duration::from_secs(120)).await
}

#[tokio::test]
async fn migrate_twice_applies_once() {
    let db = TestDb::new_empty().await;
    let files = std::fs::read_dir(ghevents_tests::repo_root().join("migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sql")
        })
        .count();
    assert!(files >= 2);
    let (code, out, err) = run(&db, &["migrate"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("migrations applied: {files}"));
    let (code, out, _) = run(&db, &["migrate"], &[]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "migrations applied: 0");
    assert_eq!(
        db.count("SELECT count(*) FROM refinery_schema_history")
            .await,
        files as i64
    );
}

/// Reads a GH Archive file with serde_json alone (not the project's parser).
fn source_lines(name: &str) -> Vec<Value> {
    let f = std::fs::File::open(archive(name)).unwrap();
    let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(f));
    r.split(b'\n')
        .map(|l| l.unwrap())
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(&l).unwrap())
        .collect()
}

#[tokio::test]
async fn importing_the_2015_hour_stores_every_event_once_and_each_push_field_for_field() {
    let db = TestDb::new().await;
    let file = archive("2015-01-01-0.json.gz");
    let (code, out, err) = run(&db, &["import", file.to_str().unwrap()], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("lines=7702 stored=7702 duplicates=0 push_events=4280"),
        "{out}"
    );
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 7702);
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 4280);

    let (code, out, _) = run(&db, &["import", file.to_str().unwrap()], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("stored=0 duplicates=7702 push_events=0"),
        "{out}"
    );
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 7702);

    // Every stored push event against its source line.
    let client = db.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT p.push_id, p.event_id, p.repo_id, p.repo_name, p.actor_id, p.actor_login, p.ref, p.head, p.before,
                    p.size, p.distinct_size, p.commit_count, p.created_at, g.raw, g.source, g.event_type
             FROM push_events p JOIN github_events g USING (event_id)",
            &[],
        )
        .await
        .unwrap();
    let by_id: std::collections::HashMap<i64, &tokio_postgres::Row> =
        rows.iter().map(|r| (r.get::<_, i64>(1), r)).collect();
    let mut compared = 0;
    for e in source_lines("2015-01-01-0.json.gz")
        .iter()
        .filter(|e| e["type"] == "PushEvent")
    {
        let id: i64 = e["id"].as_str().unwrap().parse().unwrap();
        let r = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("push event {id} not stored"));
        let p = &e["payload"];
        assert_eq!(
            r.get::<_, i64>(0),
            p["push_id"].as_i64().unwrap(),
            "push_id of {id}"
        );
        assert_eq!(r.get::<_, i64>(2), e["repo"]["id"].as_i64().unwrap());
        assert_eq!(r.get::<_, &str>(3), e["repo"]["name"].as_str().unwrap());
        assert_eq!(r.get::<_, i64>(4), e["actor"]["id"].as_i64().unwrap());
        assert_eq!(r.get::<_, &str>(5), e["actor"]["login"].as_str().unwrap());
        assert_eq!(r.get::<_, Option<&str>>(6), p["ref"].as_str());
        assert_eq!(r.get::<_, Option<&str>>(7), p["head"].as_str());
        assert_eq!(r.get::<_, Option<&str>>(8), p["before"].as_str());
        assert_eq!(
            r.get::<_, Option<i32>>(9).map(i64::from),
            p["size"].as_i64()
        );
        assert_eq!(
            r.get::<_, Option<i32>>(10).map(i64::from),
            p["distinct_size"].as_i64()
        );
        assert_eq!(
            r.get::<_, Option<i32>>(11).map(|n| n as usize),
            p["commits"].as_array().map(Vec::len)
        );
        assert_eq!(
            r.get::<_, chrono::DateTime<chrono::Utc>>(12)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            e["created_at"].as_str().unwrap()
        );
        assert_eq!(&r.get::<_, Value>(13), e, "raw event {id}");
        assert_eq!(r.get::<_, &str>(14), "archive");
        compared += 1;
    }
    assert_eq!(compared, 4280);
}

#[tokio::test]
async fn the_trimmed_2026_shape_stores_null_counts_never_zero() {
    let db = TestDb::new().await;
    let file = archive("2026-06-01-15-first-5000.json.gz");
    let (code, out, err) = run(&db, &["import", file.to_str().unwrap()], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 5000);
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 4268);
    assert_eq!(db.count("SELECT count(*) FROM push_events WHERE size IS NULL AND distinct_size IS NULL AND commit_count IS NULL").await, 4268);
    assert_eq!(
        db.count("SELECT count(*) FROM push_events WHERE before IS NULL OR head IS NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn the_2012_hour_stores_pushes_without_before() {
    let db = TestDb::new().await;
    let file = archive("2012-04-01-0.json.gz");
    let (code, out, err) = run(&db, &["import", file.to_str().unwrap()], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 7981);
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 1522);
    assert_eq!(
        db.count("SELECT count(*) FROM push_events WHERE before IS NULL")
            .await,
        1522
    );
    assert_eq!(
        db.count("SELECT count(*) FROM github_events WHERE parse_status = 'failed'")
            .await,
        0
    );
    // The raw U+2028 line survived.
    assert_eq!(
        db.count(
            r"SELECT count(*) FROM github_events WHERE raw::text LIKE '%' || chr(8232) || '%'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn the_old_timeline_format_is_rejected_by_reason_and_nothing_stored_is_touched() {
    let db = TestDb::new().await;
    let earlier = archive("2026-06-01-15-sample7.jsonl");
    assert_eq!(
        run(&db, &["import", earlier.to_str().unwrap()], &[])
            .await
            .0,
        0
    );
    let checksum = "SELECT coalesce(sum(hashtext(raw::text || event_id::text || parse_status)), 0)::bigint FROM github_events";
    let before = (
        db.count("SELECT count(*) FROM github_events").await,
        db.count(checksum).await,
    );

    let bad = archive("2012-10-13-0.json.gz");
    let (code, out, _) = run(&db, &["import", bad.to_str().unwrap()], &[]).await;

    assert_ne!(code, 0, "a file with rejected lines exits non-zero");
    assert!(out.contains("lines=3086 stored=0"), "{out}");
    assert!(out.contains("rejected=3086"), "{out}");
    assert!(
        out.contains("rejected missing_id: 3086 (missing field `id`), first lines: 1, 2, 3, 4, 5"),
        "{out}"
    );
    assert_eq!(
        (
            db.count("SELECT count(*) FROM github_events").await,
            db.count(checksum).await
        ),
        before
    );
}

#[tokio::test]
async fn a_file_that_does_not_exist_is_named_in_a_one_line_error() {
    let db = TestDb::new().await;
    let (code, _, err) = run(&db, &["import", "/nonexistent/2015.json.gz"], &[]).await;
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/2015.json.gz"), "{err}");
}

#[tokio::test]
async fn two_ingest_once_at_the_same_time_store_each_event_once_without_error() {
    let db = TestDb::new().await;
    let gh = ReplayServer::start(Arc::new(SystemClock)).await;
    let ids: Vec<i64> = (1..=100).collect();
    for _ in 0..2 {
        gh.push(
            "/events",
            events_page(&ids, "W/\"a\"", 59, 4102444800, None).delay(Duration::from_millis(500)),
        );
    }
    let env = [("GITHUB_API_URL", gh.url.as_str())];
    let (a, b) = tokio::join!(
        run(&db, &["ingest", "--once"], &env),
        run(&db, &["ingest", "--once"], &env)
    );
    assert_eq!(a.0, 0, "{a:?}");
    assert_eq!(b.0, 0, "{b:?}");
    let outcomes = format!("{}{}", a.1, b.1);
    assert!(outcomes.contains("completed: requests=1"), "{outcomes}");
    assert!(
        outcomes.contains("busy") || outcomes.contains("not_due"),
        "{outcomes}"
    );
    assert_eq!(gh.received().len(), 1);
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 100);
}

#[tokio::test]
async fn ingest_once_fails_with_a_one_line_reason_and_never_prints_the_token() {
    const TOKEN: &str = "ghp_CliSecretTokenValue9876543210zyxw";
    let db = TestDb::new().await;
    let gh = ReplayServer::start(Arc::new(SystemClock)).await;
    gh.push(
        "/events",
        Reply::new(401).body(
            r#"{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}"#,
        ),
    );
    let env = [
        ("GITHUB_API_URL", gh.url.as_str()),
        ("GITHUB_TOKEN", TOKEN),
        ("RUST_LOG", "trace"),
        ("LOG_FORMAT", "json"),
    ];
    let (code, out, err) = run(&db, &["ingest", "--once"], &env).await;

    assert_ne!(code, 0);
    let reason: Vec<&str> = err.lines().filter(|l| l.starts_with("ghevents:")).collect();
    assert_eq!(reason.len(), 1, "{err}");
    assert!(
        reason[0].contains("HTTP 401") && reason[0].contains("Bad credentials"),
        "{}",
        reason[0]
    );
    assert!(
        err.lines()
            .filter(|l| !l.starts_with("ghevents:"))
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "JSON logs"
    );
    assert!(
        err.contains("\"level\":\"TRACE\"") || err.contains("\"level\":\"DEBUG\""),
        "verbose logs were on"
    );
    assert!(
        !out.contains("CliSecret") && !err.contains("CliSecret"),
        "token leaked"
    );
    assert_eq!(
        gh.received()[0].headers.get("authorization").unwrap(),
        &format!("Bearer {TOKEN}")
    );
}

#[tokio::test]
async fn a_missing_database_url_is_named() {
    let db = TestDb::new().await;
    let out = ghevents(&db, &["status"], &[])
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL is not set"));
}

#[tokio::test]
async fn status_reports_budget_poll_and_rows_as_json() {
    let db = TestDb::new().await;
    let gh = ReplayServer::start(Arc::new(SystemClock)).await;
    gh.push(
        "/events",
        events_page(&[1, 2, 3], "W/\"a\"", 42, 4102444800, None),
    );
    let env = [("GITHUB_API_URL", gh.url.as_str())];
    assert_eq!(run(&db, &["ingest", "--once"], &env).await.0, 0);
    let (code, out, err) = run(&db, &["status", "--json"], &env).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["budget"]["remaining"], 42);
    assert_eq!(v["budget"]["limit"], 60);
    assert_eq!(v["polls"][0]["etag"], "W/\"a\"");
    assert_eq!(v["polls"][0]["last_result"], "completed");
    assert_eq!(v["counts"]["events_total"], 3);
    assert_eq!(
        v["counts"]["push_events_by_enrichment_status"]["pending"],
        3
    );
    let (code, text, _) = run(&db, &["status"], &env).await;
    assert_eq!(code, 0);
    assert!(text.contains("42/60 remaining"), "{text}");
}

#[tokio::test]
async fn sigterm_finishes_the_page_in_hand_releases_what_it_holds_and_exits_0() {
    let db = TestDb::new().await;
    let gh = ReplayServer::start(Arc::new(SystemClock)).await;
    let ids: Vec<i64> = (1..=100).collect();
    gh.push(
        "/events",
        events_page(&ids, "W/\"a\"", 59, 4102444800, None).delay(Duration::from_secs(2)),
    );
    let child = ghevents(
        &db,
        &["run", "--no-enrich"],
        &[("GITHUB_API_URL", gh.url.as_str())],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // SIGTERM while page 1 is on its way (what systemd, Docker or ECS send to stop it).
    tokio::time::timeout(Duration::from_secs(30), async {
        while gh.received().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the first request went out");
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());

    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("ghevents stops by itself")
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{:?}: {stderr}", out.status);
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert_eq!(
        db.count("SELECT count(*) FROM github_events").await,
        100,
        "the page in hand is stored"
    );
    assert_eq!(
        db.count("SELECT coalesce(sum(in_flight), 0)::bigint FROM rate_limit_state")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            .await,
        0,
        "the feed lock is released"
    );
}

#[tokio::test]
async fn ingest_once_with_raw_payloads_in_s3_writes_the_page_to_the_bucket_and_rows_refer_to_it() {
    let aws = aws_support::localstack().await;
    let bucket = aws.bucket().await;
    let db = TestDb::new().await;
    let gh = ReplayServer::start(Arc::new(SystemClock)).await;
    let ids: Vec<i64> = (1..=5).collect();
    gh.push(
        "/events",
        events_page(&ids, "W/\"a\"", 59, 4102444800, None),
    );
    let env = [
        ("GITHUB_API_URL", gh.url.as_str()),
        ("RAW_PAYLOAD_STORE", "s3"),
        ("RAW_PAYLOAD_BUCKET", bucket.as_str()),
        ("AWS_ENDPOINT_URL", aws.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];

    let (code, out, err) = run(&db, &["ingest", "--once"], &env).await;

    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("new=5"), "{out}");
    let keys = aws.keys(&bucket).await;
    assert_eq!(keys.len(), 1, "one object per page: {keys:?}");
    assert!(
        keys[0].starts_with("raw/events/") && keys[0].ends_with("-p1.json.gz"),
        "{keys:?}"
    );
    let client = db.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT event_id, raw_object_line FROM github_events
             WHERE raw IS NULL AND raw_object_key = $1 ORDER BY raw_object_line",
            &[&keys[0]],
        )
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        5,
        "every event refers to its line of the object"
    );
    let objects = ghevents_core::aws::s3::S3Objects {
        client: aws.s3.clone(),
        bucket: bucket.clone(),
    };
    for row in &rows {
        let id: i64 = row.get(0);
        let bytes = ghevents_core::raw::read_raw(&db.pool, Some(&objects), id)
            .await
            .unwrap();
        let event: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(event["id"], id.to_string(), "line {}", row.get::<_, i32>(1));
    }
}
