//! The dispatcher: one task that owns every queue, decides what starts, and parks
//! subscriptions that would otherwise hold up others.
//!
//! A subscription is *parked* when a job's next attempt is further away than a retry waits in
//! memory, or when its queued jobs pass `subscription_buffer` (a slow endpoint). Its queued
//! jobs, and every later job of it, are appended to the retry lane in order; a parked-state
//! record (cursor = first unfinished lane offset, due time, attempt counts) makes that
//! durable, and only then are the jobs' offsets on `deliveries` marked done. When due, a
//! reader feeds the subscription's lane jobs back into its queues, holding a permit per job;
//! when it has caught up with everything appended and all of it is finished, the record is
//! cleared and the subscription runs from `deliveries` again.
//!
//! Architecture Invariant: a job of a parked subscription is never started from
//! `deliveries`: it goes to the lane behind the ones already there (jobs of a key whose
//! earlier job is still in flight wait in memory until that job is over, then follow it).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use hookline_config::Config;
use hookline_events::time_fmt::now_ms;
use hookline_kafka::offsets::OffsetTracker;
use hookline_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use hookline_kafka::rdkafka::message::Message;
use hookline_kafka::rdkafka::producer::FutureProducer;
use hookline_kafka::view::TopicView;
use hookline_proto::Message as _;
use hookline_proto::v1::{DeliveryJob, Ordering, ParkedState};
use hookline_runtime::CancellationToken;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;

use crate::job::{Context, Outcome};
use crate::lane::{self, LaneEvent};
use crate::queue::{Item, Key, Origin, Queues};

enum Msg {
    Done {
        sub: String,
        key: Key,
        origin: Origin,
        outcome: Outcome,
        permit: Option<OwnedSemaphorePermit>,
    },
    Appended {
        sub: String,
        main: Option<(i32, i64)>,
        result: Result<(i32, i64), String>,
    },
    Due {
        sub: String,
        generation: u64,
    },
    /// Something a parked subscription waited for happened: see whether it can resume.
    Check {
        sub: String,
    },
}

/// A parked subscription.
struct Park {
    state: ParkedState,
    /// The state record is durable (the first append fixed the cursor).
    persisted: bool,
    /// `deliveries` offsets of appended jobs, finished once the state is durable.
    held_main: Vec<(i32, i64)>,
    appends_in_flight: usize,
    last_appended: i64,
    /// Lane offsets read and not yet finished.
    lane_pending: BTreeSet<i64>,
    last_read: i64,
    caught_up_to: i64,
    generation: u64,
    reader: Option<lane::Reader>,
    dirty: bool,
}

impl Park {
    fn new(state: ParkedState, persisted: bool) -> Self {
        Self {
            state,
            persisted,
            held_main: Vec::new(),
            appends_in_flight: 0,
            last_appended: -1,
            lane_pending: BTreeSet::new(),
            last_read: -1,
            caught_up_to: -1,
            generation: 0,
            reader: None,
            dirty: false,
        }
    }

    fn stop_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            r.stop.cancel();
        }
    }
}

pub struct Dispatcher {
    ctx: Arc<Context>,
    config: Config,
    producer: FutureProducer,
    parked_view: TopicView<ParkedState>,
    tracker: Arc<Mutex<OffsetTracker>>,
    queues: Queues,
    parks: HashMap<String, Park>,
    flying: HashMap<(String, Key), Origin>,
    in_flight: usize,
    known_partitions: HashSet<i32>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    lane_tx: mpsc::UnboundedSender<(String, u64, LaneEvent)>,
    lane_rx: mpsc::UnboundedReceiver<(String, u64, LaneEvent)>,
    /// Appends awaiting their acknowledgement, in append order.
    appends: mpsc::UnboundedSender<PendingAppend>,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
}

pub type Fatal = String;

type PendingAppend = (
    String,
    Option<(i32, i64)>,
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(i32, i64), String>> + Send>>,
);

/// Reports append acknowledgements in append order: the first one reported for a parking is
/// its lowest lane offset, the cursor. (Acks of one partition complete in order; awaiting them
/// in order costs nothing since all are in flight in the producer.)
fn spawn_acknowledger(tx: mpsc::UnboundedSender<Msg>) -> mpsc::UnboundedSender<PendingAppend> {
    let (appends, mut rx) = mpsc::unbounded_channel::<PendingAppend>();
    tokio::spawn(async move {
        while let Some((sub, main, pending)) = rx.recv().await {
            let result = pending.await;
            if tx.send(Msg::Appended { sub, main, result }).is_err() {
                return;
            }
        }
    });
    appends
}

