//! GH Archive end to end: polling (`ghevents run` against github-sim replaying the
//! 2015-01-01 00:00 hour) and then the archive of the same hour; the `backfill` and
//! `coverage` commands; S3 mode against LocalStack (one object per hour, whose lines are the
//! stored events' bytes).

#[path = "aws_support.rs"]
mod aws_support;

use aws_support::localstack;
use ghevents_core::archive::{
    ArchiveOptions, Archiver, ByteChunks, Hour, HourObjects, HourStatus, HttpOptions,
};
use ghevents_core::clock::SystemClock;
use ghevents_core::deadline::Deadline;
use ghevents_core::raw::RawStoreError;
use ghevents_tests::archive_server::{ArchiveServer, Fault};
use ghevents_tests::db::TestDb;
use ghevents_tests::{data_dir, ghevents_bin, output_of};
use github_sim::{Clock, Sim, SimConfig};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

fn file(name: &str) -> PathBuf {
    data_dir().join("gharchive").join(name)
}

/// The lines of a gzip file (members concatenated), split on `\n` only.
fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(path).unwrap();
    BufReader::new(flate2::read::MultiGzDecoder::new(f))
        .split(b'\n')
        .map(|l| l.unwrap())
        .collect()
}

fn lines_of_bytes(gz: &[u8]) -> Vec<Vec<u8>> {
    BufReader::new(flate2::read::MultiGzDecoder::new(gz))
        .split(b'\n')
        .map(|l| l.unwrap())
        .collect()
}

