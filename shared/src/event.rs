//! The PushEvent parser: pure, no I/O. It reads the Events API shapes GitHub has used since
//! 2012 — full payloads (2015, 2021), payloads without `before` (2012) and the trimmed
//! payload of 2025-10-07 onwards (`repository_id, push_id, ref, head, before` only) — and
//! names the field when it cannot.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Why an event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` is not {expected}")]
    WrongType { field: &'static str, expected: &'static str },
}

impl ParseError {
    /// A short, stable reason for summaries and log fields.
    pub fn code(&self) -> String {
        match self {
            ParseError::InvalidJson(_) => "invalid_json".into(),
            ParseError::NotAnObject => "not_an_object".into(),
            ParseError::MissingField(f) => format!("missing_{}", f.replace('.', "_")),
            ParseError::WrongType { field, .. } => format!("bad_{}", field.replace('.', "_")),
        }
    }
}

/// The columns every stored event gets, whatever its type.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub event_id: i64,
    pub event_type: Option<String>,
    pub actor_id: Option<i64>,
    pub actor_login: Option<String>,
    pub repo_id: Option<i64>,
    pub repo_name: Option<String>,
    pub org_id: Option<i64>,
    pub public: Option<bool>,
    pub created_at: Option<DateTime<Utc>>,
}

/// A PushEvent in structured form.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRow {
    pub push_id: i64,
    pub event_id: i64,
    pub repo_id: i64,
    pub repo_name: String,
    pub actor_id: i64,
    pub actor_login: String,
    pub git_ref: Option<String>,
    pub head: Option<String>,
    pub before: Option<String>,
    pub size: Option<i32>,
    pub distinct_size: Option<i32>,
    pub commit_count: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// What the parser made of one raw event that has an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A PushEvent, read in full.
    Push(EventRow, PushRow),
    /// Another event type: stored raw, nothing more to read.
    Other(EventRow),
    /// It has an id (so it is stored, raw), but something it must have is missing or wrong.
    Failed(EventRow, ParseError),
}

impl Parsed {
    pub fn event(&self) -> &EventRow {
        match self {
            Parsed::Push(e, _) | Parsed::Other(e) | Parsed::Failed(e, _) => e,
        }
    }
}

/// Parses one raw event. `Err` means it has no usable id and cannot be stored at all.
pub fn parse_event(raw: &RawValue) -> Result<Parsed, ParseError> {
    parse_event_str(raw.get())
}

/// Same as [`parse_event`], from text (one NDJSON line).
pub fn parse_event_str(text: &str) -> Result<Parsed, ParseError> {
    // Borrowed view: only the fields we read are materialised; `payload` stays raw.
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        #[serde(rename = "type")]
        event_type: Option<Value>,
        #[serde(borrow)]
        actor: Option<&'a RawValue>,
        #[serde(borrow)]
        repo: Option<&'a RawValue>,
        #[serde(borrow)]
        org: Option<&'a RawValue>,
        public: Option<Value>,
        created_at: Option<Value>,
        #[serde(borrow)]
        payload: Option<&'a RawValue>,
    }
    let env: Envelope = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            ParseError::NotAnObject
        } else {
            ParseError::InvalidJson(e.to_string())
        }
    })?;
    let event_id = match env.id {
        None => return Err(ParseError::MissingField("id")),
        Some(raw) => id_of(raw).ok_or(ParseError::WrongType { field: "id", expected: "an integer id" })?,
    };
    let mut row = EventRow {
        event_id,
        event_type: env.event_type.as_ref().and_then(Value::as_str).map(str::to_owned),
        actor_id: None,
        actor_login: None,
        repo_id: None,
        repo_name: None,
        org_id: None,
        public: env.public.as_ref().and_then(Value::as_bool),
        created_at: None,
    };
    let view = View {
        event_type: env.event_type.as_ref(),
        actor: env.actor,
        repo: env.repo,
        org: env.org,
        created_at: env.created_at.as_ref(),
        payload: env.payload,
    };
    match read_rest(&view, &mut row) {
        Ok(push) => Ok(match push {
            Some(p) => Parsed::Push(row, p),
            None => Parsed::Other(row),
        }),
        Err(e) => Ok(Parsed::Failed(row, e)),
    }
}

