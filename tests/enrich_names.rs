//! Names from push events go into request paths: only GitHub's own character sets are ever
//! requested, and an answer is cached only under the id it is about.

use chrono::Utc;
use ghevents_core::clock::SystemClock;
use ghevents_core::github::RetryPolicy;
use ghevents_core::import::{import_file, Progress};
use ghevents_tests::db::TestDb;
use ghevents_tests::fixtures::push_event;
use ghevents_tests::replay::{ReplayServer, Reply};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// A push event by `login` (id `actor_id`) to `repo` (id `repo_id`).
fn push(id: i64, login: &str, actor_id: i64, repo: &str, repo_id: i64) -> Value {
    let mut e = push_event(id);
    e["actor"]["login"] = json!(login);
    e["actor"]["display_login"] = json!(login);
    e["actor"]["id"] = json!(actor_id);
    e["repo"]["name"] = json!(repo);
    e["repo"]["id"] = json!(repo_id);
    e["payload"]["repository_id"] = json!(repo_id);
    e
}

fn ok(body: Value) -> Reply {
    Reply::new(200)
        .header("content-type", "application/json; charset=utf-8")
        .body(serde_json::to_vec(&body).unwrap())
}

async fn import(db: &TestDb, events: &[Value]) {
    let mut f = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    for e in events {
        writeln!(f, "{e}").unwrap();
    }
    f.flush().unwrap();
    let s = import_file(
        &db.pool,
        f.path(),
        100,
        Arc::new(Progress::default()),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(s.rejected_total(), 0);
}

async fn status_of(db: &TestDb, push_id: i64) -> (String, i32) {
    let r = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT enrichment_status, attempts FROM push_events WHERE push_id = $1",
            &[&push_id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn names_outside_githubs_character_sets_are_never_requested_and_fail_for_good() {
    let db = TestDb::new().await;
    let gh = ReplayServer::start(Arc::new(SystemClock)).await;
    let hostile = [
        ("octocat", "owner/..%2f.."),
        ("octocat", "a/b?x=1"),
        ("octocat", "a/.."),
        ("octocat", "a/b/c"),
        ("octocat", "a/b#frag"),
        ("..", "octocat/hello"),
        ("x?per_page=1", "octocat/hello"),
        ("%2e%2e", "octocat/hello"),
    ];
    let mut events = vec![push(1, "octocat", 1, "octocat/hello", 100)];
    for (i, (login, repo)) in hostile.iter().enumerate() {
        let n = i as i64 + 2;
        // The valid half of each pair is octocat (id 1) or octocat/hello (id 100).
        let actor_id = if *login == "octocat" { 1 } else { 10 + n };
        let repo_id = if *repo == "octocat/hello" {
            100
        } else {
            100 + n
        };
        events.push(push(n, login, actor_id, repo, repo_id));
    }
    import(&db, &events).await;
    gh.push(
        "/users/octocat",
        ok(json!({"id": 1, "login": "octocat", "type": "User"})),
    );
    gh.push(
        "/repos/octocat/hello",
        ok(json!({"id": 100, "full_name": "octocat/hello", "owner": {"login": "octocat"}})),
    );
    let app = ghevents_tests::app(
        &gh.url,
        &db.pool,
        Arc::new(SystemClock),
        &[],
        Some(RetryPolicy {
            max_retries: 1,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }),
    );

    let s = app.enricher().drain().await.unwrap();

    let asked: BTreeSet<(String, Option<String>)> = gh
        .received()
        .into_iter()
        .map(|r| (r.path, r.query))
        .collect();
    let expected: BTreeSet<(String, Option<String>)> = [
        ("/users/octocat".to_owned(), None),
        ("/repos/octocat/hello".to_owned(), None),
    ]
    .into_iter()
    .collect();
    assert_eq!(asked, expected);
    assert!(gh.unexpected().is_empty(), "{:?}", gh.unexpected());
    assert_eq!(
        status_of(&db, 1_000_000_001).await,
        ("completed".to_owned(), 0)
    );
    for n in 2..=hostile.len() as i64 + 1 {
        assert_eq!(
            status_of(&db, 1_000_000_000 + n).await,
            ("failed".to_owned(), 1),
            "push {n}: {:?}",
            hostile[n as usize - 2]
        );
    }
    assert_eq!(s.failed_final, hostile.len() as u64);
    assert_eq!(s.failed_attempts, 0);
}

#[tokio::test]
async fn an_answer_without_the_id_asked_for_is_not_cached_under_it() {
    let db = TestDb::new().await;
    let gh = ReplayServer::start(Arc::new(SystemClock)).await;
    import(&db, &[push(1, "octocat", 1, "octocat/hello", 100)]).await;
    gh.push(
        "/users/octocat",
        ok(json!({"id": 1, "login": "octocat", "type": "User"})),
    );
    // Not a repository (no id at all): nothing to cache under repository 100.
    gh.push(
        "/repos/octocat/hello",
        ok(json!({"message": "a page that is not a repository"})),
    );
    let app = ghevents_tests::app(&gh.url, &db.pool, Arc::new(SystemClock), &[], None);

    app.enricher().drain().await.unwrap();

    assert_eq!(
        db.count("SELECT count(*) FROM repositories WHERE repo_id = 100")
            .await,
        0
    );
    let (status, attempts) = status_of(&db, 1_000_000_001).await;
    assert_ne!(status, "completed");
    assert_eq!(attempts, 1);
}
