//! Parking, as a state machine without I/O: events in, [`Action`]s out.
//!
//! A subscription is *parked* when one of its jobs must wait longer than a retry waits in
//! memory. Its jobs then go to the retry lane (`Action::Append`, in call order); the first
//! acknowledged append fixes the *cursor* of a parked-state record (`Action::WriteState`), and
//! only once that record is durable are the appended jobs' `deliveries` offsets done
//! (`Action::Finish`). When due (`Action::Wake`), the lane is read back from the cursor
//! (`Action::Read`); a job that must wait again stops the reading and parks the subscription
//! at the lowest unfinished offset. Once everything appended was read back and finished, the
//! record is cleared (`Action::Clear`) and the subscription runs from `deliveries` again.
//!
//! A parking remembers which lane jobs past the cursor are finished (an [`OffsetTracker`] of
//! the lane partition, written into the parked state as `lane_done` in the `deliveries`
//! commit metadata's format), so a reading after a re-park, a restart or a hand-over skips
//! them: a lane job is delivered once, except when a restart finds its record older than the
//! delivery (or the list past its size budget).
//!
//! The driver (`dispatch`) performs the actions and feeds the results back: acknowledgements,
//! wake-ups, lane records and the outcomes of lane jobs carry the [`ParkId`] or the reading's
//! generation (unique across parkings), so one that arrives after its parking ended (a revoked
//! partition, a cleared record) or its reading stopped is recognised and changes nothing.
//!
//! Architecture Invariant: a lane cursor never passes an unfinished job. While reading it is
//! the lowest lane offset handed over and not finished (or one past the last handed over);
//! while parked it stays put. `deliveries` offsets of appended jobs are finished only after a
//! state record whose cursor is at or below their lane offsets is durable.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hookline_kafka::offsets::{DoneFilter, OffsetTracker};
use hookline_proto::v1::{DeliveryJob, ParkedState};

/// A `deliveries` record: partition, offset, and the assignment epoch it was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MainRef {
    pub partition: i32,
    pub offset: i64,
    pub epoch: u64,
}

/// The reason of a parking made for a backlog (a subscription slowed by its own limits), not
/// for a failure.
pub const THROTTLED: &str = "throttled";

/// Tells one parking of a subscription apart from its earlier and later ones.
pub type ParkId = u64;

/// The key of a parking's lane partition in its [`OffsetTracker`] (it tracks one partition).
const LANE: i32 = 0;

#[derive(Debug)]
pub enum Action {
    /// Append `job` to the lane after every earlier append.
    Append {
        park: ParkId,
        job: Box<DeliveryJob>,
        main: Option<MainRef>,
    },
    /// Make this parked state durable (after every earlier write).
    WriteState {
        park: ParkId,
        state: ParkedState,
    },
    /// Tombstone the subscription's parked state.
    Clear {
        sub: String,
    },
    /// Read the subscription's lane records from `cursor` on.
    Read {
        sub: String,
        partition: i32,
        cursor: i64,
        generation: u64,
    },
    StopRead {
        sub: String,
    },
    /// Report `Due` for the subscription at `at_ms`.
    Wake {
        sub: String,
        at_ms: i64,
        generation: u64,
    },
    /// These `deliveries` records are done.
    Finish(Vec<MainRef>),
}

#[derive(Debug)]
struct Park {
    id: ParkId,
    state: ParkedState,
    /// A state record with the cursor is durable.
    persisted: bool,
    /// A state write is on its way.
    writing: bool,
    /// `deliveries` records appended to the lane, waiting for the first durable state.
    held_main: Vec<MainRef>,
    appends_in_flight: usize,
    last_appended: i64,
    /// Lane offsets handed over for delivery and not finished: queued, or being attempted.
    lane_pending: BTreeSet<i64>,
    /// Which lane offsets were handed over (begun) and finished, over every reading of this
    /// parking and, through `lane_done`, the parkings it took over from.
    lane: OffsetTracker,
    /// The highest lane offset handed over in this reading.
    last_read: i64,
    copies: LaneCopies,
    caught_up_to: i64,
    generation: u64,
    reading: bool,
    dirty: bool,
}