struct View<'a> {
    event_type: Option<&'a Value>,
    actor: Option<&'a RawValue>,
    repo: Option<&'a RawValue>,
    org: Option<&'a RawValue>,
    created_at: Option<&'a Value>,
    payload: Option<&'a RawValue>,
}

fn read_rest(v: &View<'_>, row: &mut EventRow) -> Result<Option<PushRow>, ParseError> {
    let event_type = match v.event_type {
        None => return Err(ParseError::MissingField("type")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(ParseError::WrongType { field: "type", expected: "a string" }),
    };
    let actor = object(v.actor, "actor")?;
    row.actor_id = Some(int_field(&actor, "id", "actor.id")?);
    row.actor_login = Some(str_field(&actor, "login", "actor.login")?);
    let repo = object(v.repo, "repo")?;
    row.repo_id = Some(int_field(&repo, "id", "repo.id")?);
    row.repo_name = Some(str_field(&repo, "name", "repo.name")?);
    if let Some(org) = v.org {
        let org = object(Some(org), "org")?;
        row.org_id = Some(int_field(&org, "id", "org.id")?);
    }
    let created_at = match v.created_at {
        None => return Err(ParseError::MissingField("created_at")),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| ParseError::WrongType { field: "created_at", expected: "an RFC 3339 timestamp" })?
            .to_utc(),
        Some(_) => return Err(ParseError::WrongType { field: "created_at", expected: "a string" }),
    };
    row.created_at = Some(created_at);
    if event_type != "PushEvent" {
        return Ok(None);
    }
    let payload = object(v.payload, "payload")?;
    let push_id = int_field(&payload, "push_id", "payload.push_id")?;
    let opt_str = |k: &'static str, name: &'static str| -> Result<Option<String>, ParseError> {
        match payload.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ParseError::WrongType { field: name, expected: "a string" }),
        }
    };
    let opt_int = |k: &'static str, name: &'static str| -> Result<Option<i32>, ParseError> {
        match payload.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(Some)
                .ok_or(ParseError::WrongType { field: name, expected: "an integer" }),
        }
    };
    let commit_count = match payload.get("commits") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(i32::try_from(a.len()).unwrap_or(i32::MAX)),
        Some(_) => return Err(ParseError::WrongType { field: "payload.commits", expected: "an array" }),
    };
    Ok(Some(PushRow {
        push_id,
        event_id: row.event_id,
        repo_id: row.repo_id.unwrap_or_default(),
        repo_name: row.repo_name.clone().unwrap_or_default(),
        actor_id: row.actor_id.unwrap_or_default(),
        actor_login: row.actor_login.clone().unwrap_or_default(),
        git_ref: opt_str("ref", "payload.ref")?,
        head: opt_str("head", "payload.head")?,
        before: opt_str("before", "payload.before")?,
        size: opt_int("size", "payload.size")?,
        distinct_size: opt_int("distinct_size", "payload.distinct_size")?,
        commit_count,
        created_at,
    }))
}

fn object(raw: Option<&RawValue>, field: &'static str) -> Result<serde_json::Map<String, Value>, ParseError> {
    let raw = raw.ok_or(ParseError::MissingField(field))?;
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Err(ParseError::MissingField(field)),
        _ => Err(ParseError::WrongType { field, expected: "an object" }),
    }
}

fn int_field(m: &serde_json::Map<String, Value>, key: &str, name: &'static str) -> Result<i64, ParseError> {
    match m.get(key) {
        None | Some(Value::Null) => Err(ParseError::MissingField(name)),
        Some(Value::Number(n)) => n.as_i64().ok_or(ParseError::WrongType { field: name, expected: "an integer" }),
        Some(Value::String(s)) => s.parse().map_err(|_| ParseError::WrongType { field: name, expected: "an integer" }),
        Some(_) => Err(ParseError::WrongType { field: name, expected: "an integer" }),
    }
}

fn str_field(m: &serde_json::Map<String, Value>, key: &str, name: &'static str) -> Result<String, ParseError> {
    match m.get(key) {
        None | Some(Value::Null) => Err(ParseError::MissingField(name)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ParseError::WrongType { field: name, expected: "a string" }),
    }
}

/// Event ids are JSON strings ("2489368070"); numbers are accepted too.
fn id_of(raw: &RawValue) -> Option<i64> {
    match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}
