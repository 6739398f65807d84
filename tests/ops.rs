//! The operator commands end to end on real Postgres: `ghevents check` and `ghevents reparse`.

#[path = "aws_support.rs"]
mod aws_support;

use ghevents_tests::db::TestDb;
use ghevents_tests::{data_dir, ghevents_bin, output_of};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

fn archive(name: &str) -> PathBuf {
    data_dir().join("gharchive").join(name)
}

fn ghevents(db: &TestDb, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(ghevents_bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("GITHUB_API_URL", "http://127.0.0.1:9")
        .kill_on_drop(true);
    c
}

async fn run(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    run_env(db, args, &[]).await
}

async fn run_env(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = ghevents(db, args);
    c.envs(env.iter().copied());
    output_of(c, Duration::from_secs(300)).await
}

async fn imported_2015_hour() -> TestDb {
    let db = TestDb::new().await;
    let file = archive("2015-01-01-0.json.gz");
    let (code, out, err) = run(&db, &["import", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 4280);
    db
}

async fn exec(db: &TestDb, sql: &str) {
    db.pool
        .get()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn check_json<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

#[tokio::test]
async fn check_passes_an_imported_hour_and_names_each_broken_row() {
    let db = imported_2015_hour().await;

    let (code, out, err) = run(&db, &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.trim_end().ends_with("healthy"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert!(out.contains("ok   suspected_gaps: 0"), "{out}");

    // The lowest push loses its raw event (the foreign key forbids it: replica mode, as a
    // restore without constraints would, skips it); the next one loses its push row; two
    // keep an expired lease; three were enqueued two hours ago and are still pending.
    let ids = |offset: i64, n: i64| {
        format!("SELECT push_id FROM push_events ORDER BY push_id OFFSET {offset} LIMIT {n}")
    };
    let first_push: i64 = db.count(&ids(0, 1)).await;
    let second_event: i64 = db
        .count("SELECT event_id FROM push_events ORDER BY push_id OFFSET 1 LIMIT 1")
        .await;
    exec(
        &db,
        &format!(
            "SET session_replication_role = replica;
             DELETE FROM github_events WHERE event_id = (SELECT event_id FROM push_events WHERE push_id = {first_push});
             SET session_replication_role = origin;
             DELETE FROM push_events WHERE event_id = {second_event};
             UPDATE push_events SET enrichment_status = 'in_progress', locked_until = now() - interval '1 hour'
              WHERE push_id IN ({});
             UPDATE push_events SET enqueued_at = now() - interval '2 hours'
              WHERE push_id IN ({});",
            ids(10, 2),
            ids(20, 3)
        ),
    )
    .await;

    let (code, out, err) = run(&db, &["check"]).await;
    assert_eq!(code, 1, "{out}{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.contains(&format!(" {name}: ")))
            .unwrap_or_else(|| panic!("no line for {name} in {out}"))
            .to_owned()
    };
    assert!(
        line("push_without_raw").starts_with(&format!(
            "FAIL push_without_raw: 1 (e.g. push {first_push})"
        )),
        "{out}"
    );
    assert!(
        line("raw_push_without_push_row").starts_with(&format!(
            "FAIL raw_push_without_push_row: 1 (e.g. event {second_event})"
        )),
        "{out}"
    );
    assert!(out.contains("       parsed: 1 (e.g. event"), "{out}");
    assert!(
        line("expired_leases").starts_with("FAIL expired_leases: 2 (e.g. push "),
        "{out}"
    );
    assert!(
        line("stale_pending").starts_with("FAIL stale_pending: 3 (e.g. push "),
        "{out}"
    );
    assert!(
        line("raw_object_missing").starts_with("ok   raw_object_missing: 0"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("unhealthy: 7 problems"), "{out}");

    let (code, out, err) = run(&db, &["check", "--json"]).await;
    assert_eq!(code, 1, "{out}{err}");
    let report: Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["healthy"], false);
    assert_eq!(report["problems"], 7);
    let counts: Vec<(&str, i64)> = [
        "push_without_raw",
        "raw_push_without_push_row",
        "raw_object_missing",
        "expired_leases",
        "stale_pending",
        "suspected_gaps",
    ]
    .iter()
    .map(|n| (*n, check_json(&report, n)["count"].as_i64().unwrap()))
    .collect();
    assert_eq!(
        counts,
        vec![
            ("push_without_raw", 1),
            ("raw_push_without_push_row", 1),
            ("raw_object_missing", 0),
            ("expired_leases", 2),
            ("stale_pending", 3),
            ("suspected_gaps", 0),
        ]
    );
    assert_eq!(
        check_json(&report, "push_without_raw")["examples"],
        serde_json::json!([format!("push {first_push}")])
    );
    assert_eq!(
        check_json(&report, "raw_push_without_push_row")["by_reason"]["parsed"]["count"],
        1
    );
    assert_eq!(
        check_json(&report, "stale_pending")["examples"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // A longer threshold no longer calls the three stale.
    let (_, out, _) = run(&db, &["check", "--json", "--stale-after", "3h"]).await;
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(check_json(&report, "stale_pending")["count"], 0);
}

/// Each push id of the 2015 hour with the ref type the parser computes from its source line.
fn parser_ref_types() -> std::collections::HashMap<i64, Option<&'static str>> {
    use std::io::BufRead;
    let f = std::fs::File::open(archive("2015-01-01-0.json.gz")).unwrap();
    let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(f));
    r.split(b'\n')
        .map(|l| l.unwrap())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            match ghevents_core::event::parse_event_str(std::str::from_utf8(&l).unwrap()) {
                Ok(ghevents_core::event::Parsed::Push(_, p)) => Some((p.push_id, p.ref_type())),
                _ => None,
            }
        })
        .collect()
}

async fn stored_ref_types(db: &TestDb) -> std::collections::HashMap<i64, Option<String>> {
    db.pool
        .get()
        .await
        .unwrap()
        .query("SELECT push_id, ref_type FROM push_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn assert_ref_types_as_parsed(stored: &std::collections::HashMap<i64, Option<String>>) {
    let parsed = parser_ref_types();
    assert_eq!(parsed.len(), 4280);
    assert_eq!(stored.len(), 4280);
    for (push_id, want) in &parsed {
        let got = stored
            .get(push_id)
            .unwrap_or_else(|| panic!("push {push_id} not stored"));
        assert!(got.is_some(), "push {push_id} has no ref_type");
        assert_eq!(got.as_deref(), *want, "ref_type of push {push_id}");
    }
}

fn summary_json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn reparse_fills_ref_type_of_old_rows_and_keeps_enrichment_state() {
    let db = imported_2015_hour().await;
    // New rows get it from the parser.
    assert_ref_types_as_parsed(&stored_ref_types(&db).await);

    // Rows from before the column, with enrichment already under way.
    exec(
        &db,
        "UPDATE push_events SET ref_type = NULL;
         UPDATE push_events SET enrichment_status = 'completed', attempts = 2,
                enriched_at = '2020-01-01Z', enqueued_at = '2020-01-01Z'
          WHERE push_id IN (SELECT push_id FROM push_events ORDER BY push_id LIMIT 100);",
    )
    .await;

    let (code, out, err) = run(&db, &["reparse", "--type", "PushEvent"]).await;
    assert_eq!(code, 0, "{out}{err}");
    eprintln!("{out}");
    assert!(
        out.starts_with("reparse type=PushEvent since=- until=-: events=4280 batches=5 push_rows=4280 push_rows_new=0 status_changed=0 parse_failed=0 unreadable=0 resumed_after=- "),
        "{out}"
    );
    assert!(out.contains(" events_per_sec="), "{out}");
    assert_ref_types_as_parsed(&stored_ref_types(&db).await);
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 4280);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM push_events WHERE enrichment_status = 'completed' AND attempts = 2
               AND enriched_at = '2020-01-01Z' AND enqueued_at = '2020-01-01Z'"
        )
        .await,
        100
    );
    assert_eq!(
        db.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'pending'")
            .await,
        4180
    );

    // A finished run asked again starts over and changes nothing.
    let (code, out, err) = run(&db, &["reparse", "--type", "PushEvent", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let s = summary_json(&out);
    assert_eq!(s["events"], 4280);
    assert_eq!(s["push_rows_new"], 0);
    assert_eq!(s["resumed_after"], Value::Null);
    assert!(s["events_per_sec"].as_f64().unwrap() > 0.0, "{out}");
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 4280);

    // A window outside the hour selects nothing.
    let (code, out, _) = run(
        &db,
        &["reparse", "--since", "2016-01-01T00:00:00Z", "--json"],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(summary_json(&out)["events"], 0);
}

#[tokio::test]
async fn a_reparse_killed_half_way_completes_on_the_next_run_without_duplicates() {
    let db = imported_2015_hour().await;
    exec(&db, "UPDATE push_events SET ref_type = NULL").await;

    let mut child = ghevents(
        &db,
        &[
            "reparse",
            "--type",
            "PushEvent",
            "--batch-size",
            "200",
            "--pause-ms",
            "200",
        ],
    )
    .stdout(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // Wait for a few committed batches, then kill -9 (SIGKILL: no cleanup at all).
    let committed = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let n = db
                .count("SELECT coalesce(max(events), 0) FROM reparse_runs")
                .await;
            if n >= 600 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("batches committed in time");
    child.kill().await.unwrap();
    child.wait().await.unwrap();
    let done = db
        .count("SELECT events FROM reparse_runs WHERE finished_at IS NULL")
        .await;
    assert!(done >= committed && done < 4280, "{done}");
    let filled = db
        .count("SELECT count(*) FROM push_events WHERE ref_type IS NOT NULL")
        .await;
    assert!(
        filled > 0 && filled < 4280,
        "killed half-way: {filled} filled"
    );
    let checkpoint = db.count("SELECT last_event_id FROM reparse_runs").await;

    let (code, out, err) = run(&db, &["reparse", "--type", "PushEvent", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let s = summary_json(&out);
    assert_eq!(s["resumed_after"], checkpoint, "{out}");
    assert_eq!(s["events"].as_i64().unwrap(), 4280 - done, "{out}");
    assert_eq!(s["push_rows_new"], 0, "{out}");
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 4280);
    assert_eq!(
        db.count("SELECT count(DISTINCT event_id) FROM push_events")
            .await,
        4280
    );
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 7702);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM reparse_runs WHERE finished_at IS NOT NULL AND events = 4280"
        )
        .await,
        1
    );
    assert_ref_types_as_parsed(&stored_ref_types(&db).await);
}

#[tokio::test]
async fn reparse_reads_payloads_stored_as_object_lines() {
    use ghevents_core::raw::RawRef;
    use ghevents_core::raw::{encode_page, MemoryObjects, ObjectWriter};
    use ghevents_core::reparse::{reparse, ReparseOptions, ReparseProgress};
    use ghevents_core::store::{write_events, EventInsert, Source};
    let db = TestDb::new().await;
    let texts = [
        r#"{"id":"11","type":"PushEvent","actor":{"id":1,"login":"a"},"repo":{"id":2,"name":"a/b"},"payload":{"push_id":101,"ref":"refs/tags/v1","head":"h","before":"b"},"public":true,"created_at":"2026-01-01T00:00:00Z"}"#,
        r#"{"id":"12","type":"WatchEvent","actor":{"id":1,"login":"a"},"repo":{"id":2,"name":"a/b"},"payload":{},"public":true,"created_at":"2026-01-01T00:00:01Z"}"#,
        r#"{"id":"13","type":"PushEvent","actor":{"id":1,"login":"a"},"repo":{"id":2,"name":"a/b"},"payload":{"push_id":102,"ref":"refs/heads/main","head":"h","before":"b"},"public":true,"created_at":"2026-01-01T00:00:02Z"}"#,
    ];
    let raws: Vec<Box<serde_json::value::RawValue>> = texts
        .iter()
        .map(|t| serde_json::value::RawValue::from_string((*t).to_owned()).unwrap())
        .collect();
    let refs: Vec<&serde_json::value::RawValue> = raws.iter().map(|r| r.as_ref()).collect();
    let objects = MemoryObjects::new();
    let key = "raw/events/2026/01/01/00/p1.json.gz";
    objects
        .put_object(key, encode_page(&refs).unwrap())
        .await
        .unwrap();
    let batch: Vec<EventInsert> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| EventInsert {
            parsed: ghevents_core::event::parse_event_str(t).unwrap(),
            raw: RawRef::Object {
                key: key.into(),
                line: i as i32,
            },
        })
        .collect();
    write_events(&db.pool, &batch, Source::Api, chrono::Utc::now())
        .await
        .unwrap();
    exec(&db, "UPDATE push_events SET ref_type = NULL").await;
    let clock = ghevents_core::clock::SystemClock;

    // Without an object store client nothing can be read: counted, left as it is.
    let s = reparse(
        &db.pool,
        None,
        &ReparseOptions::default(),
        &ReparseProgress::default(),
        &clock,
    )
    .await
    .unwrap();
    assert_eq!(s.unreadable_total(), 3);
    assert_eq!(
        s.unreadable["no object store client"].examples,
        vec![11, 12, 13]
    );
    assert_eq!(
        db.count("SELECT count(*) FROM push_events WHERE ref_type IS NULL")
            .await,
        2
    );

    let s = reparse(
        &db.pool,
        Some(&objects),
        &ReparseOptions::default(),
        &ReparseProgress::default(),
        &clock,
    )
    .await
    .unwrap();
    assert_eq!((s.events, s.push_rows, s.unreadable_total()), (3, 2, 0));
    let got: Vec<(i64, String)> = db
        .pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT push_id, ref_type FROM push_events ORDER BY push_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(got, vec![(101, "tag".into()), (102, "branch".into())]);
}

#[tokio::test]
async fn check_and_reparse_read_raw_objects_from_s3() {
    use ghevents_core::raw::encode_page;
    use ghevents_core::raw::RawRef;
    use ghevents_core::store::{write_events, EventInsert, Source};
    let aws = aws_support::localstack().await;
    let bucket = aws.bucket().await;
    let db = TestDb::new().await;
    let push = |id: u32, push_id: u32, git_ref: &str| {
        format!(
            r#"{{"id":"{id}","type":"PushEvent","actor":{{"id":1,"login":"a"}},"repo":{{"id":2,"name":"a/b"}},"payload":{{"push_id":{push_id},"ref":"{git_ref}","head":"h","before":"b"}},"public":true,"created_at":"2026-01-01T00:00:00Z"}}"#
        )
    };
    let page = [
        push(21, 201, "refs/tags/v2"),
        push(22, 202, "refs/heads/dev"),
    ];
    let raws: Vec<Box<serde_json::value::RawValue>> = page
        .iter()
        .map(|t| serde_json::value::RawValue::from_string(t.clone()).unwrap())
        .collect();
    let refs: Vec<&serde_json::value::RawValue> = raws.iter().map(|r| r.as_ref()).collect();
    let key = "raw/events/2026/01/01/00/p1.json.gz";
    aws.s3
        .put_object()
        .bucket(&bucket)
        .key(key)
        .body(encode_page(&refs).unwrap().into())
        .send()
        .await
        .unwrap();
    let lost = "raw/events/2026/01/01/00/lost.json.gz";
    let mut batch: Vec<EventInsert> = page
        .iter()
        .enumerate()
        .map(|(i, t)| EventInsert {
            parsed: ghevents_core::event::parse_event_str(t).unwrap(),
            raw: RawRef::Object {
                key: key.into(),
                line: i as i32,
            },
        })
        .collect();
    batch.push(EventInsert {
        parsed: ghevents_core::event::parse_event_str(&push(23, 203, "refs/heads/x")).unwrap(),
        raw: RawRef::Object {
            key: lost.into(),
            line: 0,
        },
    });
    write_events(&db.pool, &batch, Source::Api, chrono::Utc::now())
        .await
        .unwrap();
    exec(&db, "UPDATE push_events SET ref_type = NULL").await;

    let endpoint = aws_support::endpoint();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("RAW_PAYLOAD_BUCKET", bucket.as_str()),
    ];

    // Without a bucket the object check is skipped, and says so.
    let (code, out, err) = run(&db, &["check", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let objects = check_json(&report, "raw_object_missing");
    assert_eq!(objects["skipped"], true);
    assert!(
        objects["note"]
            .as_str()
            .unwrap()
            .contains("2 keys not checked"),
        "{objects}"
    );

    let (code, out, err) = run_env(&db, &["check", "--json"], &env).await;
    assert_eq!(code, 1, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let objects = check_json(&report, "raw_object_missing");
    assert_eq!(objects["count"], 1, "{objects}");
    assert_eq!(objects["examples"], serde_json::json!([lost]));
    assert_eq!(objects["by_reason"]["not found"]["count"], 1, "{objects}");

    let (code, out, err) = run_env(&db, &["reparse", "--json"], &env).await;
    assert_eq!(code, 1, "{out}{err}");
    let s = summary_json(&out);
    assert_eq!(s["events"], 3);
    assert_eq!(s["push_rows"], 2);
    assert_eq!(
        s["unreadable"]["object unreadable"]["examples"],
        serde_json::json!([23])
    );
    let got: Vec<(i64, Option<String>)> = db
        .pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT push_id, ref_type FROM push_events ORDER BY push_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        got,
        vec![
            (201, Some("tag".into())),
            (202, Some("branch".into())),
            (203, None)
        ]
    );
}