impl Park {
    /// The lowest lane offset of the subscription not finished: handed over and not finished
    /// (in this reading or an earlier one), or the first not handed over yet.
    fn unfinished_floor(&self) -> i64 {
        let floor = self.lane.committable_of(LANE).unwrap_or(self.state.cursor);
        self.lane_pending.first().map_or(floor, |p| (*p).min(floor))
    }

    /// Moves the cursor to `cursor` and records which lane jobs past it are finished.
    fn set_cursor(&mut self, cursor: i64) {
        self.state.cursor = cursor;
        self.state.attempts.retain(|o, _| *o >= cursor);
        // The list speaks from the tracker's committable offset: written only when that is
        // the cursor (it is, unless a job of an earlier parking moved the cursor below it).
        self.state.lane_done = match self.lane.committable_of(LANE) {
            Some(c) if c == cursor => self.lane.commit_metadata(LANE),
            _ => String::new(),
        };
    }
}

/// How many lane jobs' `deliveries` records a parking remembers, to tell copies apart.
const COPIES_REMEMBERED: usize = 100_000;

/// The `deliveries` records whose jobs a parking read from the lane, and at which lane
/// offset: a later lane record for the same `deliveries` record is a copy. Copies come from a
/// partition changing hands: its next owner reads `deliveries` from the committed offset and
/// appends the parked subscription's jobs again, though the previous owner had appended them
/// already (finished, not yet committed; or acknowledged only after it lost the partition).
/// The first in lane order is kept; that keeps each key's order, as both owners appended in
/// the order of `deliveries`. The oldest are forgotten past [`COPIES_REMEMBERED`] (a copy
/// of one of them is delivered again, with its delivery id).
#[derive(Debug, Default)]
struct LaneCopies {
    by_main: HashMap<(i32, i64), i64>,
    by_lane: BTreeMap<i64, (i32, i64)>,
}

impl LaneCopies {
    /// Whether the lane record at `lane` for `deliveries` record `main` is a copy of one read
    /// before at another lane offset; remembers it when it is the first.
    fn is_copy(&mut self, main: (i32, i64), lane: i64) -> bool {
        if let Some(first) = self.by_main.get(&main) {
            return *first != lane;
        }
        self.by_main.insert(main, lane);
        self.by_lane.insert(lane, main);
        while self.by_lane.len() > COPIES_REMEMBERED {
            if let Some((_, m)) = self.by_lane.pop_first() {
                self.by_main.remove(&m);
            }
        }
        false
    }
}

/// Every parked subscription of this worker.
#[derive(Debug, Default)]
pub struct Parking {
    parks: HashMap<String, Park>,
    next_id: ParkId,
    /// Wake-ups and readings are numbered across every parking: a late one of an ended
    /// parking never passes for one of the parking after it.
    next_generation: u64,
    /// Appends acknowledged by nobody yet, over every parking (bounds reading `deliveries`).
    appends_in_flight: usize,
}

impl Parking {
    pub fn is_parked(&self, sub: &str) -> bool {
        self.parks.contains_key(sub)
    }

    pub fn appends_in_flight(&self) -> usize {
        self.appends_in_flight
    }

    /// Parked subscriptions, and lane jobs appended by this worker and not finished yet
    /// (a parking adopted after a restart counts none until it appends).
    pub fn gauges(&self) -> (usize, i64) {
        let backlog = self
            .parks
            .values()
            .map(|p| {
                let floor = if p.reading {
                    p.unfinished_floor()
                } else {
                    p.state.cursor
                };
                (p.last_appended - floor + 1).max(0)
            })
            .sum();
        (self.parks.len(), backlog)
    }

