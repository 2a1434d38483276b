//! Which `deliveries` partitions this worker owns, since when (an epoch per assignment), what
//! of each is under way, and which revocations wait for that work: the dispatcher's rebalance
//! bookkeeping, without I/O.
//!
//! A partition's records read before its parked subscriptions were adopted are *held* (in
//! order) until then. A revocation answers once the revoked partitions have no attempt under
//! way, or at its deadline, whichever comes first. `R` is how a revocation is answered.

use std::collections::HashMap;
use std::time::Instant;

use hookline_proto::v1::DeliveryJob;
use hookline_runtime::CancellationToken;

use crate::park::MainRef;

pub type Held = (MainRef, Option<Box<DeliveryJob>>);

struct Owned {
    epoch: u64,
    /// Cancelled when the partition is revoked: its jobs stop waiting between attempts.
    stop: CancellationToken,
    held: Option<Vec<Held>>,
    /// Since when, and what, the adoption of its parked subscriptions waits for.
    waiting: (Instant, AdoptionStep),
    /// A slow adoption was reported.
    reported: bool,
}

/// What the adoption of a partition's parked subscriptions waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdoptionStep {
    /// This worker's earlier parking writes to become durable.
    EarlierWrites,
    /// The parked-states view to catch up.
    ParkedView,
}

/// An adoption that has waited long: for the log.
#[derive(Debug)]
pub struct SlowAdoption {
    pub partition: i32,
    pub step: AdoptionStep,
    pub held: usize,
    pub waited: std::time::Duration,
}

struct Revoking<R> {
    partitions: Vec<(i32, u64)>,
    deadline: Instant,
    reply: R,
}

pub struct Ownership<R> {
    owned: HashMap<i32, Owned>,
    next_epoch: u64,
    /// Attempts under way per (partition, epoch).
    in_flight: HashMap<(i32, u64), usize>,
    revoking: Vec<Revoking<R>>,
    held: usize,
}

impl<R> Default for Ownership<R> {
    fn default() -> Self {
        Self {
            owned: HashMap::new(),
            next_epoch: 0,
            in_flight: HashMap::new(),
            revoking: Vec::new(),
            held: 0,
        }
    }
}

impl<R> Ownership<R> {
    /// `partition` is ours from now on, in a new epoch; its records are held until
    /// [`Ownership::adopted`]. `stop` is cancelled when it is revoked.
    pub fn assign(&mut self, partition: i32, stop: CancellationToken) -> u64 {
        self.next_epoch += 1;
        self.owned.insert(
            partition,
            Owned {
                epoch: self.next_epoch,
                stop,
                held: Some(Vec::new()),
                waiting: (Instant::now(), AdoptionStep::EarlierWrites),
                reported: false,
            },
        );
        self.next_epoch
    }

    /// The adoption of (`partition`, `epoch`) goes on to its next step.
    pub fn adoption_step(&mut self, partition: i32, epoch: u64, step: AdoptionStep) {
        if let Some(o) = self.owned.get_mut(&partition).filter(|o| o.epoch == epoch) {
            o.waiting = (Instant::now(), step);
        }
    }

    /// Adoptions waiting at one step for longer than `after`, each reported once.
    pub fn slow_adoptions(
        &mut self,
        now: Instant,
        after: std::time::Duration,
    ) -> Vec<SlowAdoption> {
        let mut slow = Vec::new();
        for (p, o) in &mut self.owned {
            let Some(held) = &o.held else { continue };
            let waited = now.saturating_duration_since(o.waiting.0);
            if !o.reported && waited >= after {
                o.reported = true;
                slow.push(SlowAdoption {
                    partition: *p,
                    step: o.waiting.1,
                    held: held.len(),
                    waited,
                });
            }
        }
        slow
    }

    pub fn epoch(&self, partition: i32) -> Option<u64> {
        self.owned.get(&partition).map(|o| o.epoch)
    }

    /// Whether `m` was read in the current ownership of its partition.
    pub fn is_current(&self, m: &MainRef) -> bool {
        self.epoch(m.partition) == Some(m.epoch)
    }

    /// Whether `m`'s work may still count: its partition is ours in that epoch, or being
    /// revoked and the revocation not answered yet (what finishes in the grace time is
    /// committed before the partition is handed on).
    pub fn may_finish(&self, m: &MainRef) -> bool {
        self.is_current(m)
            || self
                .revoking
                .iter()
                .any(|r| r.partitions.contains(&(m.partition, m.epoch)))
    }

