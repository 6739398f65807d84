//! What valid JSON may hold but Postgres may not: a `\u0000` escape (jsonb refuses it, and a
//! text column refuses the NUL byte it stands for) and a UTF-16 surrogate escape without its
//! other half (`"\ud83d"`: serde_json reads it as raw JSON, jsonb answers "unsupported Unicode
//! escape sequence"). Both become U+FFFD, the replacement character, so the rest of the event
//! is kept; callers mark what they changed (`github_events.sanitized`) and keep the exact
//! original bytes where they can (`github_events.raw_original`).
//!
//! Everything here is pure and allocation-free when there is nothing to replace, which is
//! almost always.

use serde_json::Value;
use std::borrow::Cow;

/// The escape written in place of what Postgres refuses.
const REPLACEMENT_ESCAPE: &str = "\\ufffd";

/// JSON text with every `\u0000` escape and every unpaired surrogate escape replaced by
/// `\ufffd`. Escaped backslashes are honoured (`\\u0000` is a backslash and the text
/// `u0000`, left alone); malformed escapes are left for the JSON parser to refuse.
pub fn json_text(text: &str) -> Cow<'_, str> {
    match json_bytes(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        // Only ASCII escapes were replaced, by ASCII, at ASCII boundaries: still UTF-8.
        Cow::Owned(b) => Cow::Owned(String::from_utf8(b).expect("ASCII replaced by ASCII")),
    }
}

/// [`json_text`] on bytes (a response body before it is parsed).
pub fn json_bytes(b: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = b
        .get(i..)
        .and_then(|rest| rest.iter().position(|&c| c == b'\\'))
    {
        let p = i + off;
        if b.get(p + 1) != Some(&b'u') {
            // Any other escape is two bytes long (or the text ends here).
            i = p + 2;
            continue;
        }
        let Some(unit) = hex4(b, p + 2) else {
            i = p + 2;
            continue;
        };
        let replace = match unit {
            0 => true,
            0xD800..=0xDBFF => {
                let low = (b.get(p + 6) == Some(&b'\\') && b.get(p + 7) == Some(&b'u'))
                    .then(|| hex4(b, p + 8))
                    .flatten();
                if low.is_some_and(|l| (0xDC00..=0xDFFF).contains(&l)) {
                    // A well-formed pair: both halves stay.
                    i = p + 12;
                    continue;
                }
                true
            }
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if replace {
            let o = out.get_or_insert_with(|| Vec::with_capacity(b.len()));
            o.extend_from_slice(&b[copied..p]);
            o.extend_from_slice(REPLACEMENT_ESCAPE.as_bytes());
            copied = p + 6;
        }
        i = p + 6;
    }
    match out {
        None => Cow::Borrowed(b),
        Some(mut o) => {
            o.extend_from_slice(&b[copied..]);
            Cow::Owned(o)
        }
    }
}

/// The four hex digits at `at`, if they are there.
fn hex4(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 4)?.iter().try_fold(0u16, |n, &c| {
        let d = char::from(c).to_digit(16)?;
        Some(n << 4 | d as u16)
    })
}

/// Text for a text column: NUL bytes replaced by U+FFFD.
pub fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Replaces NUL bytes in `s` in place; says whether there were any.
pub fn text_in_place(s: &mut String) -> bool {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{fffd}");
        true
    } else {
        false
    }
}

/// A JSON value for a jsonb column: NUL in any string or key replaced by U+FFFD. (A
/// `serde_json::Value` cannot hold a lone surrogate: its strings are UTF-8.)
pub fn json_value(v: &Value) -> Cow<'_, Value> {
    if has_nul(v) {
        let mut owned = v.clone();
        clean_value(&mut owned);
        Cow::Owned(owned)
    } else {
        Cow::Borrowed(v)
    }
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn clean_value(v: &mut Value) {
    match v {
        Value::String(s) => {
            text_in_place(s);
        }
        Value::Array(a) => a.iter_mut().for_each(clean_value),
        Value::Object(m) => {
            if m.keys().any(|k| k.contains('\0')) {
                let taken = std::mem::take(m);
                for (k, mut v) in taken {
                    clean_value(&mut v);
                    m.insert(text(&k).into_owned(), v);
                }
            } else {
                m.values_mut().for_each(clean_value);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_escapes_is_borrowed() {
        let t = r#"{"a":"b\n\"c\"","d":"\u00e9\ud83d\ude00"}"#;
        assert!(matches!(json_text(t), Cow::Borrowed(_)));
    }

    #[test]
    fn nul_and_lone_surrogates_become_the_replacement_character() {
        assert_eq!(json_text(r#"{"a":"x\u0000y"}"#), r#"{"a":"x\ufffdy"}"#);
        assert_eq!(json_text(r#"["\ud83d"]"#), r#"["\ufffd"]"#);
        assert_eq!(json_text(r#"["\uDE00x"]"#), r#"["\ufffdx"]"#);
        // A high half followed by another escape that is not a low half.
        assert_eq!(json_text(r#"["\ud83d\u0041"]"#), r#"["\ufffd\u0041"]"#);
        assert_eq!(
            json_text(r#"["\ud83d\ud83d\ude00"]"#),
            r#"["\ufffd\ud83d\ude00"]"#
        );
        // At the very end of the text.
        assert_eq!(json_text(r#""\ud83d"#), r#""\ufffd"#);
    }

    #[test]
    fn an_escaped_backslash_is_not_the_start_of_an_escape() {
        let t = r#"{"path":"C:\\u0000\\ud83d"}"#;
        assert!(matches!(json_text(t), Cow::Borrowed(_)));
        assert_eq!(
            json_text(r#"["\\\u0000"]"#),
            r#"["\\\ufffd"]"#,
            "an escaped backslash, then a NUL escape"
        );
    }

    #[test]
    fn the_result_is_what_serde_reads_with_replacement_characters() {
        let t = r#"{"k\u0000":"a\ud83db","ok":"\ud83d\ude00"}"#;
        let v: Value = serde_json::from_str(&json_text(t)).unwrap();
        assert_eq!(v["k\u{fffd}"], "a\u{fffd}b");
        assert_eq!(v["ok"], "\u{1f600}");
    }

    #[test]
    fn values_lose_their_nul_bytes_in_keys_and_strings() {
        let v: Value =
            serde_json::from_str(r#"{"a\u0000":["x\u0000",1,{"b":"\u0000"}],"c":"d"}"#).unwrap();
        let clean = json_value(&v);
        assert!(matches!(clean, Cow::Owned(_)));
        assert_eq!(
            *clean,
            serde_json::json!({"a\u{fffd}": ["x\u{fffd}", 1, {"b": "\u{fffd}"}], "c": "d"})
        );
        let plain = serde_json::json!({"a": [1, "b"]});
        assert!(matches!(json_value(&plain), Cow::Borrowed(_)));
    }
}
