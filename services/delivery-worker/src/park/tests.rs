//! The parking machine against a simulated lane, writer and reader: property tests of its
//! invariants under every interleaving proptest finds.

use std::collections::{HashSet, VecDeque};

use proptest::prelude::*;

use super::*;

const SUB: &str = "sub";

/// The machine's world: a lane, a writer that acknowledges in order, a reader, a clock.
#[derive(Default)]
struct Sim {
    m: Parking,
    writes: VecDeque<Action>,
    /// Lane records: the `deliveries` offset each came from.
    lane: Vec<Option<i64>>,
    durable: Option<ParkedState>,
    reading: Option<(u64, i64)>,
    wake: Option<u64>,
    in_progress: Vec<i64>,
    /// Lane offsets delivered at least once.
    completed: HashSet<i64>,
    /// `deliveries` offsets the machine said were done.
    finished: HashSet<i64>,
    /// `deliveries` offsets sent to the machine.
    sent: Vec<i64>,
    next_main: i64,
}

#[derive(Debug, Clone)]
enum Op {
    New,
    Ack,
    Due,
    Read,
    CaughtUp,
    Complete(usize),
    Repark(usize),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::New),
        4 => Just(Op::Ack),
        1 => Just(Op::Due),
        3 => Just(Op::Read),
        1 => Just(Op::CaughtUp),
        3 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::Repark),
        1 => Just(Op::Tick),
    ]
}

impl Sim {
    fn main(&mut self) -> MainRef {
        self.next_main += 1;
        self.sent.push(self.next_main);
        MainRef {
            partition: 0,
            offset: self.next_main,
            epoch: 1,
        }
    }

    fn step(&mut self, op: Op) {
        let mut out = Vec::new();
        match op {
            Op::New => {
                let main = self.main();
                if !self.m.is_parked(SUB) {
                    self.m.park(SUB, 0, 0, "retrying", 0);
                }
                self.m
                    .append(SUB, DeliveryJob::default(), Some(main), &mut out);
            }
            Op::Ack => match self.writes.pop_front() {
                Some(Action::Append { park, main, .. }) => {
                    self.lane.push(main.map(|m| m.offset));
                    let offset = self.lane.len() as i64 - 1;
                    self.m.on_appended(SUB, park, main, 0, offset, &mut out);
                    self.try_unpark(&mut out);
                }
                Some(Action::WriteState { park, state }) => {
                    self.durable = Some(state);
                    self.m.on_state_written(SUB, park, &mut out);
                }
                Some(Action::Clear { .. }) => self.durable = None,
                _ => {}
            },
            Op::Due => {
                if let Some(g) = self.wake.take() {
                    self.m.on_due(SUB, g, &mut out);
                }
            }
            Op::Read => {
                if let Some((g, next)) = self.reading
                    && (next as usize) < self.lane.len()
                {
                    self.reading = Some((g, next + 1));
                    if self.m.on_lane_job(SUB, g, next).is_some() {
                        self.in_progress.push(next);
                    }
                }
            }
            Op::CaughtUp => {
                if let Some((g, next)) = self.reading
                    && next as usize == self.lane.len()
                {
                    self.m.on_caught_up(SUB, g, next);
                    self.try_unpark(&mut out);
                }
            }
            Op::Complete(i) if !self.in_progress.is_empty() => {
                let offset = self.in_progress.remove(i % self.in_progress.len());
                self.completed.insert(offset);
                self.m.on_lane_done(SUB, offset);
                self.try_unpark(&mut out);
            }
            Op::Repark(i) if !self.in_progress.is_empty() => {
                let offset = self.in_progress.remove(i % self.in_progress.len());
                let flying = self.in_progress.iter().copied().collect();
                self.m.on_lane_repark(SUB, offset, 2, 0, flying, &mut out);
            }
            Op::Tick => self.m.on_tick(&mut out),
            Op::Complete(_) | Op::Repark(_) => {}
        }
        self.perform(out);
        self.check();
    }

    fn try_unpark(&mut self, out: &mut Vec<Action>) {
        self.m.try_unpark(SUB, 0, self.in_progress.len(), out);
    }

    fn perform(&mut self, out: Vec<Action>) {
        for a in out {
            match a {
                Action::Append { .. } | Action::WriteState { .. } | Action::Clear { .. } => {
                    self.writes.push_back(a)
                }
                Action::Read {
                    cursor, generation, ..
                } => self.reading = Some((generation, cursor)),
                Action::StopRead { .. } => self.reading = None,
                Action::Wake { generation, .. } => self.wake = Some(generation),
                Action::Finish(refs) => {
                    for m in refs {
                        // Done only once a durable record points at or below its lane copy.
                        let state = self.durable.as_ref().expect("finished before durable");
                        let copy = self.lane.iter().position(|o| *o == Some(m.offset));
                        let copy = copy.expect("finished before appended") as i64;
                        assert!(state.cursor <= copy, "cursor {} past {copy}", state.cursor);
                        assert!(self.finished.insert(m.offset), "finished twice");
                    }
                }
            }
        }
    }

