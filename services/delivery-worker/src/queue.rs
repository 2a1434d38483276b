//! Per-subscription, per-ordering-key queues: which job may start next.
//!
//! Strict order is per (subscription, ordering key): a key's next job starts only after its
//! previous one finished (delivered, dead-lettered or parked). Keys of one subscription run
//! concurrently up to a per-subscription in-flight limit; subscriptions take turns.
//! Pure bookkeeping: no I/O, no clocks.

use std::collections::{HashMap, HashSet, VecDeque};

use hookline_proto::v1::DeliveryJob;

use crate::limits::Admit;
use crate::park::{MainRef, ParkId};
use tokio::sync::OwnedSemaphorePermit;

pub type Key = Vec<u8>;

/// Where a job was read from: its offset there is done once the job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Main(MainRef),
    /// A lane record, handed over by parking `park` (its outcome is that parking's).
    Lane {
        offset: i64,
        park: ParkId,
    },
}

#[derive(Debug)]
pub struct Item {
    pub job: DeliveryJob,
    pub origin: Origin,
    /// Held by jobs read from the retry lane: bounds what one resumed subscription buffers.
    pub permit: Option<OwnedSemaphorePermit>,
}

impl Item {
    pub fn is_main(&self) -> bool {
        matches!(self.origin, Origin::Main(_))
    }
}

#[derive(Default)]
struct SubQueue {
    keys: HashMap<Key, VecDeque<Item>>,
    busy: HashSet<Key>,
    /// Keys that may have a startable job (checked when popped).
    ready: VecDeque<Key>,
    in_flight: usize,
    queued: usize,
}

pub struct Queues {
    subs: HashMap<String, SubQueue>,
    /// Subscriptions that may have a startable job, in turn order.
    turn: VecDeque<String>,
    queued: usize,
    /// Of `queued`, the jobs read from `deliveries`.
    queued_main: usize,
    limit: usize,
}

impl Queues {
    /// `limit`: jobs in flight per subscription.
    pub fn new(limit: usize) -> Self {
        Self {
            subs: HashMap::new(),
            turn: VecDeque::new(),
            queued: 0,
            queued_main: 0,
            limit,
        }
    }

    pub fn push(&mut self, sub: &str, key: Key, item: Item) {
        let q = self.subs.entry(sub.to_owned()).or_default();
        let queue = q.keys.entry(key.clone()).or_default();
        self.queued_main += usize::from(item.is_main());
        queue.push_back(item);
        if queue.len() == 1 && !q.busy.contains(&key) {
            q.ready.push_back(key);
            self.turn.push_back(sub.to_owned());
        }
        q.queued += 1;
        self.queued += 1;
    }

    /// The next job allowed to start, marking its key busy.
    #[cfg(test)]
    pub fn next(&mut self) -> Option<(String, Key, Item)> {
        self.next_admitted(|_, _| Admit::Go)
    }

    /// The next job allowed to start, marking its key busy. `admit(sub, in_flight)` is asked
    /// once a subscription has a startable job, before it is taken: a subscription it turns
    /// away loses its turn (its keys keep their jobs, in order) and gets it back when one of
    /// its jobs finishes ([`Admit::Full`]) or from [`Queues::wake`] ([`Admit::Wait`]); the
    /// next subscription is tried meanwhile.
    pub fn next_admitted(
        &mut self,
        mut admit: impl FnMut(&str, usize) -> Admit,
    ) -> Option<(String, Key, Item)> {
        for _ in 0..self.turn.len() {
            let sub = self.turn.pop_front()?;
            let Some(q) = self.subs.get_mut(&sub) else {
                continue;
            };
            if q.in_flight >= self.limit {
                // Parked until one of its jobs finishes (`finish` puts it back in turn).
                continue;
            }
            while let Some(key) = q.ready.pop_front() {
                if q.busy.contains(&key) || !q.keys.contains_key(&key) {
                    continue;
                }
                if admit(&sub, q.in_flight) != Admit::Go {
                    // The key keeps its place; the subscription waits for its turn back.
                    q.ready.push_front(key);
                    break;
                }
                let Some(item) = q.keys.get_mut(&key).and_then(VecDeque::pop_front) else {
                    continue;
                };
                if q.keys.get(&key).is_some_and(VecDeque::is_empty) {
                    q.keys.remove(&key);
                }
                q.busy.insert(key.clone());
                q.in_flight += 1;
                q.queued -= 1;
                self.queued -= 1;
                self.queued_main -= usize::from(item.is_main());
                if !q.ready.is_empty() {
                    self.turn.push_back(sub.clone());
                }
                return Some((sub, key, item));
            }
        }
        None
    }

