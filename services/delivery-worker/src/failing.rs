//! Since when each subscription's attempts have all failed, to disable one that failed for
//! `auto_disable_after` (no I/O).
//!
//! The clock starts at a subscription's first failed attempt after a success, or, for one
//! this process never saw succeed, when it was parked (its durable `parked_at_ms`, so a
//! restart does not reset the clock of a subscription failing for days). Any success
//! stops it. Only subscriptions failing right now have an entry.

use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug)]
struct Entry {
    since_ms: i64,
    asked: bool,
}

#[derive(Debug, Default)]
pub struct Failing {
    after: Option<Duration>,
    subs: HashMap<String, Entry>,
}

impl Failing {
    /// `after`: `None` never disables.
    pub fn new(after: Option<Duration>) -> Self {
        Self {
            after,
            subs: HashMap::new(),
        }
    }

    pub fn succeeded(&mut self, sub: &str) {
        self.subs.remove(sub);
    }

    /// A failed attempt of `sub` at `now_ms`; `parked_at_ms`: when it was parked, if it is.
    /// True once, when the subscription has failed for long enough to be disabled.
    pub fn failed(&mut self, sub: &str, now_ms: i64, parked_at_ms: Option<i64>) -> bool {
        let Some(after) = self.after else {
            return false;
        };
        let entry = self.subs.entry(sub.to_owned()).or_insert_with(|| Entry {
            since_ms: parked_at_ms
                .filter(|t| *t > 0)
                .unwrap_or(now_ms)
                .min(now_ms),
            asked: false,
        });
        if entry.asked || now_ms - entry.since_ms < after.as_millis() as i64 {
            return false;
        }
        entry.asked = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn disables_once_after_failing_long_enough() {
        let mut f = Failing::new(Some(Duration::from_millis(5 * DAY as u64)));
        assert!(!f.failed("s", 0, None));
        assert!(!f.failed("s", 4 * DAY, None));
        assert!(f.failed("s", 5 * DAY, None));
        assert!(!f.failed("s", 6 * DAY, None), "asked once");
    }

    #[test]
    fn a_success_restarts_the_clock() {
        let mut f = Failing::new(Some(Duration::from_millis(5 * DAY as u64)));
        assert!(!f.failed("s", 0, None));
        f.succeeded("s");
        assert!(!f.failed("s", 5 * DAY, None));
        assert!(!f.failed("s", 9 * DAY, None));
        assert!(f.failed("s", 10 * DAY, None));
    }

    #[test]
    fn a_parked_subscription_counts_from_when_it_was_parked() {
        let mut f = Failing::new(Some(Duration::from_millis(5 * DAY as u64)));
        assert!(f.failed("s", 6 * DAY, Some(DAY)));
        let mut never = Failing::new(None);
        assert!(!never.failed("s", 100 * DAY, Some(0)));
    }
}