fn id_of(line: &[u8]) -> i64 {
    let v: Value = serde_json::from_slice(line).unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

fn ghevents(db: &TestDb, env: &[(&str, &str)], args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(ghevents_bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

async fn output(c: tokio::process::Command) -> (bool, String, String) {
    let (code, stdout, stderr) = output_of(c, Duration::from_secs(120)).await;
    (code == 0, stdout, stderr)
}

async fn api_rows(db: &TestDb) -> BTreeMap<i64, (String, chrono::DateTime<chrono::Utc>)> {
    db.pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT event_id, source, ingested_at FROM github_events WHERE source = 'api'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

#[tokio::test]
async fn polling_then_the_archive_of_the_same_hour_completes_it_without_touching_polled_rows() {
    ghevents_bin();
    let db = TestDb::new().await;
    let sim = Sim::start(SimConfig {
        files: vec![file("2015-01-01-0.json.gz")],
        initial: 300,
        rate_per_sec: 150.0,
        clock: Clock::Real,
        shuffle_block: 8,
        poll_interval_secs: 1,
        window: Duration::from_secs(10),
        limit_anonymous: 10,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    // Poll for a while, then stop as an operator would.
    let child = ghevents(
        &db,
        &[("GITHUB_API_URL", &sim.url())],
        &["run", "--no-enrich"],
    )
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let polled = api_rows(&db).await;
    assert!(
        !polled.is_empty() && polled.len() < 7702,
        "polling caught part of the hour: {}",
        polled.len()
    );

    let server = ArchiveServer::start().await;
    server.serve_file("2015-01-01-0.json.gz", file("2015-01-01-0.json.gz"));
    let (ok, stdout, stderr) = output(ghevents(
        &db,
        &[("GHARCHIVE_URL", &server.url)],
        &["archive", "--hour", "2015-01-01T00", "--json"],
    ))
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let r = &v["hour"];
    assert_eq!(r["status"], "done", "{v}");
    assert_eq!(r["lines"], 7702);
    assert_eq!(r["already_present"], polled.len() as u64);
    assert_eq!(r["stored"], 7702 - polled.len() as u64);
    let share = r["polled_share"].as_f64().unwrap();
    assert!(
        (share - polled.len() as f64 / 7702.0).abs() < 1e-12,
        "{share}"
    );

    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 7702);
    assert_eq!(
        db.count("SELECT count(DISTINCT event_id) FROM github_events")
            .await,
        7702
    );
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 4280);
    let want: BTreeSet<i64> = lines_of(&file("2015-01-01-0.json.gz"))
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| id_of(l))
        .collect();
    assert_eq!(want.len(), 7702);
    let got: BTreeSet<i64> = db
        .pool
        .get()
        .await
        .unwrap()
        .query("SELECT event_id FROM github_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(got == want, "the stored ids are the hour's");
    assert_eq!(api_rows(&db).await, polled, "polled rows untouched");

    // `coverage` says the same.
    let (ok, stdout, _) = output(ghevents(&db, &[], &["coverage", "--json"])).await;
    assert!(ok);
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["polled_share"].as_f64().unwrap(), share);
    assert_eq!(rows[0]["stored_share"].as_f64().unwrap(), 1.0);

    // `check` compares the hour with what is stored: healthy, then one event short.
    let archive_check = |stdout: &str| -> Value {
        let report: Value = serde_json::from_str(stdout).unwrap();
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "archive_hour_counts")
            .cloned()
            .unwrap_or_else(|| panic!("no archive_hour_counts in {report}"))
    };
    // (The polling above may have left suspected gaps, which fail other checks.)
    let (_, stdout, _) = output(ghevents(&db, &[], &["check", "--json"])).await;
    assert_eq!(archive_check(&stdout)["count"], 0, "{stdout}");
    db.pool
        .get()
        .await
        .unwrap()
        .batch_execute(
            "DELETE FROM github_events WHERE event_id = (SELECT max(event_id) FROM github_events g
             WHERE NOT EXISTS (SELECT 1 FROM push_events p WHERE p.event_id = g.event_id))",
        )
        .await
        .unwrap();
    let (ok, stdout, _) = output(ghevents(&db, &[], &["check", "--json"])).await;
    assert!(!ok, "an hour one event short fails the check");
    let k = archive_check(&stdout);
    assert_eq!(k["count"], 1, "{k}");
    assert_eq!(
        k["examples"],
        serde_json::json!(["2015-01-01T00: 7701 of 7702"])
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn backfill_names_the_hours_not_done_and_a_second_run_finishes_the_rest() {
    ghevents_bin();
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    server.serve_file("2015-01-01-0.json.gz", file("2015-01-01-0.json.gz"));
    server.serve_file("2015-01-01-1.json.gz", file("2015-01-01-1.json.gz"));
    server.fault("2015-01-01-1.json.gz", Fault::Reset(500_000));
    let env = [("GHARCHIVE_URL", server.url.as_str())];
    let args = [
        "backfill",
        "--from",
        "2015-01-01T00",
        "--to",
        "2015-01-01-2",
        "--parallel",
        "2",
    ];
    let (ok, stdout, stderr) = output(ghevents(&db, &env, &args)).await;
    assert!(!ok, "an hour failed: exit 1\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 hours, 0 done already, 3 to import"),
        "{stdout}"
    );
    assert!(stderr.contains("1 hour(s) not done"), "{stderr}");
    assert!(stderr.contains("2015-01-01T01 failed"), "{stderr}");
    assert!(stdout.contains("2015-01-01T02 missing"), "{stdout}");
    assert!(stdout.contains("2015-01-01T00 done"), "{stdout}");

    let (ok, stdout, stderr) = output(ghevents(&db, &env, &args)).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 hours, 1 done already, 2 to import"),
        "{stdout}"
    );
    assert!(stdout.contains("2015-01-01T01 done"), "{stdout}");
    assert_eq!(
        server.requests("2015-01-01-0.json.gz"),
        1,
        "a done hour is skipped"
    );
    assert_eq!(
        db.count("SELECT count(DISTINCT event_id) FROM github_events")
            .await,
        7702 + 7427
    );
    assert_eq!(
        db.count("SELECT count(*) FROM github_events").await,
        7702 + 7427
    );

    let (ok, stdout, _) = output(ghevents(&db, &[], &["status"])).await;
    assert!(ok);
    assert!(
        stdout.contains("archive push events not enriched by policy: 8430"),
        "{stdout}"
    );
    assert!(stdout.contains("2015-01-01T02 missing"), "{stdout}");
}

/// S3 with a small part size, so an hour file of a few MB is copied in parts.
struct SmallParts(ghevents_core::aws::s3::S3Objects);

#[async_trait::async_trait]
impl HourObjects for SmallParts {
    async fn put_stream(&self, key: &str, body: ByteChunks) -> Result<u64, RawStoreError> {
        self.0.put_stream_in_parts(key, body, 5 << 20).await
    }
    async fn get_stream(&self, key: &str) -> Result<ByteChunks, RawStoreError> {
        self.0.get_stream(key).await
    }
}

#[tokio::test]
async fn s3_mode_keeps_one_object_per_hour_whose_lines_are_the_stored_events() {
    let aws = localstack().await;
    let bucket = aws.bucket().await;
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    // Hour 00: the real file, cut short at the first request. Hour 01 (a day later): five
    // files' gzip members one after the other, over 5 MiB, so its copy takes two parts (the
    // 2012 timeline's lines are rejected, the others stored).
    server.serve_file("2015-01-01-0.json.gz", file("2015-01-01-0.json.gz"));
    server.fault("2015-01-01-0.json.gz", Fault::Truncate(1_200_000));
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("2015-01-02-1.json.gz");
    let mut bytes = Vec::new();
    for f in [
        "2015-01-01-1.json.gz",
        "2012-04-01-0.json.gz",
        "2021-07-21-first-200-of-hours-06-09.json.gz",
        "2026-06-01-15-first-5000.json.gz",
        "2012-10-13-0.json.gz",
    ] {
        bytes.extend(std::fs::read(file(f)).unwrap());
    }
    assert!(bytes.len() > 5 << 20);
    std::fs::write(&big, &bytes).unwrap();
    server.serve_file("2015-01-02-1.json.gz", big.clone());

    let s3 = ghevents_core::aws::s3::S3Objects {
        client: aws.s3.clone(),
        bucket: bucket.clone(),
    };
    let options = ArchiveOptions {
        base_url: server.url.clone(),
        object_prefix: "raw/".into(),
        http: HttpOptions {
            retries: 0,
            ..HttpOptions::default()
        },
        ..ArchiveOptions::default()
    };
    let a = Archiver::new(
        db.pool.clone(),
        Arc::new(SystemClock),
        Some(Arc::new(SmallParts(s3.clone()))),
        options,
    )
    .unwrap();
    let h0 = Hour::parse("2015-01-01T00").unwrap();
    let h1 = Hour::parse("2015-01-02T01").unwrap();

    let e = a.run_hour(h0, true, Deadline::NONE).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let r = ghevents_core::archive::store::report(&db.pool, h0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, HourStatus::Failed);
    assert_eq!(
        r.object_key, None,
        "a copy that is not a whole file is made again"
    );
    let mut reports = Vec::new();
    for h in [h0, h1] {
        let r = a.run_hour(h, true, Deadline::NONE).await.unwrap();
        assert_eq!(r.status, HourStatus::Done, "{r:?}");
        reports.push(r);
    }
    assert_eq!((reports[0].stored, reports[0].rejected), (7702, 0));
    assert_eq!(reports[1].rejected, 3086, "{:?}", reports[1]);
    assert_eq!(server.requests("2015-01-01-0.json.gz"), 2);
    assert_eq!(server.requests("2015-01-02-1.json.gz"), 1);

    assert_eq!(
        aws.keys(&bucket).await,
        vec![
            "raw/archive/2015/01/01/00.json.gz".to_owned(),
            "raw/archive/2015/01/02/01.json.gz".to_owned()
        ]
    );
    let mut total = 0;
    for ((hour, source), report) in [(h0, file("2015-01-01-0.json.gz")), (h1, big.clone())]
        .into_iter()
        .zip(&reports)
    {
        let key = hour.object_key("raw/");
        let object = s3.get(&key).await.unwrap();
        assert!(
            object == std::fs::read(&source).unwrap(),
            "{key} is the hour's file byte for byte"
        );
        let lines = lines_of_bytes(&object);
        assert_eq!(report.lines, lines.len() as u64);
        let rows = db
            .pool
            .get()
            .await
            .unwrap()
            .query(
                "SELECT event_id, raw_object_line, raw IS NULL FROM github_events WHERE raw_object_key = $1",
                &[&key],
            )
            .await
            .unwrap();
        assert_eq!(
            rows.len() as u64,
            report.stored,
            "{key}: a row per stored line"
        );
        let mut seen = BTreeSet::new();
        for r in &rows {
            let (id, line, no_inline): (i64, i32, bool) = (r.get(0), r.get(1), r.get(2));
            assert!(no_inline);
            assert!(seen.insert(line), "{key}: line {line} twice");
            assert_eq!(id_of(&lines[line as usize]), id, "{key} line {line}");
        }
        // read_raw gives back the exact bytes, from every gzip member of the big file.
        let mut sample: Vec<&tokio_postgres::Row> = rows.iter().step_by(rows.len() / 9).collect();
        sample.push(rows.iter().max_by_key(|r| r.get::<_, i32>(1)).unwrap());
        for r in sample {
            let (id, line): (i64, i32) = (r.get(0), r.get(1));
            let raw = ghevents_core::raw::read_raw(&db.pool, Some(&s3), id)
                .await
                .unwrap();
            assert_eq!(raw, lines[line as usize], "event {id}");
        }
        total += rows.len();
    }
    assert_eq!(
        db.count("SELECT count(*) FROM github_events").await as usize,
        total
    );
    assert_eq!(
        db.count("SELECT count(*) FROM github_events WHERE raw IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn the_archive_command_in_s3_mode_copies_the_hour_and_check_reads_its_lines() {
    ghevents_bin();
    let aws = localstack().await;
    let bucket = aws.bucket().await;
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    server.serve_file("2015-01-01-0.json.gz", file("2015-01-01-0.json.gz"));
    let env = [
        ("GHARCHIVE_URL", server.url.as_str()),
        ("RAW_PAYLOAD_STORE", "s3"),
        ("RAW_PAYLOAD_BUCKET", bucket.as_str()),
        ("RAW_PAYLOAD_PREFIX", "r/"),
        ("AWS_ENDPOINT_URL", aws.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let (ok, stdout, stderr) = output(ghevents(
        &db,
        &env,
        &["archive", "--hour", "2015-01-01T00", "--json"],
    ))
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["hour"]["status"], "done");
    assert_eq!(v["hour"]["object_key"], "r/archive/2015/01/01/00.json.gz");
    assert_eq!(
        aws.keys(&bucket).await,
        vec!["r/archive/2015/01/01/00.json.gz".to_owned()]
    );
    assert_eq!(
        db.count("SELECT count(*) FROM github_events WHERE raw_object_key = 'r/archive/2015/01/01/00.json.gz'")
            .await,
        7702
    );
    let (_, stdout, stderr) = output(ghevents(
        &db,
        &env,
        &["check", "--json", "--s3-sample", "50"],
    ))
    .await;
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let objects = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "raw_object_missing")
        .cloned()
        .unwrap_or_else(|| panic!("the raw object check: {report}"));
    assert_eq!(objects["count"], 0, "{objects}");
    assert_eq!(objects["skipped"], false, "{objects}");
    assert_eq!(objects["note"], "1 distinct objects checked", "{objects}");
}
