//! The `/_sim` control endpoints: health, stats, releases, faults, limits.

use std::sync::{Arc, PoisonError};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::{lock, Shared};
use crate::faults::FaultRule;

/// Lenient JSON body: empty means defaults; curl's form content type is fine.
fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": format!("bad control body: {e}")})),
            )
                .into_response(),
        )
    })
}

pub(super) async fn ctl_health(State(sh): State<Arc<Shared>>) -> Response {
    let released = lock(&sh.timeline).refresh();
    let (users, repos) = {
        let d = sh.dir.read().unwrap_or_else(PoisonError::into_inner);
        (d.users_known(), d.repos_known())
    };
    Json(json!({
        "loaded": sh.load.loaded,
        "skipped_lines": sh.load.skipped,
        "released": released,
        "users": users,
        "repos": repos,
    }))
    .into_response()
}

pub(super) async fn ctl_stats(State(sh): State<Arc<Shared>>) -> Response {
    Json(sh.stats()).into_response()
}

pub(super) async fn ctl_reset_stats(State(sh): State<Arc<Shared>>) -> Response {
    lock(&sh.stats).reset();
    Json(json!({"ok": true})).into_response()
}

pub(super) async fn ctl_reset_limits(State(sh): State<Arc<Shared>>) -> Response {
    lock(&sh.rate).reset();
    Json(json!({"ok": true})).into_response()
}

#[derive(Deserialize)]
#[serde(default)]
struct CountBody {
    count: u32,
}

impl Default for CountBody {
    fn default() -> Self {
        CountBody { count: 1 }
    }
}

pub(super) async fn ctl_release(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_body::<CountBody>(&body) {
        Ok(b) => {
            let released = sh.release(b.count as usize);
            Json(json!({"released": released})).into_response()
        }
        Err(r) => *r,
    }
}

pub(super) async fn ctl_faults_list(State(sh): State<Arc<Shared>>) -> Response {
    Json(lock(&sh.faults).pending()).into_response()
}

pub(super) async fn ctl_faults_add(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultRule>(&body) {
        Ok(rule) => {
            tracing::info!(prefix = %rule.path_prefix, count = rule.count, fault = %rule.fault, "fault armed");
            lock(&sh.faults).inject(rule);
            Json(json!({"ok": true})).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": format!("bad fault rule: {e}")})),
        )
            .into_response(),
    }
}

pub(super) async fn ctl_faults_clear(State(sh): State<Arc<Shared>>) -> Response {
    lock(&sh.faults).clear();
    Json(json!({"ok": true})).into_response()
}

pub(super) async fn ctl_secondary(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_body::<CountBody>(&body) {
        Ok(b) => {
            lock(&sh.faults).trigger_secondary(b.count);
            Json(json!({"ok": true})).into_response()
        }
        Err(r) => *r,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GoneBody {
    users: Vec<String>,
    repos: Vec<String>,
}

pub(super) async fn ctl_gone(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_body::<GoneBody>(&body) {
        Ok(b) => {
            sh.mark_gone(&b.users, &b.repos);
            Json(json!({"ok": true})).into_response()
        }
        Err(r) => *r,
    }
}