    fn new_park(&mut self, state: ParkedState, persisted: bool) -> &mut Park {
        self.next_id += 1;
        let sub = state.subscription_id.clone();
        let mut lane = OffsetTracker::default();
        if let Some(done) = DoneFilter::parse(state.cursor, &state.lane_done) {
            lane.resume(LANE, &done);
        }
        let park = Park {
            id: self.next_id,
            state,
            persisted,
            writing: false,
            held_main: Vec::new(),
            appends_in_flight: 0,
            last_appended: -1,
            lane_pending: BTreeSet::new(),
            lane,
            last_read: -1,
            copies: LaneCopies::default(),
            caught_up_to: -1,
            generation: 0,
            reading: false,
            dirty: false,
        };
        self.parks.insert(sub.clone(), park);
        self.parks.get_mut(&sub).expect("just inserted")
    }

    /// Parks `sub` (not parked yet); nothing is written before its first append is acknowledged.
    pub fn park(&mut self, sub: &str, main_partition: i32, due_at_ms: i64, reason: &str, now: i64) {
        debug_assert!(!self.is_parked(sub));
        self.new_park(
            ParkedState {
                subscription_id: sub.to_owned(),
                main_partition,
                lane_partition: -1,
                cursor: -1,
                due_at_ms,
                attempts: HashMap::new(),
                reason: reason.to_owned(),
                parked_at_ms: now,
                lane_done: String::new(),
            },
            false,
        );
    }

    /// Takes over a durable parked state (a newly assigned partition's, or after a restart).
    pub fn adopt(&mut self, state: ParkedState, out: &mut Vec<Action>) -> bool {
        if self.is_parked(&state.subscription_id) {
            return false;
        }
        let due = state.due_at_ms;
        let sub = state.subscription_id.clone();
        self.new_park(state, true);
        self.wake(&sub, due, out);
        true
    }

    /// Sends a job of parked `sub` to the lane, behind every earlier one.
    pub fn append(
        &mut self,
        sub: &str,
        job: DeliveryJob,
        main: Option<MainRef>,
        out: &mut Vec<Action>,
    ) {
        let Some(park) = self.parks.get_mut(sub) else {
            debug_assert!(false, "append for {sub}, which is not parked");
            return;
        };
        park.appends_in_flight += 1;
        self.appends_in_flight += 1;
        out.push(Action::Append {
            park: park.id,
            job: Box::new(job),
            main,
        });
    }

    /// Whether parking `id` of `sub` is the current one.
    pub fn is_current(&self, sub: &str, id: ParkId) -> bool {
        self.parks.get(sub).is_some_and(|p| p.id == id)
    }

    fn current(&mut self, sub: &str, id: ParkId) -> Option<&mut Park> {
        self.parks.get_mut(sub).filter(|p| p.id == id)
    }

    /// The lane holds the job at (`lane_partition`, `lane_offset`).
    pub fn on_appended(
        &mut self,
        sub: &str,
        id: ParkId,
        main: Option<MainRef>,
        lane_partition: i32,
        lane_offset: i64,
        out: &mut Vec<Action>,
    ) {
        self.appends_in_flight = self.appends_in_flight.saturating_sub(1);
        let Some(park) = self.current(sub, id) else {
            // Its parking ended (partition revoked): the record is read again from
            // `deliveries` by whoever owns it; the lane copy is a harmless duplicate.
            return;
        };
        park.appends_in_flight -= 1;
        park.last_appended = park.last_appended.max(lane_offset);
        if park.state.cursor < 0 {
            // Appends of one subscription land in one partition, acknowledged in order:
            // the first is the lowest offset.
            park.state.lane_partition = lane_partition;
            park.state.cursor = lane_offset;
        }
        if park.persisted {
            out.push(Action::Finish(main.into_iter().collect()));
        } else {
            park.held_main.extend(main);
            if !park.writing {
                park.writing = true;
                out.push(Action::WriteState {
                    park: park.id,
                    state: park.state.clone(),
                });
            }
        }
    }

