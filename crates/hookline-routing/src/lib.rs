//! Which event types a subscription's patterns select, and which subscriptions select an event.
//!
//! A pattern is an exact type (`ACCOUNT.CREATED`), `PREFIX.*` (every type under `PREFIX`, at
//! any depth), or `*` (everything). An empty pattern list selects everything. Hookline's own
//! `hookline.*` types are opt-in: only a pattern that names them selects them (`hookline.*`,
//! `hookline.delivery.*`, an exact type), never `*` or an empty list, so a subscription made
//! before they existed receives nothing it did not ask for.
//!
//! - [`Pattern`]: one parsed pattern; [`Pattern::parse`] refuses patterns that could never
//!   select a well-formed event type ([`is_event_type`]).
//! - [`SubscriptionIndex`]: per-tenant trie of enabled subscriptions, kept current one change
//!   at a time; matching costs O(segments + matches), whatever the number of subscriptions.
//!   [`SubscriptionIndex::matching_event`] also applies payload filters, only to the
//!   subscriptions already selected by type.
//! - [`filter`]: payload filters (`{"data.amount": {"$gte": 100}}`): the language, its
//!   limits, compiling ([`Filter::compile`]), evaluating ([`Filter::matches`], no allocation)
//!   and explaining a mismatch ([`Filter::explain`]); property-tested against a naive
//!   reference (`tests/filter.rs`).
//! - [`pattern_matches`] / [`selects`]: the naive reference the index is tested against.
//! - [`fuzzing`]: the body of the pattern-parser fuzz target (`fuzz/`), also run as a proptest.
#![forbid(unsafe_code)]

pub mod filter;
pub mod fuzzing;
mod index;
mod pattern;

pub use filter::{Filter, FilterError, Mismatch, Subject};
pub use index::{EventFields, Matched, SubscriptionId, SubscriptionIndex};
pub use pattern::{MAX_LEN, Pattern, PatternError, is_event_type};

/// Whether `event_type` is one of Hookline's own (`hookline.*`), which only patterns that
/// name them select.
pub fn is_operational(event_type: &str) -> bool {
    event_type.starts_with("hookline.")
}

/// Whether `pattern` selects `event_type`: the reference definition, by string comparison.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return !is_operational(event_type);
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => event_type
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1),
        None => pattern == event_type,
    }
}

/// Whether a subscription with `patterns` receives `event_type`.
pub fn selects<S: AsRef<str>>(patterns: &[S], event_type: &str) -> bool {
    (patterns.is_empty() && !is_operational(event_type))
        || patterns
            .iter()
            .any(|p| pattern_matches(p.as_ref(), event_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_everything() {
        assert!(pattern_matches("ACCOUNT.CREATED", "ACCOUNT.CREATED"));
        assert!(!pattern_matches("ACCOUNT.CREATED", "ACCOUNT.UPDATED"));
        assert!(pattern_matches("CARD.*", "CARD.DIGITALWALLETTOKEN.CREATED"));
        assert!(!pattern_matches("CARD.*", "CARD"));
        assert!(!pattern_matches("CARD.*", "CARDS.CREATED"));
        assert!(pattern_matches("*", "balance.extracted"));
        assert!(selects::<&str>(&[], "anything"));
        assert!(selects(&["A.B", "balance.extracted"], "balance.extracted"));
        assert!(!selects(&["A.B"], "balance.extracted"));
    }

    #[test]
    fn operational_types_are_opt_in() {
        let t = "hookline.delivery.exhausted";
        assert!(!pattern_matches("*", t));
        assert!(!selects::<&str>(&[], t));
        assert!(pattern_matches("hookline.*", t));
        assert!(pattern_matches("hookline.delivery.*", t));
        assert!(pattern_matches(t, t));
        let mut ix = SubscriptionIndex::default();
        ix.upsert("all", "t1", true, &["*"]);
        ix.upsert("empty", "t1", true, &[] as &[&str]);
        ix.upsert("ops", "t1", true, &["hookline.*"]);
        let got: Vec<String> = ix.matching("t1", t).iter().map(|s| s.to_string()).collect();
        assert_eq!(got, ["ops"]);
    }
}