    /// The token that ends waits of `partition`'s jobs.
    pub fn stop_token(&self, partition: i32) -> Option<CancellationToken> {
        self.owned.get(&partition).map(|o| o.stop.clone())
    }

    /// Holds a record of a partition whose parked subscriptions are not adopted yet; gives
    /// it back when it may go on at once.
    pub fn hold(&mut self, m: MainRef, job: Option<Box<DeliveryJob>>) -> Option<Held> {
        match self
            .owned
            .get_mut(&m.partition)
            .and_then(|o| o.held.as_mut())
        {
            Some(held) => {
                held.push((m, job));
                self.held += 1;
                None
            }
            None => Some((m, job)),
        }
    }

    /// The parked subscriptions of (`partition`, `epoch`) are adopted: its held records, in
    /// order (none when that ownership has ended).
    pub fn adopted(&mut self, partition: i32, epoch: u64) -> Option<Vec<Held>> {
        let owned = self
            .owned
            .get_mut(&partition)
            .filter(|o| o.epoch == epoch)?;
        let held = owned.held.take().unwrap_or_default();
        self.held -= held.len();
        Some(held)
    }

    /// Records held in all.
    pub fn held(&self) -> usize {
        self.held
    }

    /// An attempt of `m` starts.
    pub fn started(&mut self, m: &MainRef) {
        *self.in_flight.entry((m.partition, m.epoch)).or_default() += 1;
    }

