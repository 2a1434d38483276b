//! The body of the `pattern` fuzz target (`fuzz/fuzz_targets/pattern.rs`), kept here so the
//! property tests run it on every `cargo test` and the fuzzer only adds coverage.

use crate::{Pattern, SubscriptionIndex, is_event_type, pattern_matches, selects};

/// Splits fuzzer input at the first newline into (pattern, event type) and checks them.
pub fn pattern_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (pattern, event_type) = text.split_once('\n').unwrap_or((&text, "A.B"));
    check_pattern(pattern, event_type);
}

/// Panics if the parser, the index or the reference disagree on `pattern` and `event_type`:
/// a parsed pattern prints back as its text; for a well-formed event type, the parsed pattern
/// and a one-subscription index select exactly what the reference `pattern_matches` selects
/// (a refused pattern selects nothing).
pub fn check_pattern(pattern: &str, event_type: &str) {
    let parsed = Pattern::parse(pattern);
    if let Ok(p) = &parsed {
        assert_eq!(
            p.to_string(),
            pattern,
            "a parsed pattern prints as its text"
        );
        assert_eq!(Pattern::parse(&p.to_string()).as_ref(), Ok(p));
    }
    if !is_event_type(event_type) {
        return;
    }
    let reference = pattern_matches(pattern, event_type);
    let by_parse = parsed.as_ref().is_ok_and(|p| p.matches(event_type));
    assert_eq!(by_parse, reference, "{pattern:?} on {event_type:?}");
    let mut index = SubscriptionIndex::new();
    index.upsert("s", "t", true, &[pattern]);
    let by_index = !index.matching("t", event_type).is_empty();
    assert_eq!(
        by_index,
        selects(&[pattern], event_type),
        "{pattern:?} on {event_type:?}"
    );
}