    /// A state write of parking `id` is durable.
    pub fn on_state_written(&mut self, sub: &str, id: ParkId, out: &mut Vec<Action>) {
        let Some(park) = self.current(sub, id) else {
            return;
        };
        park.writing = false;
        if !park.persisted {
            park.persisted = true;
            out.push(Action::Finish(std::mem::take(&mut park.held_main)));
            let due = park.state.due_at_ms;
            self.wake(sub, due, out);
        }
    }

    fn wake(&mut self, sub: &str, at_ms: i64, out: &mut Vec<Action>) {
        let Some(park) = self.parks.get_mut(sub) else {
            return;
        };
        self.next_generation += 1;
        park.generation = self.next_generation;
        out.push(Action::Wake {
            sub: sub.to_owned(),
            at_ms,
            generation: park.generation,
        });
    }

    /// The wake-up of `generation` came: read the lane back.
    pub fn on_due(&mut self, sub: &str, generation: u64, out: &mut Vec<Action>) {
        let Some(park) = self.parks.get_mut(sub) else {
            return;
        };
        if park.generation != generation || park.reading || !park.persisted {
            return;
        }
        park.reading = true;
        park.caught_up_to = -1;
        park.last_read = park.state.cursor - 1;
        out.push(Action::Read {
            sub: sub.to_owned(),
            partition: park.state.lane_partition,
            cursor: park.state.cursor,
            generation,
        });
    }

    /// A lane record of `sub` was read (appended for `deliveries` record `main`, when it
    /// says); when it is to be delivered, returns the parking it belongs to (its outcome is
    /// reported with it) and the job's attempt count to resume from (`None`: as recorded in
    /// the job). A copy of a job read before in this parking is finished unread.
    pub fn on_lane_job(
        &mut self,
        sub: &str,
        generation: u64,
        offset: i64,
        main: Option<(i32, i64)>,
    ) -> Option<(ParkId, Option<u32>)> {
        let park = self.parks.get_mut(sub)?;
        if park.generation != generation || !park.reading || offset < park.state.cursor {
            return None;
        }
        // Remembered even when finished (listed by the record a parking was adopted from),
        // so its copy further on is known for one.
        let copy = main.is_some_and(|m| park.copies.is_copy(m, offset));
        if park.lane.is_done(LANE, offset) && !park.lane_pending.contains(&offset) {
            // Finished before, in this reading or an earlier one.
            return None;
        }
        if copy {
            // The job itself is in the lane at a lower offset: finished, not delivered twice.
            park.lane.begin(LANE, offset);
            park.lane.finish(LANE, offset);
            park.dirty = true;
            return None;
        }
        if !park.lane_pending.insert(offset) {
            // Handed over already and not over yet.
            return None;
        }
        park.lane.begin(LANE, offset);
        park.last_read = park.last_read.max(offset);
        Some((park.id, park.state.attempts.get(&offset).copied()))
    }

    /// The reader handed over everything of `sub` before `next`.
    pub fn on_caught_up(&mut self, sub: &str, generation: u64, next: i64) {
        if let Some(park) = self.parks.get_mut(sub)
            && park.generation == generation
            && park.reading
        {
            park.caught_up_to = park.caught_up_to.max(next);
        }
    }

    /// The lane job at `offset`, handed over by parking `id`, is over (delivered or
    /// dead-lettered).
    pub fn on_lane_done(&mut self, sub: &str, id: ParkId, offset: i64) {
        if let Some(park) = self.current(sub, id)
            && park.lane_pending.remove(&offset)
        {
            park.lane.finish(LANE, offset);
            park.dirty = true;
        }
    }