fn lock(t: &Mutex<OffsetTracker>) -> std::sync::MutexGuard<'_, OffsetTracker> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dispatcher {
    pub fn new(
        ctx: Arc<Context>,
        config: Config,
        parked_view: TopicView<ParkedState>,
        tracker: Arc<Mutex<OffsetTracker>>,
        shutdown: CancellationToken,
    ) -> Result<Self, crate::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (lane_tx, lane_rx) = mpsc::unbounded_channel();
        let appends = spawn_acknowledger(tx.clone());
        Ok(Self {
            producer: hookline_kafka::producer(&config)?,
            queues: Queues::new(config.subscription_in_flight),
            ctx,
            config,
            parked_view,
            tracker,
            parks: HashMap::new(),
            flying: HashMap::new(),
            in_flight: 0,
            known_partitions: HashSet::new(),
            tx,
            rx,
            lane_tx,
            appends,
            lane_rx,
            tasks: JoinSet::new(),
            shutdown,
        })
    }

    /// Runs until shutdown; then waits up to the grace period for jobs in flight.
    pub async fn run(mut self, consumer: Arc<StreamConsumer>) -> Result<(), crate::Error> {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        let result = loop {
            self.pump();
            while self.tasks.try_join_next().is_some() {}
            let can_read = self.queues.queued() < self.config.worker_buffer;
            let step: Result<(), Fatal> = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break Ok(()),
                Some(m) = self.rx.recv() => self.on_msg(m).await,
                Some((sub, generation, e)) = self.lane_rx.recv() => { self.on_lane(sub, generation, e); Ok(()) }
                _ = tick.tick() => self.on_tick(&consumer).await,
                msg = consumer.recv(), if can_read => match msg {
                    Ok(m) => {
                        let (partition, offset) = (m.partition(), m.offset());
                        let decoded = m.payload().map(DeliveryJob::decode);
                        drop(m);
                        self.on_main(partition, offset, decoded).await
                    }
                    Err(e) => Err(format!("consuming deliveries: {e}")),
                },
            };
            if let Err(e) = step {
                break Err(crate::Error::Dispatch(e));
            }
        };
        for park in self.parks.values_mut() {
            park.stop_reader();
        }
        let grace = self.config.shutdown_grace()?;
        let tasks = &mut self.tasks;
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        // Jobs that finished in the grace period count; the rest are handed back.
        while let Ok(m) = self.rx.try_recv() {
            if let Msg::Done {
                outcome: Outcome::Completed,
                origin: Origin::Main { partition, offset },
                ..
            } = m
            {
                lock(&self.tracker).finish(partition, offset);
            }
        }
        self.tasks.abort_all();
        result
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

    /// Starts jobs while there is room.
    fn pump(&mut self) {
        while self.in_flight < self.config.worker_concurrency {
            let Some((sub, key, item)) = self.queues.next() else {
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
            let ctx = self.ctx.clone();
            self.tasks.spawn(async move {
                let outcome = ctx.deliver(job).await;
                let _ = tx.send(Msg::Done {
                    sub,
                    key,
                    origin,
                    outcome,
                    permit,
                });
            });
        }
    }

    async fn on_main(
        &mut self,
        partition: i32,
        offset: i64,
        decoded: Option<Result<DeliveryJob, hookline_proto::prost::DecodeError>>,
    ) -> Result<(), Fatal> {
        lock(&self.tracker).begin(partition, offset);
        let job = match decoded {
            Some(Ok(job)) => job,
            other => {
                let reason = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "empty record".into(),
                };
                tracing::error!(partition, offset, %reason, "undecodable delivery job skipped");
                lock(&self.tracker).finish(partition, offset);
                return Ok(());
            }
        };
        if self.known_partitions.insert(partition) {
            self.adopt(partition).await;
        }
        let sub = job.subscription_id.clone();
        let key = self.key_of(&job);
        let item = Item {
            job,
            origin: Origin::Main { partition, offset },
            permit: None,
        };
        // A backlog parks a subscription held back by its own endpoint (all its slots busy),
        // not one that merely waits its turn in a busy worker: parking that one would only
        // add work.
        if !self.parks.contains_key(&sub)
            && self.queues.queued_of(&sub) >= self.config.subscription_buffer
            && self.queues.in_flight_of(&sub) >= self.config.subscription_in_flight
        {
            tracing::info!(subscription_id = %sub, "backlog past subscription_buffer; parking");
            self.start_park(&sub, partition, now_ms(), "backlog", None)?;
        }
        if !self.parks.contains_key(&sub) {
            self.queues.push(&sub, key, item);
            return Ok(());
        }
        // Behind a job of the same key still in flight from `deliveries`: wait for it.
        let behind_main = matches!(
            self.flying.get(&(sub.clone(), key.clone())),
            Some(Origin::Main { .. })
        ) || self.queues.has_queued_main(&sub, &key);
        if behind_main {
            self.queues.push(&sub, key, item);
            Ok(())
        } else {
            self.append(&sub, item)
        }
    }

    /// Takes over the parked subscriptions of a newly assigned partition.
    async fn adopt(&mut self, partition: i32) {
        self.parked_view.sync().await;
        let states: Vec<ParkedState> = self.parked_view.read(|t| {
            t.values()
                .filter(|s| s.main_partition == partition)
                .cloned()
                .collect()
        });
        for state in states {
            if self.parks.contains_key(&state.subscription_id) {
                continue;
            }
            tracing::info!(subscription_id = %state.subscription_id, cursor = state.cursor, "adopting parked subscription");
            let sub = state.subscription_id.clone();
            let due = state.due_at_ms;
            self.parks.insert(sub.clone(), Park::new(state, true));
            self.schedule(&sub, due);
        }
    }

    /// Parks `sub`: `first` (the job that failed) goes to the lane first, then the queued
    /// jobs of its keys that have nothing in flight.
    fn start_park(
        &mut self,
        sub: &str,
        main_partition: i32,
        due_at_ms: i64,
        reason: &str,
        first: Option<Item>,
    ) -> Result<(), Fatal> {
        let state = ParkedState {
            subscription_id: sub.to_owned(),
            main_partition,
            lane_partition: -1,
            cursor: -1,
            due_at_ms,
            attempts: HashMap::new(),
            reason: reason.to_owned(),
            parked_at_ms: now_ms(),
        };
        tracing::info!(subscription_id = %sub, reason, "parking subscription in the retry lane");
        self.parks.insert(sub.to_owned(), Park::new(state, false));
        if let Some(item) = first {
            self.append(sub, item)?;
        }
        for item in self.queues.take_idle(sub, Item::is_main) {
            self.append(sub, item)?;
        }
        Ok(())
    }

    /// Appends a job of a parked subscription to the lane, in call order.
    fn append(&mut self, sub: &str, item: Item) -> Result<(), Fatal> {
        let main = match item.origin {
            Origin::Main { partition, offset } => Some((partition, offset)),
            Origin::Lane { .. } => None,
        };
        let pending = lane::append(&self.producer, &self.config.topic_retry_lane, &item.job)
            .map_err(|e| format!("appending to the retry lane: {e}"))?;
        if let Some(p) = self.parks.get_mut(sub) {
            p.appends_in_flight += 1;
        }
        let pending: PendingAppend = (sub.to_owned(), main, Box::pin(pending));
        self.appends
            .send(pending)
            .map_err(|_| "the append acknowledger stopped".to_owned())?;
        Ok(())
    }

    fn schedule(&mut self, sub: &str, due_at_ms: i64) {
        let Some(park) = self.parks.get_mut(sub) else {
            return;
        };
        park.generation += 1;
        let (generation, tx, sub) = (park.generation, self.tx.clone(), sub.to_owned());
        let wait = std::time::Duration::from_millis((due_at_ms - now_ms()).max(0) as u64);
        let stop = self.shutdown.clone();
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

    async fn persist(&mut self, sub: &str) -> Result<(), Fatal> {
        let Some(park) = self.parks.get_mut(sub) else {
            return Ok(());
        };
        lane::write_state(&self.producer, &self.config.topic_parked, &park.state)
            .await
            .map_err(|e| format!("writing parked state: {e}"))?;
        park.persisted = true;
        park.dirty = false;
        let mut tracker = lock(&self.tracker);
        for (p, o) in park.held_main.drain(..) {
            tracker.finish(p, o);
        }
        Ok(())
    }

    async fn on_msg(&mut self, msg: Msg) -> Result<(), Fatal> {
        match msg {
            Msg::Appended { sub, main, result } => {
                let (lane_partition, lane_offset) =
                    result.map_err(|e| format!("retry lane append failed: {e}"))?;
                let Some(park) = self.parks.get_mut(&sub) else {
                    return Err(format!(
                        "append acknowledged for {sub}, which is not parked"
                    ));
                };
                park.appends_in_flight -= 1;
                park.last_appended = park.last_appended.max(lane_offset);
                park.held_main.extend(main);
                if !park.persisted {
                    // Acks of one partition arrive in order: the first is the cursor.
                    park.state.lane_partition = lane_partition;
                    park.state.cursor = lane_offset;
                    let due = park.state.due_at_ms;
                    self.persist(&sub).await?;
                    self.schedule(&sub, due);
                } else {
                    let mut tracker = lock(&self.tracker);
                    for (p, o) in park.held_main.drain(..) {
                        tracker.finish(p, o);
                    }
                }
                self.maybe_unpark(&sub).await
            }
            Msg::Due { sub, generation } => {
                let Some(park) = self.parks.get_mut(&sub) else {
                    return Ok(());
                };
                if park.generation != generation || park.reader.is_some() || !park.persisted {
                    return Ok(());
                }
                park.caught_up_to = -1;
                park.last_read = park.state.cursor - 1;
                let at = lane::LaneCursor {
                    subscription_id: sub.clone(),
                    partition: park.state.lane_partition,
                    cursor: park.state.cursor,
                    generation,
                };
                let reader = lane::spawn_reader(
                    &self.config,
                    at,
                    self.config.subscription_buffer,
                    self.lane_tx.clone(),
                    &self.shutdown,
                )
                .map_err(|e| format!("starting a retry-lane reader: {e}"))?;
                tracing::info!(subscription_id = %sub, cursor = park.state.cursor, "resuming parked subscription");
                park.reader = Some(reader);
                Ok(())
            }
            Msg::Check { sub } => self.maybe_unpark(&sub).await,
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
                self.on_done(&sub, &key, origin, outcome).await
            }
        }
    }

    async fn on_done(
        &mut self,
        sub: &str,
        key: &Key,
        origin: Origin,
        outcome: Outcome,
    ) -> Result<(), Fatal> {
        match (outcome, origin) {
            (Outcome::HandedBack, _) => return Ok(()),
            (Outcome::Completed, Origin::Main { partition, offset }) => {
                lock(&self.tracker).finish(partition, offset);
            }
            (Outcome::Completed, Origin::Lane { offset, .. }) => {
                if let Some(park) = self.parks.get_mut(sub) {
                    park.lane_pending.remove(&offset);
                    park.dirty = true;
                }
            }
            (Outcome::Park(job), Origin::Main { partition, .. }) => {
                let due = job.due_at_ms;
                let item = Item {
                    job: *job,
                    origin,
                    permit: None,
                };
                if self.parks.contains_key(sub) {
                    self.append(sub, item)?;
                } else {
                    self.start_park(sub, partition, due, "retrying", Some(item))?;
                }
            }
            (Outcome::Park(job), Origin::Lane { offset, .. }) => {
                self.repark(sub, offset, *job).await?;
            }
        }
        // A parked subscription's jobs that waited behind this key's job follow it.
        if self.parks.contains_key(sub) && matches!(origin, Origin::Main { .. }) {
            for item in self.queues.take_key(sub, key, Item::is_main) {
                self.append(sub, item)?;
            }
        }
        self.maybe_unpark(sub).await
    }

    /// A job read back from the lane must wait again: stop reading, forget what was read
    /// past the cursor (it stays in the lane), and wait until `job` is due.
    async fn repark(&mut self, sub: &str, offset: i64, job: DeliveryJob) -> Result<(), Fatal> {
        let dropped = self.queues.drop_where(sub, |i| !i.is_main());
        let flying_lane: BTreeSet<i64> = self
            .flying
            .iter()
            .filter(|((s, _), _)| s == sub)
            .filter_map(|(_, o)| match o {
                Origin::Lane { offset, .. } => Some(*offset),
                Origin::Main { .. } => None,
            })
            .collect();
        let Some(park) = self.parks.get_mut(sub) else {
            return Ok(());
        };
        // While reading, nothing before the lowest unfinished offset is left; once stopped,
        // the cursor already sits below everything unfinished.
        let floor = if park.reader.is_some() {
            park.lane_pending.iter().next().copied()
        } else {
            Some(park.state.cursor)
        };
        park.stop_reader();
        park.state.attempts.insert(offset, job.attempt);
        let cursor = floor.unwrap_or(offset).min(offset);
        park.state.cursor = cursor;
        park.state.attempts.retain(|o, _| *o >= cursor);
        park.state.due_at_ms = job.due_at_ms;
        park.lane_pending = flying_lane;
        // Everything from the cursor on is read again when resumed.
        park.last_read = cursor - 1;
        tracing::info!(subscription_id = %sub, cursor, dropped, "parked again until due");
        self.persist(sub).await?;
        self.schedule(sub, job.due_at_ms);
        Ok(())
    }

    fn on_lane(&mut self, sub: String, generation: u64, event: LaneEvent) {
        let Some(park) = self.parks.get_mut(&sub) else {
            return;
        };
        if park.generation != generation || park.reader.is_none() {
            return;
        }
        match event {
            LaneEvent::Job {
                offset,
                mut job,
                permit,
            } => {
                if offset < park.state.cursor {
                    return;
                }
                if let Some(n) = park.state.attempts.get(&offset) {
                    job.attempt = *n;
                }
                park.lane_pending.insert(offset);
                park.last_read = park.last_read.max(offset);
                let origin = Origin::Lane {
                    partition: park.state.lane_partition,
                    offset,
                };
                let key = self.key_of(&job);
                self.queues.push(
                    &sub,
                    key,
                    Item {
                        job: *job,
                        origin,
                        permit: Some(permit),
                    },
                );
            }
            LaneEvent::CaughtUp { next } => {
                park.caught_up_to = next;
                // Checked from the main loop, where unparking may write.
                let _ = self.tx.send(Msg::Check { sub });
            }
            LaneEvent::Failed(e) => {
                tracing::warn!(subscription_id = %sub, error = %e, "retry-lane reader")
            }
        }
    }

    /// Back to normal once everything appended was read and finished.
    async fn maybe_unpark(&mut self, sub: &str) -> Result<(), Fatal> {
        let Some(park) = self.parks.get(sub) else {
            return Ok(());
        };
        let drained = park.reader.is_some()
            && park.persisted
            && park.appends_in_flight == 0
            && park.held_main.is_empty()
            && park.lane_pending.is_empty()
            && park.caught_up_to > park.last_appended
            && park.caught_up_to > park.last_read
            && self.queues.queued_of(sub) == 0
            && self.queues.in_flight_of(sub) == 0;
        if !drained {
            return Ok(());
        }
        lane::clear_state(&self.producer, &self.config.topic_parked, sub)
            .await
            .map_err(|e| format!("clearing parked state: {e}"))?;
        if let Some(mut park) = self.parks.remove(sub) {
            park.stop_reader();
        }
        tracing::info!(subscription_id = %sub, "subscription resumed from the retry lane");
        Ok(())
    }

    /// Commits nothing itself (the committer does); keeps cursors durable and follows the
    /// consumer's assignment.
    async fn on_tick(&mut self, consumer: &StreamConsumer) -> Result<(), Fatal> {
        let dirty: Vec<String> = self
            .parks
            .iter_mut()
            // Only a subscription being read back moves its cursor forward.
            .filter(|(_, p)| p.dirty && p.persisted && p.reader.is_some())
            .map(|(s, p)| {
                p.state.cursor = p
                    .lane_pending
                    .iter()
                    .next()
                    .copied()
                    .unwrap_or(p.last_read + 1)
                    .max(p.state.cursor);
                s.clone()
            })
            .collect();
        for sub in dirty {
            self.persist(&sub).await?;
            self.maybe_unpark(&sub).await?;
        }
        let assigned: HashSet<i32> = consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        let new: Vec<i32> = assigned
            .difference(&self.known_partitions)
            .copied()
            .collect();
        for p in new {
            self.known_partitions.insert(p);
            self.adopt(p).await;
        }
        let revoked: Vec<i32> = self
            .known_partitions
            .difference(&assigned)
            .copied()
            .collect();
        for p in revoked {
            self.known_partitions.remove(&p);
            lock(&self.tracker).forget(p);
            self.parks.retain(|_, park| {
                let keep = park.state.main_partition != p;
                if !keep {
                    park.stop_reader();
                }
                keep
            });
        }
        Ok(())
    }
}
