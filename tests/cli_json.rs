//! The `ghevents` binary as a script sees it: `--json` gives one JSON document on stdout for
//! every command that prints a result, progress stays on stderr as plain lines when it is not
//! a terminal, and `ghevents run` without GitHub says so once.

use ghevents_tests::db::TestDb;
use ghevents_tests::{data_dir, ghevents_bin, output_of};
use serde_json::Value;
use std::time::Duration;

fn ghevents(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(ghevents_bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        // Nothing listens on the discard port: GitHub is unreachable.
        .env("GITHUB_API_URL", "http://127.0.0.1:9")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    c
}

async fn run(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    output_of(ghevents(db, args, env), Duration::from_secs(120)).await
}

fn one_document(args: &[&str], out: &str) -> Value {
    serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("ghevents {args:?} --json: not one JSON document ({e}):\n{out}"))
}

#[tokio::test]
async fn every_result_command_prints_one_json_document_with_json() {
    let db = TestDb::new_empty().await;
    let hour = data_dir().join("gharchive/2026-06-01-15-sample7.jsonl");
    let hour = hour.to_str().unwrap();
    // (arguments, expected exit code, a field the document must have)
    let commands: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["migrate", "--json"], 0, "/migrations_applied"),
        // Before the import: nothing to enrich, so no request to the unreachable GitHub.
        (vec!["enrich", "--once", "--json"], 0, "/completed"),
        (vec!["import", hour, "--json"], 0, "/files/0/stored"),
        (vec!["status", "--json"], 0, "/counts/events_total"),
        (vec!["check", "--json"], 0, "/healthy"),
        (vec!["reparse", "--json"], 0, "/events"),
        (vec!["retry", "--json"], 0, "/report/retried"),
        // GitHub is unreachable: the failure is a document too (and a line on stderr).
        (vec!["ingest", "--once", "--json"], 1, "/error_code"),
    ];
    for (args, expected, field) in &commands {
        let (code, out, err) = run(&db, args, &[]).await;
        assert_eq!(code, *expected, "ghevents {args:?}: {out}{err}");
        let v = one_document(args, &out);
        assert!(
            v.pointer(field).is_some(),
            "ghevents {args:?}: no {field} in {v}"
        );
    }
    // The values are the command's, not placeholders.
    let (_, out, _) = run(&db, &["migrate", "--json"], &[]).await;
    assert_eq!(one_document(&[], &out)["migrations_applied"], 0);
    let (_, out, _) = run(&db, &["import", hour, "--json"], &[]).await;
    let v = one_document(&[], &out);
    assert_eq!(
        (
            v["files"][0]["lines"].as_u64(),
            v["files"][0]["duplicates"].as_u64()
        ),
        (Some(7), Some(7))
    );
    // The failed cycle planned the next poll: this one is a successful "not due yet".
    let (code, out, _) = run(&db, &["ingest", "--once", "--json"], &[]).await;
    assert_eq!(code, 0);
    assert_eq!(one_document(&[], &out)["outcome"], "not_due");
    let (_, out, _) = run(&db, &["status", "--json"], &[]).await;
    assert_eq!(one_document(&[], &out)["counts"]["events_total"], 7);
}

#[tokio::test]
async fn import_off_a_terminal_writes_plain_progress_lines_and_a_last_line() {
    let db = TestDb::new().await;
    let hour = data_dir().join("gharchive/2015-01-01-0.json.gz");
    let (code, out, err) = run(
        &db,
        &["import", hour.to_str().unwrap()],
        &[("PROGRESS_INTERVAL_SECS", "1")],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("lines=7702 stored=7702"), "{out}");
    assert!(
        !err.contains('\r') && !err.contains('\u{1b}'),
        "no terminal control: {err:?}"
    );
    let label = format!("import {}: ", hour.display());
    let done: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&format!("{label}done, ")))
        .collect();
    assert_eq!(done.len(), 1, "{err}");
    assert!(done[0].contains("7,702 events in "), "{}", done[0]);
    assert!(done[0].ends_with(" events/s"), "{}", done[0]);
    // Lines written while it ran say how far, how fast and how long still.
    for line in err
        .lines()
        .filter(|l| l.starts_with(&label) && !l.contains("done, "))
    {
        assert!(
            line.contains(" MiB (") && line.contains(" events/s"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn run_without_github_says_once_that_it_is_unreachable() {
    let db = TestDb::new().await;
    let child = ghevents(
        &db,
        &["run"],
        &[("RUST_LOG", "info"), ("LOG_FORMAT", "json")],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // Long enough for the four attempts of the first cycle and three enrichment wake-ups.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("ghevents stops")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let logs: Vec<Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let unreachable: Vec<&Value> = logs
        .iter()
        .filter(|l| l.to_string().to_lowercase().contains("unreachable"))
        .collect();
    assert_eq!(unreachable.len(), 1, "{err}");
    let said = unreachable[0];
    assert_eq!(said["level"], "WARN", "{said}");
    assert_eq!(said["url"], "http://127.0.0.1:9", "{said}");
    assert!(
        said["error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{said}"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(said["retry_at"].as_str().unwrap()).is_ok(),
        "{said}"
    );
    assert!(
        !err.contains("enrichment drain"),
        "no line about empty enrichment drains: {err}"
    );
    assert!(
        !err.contains("retrying") && !err.contains("cycle failed"),
        "the failed attempts are not said one by one: {err}"
    );
}

#[tokio::test]
async fn enrichment_without_github_pauses_instead_of_spending_attempts() {
    let db = TestDb::new().await;
    let file = data_dir().join("gharchive/2026-06-01-15-sample7.jsonl");
    let (code, out, err) = run(&db, &["import", file.to_str().unwrap()], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 3);

    let (code, out, err) = run(&db, &["enrich", "--once", "--json"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let v = one_document(&["enrich"], &out);
    assert_eq!(v["failed_attempts"], 0, "{v}");
    assert_eq!(v["deferred"], 3, "{v}");
    assert!(v["deferred_until"].is_string(), "{v}");
    assert_eq!(
        db.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'pending' AND attempts = 0 AND last_error IS NULL")
            .await,
        3,
        "no attempt is counted against the push events"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM enrichment_pause WHERE until > now()")
            .await,
        1
    );
}
