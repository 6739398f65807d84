//! Events that are valid JSON but hold what Postgres cannot store — a `\u0000` escape, a UTF-16
//! surrogate escape without its other half, a number beyond `numeric` — on every path that
//! writes them: ingest pages (raw inline and in an object store), `ghevents import`, and the
//! enrichment cache. One such event never costs the rest of its page, file or answer.

use chrono::{DateTime, TimeZone, Utc};
use ghevents_core::clock::ManualClock;
use ghevents_core::ingest::Outcome;
use ghevents_core::raw::{MemoryObjects, ObjectRaw, RawStore};
use ghevents_tests::db::TestDb;
use ghevents_tests::fixtures::push_event;
use ghevents_tests::replay::{ReplayServer, Reply};
use ghevents_tests::{data_dir, ghevents_bin};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Event ids of the crafted events (the rest of the page counts up from 1).
const SURROGATE_ID: i64 = 900_001;
const NUL_ID: i64 = 900_002;
const HUGE_NUMBER_ID: i64 = 900_003;

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap()
}

/// One event per line as JSON text: 97 plain push events, then one with a lone surrogate in
/// its actor's login and payload, one with NULs in its ref and repo name, and one with a
/// number no `numeric` holds. Placeholders are swapped for raw escapes after serializing:
/// serde_json never writes a lone surrogate.
fn crafted_events() -> Vec<String> {
    let mut out: Vec<String> = (1..=97)
        .map(|id| serde_json::to_string(&push_event(id)).unwrap())
        .collect();
    let mut e = push_event(SURROGATE_ID);
    e["actor"]["login"] = Value::from("SURROGATE-login");
    e["payload"]["before"] = Value::from("SURROGATE");
    out.push(
        serde_json::to_string(&e)
            .unwrap()
            .replace("SURROGATE", "\\ud83d"),
    );
    let mut e = push_event(NUL_ID);
    e["payload"]["ref"] = Value::from("refs/heads/ma\0in");
    e["repo"]["name"] = Value::from("owner/re\0po");
    let text = serde_json::to_string(&e).unwrap();
    assert!(text.contains("\\u0000"), "serde_json escapes NUL: {text}");
    out.push(text);
    let mut e = push_event(HUGE_NUMBER_ID);
    e["payload"]["size"] = Value::from("HUGE");
    out.push(
        serde_json::to_string(&e)
            .unwrap()
            .replace("\"HUGE\"", "1e1000000"),
    );
    out
}

fn page_reply(events: &[String]) -> Reply {
    Reply::new(200)
        .header("content-type", "application/json; charset=utf-8")
        .header("etag", "W/\"bad\"")
        .header("x-ratelimit-limit", "60")
        .header("x-ratelimit-remaining", "59")
        .header("x-ratelimit-reset", "4102444800")
        .header("x-poll-interval", "60")
        .body(format!("[{}]", events.join(",")))
}

async fn ingest_crafted_page(db: &TestDb, raw: Option<Arc<dyn RawStore>>) {
    let clock = ManualClock::at(t0());
    let gh = ReplayServer::start(Arc::new(clock.clone())).await;
    gh.push("/events", page_reply(&crafted_events()));
    let app = ghevents_tests::app(&gh.url, &db.pool, Arc::new(clock.clone()), &[], None);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let ingestor = app.ingestor(raw, None, stop);

    let s = ingestor.run_cycle().await.expect("the cycle completes");

    assert_eq!(s.outcome, Outcome::Completed);
    assert_eq!((s.events_fetched, s.new_events), (100, 100));
    assert_eq!(s.rejected, 0);
    // The surrogate and the NUL events are pushes like the others; the one Postgres refuses
    // is kept as failed, without a push row.
    assert_eq!(s.new_push_events, 99);
    assert_eq!(s.parse_failures, 1);
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 100);
    assert_eq!(db.count("SELECT count(*) FROM push_events").await, 99);
    let again = ingestor.run_cycle().await;
    assert!(again.is_ok(), "{again:?}");
}

async fn one_row(db: &TestDb, sql: &str, id: i64) -> tokio_postgres::Row {
    db.pool
        .get()
        .await
        .unwrap()
        .query_one(sql, &[&id])
        .await
        .unwrap()
}

