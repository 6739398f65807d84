//! `ghevents retry` and `ghevents requeue` end to end: real Postgres, a LocalStack SQS queue
//! of their own, the binary run as an operator would.

#[path = "aws_support.rs"]
mod aws_support;

use aws_support::{localstack, Aws};
use ghevents_tests::db::TestDb;
use ghevents_tests::{data_dir, ghevents_bin, output_of};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

async fn run(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = tokio::process::Command::new(ghevents_bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("GITHUB_API_URL", "http://127.0.0.1:9")
        .env("AWS_ENDPOINT_URL", aws_support::endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    output_of(c, Duration::from_secs(180)).await
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

async fn ids(db: &TestDb, sql: &str) -> BTreeSet<i64> {
    db.pool
        .get()
        .await
        .unwrap()
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not one JSON document ({e}): {out}"))
}

/// The 2021 sample (425 push events, all pending and never sent), with push events set up in
/// every state the commands must tell apart, by push id order: 10 failed, 5 `in_progress`
/// past their lease, 20 completed, 30 sent a minute ago, 15 sent two hours ago and still
/// pending (their message is lost); the other 345 were never sent.
async fn states() -> TestDb {
    let db = TestDb::new().await;
    let file = data_dir().join("gharchive/2021-07-21-first-200-of-hours-06-09.json.gz");
    let (code, out, err) = run(&db, &["import", file.to_str().unwrap()], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 425);
    let range = |offset: i64, n: i64| {
        format!("push_id IN (SELECT push_id FROM push_events ORDER BY push_id OFFSET {offset} LIMIT {n})")
    };
    exec(
        &db,
        &format!(
            "UPDATE push_events SET enrichment_status = 'failed', attempts = 5,
                 last_error = 'GitHub answered HTTP 502 for /users/x (4 attempts): bad gateway',
                 enqueued_at = now() - interval '3 hours' WHERE {};
             UPDATE push_events SET enrichment_status = 'in_progress', attempts = 2,
                 locked_until = now() - interval '5 minutes', last_error = 'timeout',
                 enqueued_at = NULL WHERE {};
             UPDATE push_events SET enrichment_status = 'completed', enriched_at = now(),
                 enqueued_at = now() - interval '1 hour' WHERE {};
             UPDATE push_events SET enqueued_at = now() - interval '1 minute',
                 next_attempt_at = now() - interval '1 minute' WHERE {};
             UPDATE push_events SET enqueued_at = now() - interval '2 hours',
                 next_attempt_at = now() - interval '2 hours' WHERE {};",
            range(0, 10),
            range(10, 5),
            range(15, 20),
            range(35, 30),
            range(65, 15),
        ),
    )
    .await;
    db
}

#[tokio::test]
async fn retry_puts_failed_rows_back_once_keeping_their_history() {
    let db = states().await;
    let failed = ids(
        &db,
        "SELECT push_id FROM push_events WHERE enrichment_status = 'failed'",
    )
    .await;
    let stuck = ids(
        &db,
        "SELECT push_id FROM push_events WHERE enrichment_status = 'in_progress'",
    )
    .await;
    assert_eq!((failed.len(), stuck.len()), (10, 5));

    let (code, out, err) = run(&db, &["retry", "--failed", "--json"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(v["scope"], "failed");
    assert_eq!(v["report"]["retried"], 10, "{v}");
    assert_eq!(v["report"]["by_previous_status"]["failed"], 10, "{v}");
    assert_eq!(
        v["report"]["top_errors"][0],
        serde_json::json!([
            "GitHub answered HTTP 502 for /users/x (4 attempts): bad gateway",
            10
        ])
    );
    let back = format!(
        "SELECT push_id FROM push_events WHERE enrichment_status = 'pending' AND attempts = 0
           AND enqueued_at IS NULL AND last_error IS NULL AND locked_until IS NULL
           AND next_attempt_at <= now() AND push_id IN ({})",
        failed
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(ids(&db, &back).await, failed);
    assert_eq!(
        ids(
            &db,
            "SELECT push_id FROM enrichment_retries WHERE previous_status = 'failed' AND attempts = 5
               AND last_error LIKE 'GitHub answered HTTP 502%'"
        )
        .await,
        failed
    );
    assert_eq!(
        ids(
            &db,
            "SELECT push_id FROM push_events WHERE enrichment_status = 'in_progress'"
        )
        .await,
        stuck,
        "--failed leaves in_progress rows alone"
    );

    // Again: nothing matches, nothing changes.
    let (code, out, _) = run(&db, &["retry", "--failed", "--json"], &[]).await;
    assert_eq!(code, 0);
    assert_eq!(json(&out)["report"]["retried"], 0);
    assert_eq!(
        db.count("SELECT count(*) FROM enrichment_retries").await,
        10
    );

    // Bare retry also takes rows whose lease ran out.
    let (code, out, err) = run(&db, &["retry"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("retry: 5 push events back to pending (in_progress=5)"),
        "{out}"
    );
    assert!(out.contains("previous error (5): timeout"), "{out}");
    assert_eq!(
        ids(
            &db,
            "SELECT push_id FROM enrichment_retries WHERE previous_status = 'in_progress' AND attempts = 2"
        )
        .await,
        stuck
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM push_events WHERE enrichment_status IN ('failed', 'in_progress')"
        )
        .await,
        0
    );
    let (_, out, _) = run(&db, &["retry"], &[]).await;
    assert!(
        out.starts_with("retry: 0 push events back to pending (none matched)"),
        "{out}"
    );
}

#[tokio::test]
async fn retry_since_only_takes_push_events_created_from_then() {
    let db = states().await;
    // The sample is of 06:00-09:59; four of the failed rows are moved to noon.
    exec(
        &db,
        "UPDATE push_events SET created_at = '2021-07-21T12:00:00Z' WHERE push_id IN
           (SELECT push_id FROM push_events WHERE enrichment_status = 'failed' ORDER BY push_id LIMIT 4)",
    )
    .await;
    let (code, out, err) = run(
        &db,
        &[
            "retry",
            "--failed",
            "--since",
            "2021-07-21T11:00:00Z",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["report"]["retried"], 4, "{out}");
    assert_eq!(
        db.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'failed' AND created_at < '2021-07-21T11:00:00Z'")
            .await,
        6
    );
}

#[tokio::test]
async fn requeue_sends_what_the_queue_never_got_once_and_the_lost_again() {
    let aws: Aws = localstack().await;
    let queue_url = aws.queue().await;
    let db = states().await;
    let env = [("ENRICH_QUEUE_URL", queue_url.as_str())];

    // Without a queue it says which variable is missing.
    let (code, _, err) = run(&db, &["requeue"], &[]).await;
    assert_ne!(code, 0);
    assert!(err.contains("ENRICH_QUEUE_URL is not set"), "{err}");

    assert_eq!(run(&db, &["retry", "--json"], &[]).await.0, 0);
    let expected = ids(
        &db,
        "SELECT push_id FROM push_events WHERE enrichment_status = 'pending'
           AND (enqueued_at IS NULL OR enqueued_at < now() - interval '1 hour')",
    )
    .await;
    let recent = ids(
        &db,
        "SELECT push_id FROM push_events WHERE enqueued_at > now() - interval '10 minutes'",
    )
    .await;
    assert_eq!((expected.len(), recent.len()), (345 + 10 + 5 + 15, 30));

    let (code, out, err) = run(&db, &["requeue", "--json"], &env).await;
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(v["report"]["ran"], true, "{v}");
    assert_eq!(v["report"]["sent"], 375, "{v}");
    assert_eq!(v["report"]["lost_put_back"], 15, "{v}");
    assert_eq!(v["report"]["outbox_after"], 0, "{v}");

    let messages = aws.receive(&queue_url, 375, Duration::from_secs(60)).await;
    let got = Aws::push_ids(&messages);
    assert!(got.values().all(|&n| n == 1), "each push id once");
    assert_eq!(got.keys().copied().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        db.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'pending' AND enqueued_at IS NULL")
            .await,
        0
    );

    // Again: everything was just sent; nothing goes out.
    let (code, out, err) = run(&db, &["requeue"], &env).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("requeue: sent 0 push ids"), "{out}");
    let more = aws.receive(&queue_url, 1, Duration::from_secs(4)).await;
    assert!(more.is_empty(), "{} more messages", more.len());
}
