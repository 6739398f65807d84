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
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
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
    /// The event's text held what Postgres cannot store (a `\u0000` or a lone surrogate
    /// escape), read as U+FFFD: see [`crate::sanitize`].
    pub sanitized: bool,
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

impl PushRow {
    /// What the push updated, from its ref: see [`ref_type_of`].
    pub fn ref_type(&self) -> Option<&'static str> {
        ref_type_of(self.git_ref.as_deref())
    }
}

/// `branch` for `refs/heads/*`, `tag` for `refs/tags/*`, `other` for any other ref; `None`
/// when there is no ref.
pub fn ref_type_of(git_ref: Option<&str>) -> Option<&'static str> {
    let r = git_ref?;
    Some(if r.starts_with("refs/heads/") {
        "branch"
    } else if r.starts_with("refs/tags/") {
        "tag"
    } else {
        "other"
    })
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
    // What Postgres cannot hold is read as U+FFFD, so a lone surrogate in a login reads as a
    // login (and is stored) rather than failing the event, and no column gets a NUL byte.
    let clean = crate::sanitize::json_text(text);
    let sanitized = matches!(clean, std::borrow::Cow::Owned(_));
    parse_clean(&clean, sanitized)
}

fn parse_clean(text: &str, sanitized: bool) -> Result<Parsed, ParseError> {
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
        Some(raw) => id_of(raw).ok_or(ParseError::WrongType {
            field: "id",
            expected: "a positive integer id",
        })?,
    };
    let mut row = EventRow {
        event_id,
        event_type: env
            .event_type
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_owned),
        actor_id: None,
        actor_login: None,
        repo_id: None,
        repo_name: None,
        org_id: None,
        public: env.public.as_ref().and_then(Value::as_bool),
        created_at: None,
        sanitized,
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
        Some(_) => {
            return Err(ParseError::WrongType {
                field: "type",
                expected: "a string",
            })
        }
    };
    // A PushEvent must say who pushed where; other types (GistEvent, FollowEvent, …) may
    // lack a repo or an actor id and keep what they have. A field of the wrong type is an
    // error for every event.
    let strict = event_type == "PushEvent";
    if let Some(actor) = present_object(v.actor, "actor", strict)? {
        row.actor_id = int_field(&actor, "id", "actor.id", strict)?;
        row.actor_login = str_field(&actor, "login", "actor.login", strict)?;
    }
    if let Some(repo) = present_object(v.repo, "repo", strict)? {
        row.repo_id = int_field(&repo, "id", "repo.id", strict)?;
        row.repo_name = str_field(&repo, "name", "repo.name", strict)?;
    }
    if let Some(org) = present_object(v.org, "org", false)? {
        row.org_id = int_field(&org, "id", "org.id", false)?;
    }
    let created_at = match v.created_at {
        None => return Err(ParseError::MissingField("created_at")),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| ParseError::WrongType {
                field: "created_at",
                expected: "an RFC 3339 timestamp",
            })?
            .to_utc(),
        Some(_) => {
            return Err(ParseError::WrongType {
                field: "created_at",
                expected: "a string",
            })
        }
    };
    row.created_at = Some(created_at);
    if event_type != "PushEvent" {
        return Ok(None);
    }
    let payload = present_object(v.payload, "payload", true)?.unwrap_or_default();
    let push_id = int_field(&payload, "push_id", "payload.push_id", true)?.unwrap_or_default();
    let opt_str = |k: &'static str, name: &'static str| -> Result<Option<String>, ParseError> {
        match payload.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ParseError::WrongType {
                field: name,
                expected: "a string",
            }),
        }
    };
    let opt_int = |k: &'static str, name: &'static str| -> Result<Option<i32>, ParseError> {
        match payload.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(Some)
                .ok_or(ParseError::WrongType {
                    field: name,
                    expected: "an integer",
                }),
        }
    };
    let commit_count = match payload.get("commits") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(i32::try_from(a.len()).unwrap_or(i32::MAX)),
        Some(_) => {
            return Err(ParseError::WrongType {
                field: "payload.commits",
                expected: "an array",
            })
        }
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

/// The object at `field`: `None` when absent or null (an error if `required`), an error when
/// it is something other than an object.
fn present_object(
    raw: Option<&RawValue>,
    field: &'static str,
    required: bool,
) -> Result<Option<serde_json::Map<String, Value>>, ParseError> {
    let parsed = match raw {
        None => Value::Null,
        Some(raw) => {
            serde_json::from_str::<Value>(raw.get()).map_err(|_| ParseError::WrongType {
                field,
                expected: "an object",
            })?
        }
    };
    match parsed {
        Value::Object(m) => Ok(Some(m)),
        Value::Null if required => Err(ParseError::MissingField(field)),
        Value::Null => Ok(None),
        _ => Err(ParseError::WrongType {
            field,
            expected: "an object",
        }),
    }
}

fn int_field(
    m: &serde_json::Map<String, Value>,
    key: &str,
    name: &'static str,
    required: bool,
) -> Result<Option<i64>, ParseError> {
    let wrong = ParseError::WrongType {
        field: name,
        expected: "an integer",
    };
    match m.get(key) {
        None | Some(Value::Null) if required => Err(ParseError::MissingField(name)),
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(wrong),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| wrong),
        Some(_) => Err(wrong),
    }
}