    /// An attempt of `m` is over; returns the revocations that may now be answered.
    pub fn finished(&mut self, m: &MainRef, now: Instant) -> Vec<R> {
        let key = (m.partition, m.epoch);
        if let Some(n) = self.in_flight.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&key);
            }
        }
        self.answerable(now)
    }

    /// `partitions` are revoked: they are no longer ours, their tokens are cancelled. Returns
    /// the (partition, epoch) pairs that were ours, and the reply when the revocation may be
    /// answered at once (nothing of them under way); otherwise it waits until `deadline`.
    /// A partition whose earlier revocation still waits for its attempts (a worker handing
    /// everything over before it leaves, then revoked by the group) is waited for again: the
    /// answer lets the caller commit, and what is still under way would not be in the commit.
    pub fn revoke(
        &mut self,
        partitions: &[i32],
        deadline: Instant,
        reply: R,
    ) -> (Vec<(i32, u64)>, Option<R>) {
        let mut revoked = Vec::new();
        let mut waits = Vec::new();
        for p in partitions {
            if let Some(owned) = self.owned.remove(p) {
                owned.stop.cancel();
                self.held -= owned.held.map_or(0, |h| h.len());
                revoked.push((*p, owned.epoch));
                waits.push((*p, owned.epoch));
            }
            for r in &self.revoking {
                waits.extend(r.partitions.iter().filter(|(q, _)| q == p));
            }
        }
        waits.sort_unstable();
        waits.dedup();
        let revoking = Revoking {
            partitions: waits,
            deadline,
            reply,
        };
        if self.idle(&revoking) {
            (revoked, Some(revoking.reply))
        } else {
            self.revoking.push(revoking);
            (revoked, None)
        }
    }

    fn idle(&self, r: &Revoking<R>) -> bool {
        r.partitions
            .iter()
            .all(|pe| self.in_flight.get(pe).copied().unwrap_or(0) == 0)
    }

    /// Revocations whose partitions have nothing under way, or whose deadline passed.
    pub fn answerable(&mut self, now: Instant) -> Vec<R> {
        if self.revoking.is_empty() {
            return Vec::new();
        }
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.revoking)
            .into_iter()
            .partition(|r| now >= r.deadline || self.idle(r));
        self.revoking = waiting;
        done.into_iter().map(|r| r.reply).collect()
    }

    /// Every revocation still waiting (shutdown answers them all).
    pub fn drain_revoking(&mut self) -> Vec<R> {
        self.revoking.drain(..).map(|r| r.reply).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn work_finishing_during_a_revocation_still_counts() {
        let mut o: Ownership<u8> = Ownership::default();
        let e = o.assign(0, CancellationToken::new());
        let job = m(0, 7, e);
        o.started(&job);
        let now = Instant::now();
        let (_, at_once) = o.revoke(&[0], now + Duration::from_secs(5), 1);
        assert!(at_once.is_none(), "an attempt is under way");
        assert!(!o.is_current(&job));
        assert!(o.may_finish(&job), "finishing within the grace time counts");
        assert_eq!(o.finished(&job, now), vec![1]);
        assert!(!o.may_finish(&job), "answered: the partition is handed on");
    }

    fn m(partition: i32, offset: i64, epoch: u64) -> MainRef {
        MainRef {
            partition,
            offset,
            epoch,
        }
    }

    #[test]
    fn records_wait_for_adoption_in_order() {
        let mut o: Ownership<()> = Ownership::default();
        let e = o.assign(3, CancellationToken::new());
        assert!(o.hold(m(3, 1, e), None).is_none());
        assert!(o.hold(m(3, 2, e), None).is_none());
        assert_eq!(o.held(), 2);
        let held = o.adopted(3, e).unwrap();
        assert_eq!(
            held.iter().map(|(m, _)| m.offset).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(o.held(), 0);
        assert!(
            o.hold(m(3, 3, e), None).is_some(),
            "after adoption: at once"
        );
        assert!(o.adopted(3, e + 1).is_none(), "another epoch's adoption");
    }

    #[test]
    fn a_revocation_waits_for_attempts_under_way_then_answers() {
        let mut o: Ownership<&str> = Ownership::default();
        let stop = CancellationToken::new();
        let e = o.assign(1, stop.clone());
        o.assign(2, CancellationToken::new());
        o.started(&m(1, 10, e));
        o.started(&m(1, 11, e));
        let now = Instant::now();
        let (revoked, at_once) = o.revoke(&[1], now + Duration::from_secs(5), "r1");
        assert_eq!(revoked, [(1, e)]);
        assert!(at_once.is_none(), "two attempts under way");
        assert!(stop.is_cancelled(), "their waits end");
        assert!(!o.is_current(&m(1, 10, e)), "no longer ours");
        assert!(o.finished(&m(1, 10, e), now).is_empty());
        assert_eq!(o.finished(&m(1, 11, e), now), ["r1"]);
        // Nothing under way: answered at once. Unknown partitions change nothing.
        let (revoked, at_once) = o.revoke(&[2, 9], now, "r2");
        assert_eq!(revoked.len(), 1);
        assert_eq!(at_once, Some("r2"));
    }

    #[test]
    fn a_second_revocation_of_a_partition_still_being_revoked_waits_too() {
        let mut o: Ownership<&str> = Ownership::default();
        let e = o.assign(4, CancellationToken::new());
        o.started(&m(4, 20, e));
        let now = Instant::now();
        let (_, at_once) = o.revoke(&[4], now + Duration::from_secs(5), "hand-over");
        assert!(at_once.is_none());
        // The group revokes it too while its attempt is under way: no answer yet.
        let (revoked, at_once) = o.revoke(&[4], now + Duration::from_secs(5), "group");
        assert!(revoked.is_empty(), "no longer ours");
        assert!(at_once.is_none(), "its attempt is still under way");
        assert!(o.may_finish(&m(4, 20, e)));
        let mut answered = o.finished(&m(4, 20, e), now);
        answered.sort_unstable();
        assert_eq!(answered, ["group", "hand-over"]);
        assert!(
            o.revoke(&[4], now, "again").1.is_some(),
            "nothing waits now"
        );
    }

    #[test]
    fn a_revocation_answers_at_its_deadline_and_a_new_epoch_starts_fresh() {
        let mut o: Ownership<u8> = Ownership::default();
        let e1 = o.assign(0, CancellationToken::new());
        o.started(&m(0, 1, e1));
        let now = Instant::now();
        let deadline = now + Duration::from_millis(10);
        assert!(o.revoke(&[0], deadline, 7).1.is_none());
        assert!(o.answerable(now).is_empty());
        assert_eq!(o.answerable(deadline), [7]);
        // Assigned again: the late attempt of the old epoch is not current and counts nowhere.
        let e2 = o.assign(0, CancellationToken::new());
        assert_ne!(e1, e2);
        assert!(!o.is_current(&m(0, 1, e1)) && o.is_current(&m(0, 1, e2)));
        assert!(o.finished(&m(0, 1, e1), now).is_empty());
        assert!(
            o.revoke(&[0], now, 8).1.is_some(),
            "nothing of epoch 2 under way"
        );
    }
}
