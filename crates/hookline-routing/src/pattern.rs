//! Parsing event-type patterns: `A.B` (exact), `A.*` (everything under `A`), `*` (everything).

use std::fmt;

/// Longest event type or pattern accepted, as for event types on the events topic.
pub const MAX_LEN: usize = 255;

/// One parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// `*`: every event type.
    All,
    /// An exact event type.
    Exact(String),
    /// `PREFIX.*`: every type under `PREFIX`, at any depth; holds `PREFIX`.
    Prefix(String),
}

/// Why a pattern was refused; a refused pattern selects nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern must be 1-{MAX_LEN} characters")]
    Length,
    #[error("pattern {0:?} has an empty segment (`..`, or a leading or trailing `.`)")]
    EmptySegment(String),
    #[error("pattern {0:?}: `*` may only be the whole pattern or its last segment (`PREFIX.*`)")]
    Wildcard(String),
    #[error("pattern {0:?}: segments are letters, digits, `_` and `-`")]
    Character(String),
}

/// Whether `kind` is a well-formed event type: 1-255 characters of dot-separated, non-empty
/// segments of ASCII letters, digits, `_` and `-`. The same rule as
/// `hookline_events::validate_event_type`, so every event the router routes satisfies it.
pub fn is_event_type(kind: &str) -> bool {
    segments_error(kind).is_none() && !kind.is_empty() && kind.len() <= MAX_LEN
}

fn segments_error(text: &str) -> Option<PatternError> {
    for seg in text.split('.') {
        if seg.is_empty() {
            return Some(PatternError::EmptySegment(text.to_owned()));
        }
        if seg.contains('*') {
            return Some(PatternError::Wildcard(text.to_owned()));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Some(PatternError::Character(text.to_owned()));
        }
    }
    None
}

impl Pattern {
    /// Parses one pattern. Anything that is not `*`, an event type, or an event type
    /// followed by `.*` is refused: such a pattern could never select a well-formed type.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.is_empty() || text.len() > MAX_LEN {
            return Err(PatternError::Length);
        }
        if text == "*" {
            return Ok(Pattern::All);
        }
        let (body, prefix) = match text.strip_suffix(".*") {
            Some(body) => (body, true),
            None => (text, false),
        };
        if let Some(e) = segments_error(body) {
            // Name the whole pattern, not just its body.
            return Err(match e {
                PatternError::EmptySegment(_) => PatternError::EmptySegment(text.to_owned()),
                PatternError::Wildcard(_) => PatternError::Wildcard(text.to_owned()),
                _ => PatternError::Character(text.to_owned()),
            });
        }
        Ok(if prefix {
            Pattern::Prefix(body.to_owned())
        } else {
            Pattern::Exact(body.to_owned())
        })
    }

    /// Whether this pattern selects the well-formed event type `event_type`.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Exact(t) => t == event_type,
            Pattern::Prefix(p) => event_type
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.')),
        }
    }

    /// The dot-separated segments the pattern is filed under in the index (none for `*`).
    pub(crate) fn segments(&self) -> impl Iterator<Item = &str> {
        let body = match self {
            Pattern::All => None,
            Pattern::Exact(t) | Pattern::Prefix(t) => Some(t.as_str()),
        };
        body.into_iter().flat_map(|b| b.split('.'))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::All => f.write_str("*"),
            Pattern::Exact(t) => f.write_str(t),
            Pattern::Prefix(p) => write!(f, "{p}.*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(Pattern::parse("*"), Ok(Pattern::All));
        assert_eq!(
            Pattern::parse("ACCOUNT.CREATED"),
            Ok(Pattern::Exact("ACCOUNT.CREATED".into()))
        );
        assert_eq!(Pattern::parse("CARD.*"), Ok(Pattern::Prefix("CARD".into())));
        assert_eq!(
            Pattern::parse("balance.extracted"),
            Ok(Pattern::Exact("balance.extracted".into()))
        );
    }

    #[test]
    fn refuses_what_can_never_match() {
        for (text, want) in [
            ("", PatternError::Length),
            (".*", PatternError::EmptySegment(".*".into())),
            ("A..B", PatternError::EmptySegment("A..B".into())),
            ("A.", PatternError::EmptySegment("A.".into())),
            ("*.A", PatternError::Wildcard("*.A".into())),
            ("A.*.B", PatternError::Wildcard("A.*.B".into())),
            ("A*", PatternError::Wildcard("A*".into())),
            ("A.B C", PatternError::Character("A.B C".into())),
        ] {
            assert_eq!(Pattern::parse(text), Err(want), "{text:?}");
        }
        assert_eq!(Pattern::parse(&"A".repeat(256)), Err(PatternError::Length));
    }

    #[test]
    fn prefix_matches_at_any_depth_but_not_itself() {
        let p = Pattern::parse("CARD.*").unwrap();
        assert!(p.matches("CARD.DIGITALWALLETTOKEN.CREATED"));
        assert!(p.matches("CARD.X"));
        assert!(!p.matches("CARD"));
        assert!(!p.matches("CARDS.X"));
    }
}