fn str_field(
    m: &serde_json::Map<String, Value>,
    key: &str,
    name: &'static str,
    required: bool,
) -> Result<Option<String>, ParseError> {
    match m.get(key) {
        None | Some(Value::Null) if required => Err(ParseError::MissingField(name)),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ParseError::WrongType {
            field: name,
            expected: "a string",
        }),
    }
}

/// Event ids are JSON strings ("2489368070"); numbers are accepted too. GitHub's ids are
/// positive: zero, a negative number or one beyond `i64` is no id.
fn id_of(raw: &RawValue) -> Option<i64> {
    let id = match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::String(s) => s.parse().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    (id > 0).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIMMED: &str = r#"{"id":"12660541189","type":"PushEvent","actor":{"id":280740748,"login":"francods9-tech","display_login":"francods9-tech"},"repo":{"id":1251357380,"name":"francods9-tech/customers"},"payload":{"repository_id":1251357380,"push_id":34950197608,"ref":"refs/heads/main","head":"961e9b9be3607af7772e80181227fef92cf67076","before":"8475abe0ec483ea5c0697e2ab9a3dd595fa3f3df"},"public":true,"created_at":"2026-06-01T15:00:00Z","org":{"id":1005263,"login":"dotCMS"}}"#;
    const FULL_2015: &str = r#"{"id":"2489368070","type":"PushEvent","actor":{"id":9152315,"login":"davidjhulse"},"repo":{"id":28635890,"name":"davidjhulse/davesbingrewardsbot"},"payload":{"push_id":536740396,"size":1,"distinct_size":1,"ref":"refs/heads/master","head":"a9b22a6d","before":"86ffa724","commits":[{"sha":"a9b22a6d"}]},"public":true,"created_at":"2015-01-01T00:00:00Z"}"#;
    const NO_BEFORE_2012: &str = r#"{"created_at":"2012-04-01T00:00:01Z","payload":{"commits":[{"sha":"66d8"},{"sha":"77e9"}],"push_id":70418413,"ref":"refs/heads/master","head":"66d8","size":2},"repo":{"id":3622324,"name":"creamsoup/TourMeCreahmy"},"type":"PushEvent","public":true,"actor":{"id":1428028,"login":"hmy"},"id":"1536460832"}"#;

    fn push(text: &str) -> PushRow {
        match parse_event_str(text).unwrap() {
            Parsed::Push(_, p) => p,
            other => panic!("expected a push event, got {other:?}"),
        }
    }

    #[test]
    fn trimmed_2025_payload_leaves_counts_null() {
        let p = push(TRIMMED);
        assert_eq!(p.push_id, 34950197608);
        assert_eq!(p.event_id, 12660541189);
        assert_eq!(
            (p.repo_id, p.repo_name.as_str()),
            (1251357380, "francods9-tech/customers")
        );
        assert_eq!(
            (p.actor_id, p.actor_login.as_str()),
            (280740748, "francods9-tech")
        );
        assert_eq!(p.git_ref.as_deref(), Some("refs/heads/main"));
        assert_eq!(
            p.before.as_deref(),
            Some("8475abe0ec483ea5c0697e2ab9a3dd595fa3f3df")
        );
        assert_eq!(
            (p.size, p.distinct_size, p.commit_count),
            (None, None, None)
        );
        let Parsed::Push(e, _) = parse_event_str(TRIMMED).unwrap() else {
            unreachable!()
        };
        assert_eq!(e.org_id, Some(1005263));
        assert_eq!(e.public, Some(true));
    }

    #[test]
    fn ref_type_names_branches_tags_and_the_rest() {
        assert_eq!(ref_type_of(Some("refs/heads/main")), Some("branch"));
        assert_eq!(ref_type_of(Some("refs/heads/feature/x")), Some("branch"));
        assert_eq!(ref_type_of(Some("refs/tags/v1.0")), Some("tag"));
        assert_eq!(ref_type_of(Some("refs/notes/commits")), Some("other"));
        assert_eq!(ref_type_of(Some("main")), Some("other"));
        assert_eq!(ref_type_of(Some("refs/heads")), Some("other"));
        assert_eq!(ref_type_of(None), None);
        assert_eq!(push(FULL_2015).ref_type(), Some("branch"));
    }

    #[test]
    fn full_2015_payload_keeps_counts() {
        let p = push(FULL_2015);
        assert_eq!(
            (p.size, p.distinct_size, p.commit_count),
            (Some(1), Some(1), Some(1))
        );
        assert_eq!(p.created_at.to_rfc3339(), "2015-01-01T00:00:00+00:00");
    }

    #[test]
    fn payload_of_2012_has_no_before_nor_distinct_size() {
        let p = push(NO_BEFORE_2012);
        assert_eq!(p.before, None);
        assert_eq!(
            (p.size, p.distinct_size, p.commit_count),
            (Some(2), None, Some(2))
        );
    }

    #[test]
    fn an_event_without_id_cannot_be_stored() {
        let old_timeline = r#"{"actor":"hayajo","type":"PushEvent","created_at":"2012-10-13T00:00:17-07:00","repository":{"id":5960315},"payload":{"shas":[]}}"#;
        assert_eq!(
            parse_event_str(old_timeline),
            Err(ParseError::MissingField("id"))
        );
        assert_eq!(parse_event_str("[1,2]"), Err(ParseError::NotAnObject));
        assert!(matches!(
            parse_event_str("{\"id\":"),
            Err(ParseError::InvalidJson(_))
        ));
        assert_eq!(
            parse_event_str(r#"{"id":"abc","type":"PushEvent"}"#),
            Err(ParseError::WrongType {
                field: "id",
                expected: "a positive integer id"
            })
        );
    }

    #[test]
    fn a_push_event_with_an_id_but_no_push_id_is_stored_as_failed() {
        let text = FULL_2015.replace("\"push_id\":536740396,", "");
        match parse_event_str(&text).unwrap() {
            Parsed::Failed(e, err) => {
                assert_eq!(e.event_id, 2489368070);
                assert_eq!(err, ParseError::MissingField("payload.push_id"));
                assert_eq!(err.to_string(), "missing field `payload.push_id`");
            }
            other => panic!("expected failure, got {other:?}"),
        }
    }

    #[test]
    fn an_actor_that_is_not_an_object_fails_whatever_the_type() {
        for t in ["PushEvent", "WatchEvent"] {
            let text = format!(
                r#"{{"id":"1","type":"{t}","actor":"hayajo","repo":{{"id":1,"name":"a/b"}},"created_at":"2015-01-01T00:00:00Z"}}"#
            );
            match parse_event_str(&text).unwrap() {
                Parsed::Failed(_, err) => assert_eq!(
                    err,
                    ParseError::WrongType {
                        field: "actor",
                        expected: "an object"
                    }
                ),
                other => panic!("expected failure, got {other:?}"),
            }
        }
    }

    #[test]
    fn retired_types_without_repo_are_kept_as_other_events() {
        let gist = r#"{"id":"1536460900","type":"GistEvent","actor":{"url":"https://api.github.dev/users/"},"repo":{"url":"https://api.github.dev/repos//","name":"/"},"payload":{},"public":true,"created_at":"2012-04-01T00:00:05Z"}"#;
        match parse_event_str(gist).unwrap() {
            Parsed::Other(e) => {
                assert_eq!(e.event_type.as_deref(), Some("GistEvent"));
                assert_eq!((e.actor_id, e.repo_id), (None, None));
                assert_eq!(e.repo_name.as_deref(), Some("/"));
            }
            other => panic!("expected other, got {other:?}"),
        }
    }

    #[test]
    fn numeric_ids_and_offset_timestamps_are_accepted() {
        let text = FULL_2015
            .replace("\"id\":\"2489368070\"", "\"id\":2489368070")
            .replace("2015-01-01T00:00:00Z", "2014-12-31T17:00:00-07:00");
        let p = push(&text);
        assert_eq!(p.event_id, 2489368070);
        assert_eq!(p.created_at.to_rfc3339(), "2015-01-01T00:00:00+00:00");
    }

    #[test]
    fn what_postgres_cannot_hold_is_read_as_the_replacement_character() {
        let text = TRIMMED
            .replace("francods9-tech\"", "francods9\\ud83d-tech\"")
            .replace("refs/heads/main", "refs/heads/ma\\u0000in");
        match parse_event_str(&text).unwrap() {
            Parsed::Push(e, p) => {
                assert!(e.sanitized);
                assert_eq!(p.actor_login, "francods9\u{fffd}-tech");
                assert_eq!(p.git_ref.as_deref(), Some("refs/heads/ma\u{fffd}in"));
            }
            other => panic!("expected a push event, got {other:?}"),
        }
        let Parsed::Push(e, _) = parse_event_str(TRIMMED).unwrap() else {
            unreachable!()
        };
        assert!(!e.sanitized);
    }

    #[test]
    fn ids_must_be_positive_and_fit_i64() {
        for id in [
            "\"0\"",
            "-5",
            "\"-5\"",
            "9223372036854775808",
            "\"99999999999999999999\"",
            "1.5",
        ] {
            let text = FULL_2015.replace("\"2489368070\"", id);
            assert_eq!(
                parse_event_str(&text),
                Err(ParseError::WrongType {
                    field: "id",
                    expected: "a positive integer id"
                }),
                "id {id}"
            );
        }
    }

    #[test]
    fn reads_every_line_of_the_2026_sample() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/gharchive/2026-06-01-15-sample7.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            panic!("sample data missing at {}", path.display());
        };
        let parsed: Vec<Parsed> = text
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_event_str(l).unwrap())
            .collect();
        assert_eq!(parsed.len(), 7);
        assert_eq!(
            parsed
                .iter()
                .filter(|p| matches!(p, Parsed::Push(..)))
                .count(),
            3
        );
        assert!(parsed.iter().all(|p| !matches!(p, Parsed::Failed(..))));
    }
}
