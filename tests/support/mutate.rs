//! Ways to break a real event, as proptest strategies: truncation, a field of another type,
//! huge strings, deep nesting, escapes Postgres refuses (NUL, lone surrogates), numbers beyond
//! `numeric`, ids beyond `i64` or not positive. Shared by the parser's properties (in
//! `shared/tests`, included by path) and the import's (here): it needs only `serde_json` and
//! `proptest`.

use proptest::prelude::*;
use serde_json::Value;

/// One change to an event's text.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Cut at `per_mille` thousandths of its length (rounded down to a char boundary).
    Truncate { per_mille: u16 },
    /// The node at `path` (an index into the event's nodes) becomes another JSON type.
    Swap { path: usize, to: Replacement },
    /// The node at `path` becomes raw JSON text, written as is.
    Raw { path: usize, text: String },
    /// The event's id becomes this raw JSON text.
    Id { text: String },
}

/// A JSON value of a chosen type.
#[derive(Debug, Clone)]
pub enum Replacement {
    Null,
    Bool,
    Int(i64),
    Float,
    Str(String),
    Object,
    Array,
}

impl Replacement {
    fn value(&self) -> Value {
        match self {
            Replacement::Null => Value::Null,
            Replacement::Bool => Value::Bool(true),
            Replacement::Int(n) => Value::from(*n),
            Replacement::Float => Value::from(1.5),
            Replacement::Str(s) => Value::from(s.clone()),
            Replacement::Object => serde_json::json!({"k": 1}),
            Replacement::Array => serde_json::json!([1, "a"]),
        }
    }
}

/// Escapes and strings valid JSON may hold but Postgres may refuse, written raw inside a
/// JSON string.
pub const ESCAPES: &[&str] = &[
    "\\ud83d",
    "\\udc00",
    "\\u0000",
    "\\ud83d\\u0000",
    "a\\ud800b\\udfffc",
    "\\ud83d\\ude00",
    "\\\\u0000",
];

/// Raw numbers: beyond `numeric`, beyond `f64`, beyond `i64`, tiny, negative zero.
pub const NUMBERS: &[&str] = &[
    "1e1000000",
    "-1e1000000",
    "1e400",
    "123456789012345678901234567890",
    "1e-400",
    "-0",
];

/// Ids that are not a positive `i64`, and two forms of a valid one.
pub const IDS: &[&str] = &[
    "\"9223372036854775808\"",
    "9223372036854775808",
    "18446744073709551616",
    "\"99999999999999999999999\"",
    "-1",
    "\"-42\"",
    "0",
    "\"0\"",
    "1e30",
    "1.5",
    "\"abc\"",
    "\"\"",
    "null",
    "{}",
    "[]",
    "true",
];

fn replacement() -> impl Strategy<Value = Replacement> {
    prop_oneof![
        Just(Replacement::Null),
        Just(Replacement::Bool),
        any::<i64>().prop_map(Replacement::Int),
        Just(Replacement::Float),
        "[a-z]{0,8}".prop_map(Replacement::Str),
        Just(Replacement::Object),
        Just(Replacement::Array),
    ]
}

/// A string of `len` characters, some of them multi-byte.
fn huge_string(len: usize) -> String {
    let s: String = "aé€😀\"\\\n".chars().cycle().take(len).collect();
    serde_json::to_string(&s).unwrap()
}