#[tokio::test]
async fn a_page_with_a_lone_surrogate_a_nul_and_a_huge_number_is_stored_whole_inline() {
    let db = TestDb::new().await;

    ingest_crafted_page(&db, None).await;

    let events = crafted_events();
    let r = one_row(
        &db,
        "SELECT p.actor_login, p.before, g.sanitized, g.raw->'actor'->>'login', g.raw_original
         FROM push_events p JOIN github_events g USING (event_id) WHERE event_id = $1",
        SURROGATE_ID,
    )
    .await;
    assert_eq!(r.get::<_, &str>(0), "\u{fffd}-login");
    assert_eq!(r.get::<_, &str>(1), "\u{fffd}");
    assert!(r.get::<_, bool>(2));
    assert_eq!(r.get::<_, &str>(3), "\u{fffd}-login");
    // The exact bytes GitHub sent are kept beside the readable copy.
    assert_eq!(r.get::<_, &[u8]>(4), events[97].as_bytes());

    let r = one_row(
        &db,
        "SELECT p.ref, p.repo_name, g.repo_name, g.sanitized, g.raw->'payload'->>'ref'
         FROM push_events p JOIN github_events g USING (event_id) WHERE event_id = $1",
        NUL_ID,
    )
    .await;
    assert_eq!(r.get::<_, &str>(0), "refs/heads/ma\u{fffd}in");
    assert_eq!(r.get::<_, &str>(1), "owner/re\u{fffd}po");
    assert_eq!(r.get::<_, &str>(2), "owner/re\u{fffd}po");
    assert!(r.get::<_, bool>(3));
    assert_eq!(r.get::<_, &str>(4), "refs/heads/ma\u{fffd}in");

    let r = one_row(
        &db,
        "SELECT parse_status, parse_error, raw IS NULL, raw_original FROM github_events WHERE event_id = $1",
        HUGE_NUMBER_ID,
    )
    .await;
    assert_eq!(r.get::<_, &str>(0), "failed");
    let reason: &str = r.get(1);
    assert!(reason.contains("refused by Postgres"), "{reason}");
    assert!(r.get::<_, bool>(2));
    assert_eq!(r.get::<_, &[u8]>(3), events[99].as_bytes());
    let raw = ghevents_core::raw::read_raw(&db.pool, None, HUGE_NUMBER_ID)
        .await
        .unwrap();
    assert_eq!(raw, events[99].as_bytes());

    assert_eq!(
        db.count("SELECT count(*) FROM github_events WHERE sanitized")
            .await,
        3
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM github_events WHERE parse_status = 'parsed' AND NOT sanitized"
        )
        .await,
        97
    );
}

#[tokio::test]
async fn a_page_with_a_lone_surrogate_a_nul_and_a_huge_number_is_stored_whole_in_objects() {
    let db = TestDb::new().await;
    let objects = Arc::new(MemoryObjects::new());
    let raw: Arc<dyn RawStore> = Arc::new(ObjectRaw::new(objects.clone(), "raw/"));

    ingest_crafted_page(&db, Some(raw)).await;

    // Out of line, the object keeps the bytes exactly; only the columns are sanitized.
    let events = crafted_events();
    for (id, line) in [(SURROGATE_ID, 97), (NUL_ID, 98), (HUGE_NUMBER_ID, 99)] {
        let r = one_row(
            &db,
            "SELECT sanitized, raw IS NULL, raw_original IS NULL, raw_object_line FROM github_events WHERE event_id = $1",
            id,
        )
        .await;
        // The huge number is no trouble for text columns: that event is not sanitized.
        assert_eq!(
            (
                r.get::<_, bool>(0),
                r.get::<_, bool>(1),
                r.get::<_, bool>(2)
            ),
            (id != HUGE_NUMBER_ID, true, true),
            "event {id}"
        );
        assert_eq!(r.get::<_, i32>(3), line);
        let bytes = ghevents_core::raw::read_raw(&db.pool, Some(objects.as_ref()), id)
            .await
            .unwrap();
        assert_eq!(bytes, events[line as usize].as_bytes());
    }
    let r = one_row(
        &db,
        "SELECT ref FROM push_events WHERE event_id = $1",
        NUL_ID,
    )
    .await;
    assert_eq!(r.get::<_, &str>(0), "refs/heads/ma\u{fffd}in");
    // Out of line, jsonb never sees the huge number: the event is an ordinary failed parse.
    assert_eq!(
        db.count("SELECT count(*) FROM github_events WHERE parse_status = 'failed'")
            .await,
        1
    );
}

async fn run_import(db: &TestDb, file: &std::path::Path) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(ghevents_bin())
            .args(["import", file.to_str().unwrap()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("GITHUB_API_URL", "http://127.0.0.1:9")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ghevents finished in time")
    .expect("ghevents ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_import_stores_every_line_postgres_can_hold_and_exits_zero() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crafted.jsonl");
    // The last line has no newline.
    std::fs::write(&file, crafted_events().join("\n")).unwrap();

    let (code, out, err) = run_import(&db, &file).await;

    // Sanitized and refused events are stored (the refused one as failed): nothing rejected.
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("lines=100 stored=100 duplicates=0 push_events=99 parse_failed=1 rejected=0"),
        "{out}"
    );
    assert!(out.contains("sanitized=2 refused=1"), "{out}");
    assert_eq!(
        db.count("SELECT count(*) FROM github_events WHERE source = 'archive'")
            .await,
        100
    );
    let (code, out, _) = run_import(&db, &file).await;
    assert_eq!(code, 0);
    assert!(out.contains("stored=0 duplicates=100"), "{out}");
}

