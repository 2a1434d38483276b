//! The dispatcher: one task that owns every queue, decides what starts, and drives the
//! parking machine. It never waits on I/O: HTTP attempts run as tasks of their own, Kafka
//! writes go to the writer task, lane reading to the lane readers, the consumer runs on its
//! own thread; each reports back on a channel that this loop reads.
//!
//! Architecture Invariant: a job of a parked subscription is never started from
//! `deliveries`: it goes to the lane behind the ones already there (jobs of a key whose
//! earlier job is still in flight from `deliveries` wait in memory until that job is over,
//! then follow it).
//!
//! Partitions of `deliveries` come and go with rebalances. Each assignment gets an *epoch*;
//! work of an earlier epoch that reports back after its partition was revoked changes
//! nothing. A revocation drops the partition's queued jobs and its parkings, lets its
//! attempts under way finish within the grace time, and then answers the consumer, which
//! commits what finished before handing the partition on.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookline_config::Config;
use hookline_events::time_fmt::now_ms;
use hookline_kafka::offsets::OffsetTracker;
use hookline_kafka::view::TopicView;
use hookline_proto::v1::{DeliveryJob, Ordering, ParkedState};
use hookline_runtime::CancellationToken;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;

use crate::job::{Context, Outcome};
use crate::lane::{LaneEvent, LaneReport, Lanes};
use crate::limits::{Controls, Limits};
use crate::ownership::{AdoptionStep, Ownership};
use crate::park::{Action, MainRef, Parking, THROTTLED};
use crate::queue::{Item, Key, Origin, Queues};
use crate::source::{Input, Source, lock};
use crate::writer::{Ack, Write};

/// How long a newly assigned partition may wait for its parked subscriptions before a warning.
const SLOW_ADOPTION: Duration = Duration::from_secs(30);

enum Msg {
    Done {
        sub: String,
        key: Key,
        origin: Origin,
        outcome: Outcome,
        permit: Option<OwnedSemaphorePermit>,
    },
    Due {
        sub: String,
        generation: u64,
    },
    /// A subscription turned away by its limits may try again (`Limits::wakes`).
    Wake {
        sub: String,
        at: Instant,
    },
    /// The parked states of a newly assigned partition, read once the view caught up.
    Adopt {
        partition: i32,
        epoch: u64,
        states: Vec<ParkedState>,
    },
}

pub struct Channels {
    pub inputs: mpsc::UnboundedReceiver<Input>,
    pub writes: mpsc::UnboundedSender<Write>,
    pub acks: mpsc::UnboundedReceiver<Ack>,
}

pub struct Dispatcher {
    ctx: Arc<Context>,
    config: Config,
    parked_view: TopicView<ParkedState>,
    tracker: Arc<Mutex<OffsetTracker>>,
    source: Source,
    queues: Queues,
    limits: Limits,
    parking: Parking,
    lanes: Lanes,
    flying: HashMap<(String, Key), Origin>,
    in_flight: usize,
    ownership: Ownership<std::sync::mpsc::Sender<()>>,
    channels: Channels,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    lane_rx: mpsc::UnboundedReceiver<LaneReport>,
    tasks: JoinSet<()>,
    actions: Vec<Action>,
    grace: Duration,
    shutdown: CancellationToken,
}