    /// The lane job at `offset`, handed over by parking `id`, must wait until `due_at_ms`,
    /// after `attempt` attempts: stop reading; its unread and queued successors stay in the
    /// lane (the driver drops the queued ones). `flying`: lane offsets of `sub` still being
    /// attempted (they finish later and are then done). A job of an ended parking changes
    /// nothing: the lane still holds it for whoever took the parking over.
    #[allow(clippy::too_many_arguments)]
    pub fn on_lane_repark(
        &mut self,
        sub: &str,
        id: ParkId,
        offset: i64,
        attempt: u32,
        due_at_ms: i64,
        flying: BTreeSet<i64>,
        out: &mut Vec<Action>,
    ) {
        let Some(park) = self.current(sub, id) else {
            return;
        };
        if park.reading {
            park.reading = false;
            out.push(Action::StopRead {
                sub: sub.to_owned(),
            });
        }
        // Handed over and not finished: the tracker keeps it (and the queued jobs dropped)
        // pending, so the cursor stays at or below it and the next reading hands it over.
        park.state.attempts.insert(offset, attempt);
        // Of what it handed over, only what is still being attempted stays handed over (a job
        // of an ended parking under way is not this one's to wait for).
        park.lane_pending
            .retain(|o| flying.contains(o) && *o != offset);
        let cursor = park.unfinished_floor().min(offset);
        park.set_cursor(cursor);
        park.state.due_at_ms = due_at_ms;
        park.last_read = cursor - 1;
        park.dirty = false;
        park.writing = true;
        out.push(Action::WriteState {
            park: park.id,
            state: park.state.clone(),
        });
        self.wake(sub, due_at_ms, out);
    }

    /// Unparks `sub` if everything appended was read back and finished and nothing of it is
    /// queued or in flight any more.
    pub fn try_unpark(
        &mut self,
        sub: &str,
        queued: usize,
        in_flight: usize,
        out: &mut Vec<Action>,
    ) {
        let Some(park) = self.parks.get(sub) else {
            return;
        };
        let drained = park.reading
            && park.persisted
            && park.appends_in_flight == 0
            && park.held_main.is_empty()
            && park.lane_pending.is_empty()
            && park.caught_up_to > park.last_appended
            && park.caught_up_to > park.last_read
            && queued == 0
            && in_flight == 0;
        if !drained {
            return;
        }
        self.parks.remove(sub);
        out.push(Action::StopRead {
            sub: sub.to_owned(),
        });
        out.push(Action::Clear {
            sub: sub.to_owned(),
        });
    }

    /// Moves the cursors of subscriptions being read back past what they finished.
    pub fn on_tick(&mut self, out: &mut Vec<Action>) {
        for park in self.parks.values_mut() {
            if !(park.dirty && park.persisted && park.reading) {
                continue;
            }
            park.dirty = false;
            let cursor = park.unfinished_floor().max(park.state.cursor);
            let before = (park.state.cursor, std::mem::take(&mut park.state.lane_done));
            park.set_cursor(cursor);
            if (park.state.cursor, &park.state.lane_done) != (before.0, &before.1) {
                park.writing = true;
                out.push(Action::WriteState {
                    park: park.id,
                    state: park.state.clone(),
                });
            }
        }
    }

    /// Forgets the parkings of subscriptions on `main_partition` (revoked): their records
    /// stay durable for the partition's next owner. Returns the subscriptions dropped.
    pub fn drop_partition(&mut self, main_partition: i32, out: &mut Vec<Action>) -> Vec<String> {
        let gone: Vec<String> = self
            .parks
            .iter()
            .filter(|(_, p)| p.state.main_partition == main_partition)
            .map(|(s, _)| s.clone())
            .collect();
        for sub in &gone {
            if let Some(p) = self.parks.remove(sub) {
                self.appends_in_flight = self.appends_in_flight.saturating_sub(p.appends_in_flight);
                if p.reading {
                    out.push(Action::StopRead { sub: sub.clone() });
                }
            }
        }
        gone
    }

    /// The lane partition and cursor of `sub`.
    #[cfg(test)]
    pub fn cursor(&self, sub: &str) -> Option<(i32, i64)> {
        self.parks
            .get(sub)
            .map(|p| (p.state.lane_partition, p.state.cursor))
    }
}

#[cfg(test)]
#[path = "park/tests.rs"]
mod tests;