#[tokio::test]
async fn an_import_with_unreadable_lines_stores_the_rest_and_exits_non_zero() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.jsonl");
    let events = crafted_events();
    let mut bytes = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if i == 10 {
            bytes.extend_from_slice(b"{\"id\":\"5\",\"type\":\"\xff\xfe\"}\n");
        }
        bytes.extend_from_slice(e.as_bytes());
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(b"{\"id\":\"-7\",\"type\":\"PushEvent\"}\n");
    std::fs::write(&file, bytes).unwrap();

    let (code, out, err) = run_import(&db, &file).await;

    assert_eq!(
        code, 1,
        "a file with rejected lines exits non-zero: {out}{err}"
    );
    assert!(
        out.contains("lines=102 stored=100 duplicates=0 push_events=99 parse_failed=1 rejected=2"),
        "{out}"
    );
    assert!(out.contains("rejected not_utf8: 1"), "{out}");
    assert!(out.contains("rejected bad_id: 1"), "{out}");
}

/// A `/users` or `/repos` answer holding NULs (jsonb and text columns refuse them) or a lone
/// surrogate (serde_json refuses it in a string) is cached with U+FFFD.
#[tokio::test]
async fn enrichment_answers_holding_nul_and_lone_surrogates_are_cached() {
    let db = TestDb::new().await;
    let clock = ManualClock::at(t0());
    let gh = ReplayServer::start(Arc::new(clock.clone())).await;
    let event = push_event(1);
    let login = event["actor"]["login"].as_str().unwrap().to_owned();
    let actor_id = event["actor"]["id"].as_i64().unwrap();
    let repo = event["repo"]["name"].as_str().unwrap().to_owned();
    let repo_id = event["repo"]["id"].as_i64().unwrap();
    gh.push(
        "/events",
        page_reply(&[serde_json::to_string(&event).unwrap()]),
    );

    let recorded = |file: &str| -> Value {
        let path = data_dir().join("api-recordings/pygithub").join(file);
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v[0]["response_body"].clone()
    };
    let mut user = recorded("NamedUser.setUp.json");
    user["id"] = Value::from(actor_id);
    user["login"] = Value::from(login.clone());
    user["company"] = Value::from("Acme\0Corp");
    user["bio"] = Value::from("SURROGATE");
    let user_body = serde_json::to_string(&user)
        .unwrap()
        .replace("SURROGATE", "\\udc00");
    let mut r = recorded("Repository.setUp.json");
    r["id"] = Value::from(repo_id);
    r["full_name"] = Value::from(repo.clone());
    r["language"] = Value::from("Ru\0st");
    r["description"] = Value::from("\0");
    let ok = |body: String| {
        Reply::new(200)
            .header("content-type", "application/json; charset=utf-8")
            .header("etag", "\"e\"")
            .header("x-ratelimit-limit", "5000")
            .header("x-ratelimit-remaining", "4990")
            .header("x-ratelimit-reset", "4102444800")
            .body(body)
    };
    gh.push(&format!("/users/{login}"), ok(user_body));
    gh.push(
        &format!("/repos/{repo}"),
        ok(serde_json::to_string(&r).unwrap()),
    );
    let app = ghevents_tests::app(&gh.url, &db.pool, Arc::new(clock.clone()), &[], None);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    app.ingestor(None, None, stop).run_cycle().await.unwrap();

    app.enricher().drain().await.unwrap();

    let c = db.pool.get().await.unwrap();
    let a = c
        .query_one(
            "SELECT status, company, raw->>'company', raw->>'bio' FROM actors WHERE actor_id = $1",
            &[&actor_id],
        )
        .await
        .unwrap();
    assert_eq!(a.get::<_, &str>(0), "ok");
    assert_eq!(a.get::<_, &str>(1), "Acme\u{fffd}Corp");
    assert_eq!(a.get::<_, &str>(2), "Acme\u{fffd}Corp");
    assert_eq!(a.get::<_, &str>(3), "\u{fffd}");
    let r = c
        .query_one(
            "SELECT status, language, raw->>'description' FROM repositories WHERE repo_id = $1",
            &[&repo_id],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, &str>(0), "ok");
    assert_eq!(r.get::<_, &str>(1), "Ru\u{fffd}st");
    assert_eq!(r.get::<_, &str>(2), "\u{fffd}");
    assert_eq!(
        db.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'completed'")
            .await,
        1
    );
}
