//! Which event types a subscription's patterns select.
//!
//! A pattern is an exact type (`ACCOUNT.CREATED`), `PREFIX.*` (every type under `PREFIX`, at
//! any depth), or `*` (everything). An empty pattern list selects everything.
#![forbid(unsafe_code)]

/// Whether `pattern` selects `event_type`.
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