    /// A subscription turned away by `admit` with [`Admit::Wait`] may try again.
    pub fn wake(&mut self, sub: &str) {
        if self.subs.get(sub).is_some_and(|q| !q.ready.is_empty()) {
            self.turn.push_back(sub.to_owned());
        }
    }

    /// The job of (`sub`, `key`) that was started is over; its key may go on.
    pub fn finish(&mut self, sub: &str, key: &Key) {
        let Some(q) = self.subs.get_mut(sub) else {
            return;
        };
        if q.busy.remove(key) {
            q.in_flight -= 1;
        }
        if q.keys.contains_key(key) {
            q.ready.push_back(key.clone());
        }
        if !q.ready.is_empty() {
            self.turn.push_back(sub.to_owned());
        }
        if q.in_flight == 0 && q.queued == 0 {
            self.subs.remove(sub);
        }
    }

    /// Removes and returns the queued jobs of `sub`'s keys that have nothing in flight, each
    /// key's jobs in order; `filter` picks which queued items go.
    pub fn take_idle(&mut self, sub: &str, filter: impl Fn(&Item) -> bool) -> Vec<Item> {
        let Some(q) = self.subs.get_mut(sub) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let idle: Vec<Key> = q
            .keys
            .keys()
            .filter(|k| !q.busy.contains(*k))
            .cloned()
            .collect();
        for key in idle {
            let queue = q.keys.get_mut(&key).expect("listed");
            let before = queue.len();
            // Taking stops at the first item that stays, so each key's order holds.
            while queue.front().is_some_and(&filter) {
                let item = queue.pop_front().expect("front");
                self.queued_main -= usize::from(item.is_main());
                out.push(item);
            }
            let taken = before - queue.len();
            q.queued -= taken;
            self.queued -= taken;
            if queue.is_empty() {
                q.keys.remove(&key);
            }
        }
        if q.in_flight == 0 && q.queued == 0 {
            self.subs.remove(sub);
        }
        out
    }

    /// Removes and returns the leading queued jobs of one idle key that pass `filter`.
    pub fn take_key(&mut self, sub: &str, key: &Key, filter: impl Fn(&Item) -> bool) -> Vec<Item> {
        let Some(q) = self.subs.get_mut(sub) else {
            return Vec::new();
        };
        if q.busy.contains(key) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Some(queue) = q.keys.get_mut(key) {
            while queue.front().is_some_and(&filter) {
                let item = queue.pop_front().expect("front");
                self.queued_main -= usize::from(item.is_main());
                out.push(item);
            }
            if queue.is_empty() {
                q.keys.remove(key);
            }
        }
        q.queued -= out.len();
        self.queued -= out.len();
        if q.in_flight == 0 && q.queued == 0 {
            self.subs.remove(sub);
        }
        out
    }

    /// Drops every queued job of `sub` that passes `filter`, busy keys included.
    pub fn drop_where(&mut self, sub: &str, filter: impl Fn(&Item) -> bool) -> usize {
        let Some(q) = self.subs.get_mut(sub) else {
            return 0;
        };
        let mut dropped = 0;
        let mut dropped_main = 0;
        q.keys.retain(|_, queue| {
            let before = queue.len();
            queue.retain(|i| {
                let drop = filter(i);
                dropped_main += usize::from(drop && i.is_main());
                !drop
            });
            dropped += before - queue.len();
            !queue.is_empty()
        });
        q.queued -= dropped;
        self.queued -= dropped;
        self.queued_main -= dropped_main;
        if q.in_flight == 0 && q.queued == 0 {
            self.subs.remove(sub);
        }
        dropped
    }