/// Nesting `depth` levels deep, arrays or objects.
fn nested(depth: usize, objects: bool) -> String {
    if objects {
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    } else {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

/// Any mutation; `max_string` and `max_depth` bound the huge ones.
pub fn mutation(max_string: usize, max_depth: usize) -> impl Strategy<Value = Mutation> {
    let path = any::<usize>();
    prop_oneof![
        (0u16..1000).prop_map(|per_mille| Mutation::Truncate { per_mille }),
        (path, replacement()).prop_map(|(path, to)| Mutation::Swap { path, to }),
        (path, 0..max_string).prop_map(|(path, n)| Mutation::Raw {
            path,
            text: huge_string(n)
        }),
        (path, 1..max_depth, any::<bool>()).prop_map(|(path, d, o)| Mutation::Raw {
            path,
            text: nested(d, o)
        }),
        (path, prop::sample::select(ESCAPES), "[a-z]{0,3}").prop_map(|(path, e, tail)| {
            Mutation::Raw {
                path,
                text: format!("\"x{e}{tail}\""),
            }
        }),
        (path, prop::sample::select(NUMBERS)).prop_map(|(path, n)| Mutation::Raw {
            path,
            text: n.to_owned()
        }),
        prop::sample::select(IDS).prop_map(|t| Mutation::Id { text: t.to_owned() }),
    ]
}

/// Every node below the root, as a path of keys and indexes.
fn paths(v: &Value) -> Vec<Vec<PathSeg>> {
    let mut out = Vec::new();
    let mut stack = vec![(v, Vec::new())];
    while let Some((v, p)) = stack.pop() {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    let mut q = p.clone();
                    q.push(PathSeg::Key(k.clone()));
                    out.push(q.clone());
                    stack.push((c, q));
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    let mut q = p.clone();
                    q.push(PathSeg::Index(i));
                    out.push(q.clone());
                    stack.push((c, q));
                }
            }
            _ => {}
        }
    }
    out.sort();
    out
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PathSeg {
    Key(String),
    Index(usize),
}

fn node<'a>(v: &'a mut Value, path: &[PathSeg]) -> &'a mut Value {
    path.iter().fold(v, |v, seg| match seg {
        PathSeg::Key(k) => &mut v[k.as_str()],
        PathSeg::Index(i) => &mut v[*i],
    })
}

const PLACEHOLDER: &str = "\"@@mutation@@\"";

/// `event` (one valid JSON event) changed by `m`.
pub fn apply(event: &str, m: &Mutation) -> String {
    match m {
        Mutation::Truncate { per_mille } => {
            let mut at = event.len() * usize::from(*per_mille) / 1000;
            while !event.is_char_boundary(at) {
                at -= 1;
            }
            event[..at].to_owned()
        }
        Mutation::Swap { path, to } => {
            let mut v: Value = serde_json::from_str(event).expect("a valid event");
            let all = paths(&v);
            *node(&mut v, &all[path % all.len()]) = to.value();
            serde_json::to_string(&v).unwrap()
        }
        Mutation::Raw { path, text } => {
            let mut v: Value = serde_json::from_str(event).expect("a valid event");
            let all = paths(&v);
            *node(&mut v, &all[path % all.len()]) = Value::from("@@mutation@@");
            serde_json::to_string(&v)
                .unwrap()
                .replacen(PLACEHOLDER, text, 1)
        }
        Mutation::Id { text } => {
            let mut v: Value = serde_json::from_str(event).expect("a valid event");
            v["id"] = Value::from("@@mutation@@");
            serde_json::to_string(&v)
                .unwrap()
                .replacen(PLACEHOLDER, text, 1)
        }
    }
}

/// `event` with its id set to `id` (a JSON string, as GitHub writes it).
pub fn with_id(event: &str, id: i64) -> String {
    let mut v: Value = serde_json::from_str(event).expect("a valid event");
    v["id"] = Value::from(id.to_string());
    serde_json::to_string(&v).unwrap()
}

/// Up to `per_file` lines from each of these GH Archive files (gzip or plain NDJSON) under
/// `dir`, as text.
pub fn real_events(dir: &std::path::Path, files: &[&str], per_file: usize) -> Vec<String> {
    use std::io::BufRead;
    let mut out = Vec::new();
    for name in files {
        let path = dir.join(name);
        let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let r: Box<dyn std::io::Read> = if name.ends_with(".gz") {
            Box::new(flate2::read::MultiGzDecoder::new(f))
        } else {
            Box::new(f)
        };
        out.extend(
            std::io::BufReader::new(r)
                .split(b'\n')
                .map(|l| String::from_utf8(l.unwrap()).unwrap())
                .filter(|l| !l.is_empty())
                .take(per_file),
        );
    }
    out
}
