//! The bucket, the limits, and the queues asking them (the dispatcher's skipping), on a
//! simulated clock: unit tests and property tests.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::park::MainRef;
use crate::queue::{Item, Key, Origin, Queues};
use hookline_proto::v1::DeliveryJob;

fn per_second(n: u32) -> RateLimit {
    RateLimit {
        per_second: n,
        per_minute: 0,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn bucket_paces_starts_and_says_when_the_next_is_due() {
    let t0 = Instant::now();
    let mut b = Bucket::new(&per_second(10)).unwrap();
    assert_eq!(b.take(t0), Ok(()), "a full bucket");
    assert_eq!(b.take(t0), Err(t0 + ms(100)), "one start per 100 ms");
    assert_eq!(b.take(t0 + ms(99)), Err(t0 + ms(100)));
    assert_eq!(b.take(t0 + ms(100)), Ok(()));
    // Lateness is not lost when there is a burst to absorb it (here none: 10/s has burst 1).
    assert_eq!(b.take(t0 + ms(250)), Ok(()));
    assert_eq!(b.take(t0 + ms(300)), Err(t0 + ms(350)));
}

#[test]
fn bucket_bursts_a_tenth_of_its_period_after_a_quiet_spell() {
    let t0 = Instant::now();
    let mut b = Bucket::new(&per_second(100)).unwrap();
    let burst = (0..50).take_while(|_| b.take(t0).is_ok()).count();
    assert_eq!(burst, 10);
    let mut m = Bucket::new(&RateLimit {
        per_second: 0,
        per_minute: 6,
    })
    .unwrap();
    assert_eq!(m.take(t0), Ok(()));
    assert_eq!(
        m.take(t0),
        Err(t0 + Duration::from_secs(10)),
        "6/min: one per 10 s"
    );
    assert!(
        Bucket::new(&RateLimit::default()).is_none(),
        "no limit, no bucket"
    );
}

#[test]
fn full_comes_before_wait_and_a_hold_before_the_rate() {
    let t0 = Instant::now();
    let mut l = Limits::default();
    let c = Controls::of(Some(&per_second(1)), Some(2), 32);
    assert_eq!(c.in_flight, 2);
    assert_eq!(
        l.admit("s", 2, &c, None, t0),
        Admit::Full,
        "no token spent at the cap"
    );
    assert_eq!(l.admit("s", 0, &c, None, t0), Admit::Go);
    assert_eq!(l.admit("s", 1, &c, None, t0), Admit::Wait);
    assert_eq!(l.wakes(), [("s".to_owned(), t0 + Duration::from_secs(1))]);
    assert_eq!(l.admit("s", 1, &c, None, t0 + ms(10)), Admit::Wait);
    assert!(l.wakes().is_empty(), "one wake-up set at a time");
    l.woken("s", t0 + Duration::from_secs(1));
    let hold = Some(t0 + Duration::from_secs(5));
    let later = t0 + Duration::from_secs(2);
    assert_eq!(l.admit("s", 0, &c, hold, later), Admit::Wait, "held");
    assert_eq!(l.wakes(), [("s".to_owned(), t0 + Duration::from_secs(5))]);
    let unlimited = Controls::of(None, None, 32);
    assert!(!unlimited.limited(32) && c.limited(32));
    assert_eq!(l.admit("u", 31, &unlimited, None, t0), Admit::Go);
    assert_eq!(l.admit("u", 32, &unlimited, None, t0), Admit::Full);
    assert_eq!(
        Controls::of(None, Some(100), 32).in_flight,
        32,
        "capped by the worker"
    );
}

#[test]
fn a_changed_limit_starts_a_new_bucket_and_full_buckets_are_forgotten() {
    let t0 = Instant::now();
    let mut l = Limits::default();
    let slow = Controls::of(Some(&per_second(1)), None, 32);
    let fast = Controls::of(Some(&per_second(1000)), None, 32);
    assert_eq!(l.admit("s", 0, &slow, None, t0), Admit::Go);
    assert_eq!(l.admit("s", 0, &slow, None, t0), Admit::Wait);
    assert_eq!(l.admit("s", 0, &fast, None, t0), Admit::Go);
    let holds = Holds::default();
    holds.hold("s", t0 + ms(10));
    l.sweep(&holds, t0 + Duration::from_secs(2));
    assert_eq!(l.tracked(), 0);
    assert_eq!(holds.until("s", t0 + Duration::from_secs(2)), None);
}

fn item(n: i64) -> Item {
    Item {
        job: DeliveryJob {
            delivery_id: n.to_string(),
            ..Default::default()
        },
        origin: Origin::Main(MainRef {
            partition: 0,
            offset: n,
            epoch: 0,
        }),
        permit: None,
    }
}

/// The dispatcher's loop over the queues and the limits, on a simulated clock: every
/// attempt takes `attempt` and succeeds; wake-ups fire on time.
struct Sim {
    q: Queues,
    l: Limits,
    controls: HashMap<String, Controls>,
    holds: Holds,
    now: Instant,
    t0: Instant,
    wakes: Vec<(String, Instant)>,
    flying: Vec<(Instant, String, Key)>,
    /// (time since start, subscription, key, job number) of every start.
    started: Vec<(Duration, String, Key, i64)>,
}

impl Sim {
    fn new(controls: &[(&str, Controls)]) -> Self {
        let now = Instant::now();
        Self {
            q: Queues::new(32),
            l: Limits::default(),
            controls: controls
                .iter()
                .map(|(s, c)| ((*s).to_owned(), *c))
                .collect(),
            holds: Holds::default(),
            now,
            t0: now,
            wakes: Vec::new(),
            flying: Vec::new(),
            started: Vec::new(),
        }
    }

    fn pump(&mut self, attempt: Duration) {
        let (l, controls, holds, now) = (&mut self.l, &self.controls, &self.holds, self.now);
        while let Some((sub, key, item)) = self.q.next_admitted(|sub, in_flight| {
            l.admit(sub, in_flight, &controls[sub], holds.until(sub, now), now)
        }) {
            let n = item.job.delivery_id.parse().unwrap();
            self.started
                .push((now - self.t0, sub.clone(), key.clone(), n));
            self.flying.push((now + attempt, sub, key));
        }
        self.wakes.extend(self.l.wakes());
    }

    /// Moves the clock by `step`: attempts over finish, wake-ups due fire.
    fn advance(&mut self, step: Duration, attempt: Duration) {
        self.now += step;
        let now = self.now;
        for (_, sub, key) in self.flying.extract_if(.., |(end, _, _)| *end <= now) {
            self.q.finish(&sub, &key);
        }
        for (sub, at) in self.wakes.extract_if(.., |(_, at)| *at <= now) {
            self.l.woken(&sub, at);
            self.q.wake(&sub);
        }
        self.pump(attempt);
    }
}

#[test]
fn a_rate_limited_subscription_is_skipped_and_holds_up_no_other() {
    let limited = Controls::of(Some(&per_second(10)), None, 32);
    let free = Controls::of(None, None, 32);
    let mut sim = Sim::new(&[("slow", limited), ("fast", free)]);
    for n in 0..100 {
        sim.q.push("slow", vec![(n % 4) as u8], item(n));
    }
    for n in 100..200 {
        sim.q.push("fast", vec![(n % 4) as u8], item(n));
    }
    sim.pump(ms(1));
    while sim.now - sim.t0 < Duration::from_secs(5) {
        sim.advance(ms(1), ms(1));
    }
    let of = |sub: &str| -> Vec<(Duration, i64)> {
        sim.started
            .iter()
            .filter(|s| s.1 == sub)
            .map(|s| (s.0, s.3))
            .collect()
    };
    let fast = of("fast");
    assert_eq!(fast.len(), 100);
    assert!(
        fast.last().unwrap().0 < ms(100),
        "the other subscription is not held up: {:?}",
        fast.last()
    );
    let slow = of("slow");
    assert!(
        (49..=51).contains(&slow.len()),
        "10/s for 5 s: {}",
        slow.len()
    );
    // Per key, in order.
    for k in 0..4 {
        let jobs: Vec<i64> = slow.iter().map(|s| s.1).filter(|n| n % 4 == k).collect();
        assert!(jobs.windows(2).all(|w| w[0] < w[1]), "{jobs:?}");
    }
}

#[test]
fn a_hold_stops_every_key_of_the_subscription_until_it_ends() {
    let mut sim = Sim::new(&[("s", Controls::of(None, None, 32))]);
    sim.holds.hold("s", sim.now + Duration::from_secs(2));
    for n in 0..3 {
        sim.q.push("s", vec![n as u8], item(n));
    }
    sim.pump(ms(1));
    assert!(sim.started.is_empty());
    while sim.started.len() < 3 {
        sim.advance(ms(10), ms(1));
    }
    assert!(sim.started.iter().all(|s| s.0 >= Duration::from_secs(2)));
}

#[test]
fn the_in_flight_limit_caps_concurrent_attempts() {
    let mut sim = Sim::new(&[("s", Controls::of(None, Some(3), 32))]);
    for n in 0..30 {
        sim.q.push("s", vec![n as u8], item(n));
    }
    sim.pump(ms(50));
    let mut most = 0;
    while sim.started.len() < 30 {
        most = most.max(sim.flying.len());
        sim.advance(ms(1), ms(50));
    }
    assert_eq!(most, 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the rate, the arrivals and the attempt times: no window of a second holds
    /// more starts of the limited subscription than the rate plus its burst, every job
    /// starts in its key's order, and the unlimited subscription is never turned away.
    #[test]
    fn the_limit_holds_in_every_window_and_order_is_kept(
        rate in 1u32..200,
        arrivals in proptest::collection::vec((0u8..2, 0u8..5, 0u64..2_000), 1..300),
        attempt_ms in 0u64..30,
    ) {
        let limited = Controls::of(Some(&per_second(rate)), None, 32);
        let free = Controls::of(None, None, 32);
        let mut sim = Sim::new(&[("limited", limited), ("free", free)]);
        let mut arrivals = arrivals;
        arrivals.sort_by_key(|a| a.2);
        let mut next = 0;
        let attempt = ms(attempt_ms);
        let total = arrivals.len();
        let mut step = 0u64;
        while sim.started.len() < total {
            while next < total && arrivals[next].2 <= step {
                let (sub, key, _) = arrivals[next];
                let sub = if sub == 0 { "limited" } else { "free" };
                sim.q.push(sub, vec![key], item(next as i64));
                next += 1;
            }
            sim.advance(ms(1), attempt);
            step += 1;
            prop_assert!(step < 1_000_000, "stuck");
        }
        let starts: Vec<Duration> = sim
            .started
            .iter()
            .filter(|s| s.1 == "limited")
            .map(|s| s.0)
            .collect();
        let burst = rate.div_ceil(10) as usize;
        for (i, t) in starts.iter().enumerate() {
            let in_window = starts[i..].iter().take_while(|u| **u < *t + Duration::from_secs(1)).count();
            prop_assert!(in_window <= rate as usize + burst, "{in_window} starts in a second at {rate}/s");
        }
        let mut last: HashMap<(String, Key), i64> = HashMap::new();
        for (_, sub, key, n) in &sim.started {
            if let Some(prev) = last.insert((sub.clone(), key.clone()), *n) {
                prop_assert!(prev < *n, "key order");
            }
        }
        // The free subscription starts each job within an attempt's time of its arrival
        // (its key's previous job) or at once.
        for (at, sub, _, n) in &sim.started {
            if sub == "free" {
                let arrived = ms(arrivals[*n as usize].2);
                prop_assert!(*at <= arrived + ms(2) + attempt * 300, "free job waited");
            }
        }
    }
}
