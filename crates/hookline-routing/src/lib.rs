//! Which event types a subscription's patterns select, and which subscriptions select an event.
//!
//! A pattern is an exact type (`ACCOUNT.CREATED`), `PREFIX.*` (every type under `PREFIX`, at
//! any depth), or `*` (everything). An empty pattern list selects everything.
//!
//! - [`Pattern`]: one parsed pattern; [`Pattern::parse`] refuses patterns that could never
//!   select a well-formed event type ([`is_event_type`]).
//! - [`SubscriptionIndex`]: per-tenant trie of enabled subscriptions, kept current one change
//!   at a time; matching costs O(segments + matches), whatever the number of subscriptions.
//! - [`pattern_matches`] / [`selects`]: the naive reference the index is tested against.
//! - [`fuzzing`]: the body of the pattern-parser fuzz target (`fuzz/`), also run as a proptest.
#![forbid(unsafe_code)]

pub mod fuzzing;
mod index;
mod pattern;

pub use index::{SubscriptionId, SubscriptionIndex};
pub use pattern::{MAX_LEN, Pattern, PatternError, is_event_type};

/// Whether `pattern` selects `event_type`: the reference definition, by string comparison.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return true;
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
    patterns.is_empty()
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
}
