//! Events and pages built from real data: a real 2026 PushEvent (trimmed shape) with its id
//! and push id remapped, so tests can make feeds of any size.

use crate::replay::Reply;
use serde_json::Value;

fn template() -> Value {
    let path = crate::data_dir().join("api-recordings/events-2026-07-19.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let events: Vec<Value> = serde_json::from_str(&text).expect("recording is a JSON array");
    events
        .into_iter()
        .find(|e| e["type"] == "PushEvent")
        .expect("a PushEvent in the recording")
}

/// A PushEvent with event id `id` and push id `id + 1_000_000_000`.
pub fn push_event(id: i64) -> Value {
    let mut e = template();
    e["id"] = Value::String(id.to_string());
    e["payload"]["push_id"] = Value::from(id + 1_000_000_000);
    e
}

/// A JSON array of push events with these ids, in this order.
pub fn page_body(ids: &[i64]) -> Vec<u8> {
    serde_json::to_vec(&ids.iter().map(|&i| push_event(i)).collect::<Vec<_>>()).unwrap()
}

/// A 200 page of `/events` as GitHub sends it: ETag, rate headers, poll interval and, when
/// `next_page` is given, a Link to it.
pub fn events_page(
    ids: &[i64],
    etag: &str,
    remaining: i32,
    reset: i64,
    next_page: Option<u32>,
) -> Reply {
    let mut r = Reply::new(200)
        .header("content-type", "application/json; charset=utf-8")
        .header("etag", etag)
        .header("x-ratelimit-limit", "60")
        .header("x-ratelimit-remaining", remaining.to_string())
        .header("x-ratelimit-used", (60 - remaining).to_string())
        .header("x-ratelimit-reset", reset.to_string())
        .header("x-ratelimit-resource", "core")
        .header("x-poll-interval", "60")
        .body(page_body(ids));
    if let Some(n) = next_page {
        r = r.header(
            "link",
            format!("<https://api.github.com/events?per_page=100&page={n}>; rel=\"next\", <https://api.github.com/events?per_page=100&page=3>; rel=\"last\""),
        );
    }
    r
}

/// The ids of a recorded `/events` body.
pub fn ids_of(body: &[u8]) -> Vec<i64> {
    let v: Vec<Value> = serde_json::from_slice(body).expect("array");
    v.iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect()
}