    /// Drops every queued job read from one of `partitions` of `deliveries`.
    pub fn drop_partitions(&mut self, partitions: &[i32]) -> usize {
        let subs: Vec<String> = self.subs.keys().cloned().collect();
        subs.iter()
            .map(|sub| {
                self.drop_where(
                    sub,
                    |i| matches!(i.origin, Origin::Main(m) if partitions.contains(&m.partition)),
                )
            })
            .sum()
    }

    /// Whether `key` has queued jobs read from `deliveries` (not from the retry lane).
    pub fn has_queued_main(&self, sub: &str, key: &Key) -> bool {
        self.subs
            .get(sub)
            .and_then(|q| q.keys.get(key))
            .is_some_and(|queue| queue.iter().any(Item::is_main))
    }

    /// Jobs of `sub` queued (not in flight).
    pub fn queued_of(&self, sub: &str) -> usize {
        self.subs.get(sub).map_or(0, |q| q.queued)
    }

    pub fn in_flight_of(&self, sub: &str) -> usize {
        self.subs.get(sub).map_or(0, |q| q.in_flight)
    }

    /// Jobs queued in all.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Jobs queued that were read from `deliveries` (those read back from the retry lane
    /// have a bound of their own).
    pub fn queued_main(&self) -> usize {
        self.queued_main
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn id(i: &Item) -> i64 {
        i.job.delivery_id.parse().unwrap()
    }

    #[test]
    fn one_job_per_key_at_a_time_in_order() {
        let mut q = Queues::new(10);
        q.push("s", b"a".to_vec(), item(1));
        q.push("s", b"a".to_vec(), item(2));
        q.push("s", b"b".to_vec(), item(3));
        let (_, k1, i1) = q.next().unwrap();
        let (_, k2, i2) = q.next().unwrap();
        assert_eq!((id(&i1), id(&i2)), (1, 3), "keys a and b run concurrently");
        assert!(q.next().is_none(), "a's second job waits for its first");
        q.finish("s", &k1);
        let (_, _, i) = q.next().unwrap();
        assert_eq!(id(&i), 2);
        q.finish("s", &k2);
        assert!(q.next().is_none());
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn in_flight_limit_per_subscription_and_turns_across_them() {
        let mut q = Queues::new(2);
        for n in 0..5 {
            q.push("busy", vec![n as u8], item(n));
        }
        q.push("other", b"x".to_vec(), item(100));
        let started: Vec<(String, i64)> = std::iter::from_fn(|| q.next())
            .map(|(s, _, i)| (s, id(&i)))
            .collect();
        assert_eq!(
            started.iter().filter(|(s, _)| s == "busy").count(),
            2,
            "{started:?}"
        );
        assert!(
            started.iter().any(|(s, _)| s == "other"),
            "another subscription is not held up"
        );
        q.finish("busy", &vec![0]);
        assert_eq!(id(&q.next().unwrap().2), 2);
    }

    #[test]
    fn take_idle_keeps_busy_keys_and_order() {
        let mut q = Queues::new(10);
        q.push("s", b"a".to_vec(), item(1));
        q.push("s", b"a".to_vec(), item(2));
        q.push("s", b"b".to_vec(), item(3));
        q.push("s", b"b".to_vec(), item(4));
        let (_, ka, _) = q.next().unwrap(); // a:1 in flight
        assert_eq!(ka, b"a".to_vec());
        let taken: Vec<i64> = q.take_idle("s", |_| true).iter().map(id).collect();
        assert_eq!(
            taken,
            [3, 4],
            "b's jobs in order; a is busy and keeps its queue"
        );
        assert!(q.has_queued_main("s", &b"a".to_vec()));
        q.finish("s", &ka);
        let rest: Vec<i64> = q
            .take_key("s", &b"a".to_vec(), |_| true)
            .iter()
            .map(id)
            .collect();
        assert_eq!(rest, [2]);
        assert_eq!(q.queued(), 0);
    }
}