impl Dispatcher {
    pub fn new(
        ctx: Arc<Context>,
        config: Config,
        parked_view: TopicView<ParkedState>,
        tracker: Arc<Mutex<OffsetTracker>>,
        source: Source,
        channels: Channels,
        shutdown: CancellationToken,
    ) -> Result<Self, crate::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (lane_tx, lane_rx) = mpsc::unbounded_channel();
        Ok(Self {
            queues: Queues::new(config.subscription_in_flight),
            lanes: Lanes::new(&config, lane_tx, shutdown.clone()),
            grace: config.shutdown_grace()?,
            ctx,
            config,
            parked_view,
            tracker,
            source,
            parking: Parking::default(),
            limits: Limits::default(),
            flying: HashMap::new(),
            in_flight: 0,
            ownership: Ownership::default(),
            channels,
            tx,
            rx,
            lane_rx,
            tasks: JoinSet::new(),
            actions: Vec::new(),
            shutdown,
        })
    }

    /// Runs until shutdown; then waits up to the grace period for attempts under way.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            self.pump();
            while self.tasks.try_join_next().is_some() {}
            self.source.set_full(self.is_full());
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                Some(m) = self.rx.recv() => self.on_msg(m),
                Some(a) = self.channels.acks.recv() => self.on_ack(a),
                Some((sub, generation, e)) = self.lane_rx.recv() => self.on_lane(sub, generation, e),
                Some(input) = self.channels.inputs.recv() => self.on_input(input),
                _ = tick.tick() => self.on_tick(),
            }
            self.perform();
        }
        self.drain().await;
    }

    /// Jobs read from `deliveries` wait in memory up to `worker_buffer`; past it, reading
    /// pauses. Jobs read back from the retry lane have a bound of their own per subscription
    /// (`subscription_buffer`), so a subscription draining its lane slowly (rate-limited)
    /// never pauses `deliveries` for the others.
    fn is_full(&self) -> bool {
        self.queues.queued_main() + self.ownership.held() + self.parking.appends_in_flight()
            >= self.config.worker_buffer
    }

    /// `sub`'s limits as its record says them now.
    fn controls(&self, sub: &str) -> Controls {
        controls_of(&self.ctx, sub, self.config.subscription_in_flight)
    }

    /// After shutdown: attempts under way finish within the grace time; those that do count.
    async fn drain(&mut self) {
        for reply in self.ownership.drain_revoking() {
            let _ = reply.send(());
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        while self.in_flight > 0 {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Msg::Done {
                    outcome: Outcome::Completed,
                    origin: Origin::Main(m),
                    ..
                })) => {
                    self.in_flight -= 1;
                    self.finish_main(m);
                }
                Ok(Some(Msg::Done { .. })) => self.in_flight -= 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.tasks.abort_all();
    }

    fn current(&self, m: &MainRef) -> bool {
        self.ownership.is_current(m)
    }

    fn finish_main(&mut self, m: MainRef) {
        if self.ownership.may_finish(&m) {
            lock(&self.tracker).finish(m.partition, m.offset);
        }
    }

    fn key_of(&self, job: &DeliveryJob) -> Key {
        // Read in place: this runs for every job, a clone of the subscription would not.
        let unordered = self.ctx.subscriptions.read(|t| {
            t.get(&job.subscription_id)
                .is_some_and(|s| s.ordering() == Ordering::None)
        });
        if unordered {
            job.delivery_id.as_bytes().to_vec()
        } else {
            job.ordering_key.clone()
        }
    }

    /// Starts jobs while there is room, each subscription within its limits.
    fn pump(&mut self) {
        let now = Instant::now();
        let cap = self.config.subscription_in_flight;
        while self.in_flight < self.config.worker_concurrency {
            let (limits, ctx) = (&mut self.limits, &self.ctx);
            let next = self.queues.next_admitted(|sub, in_flight| {
                let controls = controls_of(ctx, sub, cap);
                limits.admit(sub, in_flight, &controls, ctx.holds.until(sub, now), now)
            });
            let Some((sub, key, item)) = next else {
                break;
            };
            self.in_flight += 1;
            self.flying.insert((sub.clone(), key.clone()), item.origin);
            let Item {
                job,
                origin,
                permit,
            } = item;
            let tx = self.tx.clone();
            if !self.ctx.waits_in_memory(job.due_at_ms) {
                // Read back from the lane before its time: it goes back to waiting.
                let _ = tx.send(Msg::Done {
                    sub,
                    key,
                    origin,
                    outcome: Outcome::Park(Box::new(job)),
                    permit,
                });
                continue;
            }
            let stop = match origin {
                Origin::Main(m) => {
                    self.ownership.started(&m);
                    self.ownership
                        .stop_token(m.partition)
                        .unwrap_or_else(|| self.shutdown.clone())
                }
                Origin::Lane { .. } => self.shutdown.clone(),
            };
            let ctx = self.ctx.clone();
            self.tasks.spawn(async move {
                let outcome = ctx.deliver(job, &stop).await;
                let _ = tx.send(Msg::Done {
                    sub,
                    key,
                    origin,
                    outcome,
                    permit,
                });
            });
        }
        for (sub, at) in self.limits.wakes() {
            let (tx, stop) = (self.tx.clone(), self.shutdown.clone());
            self.tasks.spawn(async move {
                let until = tokio::time::Instant::from_std(at);
                if stop
                    .run_until_cancelled(tokio::time::sleep_until(until))
                    .await
                    .is_some()
                {
                    let _ = tx.send(Msg::Wake { sub, at });
                }
            });
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Job {
                partition,
                offset,
                job,
            } => {
                let epoch = match self.ownership.epoch(partition) {
                    Some(epoch) => epoch,
                    // Read before its assignment was reported: take it as the report.
                    None => self.assign(partition),
                };
                let m = MainRef {
                    partition,
                    offset,
                    epoch,
                };
                lock(&self.tracker).begin(partition, offset);
                if let Some((m, job)) = self.ownership.hold(m, job) {
                    self.on_main(m, job);
                }
            }
            Input::Done { partition, offset } => {
                if self.ownership.epoch(partition).is_none() {
                    self.assign(partition);
                }
                let mut tracker = lock(&self.tracker);
                tracker.begin(partition, offset);
                tracker.finish(partition, offset);
            }
            Input::Assigned(partitions) => {
                for p in partitions {
                    if self.ownership.epoch(p).is_none() {
                        self.assign(p);
                    }
                }
            }
            Input::Revoke {
                partitions,
                lost,
                reply,
            } => self.revoke(partitions, lost, reply),
        }
    }

    /// A partition is ours: hold its jobs until its parked subscriptions are adopted. They
    /// are read once every parking write asked for before is durable: a write of a parking
    /// of this partition that ended (revoked, and now assigned again) lands before the
    /// records are read, not after them, where it would stand for a parking nobody drives.
    fn assign(&mut self, partition: i32) -> u64 {
        let epoch = self
            .ownership
            .assign(partition, self.shutdown.child_token());
        let _ = self
            .channels
            .writes
            .send(Write::Barrier { partition, epoch });
        epoch
    }

    /// This worker's earlier parking writes are durable: read the partition's parked states.
    fn read_parked(&mut self, partition: i32, epoch: u64) {
        if self.ownership.epoch(partition) != Some(epoch) {
            return;
        }
        self.ownership
            .adoption_step(partition, epoch, AdoptionStep::ParkedView);
        let (view, tx) = (self.parked_view.clone(), self.tx.clone());
        self.tasks.spawn(async move {
            view.sync().await;
            let states = view.read(|t| {
                t.values()
                    .filter(|s| s.main_partition == partition)
                    .cloned()
                    .collect()
            });
            let _ = tx.send(Msg::Adopt {
                partition,
                epoch,
                states,
            });
        });
    }

    fn adopt(&mut self, partition: i32, epoch: u64, states: Vec<ParkedState>) {
        let Some(held) = self.ownership.adopted(partition, epoch) else {
            return;
        };
        for state in states {
            let (sub, cursor) = (state.subscription_id.clone(), state.cursor);
            if self.parking.adopt(state, &mut self.actions) {
                tracing::info!(subscription_id = %sub, cursor, "adopting parked subscription");
            }
        }
        for (m, job) in held {
            self.on_main(m, job);
        }
    }

    fn revoke(&mut self, partitions: Vec<i32>, lost: bool, reply: std::sync::mpsc::Sender<()>) {
        // Lost partitions too: what finishes in the grace time is remembered by the source.
        let deadline = Instant::now() + self.grace;
        let (revoked, at_once) = self.ownership.revoke(&partitions, deadline, reply);
        for (p, _) in revoked {
            for sub in self.parking.drop_partition(p, &mut self.actions) {
                self.queues.drop_where(&sub, |i| !i.is_main());
            }
        }
        let dropped = self.queues.drop_partitions(&partitions);
        tracing::info!(
            ?partitions,
            dropped,
            lost,
            "stopped revoked partitions' work"
        );
        if let Some(reply) = at_once {
            let _ = reply.send(());
        }
    }

    fn answer_revocations(&mut self) {
        for reply in self.ownership.answerable(Instant::now()) {
            let _ = reply.send(());
        }
    }

    fn on_main(&mut self, m: MainRef, job: Option<Box<DeliveryJob>>) {
        let Some(job) = job else {
            tracing::error!(
                partition = m.partition,
                offset = m.offset,
                "undecodable delivery job skipped"
            );
            self.finish_main(m);
            return;
        };
        let sub = job.subscription_id.clone();
        let key = self.key_of(&job);
        let item = Item {
            job: *job,
            origin: Origin::Main(m),
            permit: None,
        };
        if !self.parking.is_parked(&sub) {
            self.queues.push(&sub, key, item);
            self.bound_backlog(&sub, m);
            return;
        }
        // Behind a job of the same key still in flight from `deliveries`: wait for it.
        let behind_main = matches!(
            self.flying.get(&(sub.clone(), key.clone())),
            Some(Origin::Main(_))
        ) || self.queues.has_queued_main(&sub, &key);
        if behind_main {
            self.queues.push(&sub, key, item);
        } else {
            self.parking
                .append(&sub, item.job, Some(m), &mut self.actions);
        }
    }

    /// A subscription slowed by its own limits (rate limit, in-flight limit, an endpoint's
    /// `Retry-After`) may hold at most `subscription_buffer` jobs of `deliveries` in memory;
    /// past that it is parked (due at once), so its backlog waits in the retry lane and is
    /// read back at most `subscription_buffer` at a time, as it is delivered. Reading
    /// `deliveries` then never pauses for it: it cannot hold up the other subscriptions of
    /// its partition or of this worker. (An endpoint that is merely slow stays
    /// back-pressure, as before.)
    fn bound_backlog(&mut self, sub: &str, m: MainRef) {
        if self.queues.queued_of(sub) < self.config.subscription_buffer || !self.current(&m) {
            return;
        }
        let limited = self
            .controls(sub)
            .limited(self.config.subscription_in_flight)
            || self.ctx.holds.until(sub, Instant::now()).is_some();
        if !limited {
            return;
        }
        tracing::info!(subscription_id = %sub, queued = self.queues.queued_of(sub),
            "parking a rate-limited subscription's backlog in the retry lane");
        let now = now_ms();
        self.parking.park(sub, m.partition, now, THROTTLED, now);
        for item in self.queues.take_idle(sub, Item::is_main) {
            self.append_item(sub, item);
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Wake { sub, at } => {
                self.limits.woken(&sub, at);
                self.queues.wake(&sub);
            }
            Msg::Due { sub, generation } => {
                self.parking.on_due(&sub, generation, &mut self.actions)
            }
            Msg::Adopt {
                partition,
                epoch,
                states,
            } => self.adopt(partition, epoch, states),
            Msg::Done {
                sub,
                key,
                origin,
                outcome,
                permit,
            } => {
                self.in_flight -= 1;
                self.flying.remove(&(sub.clone(), key.clone()));
                self.queues.finish(&sub, &key);
                drop(permit);
                // The job's offset finishes first: a revocation answered next commits it.
                self.on_done(&sub, &key, origin, outcome);
                if let Origin::Main(m) = origin {
                    for reply in self.ownership.finished(&m, Instant::now()) {
                        let _ = reply.send(());
                    }
                }
            }
        }
    }

    fn on_done(&mut self, sub: &str, key: &Key, origin: Origin, outcome: Outcome) {
        match (outcome, origin) {
            (Outcome::HandedBack, _) => return,
            (Outcome::Completed, Origin::Main(m)) => self.finish_main(m),
            (Outcome::Completed, Origin::Lane { offset, park }) => {
                self.parking.on_lane_done(sub, park, offset)
            }
            (Outcome::Park(job), Origin::Main(m)) => {
                if !self.current(&m) {
                    // Revoked meanwhile: the partition's next owner tries it again.
                    return;
                }
                if !self.parking.is_parked(sub) {
                    tracing::info!(subscription_id = %sub, "parking subscription in the retry lane");
                    self.parking
                        .park(sub, m.partition, job.due_at_ms, "retrying", now_ms());
                    self.parking.append(sub, *job, Some(m), &mut self.actions);
                    for item in self.queues.take_idle(sub, Item::is_main) {
                        self.append_item(sub, item);
                    }
                } else {
                    self.parking.append(sub, *job, Some(m), &mut self.actions);
                }
            }
            (Outcome::Park(job), Origin::Lane { offset, park }) => {
                if !self.parking.is_current(sub, park) {
                    // Its parking ended (partition revoked): the lane still holds the job for
                    // whoever took the parking over; the current one's reading goes on.
                    tracing::info!(subscription_id = %sub, offset, "a job of an ended parking must wait again; left to the lane");
                } else {
                    let dropped = self.queues.drop_where(sub, |i| !i.is_main());
                    let flying: BTreeSet<i64> = self
                        .flying
                        .iter()
                        .filter(|((s, _), _)| s == sub)
                        .filter_map(|(_, o)| match o {
                            Origin::Lane { offset, .. } => Some(*offset),
                            Origin::Main(_) => None,
                        })
                        .collect();
                    tracing::info!(subscription_id = %sub, offset, dropped, "parked again until due");
                    self.parking.on_lane_repark(
                        sub,
                        park,
                        offset,
                        job.attempt,
                        job.due_at_ms,
                        flying,
                        &mut self.actions,
                    );
                }
            }
        }
        // A parked subscription's jobs that waited behind this key's job follow it.
        if self.parking.is_parked(sub) && matches!(origin, Origin::Main(_)) {
            for item in self.queues.take_key(sub, key, Item::is_main) {
                self.append_item(sub, item);
            }
        }
        self.try_unpark(sub);
    }

    fn append_item(&mut self, sub: &str, item: Item) {
        let main = match item.origin {
            Origin::Main(m) => Some(m),
            Origin::Lane { .. } => None,
        };
        self.parking.append(sub, item.job, main, &mut self.actions);
    }

    fn try_unpark(&mut self, sub: &str) {
        let (queued, in_flight) = (self.queues.queued_of(sub), self.queues.in_flight_of(sub));
        self.parking
            .try_unpark(sub, queued, in_flight, &mut self.actions);
    }

    fn on_ack(&mut self, ack: Ack) {
        match ack {
            Ack::Appended {
                sub,
                park,
                main,
                partition,
                offset,
            } => {
                self.parking
                    .on_appended(&sub, park, main, partition, offset, &mut self.actions);
                self.try_unpark(&sub);
            }
            Ack::StateWritten { sub, park } => {
                self.parking.on_state_written(&sub, park, &mut self.actions)
            }
            Ack::Cleared => {}
            Ack::Barrier { partition, epoch } => self.read_parked(partition, epoch),
        }
    }

    fn on_lane(&mut self, sub: String, generation: u64, event: LaneEvent) {
        match event {
            LaneEvent::Job {
                offset,
                main,
                mut job,
                permit,
            } => {
                let Some((park, attempt)) =
                    self.parking.on_lane_job(&sub, generation, offset, main)
                else {
                    return;
                };
                if let Some(n) = attempt {
                    job.attempt = n;
                }
                let key = self.key_of(&job);
                let item = Item {
                    job: *job,
                    origin: Origin::Lane { offset, park },
                    permit: Some(permit),
                };
                self.queues.push(&sub, key, item);
            }
            LaneEvent::CaughtUp { next } => {
                self.parking.on_caught_up(&sub, generation, next);
                self.try_unpark(&sub);
            }
        }
    }

    fn on_tick(&mut self) {
        let (parked, backlog) = self.parking.gauges();
        let m = hookline_telemetry::metrics::metrics();
        m.parked_subscriptions.record(parked as i64, &[]);
        m.retry_lane_backlog.record(backlog, &[]);
        let kv = hookline_telemetry::metrics::kv;
        for (state, n) in [
            ("queued", self.queues.queued_main()),
            ("held", self.ownership.held()),
            ("appending", self.parking.appends_in_flight()),
        ] {
            m.worker_buffered.record(n as i64, &[kv("state", state)]);
        }
        m.worker_reading_paused
            .record(i64::from(self.source.is_paused()), &[]);
        for slow in self.ownership.slow_adoptions(Instant::now(), SLOW_ADOPTION) {
            let view = self.parked_view.state();
            tracing::warn!(partition = slow.partition, step = ?slow.step, held = slow.held,
                waited = ?slow.waited, parked_view_caught_up_at_ms = view.caught_up_at_ms,
                parked_view_positions = ?view.positions,
                "a newly assigned partition still waits for its parked subscriptions; its records are held");
        }
        self.parking.on_tick(&mut self.actions);
        self.limits.sweep(&self.ctx.holds, Instant::now());
        self.answer_revocations();
    }

    /// Carries out what the parking machine decided.
    fn perform(&mut self) {
        for action in std::mem::take(&mut self.actions) {
            match action {
                Action::Append { park, job, main } => {
                    let sub = job.subscription_id.clone();
                    let _ = self.channels.writes.send(Write::Append {
                        sub,
                        park,
                        job,
                        main,
                    });
                }
                Action::WriteState { park, state } => {
                    let _ = self.channels.writes.send(Write::State { park, state });
                }
                Action::Clear { sub } => {
                    tracing::info!(subscription_id = %sub, "subscription resumed from the retry lane");
                    let _ = self.channels.writes.send(Write::Clear { sub });
                }
                Action::Read {
                    sub,
                    partition,
                    cursor,
                    generation,
                } => {
                    tracing::info!(subscription_id = %sub, cursor, "resuming parked subscription");
                    self.lanes.read(&sub, partition, cursor, generation);
                }
                Action::StopRead { sub } => self.lanes.stop(&sub),
                Action::Wake {
                    sub,
                    at_ms,
                    generation,
                } => {
                    let (tx, stop) = (self.tx.clone(), self.shutdown.clone());
                    let wait = Duration::from_millis((at_ms - now_ms()).max(0) as u64);
                    self.tasks.spawn(async move {
                        if stop
                            .run_until_cancelled(tokio::time::sleep(wait))
                            .await
                            .is_some()
                        {
                            let _ = tx.send(Msg::Due { sub, generation });
                        }
                    });
                }
                Action::Finish(refs) => {
                    for m in refs {
                        self.finish_main(m);
                    }
                }
            }
        }
    }
}

/// `sub`'s limits as its record in `ctx`'s view says them, the in-flight limit capped at `cap`.
fn controls_of(ctx: &Context, sub: &str, cap: usize) -> Controls {
    ctx.subscriptions.read(|t| {
        t.get(sub).map_or(Controls::of(None, None, cap), |s| {
            Controls::of(s.rate_limit.as_ref(), s.max_in_flight, cap)
        })
    })
}
