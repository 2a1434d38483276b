//! What to do after an attempt, and when.

use std::time::{Duration, SystemTime};

use rand::Rng as _;

/// The outcome of one HTTP attempt as the retry policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again; the receiver may have asked for a delay (`Retry-After`).
    Retry {
        asked: Option<Duration>,
    },
    /// Never retried (4xx other than 408/429, 501, a redirect).
    Final,
    /// 410 Gone: final, and the subscription is to be disabled.
    Gone,
}

/// Connect errors, timeouts, 408, 429 and 5xx except 501 are retried; other non-2xx are final.
pub fn classify(status: Option<u16>, retry_after: Option<Duration>) -> Verdict {
    match status {
        None => Verdict::Retry { asked: None },
        Some(s) if (200..300).contains(&s) => Verdict::Delivered,
        Some(410) => Verdict::Gone,
        Some(408) => Verdict::Retry { asked: None },
        Some(429) => Verdict::Retry { asked: retry_after },
        Some(501) => Verdict::Final,
        Some(s) if s >= 500 => Verdict::Retry { asked: retry_after },
        Some(_) => Verdict::Final,
    }
}

/// Longest `Retry-After` honoured; a receiver cannot park a job for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses `Retry-After` in either of its forms (RFC 9110 §10.2.3), capped: delay-seconds
/// (`120`) or an HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`, also the obsolete RFC 850 and
/// asctime forms), the latter as the time from `now` until then (zero when it has passed).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let asked = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(asked.min(MAX_RETRY_AFTER))
}

/// The attempt schedule: `delays[i]` is waited before attempt `i + 1`; `delays[0]` belongs to
/// the first attempt (immediate by convention), so there are `delays.len()` attempts in all.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub delays: Vec<Duration>,
    pub jitter: f64,
}

impl Schedule {
    /// Delay before the next attempt after `attempts_made` attempts, or `None` when the
    /// schedule is exhausted. Jitter adds up to `jitter * delay`; a receiver's `Retry-After`
    /// wins when it asks for longer.
    pub fn next_delay(&self, attempts_made: u32, asked: Option<Duration>) -> Option<Duration> {
        let base = *self.delays.get(attempts_made as usize)?;
        let jitter = if self.jitter > 0.0 && !base.is_zero() {
            base.mul_f64(rand::thread_rng().gen_range(0.0..self.jitter))
        } else {
            Duration::ZERO
        };
        Some((base + jitter).max(asked.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_design() {
        assert_eq!(classify(Some(204), None), Verdict::Delivered);
        assert_eq!(classify(None, None), Verdict::Retry { asked: None });
        for s in [408, 500, 502, 503, 599] {
            assert!(
                matches!(classify(Some(s), None), Verdict::Retry { .. }),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 422, 501, 301, 302] {
            assert_eq!(classify(Some(s), None), Verdict::Final, "{s}");
        }
        assert_eq!(classify(Some(410), None), Verdict::Gone);
        let asked = Some(Duration::from_secs(7));
        assert_eq!(classify(Some(429), asked), Verdict::Retry { asked });
    }

    #[test]
    fn schedule_runs_out_and_jitters_within_bounds() {
        let s = Schedule {
            delays: vec![Duration::ZERO, Duration::ZERO, Duration::from_secs(10)],
            jitter: 0.5,
        };
        assert_eq!(s.next_delay(1, None), Some(Duration::ZERO));
        for _ in 0..100 {
            let d = s.next_delay(2, None).unwrap();
            assert!(
                d >= Duration::from_secs(10) && d < Duration::from_secs(15),
                "{d:?}"
            );
        }
        assert_eq!(s.next_delay(3, None), None, "three attempts in all");
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let at = |v: &str| parse_retry_after(v, now);
        assert_eq!(at("120"), Some(Duration::from_secs(120)));
        assert_eq!(at(" 0 "), Some(Duration::ZERO));
        assert_eq!(at("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(at("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            at("Wed, 21 Oct 2015 07:30:30 GMT"),
            Some(Duration::from_secs(150))
        );
        // The obsolete forms a recipient must accept.
        assert_eq!(
            at("Wednesday, 21-Oct-15 07:29:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            at("Wed Oct 21 07:29:00 2015"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(at("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(at("Thu, 22 Oct 2015 07:28:00 GMT"), Some(MAX_RETRY_AFTER));
        for bad in ["soon", "", "-5", "1.5", "Wed, 21 Oct 2015 25:00:00 GMT"] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }

    /// The default schedule, waited out on a paused clock: 8 attempts spread over the
    /// schedule's delays plus at most the configured jitter, then nothing more.
    #[tokio::test(start_paused = true)]
    async fn the_default_schedule_under_paused_time() {
        let config = hookline_config::Config::default();
        let delays = config.retry_delays().unwrap();
        let s = Schedule {
            delays: delays.clone(),
            jitter: config.retry_jitter,
        };
        let start = tokio::time::Instant::now();
        let mut attempts = 1;
        let mut waits = Vec::new();
        while let Some(d) = s.next_delay(attempts, None) {
            tokio::time::sleep(d).await;
            waits.push(d);
            attempts += 1;
        }
        assert_eq!(attempts, 8, "immediate, then 7 retries");
        for (wait, base) in waits.iter().zip(&delays[1..]) {
            assert!(
                *wait >= *base && *wait <= base.mul_f64(1.0 + config.retry_jitter),
                "{wait:?} for {base:?}"
            );
        }
        let base: Duration = delays.iter().sum();
        let elapsed = start.elapsed();
        assert!(
            elapsed >= base && elapsed <= base.mul_f64(1.0 + config.retry_jitter),
            "{elapsed:?}"
        );
        // The last two retries share a base (10 h): jitter sets them apart.
        assert_ne!(waits[5], waits[6], "jitter applied");
        // A receiver asking for longer (429 Retry-After) is honoured, up to the cap.
        let asked = Some(Duration::from_secs(600));
        assert_eq!(s.next_delay(1, asked).unwrap(), Duration::from_secs(600));
    }
}
