//! Properties of the parser and the sanitiser on real events from `shared/data`, broken in
//! every way `mutate` knows: no input panics, every input is read (with an id) or refused with
//! a reason, and nothing read holds what Postgres cannot store.

#[path = "../../tests/support/mutate.rs"]
#[allow(dead_code)]
mod mutate;

use ghevents_core::event::{parse_event_str, ParseError, Parsed};
use ghevents_core::sanitize;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::borrow::Cow;
use std::sync::OnceLock;

fn events() -> &'static [String] {
    static EVENTS: OnceLock<Vec<String>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/gharchive");
        mutate::real_events(
            &dir,
            &[
                "2026-06-01-15-sample7.jsonl",
                "2026-06-01-15-first-5000.json.gz",
                "2015-01-01-0.json.gz",
                "2012-04-01-0.json.gz",
                "2012-10-13-0.json.gz",
                "2021-07-21-first-200-of-hours-06-09.json.gz",
            ],
            60,
        )
    })
}

/// Fixed seed and no failure files: the same cases on every run and in CI.
fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x6768_6576),
        failure_persistence: None,
        ..Config::default()
    }
}

/// What a read event must satisfy to be stored: a positive id, no NUL in any column.
fn assert_storable(p: &Parsed) {
    let e = p.event();
    assert!(e.event_id > 0, "{p:?}");
    for s in [&e.event_type, &e.actor_login, &e.repo_name]
        .into_iter()
        .flatten()
    {
        assert!(!s.contains('\0'), "{p:?}");
    }
    if let Parsed::Push(_, push) = p {
        for s in [&push.git_ref, &push.head, &push.before]
            .into_iter()
            .flatten()
            .chain([&push.repo_name, &push.actor_login])
        {
            assert!(!s.contains('\0'), "{p:?}");
        }
    }
    if let Parsed::Failed(_, err) = p {
        assert!(!err.to_string().is_empty());
    }
}

fn assert_refused_with_reason(e: &ParseError) {
    assert!(!e.code().is_empty());
    assert!(!e.to_string().is_empty());
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_broken_event_is_read_or_refused_with_a_reason(
        i in any::<prop::sample::Index>(),
        m in mutate::mutation(64 << 10, 4000),
    ) {
        let base = &events()[i.index(events().len())];
        let text = mutate::apply(base, &m);
        match parse_event_str(&text) {
            Ok(p) => assert_storable(&p),
            Err(e) => assert_refused_with_reason(&e),
        }
    }

    #[test]
    fn a_truncated_event_is_invalid_json(
        i in any::<prop::sample::Index>(),
        per_mille in 0u16..1000,
    ) {
        let base = &events()[i.index(events().len())];
        let text = mutate::apply(base, &mutate::Mutation::Truncate { per_mille });
        prop_assert!(matches!(parse_event_str(&text), Err(ParseError::InvalidJson(_))), "{text}");
    }

    #[test]
    fn an_id_that_is_not_a_positive_i64_is_refused(
        i in any::<prop::sample::Index>(),
        id in prop::sample::select(mutate::IDS),
    ) {
        let base = &events()[i.index(events().len())];
        let text = mutate::apply(base, &mutate::Mutation::Id { text: id.to_owned() });
        let e = parse_event_str(&text).unwrap_err();
        // `"id": null` reads as no id at all.
        let expected = if id == "null" { "missing_id" } else { "bad_id" };
        prop_assert_eq!(e.code(), expected);
    }

    #[test]
    fn a_valid_id_of_any_size_is_read(i in any::<prop::sample::Index>(), id in 1..=i64::MAX, as_number in any::<bool>()) {
        let base = &events()[i.index(events().len())];
        let text = if as_number { id.to_string() } else { format!("\"{id}\"") };
        let text = mutate::apply(base, &mutate::Mutation::Id { text });
        let p = parse_event_str(&text).unwrap();
        prop_assert_eq!(p.event().event_id, id);
    }

    /// Any sequence of `\uXXXX` escapes (every code unit, surrogates and NUL included),
    /// plain text and escaped backslashes: the sanitised string is what strict serde_json
    /// reads, without NUL; untouched when there was nothing to replace; and sanitising twice
    /// changes nothing more.
    #[test]
    fn sanitised_text_is_strict_json_without_nul(parts in prop::collection::vec(
        prop_oneof![
            any::<u16>().prop_map(|u| format!("\\u{u:04x}")),
            (0xd800u16..0xe000).prop_map(|u| format!("\\u{u:04X}")),
            Just("\\\\".to_owned()),
            Just("\\u0000".to_owned()),
            "[a-zé😀 ]{0,4}",
        ],
        0..24,
    )) {
        let text = format!("\"{}\"", parts.concat());
        let clean = sanitize::json_text(&text);
        let s: String = serde_json::from_str(&clean).unwrap();
        prop_assert!(!s.contains('\0'));
        if serde_json::from_str::<String>(&text).is_ok_and(|s| !s.contains('\0')) {
            prop_assert!(matches!(clean, Cow::Borrowed(_)));
        }
        prop_assert_eq!(sanitize::json_text(&clean), clean.clone());
    }
}

#[test]
fn every_real_event_reads_unchanged() {
    for text in events() {
        assert!(matches!(sanitize::json_text(text), Cow::Borrowed(_)));
        if let Ok(p) = parse_event_str(text) {
            assert_storable(&p);
            assert!(!p.event().sanitized);
        }
    }
}

#[test]
fn nesting_deeper_than_serde_allows_fails_the_event_not_the_parser() {
    let base = &events()[0];
    for depth in [127, 128, 129, 10_000, 1_000_000] {
        for objects in [false, true] {
            let nested = if objects {
                format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
            } else {
                format!("{}{}", "[".repeat(depth), "]".repeat(depth))
            };
            for field in ["actor", "payload", "repo"] {
                let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
                v[field] = serde_json::Value::from("@@");
                let text = serde_json::to_string(&v)
                    .unwrap()
                    .replacen("\"@@\"", &nested, 1);
                match parse_event_str(&text) {
                    Ok(p) => assert_storable(&p),
                    Err(e) => assert_refused_with_reason(&e),
                }
            }
        }
    }
}
