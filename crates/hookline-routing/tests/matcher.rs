//! Property tests: the index against the naive reference, under any sequence of changes, and
//! the fuzz target's body on generated input.

use std::collections::HashMap;

use hookline_routing::{SubscriptionIndex, fuzzing, is_event_type, selects};
use proptest::prelude::*;

/// Few segment names, so generated patterns and event types share prefixes often.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("A".to_owned()),
        Just("B".to_owned()),
        Just("card".to_owned()),
        Just("X_1".to_owned()),
        Just("y-2".to_owned()),
    ]
}

fn event_type() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..5).prop_map(|s| s.join("."))
}

/// Well-formed patterns of each kind, plus text that is not a pattern at all.
fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => event_type(),
        4 => event_type().prop_map(|t| format!("{t}.*")),
        1 => Just("*".to_owned()),
        2 => "[AB.*_ -]{0,6}",
    ]
}

#[derive(Debug, Clone)]
enum Change {
    Upsert {
        id: u8,
        tenant: u8,
        enabled: bool,
        patterns: Vec<String>,
    },
    Remove {
        id: u8,
    },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0u8..12, 0u8..3, prop::bool::weighted(0.8), prop::collection::vec(pattern(), 0..4))
            .prop_map(|(id, tenant, enabled, patterns)| Change::Upsert { id, tenant, enabled, patterns }),
        1 => (0u8..12).prop_map(|id| Change::Remove { id }),
    ]
}

struct Model {
    tenant: String,
    enabled: bool,
    patterns: Vec<String>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn index_agrees_with_the_reference(
        changes in prop::collection::vec(change(), 1..40),
        events in prop::collection::vec((0u8..3, event_type()), 1..20),
    ) {
        let mut index = SubscriptionIndex::new();
        let mut model: HashMap<String, Model> = HashMap::new();
        for c in changes {
            match c {
                Change::Upsert { id, tenant, enabled, patterns } => {
                    let (id, tenant) = (format!("s{id}"), format!("t{tenant}"));
                    index.upsert(&id, &tenant, enabled, &patterns);
                    model.insert(id, Model { tenant, enabled, patterns });
                }
                Change::Remove { id } => {
                    index.remove(&format!("s{id}"));
                    model.remove(&format!("s{id}"));
                }
            }
        }
        for (tenant, kind) in events {
            let tenant = format!("t{tenant}");
            prop_assert!(is_event_type(&kind));
            let mut want: Vec<&str> = model
                .iter()
                .filter(|(_, m)| m.enabled && m.tenant == tenant && selects(&m.patterns, &kind))
                .map(|(id, _)| id.as_str())
                .collect();
            want.sort_unstable();
            let got = index.matching(&tenant, &kind);
            let got: Vec<&str> = got.iter().map(|s| &**s).collect();
            prop_assert_eq!(got, want, "{} {}", tenant, kind);
        }
    }

    #[test]
    fn fuzz_body_on_structured_input(p in pattern(), e in event_type()) {
        fuzzing::check_pattern(&p, &e);
    }

    #[test]
    fn fuzz_body_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..64)) {
        fuzzing::pattern_input(&data);
    }

    #[test]
    fn fuzz_body_on_arbitrary_text(p in "\\PC{0,12}", e in "[A-Za-z0-9_.*-]{0,12}") {
        fuzzing::check_pattern(&p, &e);
    }
}