    /// Architecture Invariant: a durable cursor never passes an unfinished lane job.
    fn check(&self) {
        if let Some(state) = &self.durable {
            let lowest_unfinished =
                (0..self.lane.len() as i64).find(|o| !self.completed.contains(o));
            if let Some(o) = lowest_unfinished {
                assert!(
                    state.cursor <= o,
                    "durable cursor {} passed unfinished lane job {o}",
                    state.cursor
                );
            }
        }
    }

    /// No more failures: everything acknowledged, read, delivered; the subscription unparks.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            if !self.m.is_parked(SUB) && self.writes.is_empty() {
                break;
            }
            let op = if !self.writes.is_empty() {
                Op::Ack
            } else if !self.in_progress.is_empty() {
                Op::Complete(0)
            } else if self.wake.is_some() && self.reading.is_none() {
                Op::Due
            } else if self
                .reading
                .is_some_and(|(_, n)| (n as usize) < self.lane.len())
            {
                Op::Read
            } else if self.reading.is_some() {
                Op::CaughtUp
            } else {
                Op::Tick
            };
            self.step(op);
        }
        assert!(!self.m.is_parked(SUB), "still parked after settling");
        assert!(self.durable.is_none(), "parked state not cleared");
        assert_eq!(self.m.appends_in_flight(), 0);
        // Every job sent to the lane was delivered, and its `deliveries` offset finished.
        for (o, main) in self.lane.iter().enumerate() {
            assert!(self.completed.contains(&(o as i64)), "lane job {o} lost");
            if let Some(main) = main {
                assert!(self.finished.contains(main), "offset {main} never finished");
            }
        }
        assert_eq!(self.finished.len(), self.sent.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cursor_never_passes_an_unfinished_job_and_all_is_delivered(
        ops in proptest::collection::vec(op(), 1..200)
    ) {
        let mut sim = Sim::default();
        for op in ops {
            sim.step(op);
        }
        sim.settle();
    }
}

#[test]
fn acknowledgements_of_an_ended_parking_change_nothing() {
    let mut m = Parking::default();
    let mut out = Vec::new();
    m.park(SUB, 3, 0, "retrying", 0);
    let main = MainRef {
        partition: 3,
        offset: 7,
        epoch: 1,
    };
    m.append(SUB, DeliveryJob::default(), Some(main), &mut out);
    let Some(Action::Append { park, .. }) = out.pop() else {
        panic!("an append")
    };
    // The partition is revoked before the append is acknowledged.
    assert_eq!(m.drop_partition(3, &mut out), vec![SUB.to_owned()]);
    m.on_appended(SUB, park, Some(main), 0, 0, &mut out);
    m.on_state_written(SUB, park, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert!(!m.is_parked(SUB));
    assert_eq!(m.appends_in_flight(), 0);
    // A new parking of the same subscription is not confused with the old one.
    m.park(SUB, 3, 0, "retrying", 0);
    m.on_appended(SUB, park, Some(main), 0, 5, &mut out);
    assert!(out.is_empty());
    assert_eq!(m.cursor(SUB), Some((-1, -1)));
}

#[test]
fn adopted_state_is_read_back_when_due() {
    let mut m = Parking::default();
    let mut out = Vec::new();
    let state = ParkedState {
        subscription_id: SUB.into(),
        main_partition: 1,
        lane_partition: 2,
        cursor: 40,
        due_at_ms: 1_000,
        ..Default::default()
    };
    assert!(m.adopt(state.clone(), &mut out));
    assert!(!m.adopt(state, &mut out), "adopted once");
    let Some(Action::Wake {
        generation, at_ms, ..
    }) = out.pop()
    else {
        panic!("a wake-up")
    };
    assert_eq!(at_ms, 1_000);
    m.on_due(SUB, generation, &mut out);
    assert!(matches!(
        out.pop(),
        Some(Action::Read {
            partition: 2,
            cursor: 40,
            ..
        })
    ));
    assert_eq!(
        m.on_lane_job(SUB, generation, 39),
        None,
        "before the cursor"
    );
    assert_eq!(m.on_lane_job(SUB, generation, 40), Some(None));
    assert_eq!(m.on_lane_job(SUB, generation, 40), None, "handed over once");
}

/// Found by the property test: a job that must wait again, while a reading started anew has
/// not yet re-read an earlier job, must not move the cursor past that earlier job.
#[test]
fn reparking_before_an_earlier_job_was_read_again_keeps_it() {
    use Op::*;
    let mut sim = Sim::default();
    for op in [
        New,
        Ack,
        New,
        Ack,
        New,
        Due,
        Ack,
        Read,
        Read,
        Ack,
        Read,
        Repark(0),
        New,
        Due,
        Repark(0),
    ] {
        sim.step(op);
    }
    sim.settle();
}
