//! The operator commands end to end on real Postgres: `ghevents check` and `ghevents reparse`.

use ghevents_tests::db::TestDb;
use ghevents_tests::{data_dir, ghevents_bin};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Output;
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
    let out: Output = tokio::time::timeout(Duration::from_secs(300), ghevents(db, args).output())
        .await
        .expect("ghevents finished in time")
        .expect("ghevents ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    assert!(out.contains("gap history is not recorded"), "{out}");

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
