//! A subscription's delivery limits as the dispatcher applies them, without I/O (time is
//! passed in): its rate limit (a GCRA token bucket), its in-flight cap, and a hold the
//! endpoint asked for (`Retry-After` on a 429 or 503).
//!
//! [`Limits::admit`] is asked before a subscription's next job starts. A subscription at its
//! in-flight cap is [`Admit::Full`] (a job of it finishing gives it its turn back); one
//! without a token, or held, is [`Admit::Wait`]: its keys keep their jobs, in order, and
//! [`Limits::wakes`] names when to give it its turn back. Waiting is neither an attempt nor a
//! failure, and holds up no other subscription: the queues move on to the next one.
//!
//! The bucket is this worker's: a subscription's jobs share one `deliveries` partition, so
//! one worker at a time starts them. A new owner (a rebalance) starts with a full bucket, so
//! a hand-over may let one burst more through.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hookline_proto::v1::RateLimit;

/// The answer to "may this subscription start its next job now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// At its in-flight cap: it waits for one of its jobs to finish.
    Full,
    /// No token yet, or held: it waits until the time [`Limits::wakes`] names.
    Wait,
}

/// A subscription's limits, as its record says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controls {
    pub rate: Option<RateLimit>,
    /// `min(max_in_flight, subscription_in_flight)`.
    pub in_flight: usize,
}

impl Controls {
    /// A subscription's controls, its `max_in_flight` capped at `cap`.
    pub fn of(rate: Option<&RateLimit>, max_in_flight: Option<u32>, cap: usize) -> Self {
        Self {
            rate: rate
                .filter(|r| r.per_second > 0 || r.per_minute > 0)
                .copied(),
            in_flight: max_in_flight.map_or(cap, |n| (n as usize).clamp(1, cap)),
        }
    }

    /// Whether the subscription is slowed by its own controls (its backlog is then bounded,
    /// see `dispatch`).
    pub fn limited(&self, cap: usize) -> bool {
        self.rate.is_some() || self.in_flight < cap
    }
}

/// GCRA (the generic cell rate algorithm), a token bucket kept as one time: a start is
/// allowed when the theoretical arrival time `tat` is at most `tolerance` ahead of now.
/// `per_second: n` is one start every `1/n` s, with bursts of up to a tenth of a second's
/// allowance (at least one) after a quiet spell; `per_minute: n` likewise per minute.
#[derive(Debug, Clone)]
pub struct Bucket {
    interval: Duration,
    tolerance: Duration,
    tat: Option<Instant>,
}

impl Bucket {
    pub fn new(rate: &RateLimit) -> Option<Self> {
        let (n, period) = if rate.per_second > 0 {
            (rate.per_second, Duration::from_secs(1))
        } else if rate.per_minute > 0 {
            (rate.per_minute, Duration::from_secs(60))
        } else {
            return None;
        };
        let interval = period / n;
        let burst = n.div_ceil(10).max(1);
        Some(Self {
            interval,
            tolerance: interval * (burst - 1),
            tat: None,
        })
    }

    /// Takes a token at `now`, or says when the next one is due.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let tat = self.tat.map_or(now, |t| t.max(now));
        let allowed_at = tat.checked_sub(self.tolerance).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at);
        }
        self.tat = Some(tat + self.interval);
        Ok(())
    }

    /// Whether the bucket is full again at `now` (it can be forgotten and made anew).
    fn is_full(&self, now: Instant) -> bool {
        self.tat.is_none_or(|t| t <= now)
    }
}

/// Holds the endpoints asked for (`Retry-After`), by subscription: written by the delivery
/// tasks, read by the dispatcher.
#[derive(Debug, Default)]
pub struct Holds(Mutex<HashMap<String, Instant>>);

impl Holds {
    /// No job of `sub` starts before `until` (a later hold already in force stays).
    pub fn hold(&self, sub: &str, until: Instant) {
        let mut holds = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = holds.entry(sub.to_owned()).or_insert(until);
        *at = (*at).max(until);
    }

    pub fn until(&self, sub: &str, now: Instant) -> Option<Instant> {
        let holds = self.0.lock().unwrap_or_else(|e| e.into_inner());
        holds.get(sub).copied().filter(|t| *t > now)
    }

    fn sweep(&self, now: Instant) {
        let mut holds = self.0.lock().unwrap_or_else(|e| e.into_inner());
        holds.retain(|_, t| *t > now);
    }
}

#[derive(Debug)]
struct Rated {
    rate: RateLimit,
    bucket: Bucket,
}

/// The dispatcher's limits state: a bucket per rate-limited subscription that started a job
/// lately, and the wake-ups asked for.
#[derive(Debug, Default)]
pub struct Limits {
    buckets: HashMap<String, Rated>,
    /// The earliest wake-up set per waiting subscription.
    wakes: HashMap<String, Instant>,
    /// Wake-ups to set (drained by [`Limits::wakes`]).
    new_wakes: Vec<(String, Instant)>,
}

impl Limits {
    /// May `sub`, with `in_flight` jobs under way, start its next job at `now`? `Go` takes
    /// its token.
    pub fn admit(
        &mut self,
        sub: &str,
        in_flight: usize,
        controls: &Controls,
        hold: Option<Instant>,
        now: Instant,
    ) -> Admit {
        if in_flight >= controls.in_flight {
            return Admit::Full;
        }
        if let Some(until) = hold.filter(|t| *t > now) {
            self.wake_at(sub, until);
            return Admit::Wait;
        }
        let Some(rate) = controls.rate else {
            self.buckets.remove(sub);
            return Admit::Go;
        };
        let rated = match self.buckets.get_mut(sub) {
            Some(r) if r.rate == rate => r,
            _ => {
                // New, or its limit changed: a full bucket at the new rate.
                let Some(bucket) = Bucket::new(&rate) else {
                    return Admit::Go;
                };
                self.buckets.insert(sub.to_owned(), Rated { rate, bucket });
                self.buckets.get_mut(sub).expect("just inserted")
            }
        };
        match rated.bucket.take(now) {
            Ok(()) => Admit::Go,
            Err(at) => {
                self.wake_at(sub, at);
                Admit::Wait
            }
        }
    }

    fn wake_at(&mut self, sub: &str, at: Instant) {
        if self.wakes.get(sub).is_some_and(|t| *t <= at) {
            // An earlier wake-up is set: the subscription asks again then.
            return;
        }
        self.wakes.insert(sub.to_owned(), at);
        self.new_wakes.push((sub.to_owned(), at));
    }

    /// Wake-ups to set: at each, call [`Limits::woken`] and give the subscription its turn.
    pub fn wakes(&mut self) -> Vec<(String, Instant)> {
        std::mem::take(&mut self.new_wakes)
    }

    /// The wake-up of `sub` set for `at` came.
    pub fn woken(&mut self, sub: &str, at: Instant) {
        if self.wakes.get(sub) == Some(&at) {
            self.wakes.remove(sub);
        }
    }

    /// Forgets full buckets and past holds (they are as good as new): memory follows the
    /// subscriptions being limited right now.
    pub fn sweep(&mut self, holds: &Holds, now: Instant) {
        self.buckets.retain(|_, r| !r.bucket.is_full(now));
        holds.sweep(now);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
#[path = "limits/tests.rs"]
mod tests;
