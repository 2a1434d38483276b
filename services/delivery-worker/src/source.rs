//! The `deliveries` consumer: a thread of its own that polls the group consumer, so
//! rebalance callbacks and heartbeats are served whatever the dispatcher is doing.
//!
//! - Records go to the dispatcher as [`Input::Job`]; when the dispatcher says it is full
//!   ([`Source::set_full`]) every assigned partition is paused (polling goes on, so the group
//!   membership stays alive) and resumed once there is room again.
//! - A revocation (cooperative-sticky: only the partitions that move) is handed to the
//!   dispatcher as [`Input::Revoke`]; the callback waits for its answer (the partitions'
//!   in-flight attempts finished within the grace time, the rest of their queues dropped),
//!   commits the offsets it got back and only then lets librdkafka hand the partitions on. Lost
//!   partitions (session expired) are not committed: they are someone else's. Either way
//!   the worker remembers where it finished, and should a partition come back it starts
//!   there if that is past the committed offset (work done while the brokers were away is
//!   not done again).
//! - Every assignment is reported as [`Input::Assigned`] (the dispatcher adopts the
//!   partitions' parked subscriptions).
//! - Done offsets are committed every [`COMMIT_EVERY`], and once more when the source stops,
//!   before the consumer closes and leaves the group.
//! - Broker trouble (all brokers down, transport errors, coordinator moves) is weather: it is
//!   logged (and readiness goes false) by the shared client context, and the consumer carries
//!   on when the brokers are back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookline_config::Config;
use hookline_kafka::KafkaContext;
use hookline_kafka::offsets::{DoneFilter, OffsetTracker};
use hookline_kafka::rdkafka::config::RDKafkaLogLevel;
use hookline_kafka::rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol,
};
use hookline_kafka::rdkafka::error::KafkaError;
use hookline_kafka::rdkafka::message::Message;
use hookline_kafka::rdkafka::types::RDKafkaRespErr;
use hookline_kafka::rdkafka::{ClientContext, Offset, TopicPartitionList};
use hookline_proto::Message as _;
use hookline_proto::v1::DeliveryJob;
use hookline_runtime::CancellationToken;
use tokio::sync::mpsc;

/// How often finished offsets are committed.
pub const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// What the source tells the dispatcher.
pub enum Input {
    /// A record of `deliveries`; `None` when it does not decode.
    Job {
        partition: i32,
        offset: i64,
        job: Option<Box<DeliveryJob>>,
    },
    /// A record of `deliveries` that the partition's previous owner already finished.
    Done {
        partition: i32,
        offset: i64,
    },
    Assigned(Vec<i32>),
    /// Stop these partitions' work; answer on `reply` once nothing of theirs runs any more
    /// (or the grace time is over). `lost`: they already belong to someone else.
    Revoke {
        partitions: Vec<i32>,
        lost: bool,
        reply: std::sync::mpsc::Sender<()>,
    },
}

/// Shared between the consumer thread, its callbacks and the dispatcher.
struct Shared {
    inputs: mpsc::UnboundedSender<Input>,
    tracker: Arc<Mutex<OffsetTracker>>,
    topic: String,
    /// The group id, for readiness (see `hookline_kafka::context::assigned`).
    group: String,
    full: AtomicBool,
    paused: AtomicBool,
    /// The consumer is closing (leaving the group).
    closing: AtomicBool,
    /// Where this worker finished partitions it no longer has (the offset, and the commit
    /// metadata naming what past it is finished too), in case they come back.
    finished: Mutex<HashMap<i32, (i64, String)>>,
    /// Records past the committed offset that the previous owner finished (commit metadata).
    done: Mutex<HashMap<i32, DoneFilter>>,
    /// How long a revocation may wait for the dispatcher.
    revoke_wait: Duration,
}

/// The consumer group's name (`{group_prefix}.delivery-worker`).
pub const GROUP: &str = "delivery-worker";

pub struct SourceContext {
    shared: Arc<Shared>,
}

pub fn lock(t: &Mutex<OffsetTracker>) -> std::sync::MutexGuard<'_, OffsetTracker> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        KafkaContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        KafkaContext.error(error, reason);
    }

    fn stats(&self, statistics: hookline_kafka::rdkafka::Statistics) {
        hookline_kafka::KafkaContext.stats(statistics);
    }
}

impl ConsumerContext for SourceContext {
    fn commit_callback(
        &self,
        result: hookline_kafka::rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => tracing::trace!(?offsets, "offsets committed"),
            Err(e) => tracing::debug!(error = %e, "offset commit failed; will repeat"),
        }
    }

    /// Runs the rebalance itself (rather than around librdkafka's default) so an assignment
    /// can start where this worker knows it finished: see [`SourceContext::assign`].
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            // Closing: librdkafka refuses an assignment now and waits for an unassign; one
            // answered with an assign can leave the close waiting for ever.
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
                if self.shared.closing.load(Ordering::Relaxed) =>
            {
                tracing::info!(partitions = ?partitions_of(tpl), "assignment while leaving: declined");
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(partitions = ?partitions_of(tpl), "deliveries partitions assigned");
                hookline_kafka::context::note_assigned(&self.shared.group);
                self.assign(consumer, tpl);
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if self.shared.paused.load(Ordering::Relaxed) {
                    let _ = consumer.pause(tpl);
                }
                let _ = self.shared.inputs.send(Input::Assigned(partitions_of(tpl)));
                r
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?other, "deliveries rebalance error");
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "deliveries rebalance");
        }
    }
}

impl SourceContext {
    /// Stops the dispatcher's work on the revoked partitions (waiting for attempts under
    /// way, within the grace time), commits what finished, and remembers it in case the
    /// commit did not get through (brokers away, partitions lost).
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions = partitions_of(tpl);
        let lost = consumer.assignment_lost();
        tracing::info!(?partitions, lost, "deliveries partitions revoked");
        let (reply, answer) = std::sync::mpsc::channel();
        let asked = self.shared.inputs.send(Input::Revoke {
            partitions: partitions.clone(),
            lost,
            reply,
        });
        if asked.is_ok() {
            // The dispatcher answers within its grace time; past that, hand them on anyway.
            let _ = answer.recv_timeout(self.shared.revoke_wait);
        }
        if !lost {
            commit_partitions(consumer, &self.shared, &partitions, CommitMode::Sync);
        }
        let mut done = lock_any(&self.shared.done);
        for p in &partitions {
            done.remove(p);
        }
        drop(done);
        let mut tracker = lock(&self.shared.tracker);
        let mut finished = lock_any(&self.shared.finished);
        for (p, o) in tracker.committable() {
            if partitions.contains(&p) {
                finished.insert(p, (o, tracker.commit_metadata(p)));
            }
        }
        for p in &partitions {
            tracker.forget(*p);
        }
    }

    /// A partition this worker had before starts at the later of its committed offset and
    /// where this worker finished it: work done while the brokers were away (when nothing
    /// could be committed) is not done again.
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let partitions = partitions_of(tpl);
        let mut ask = TopicPartitionList::new();
        for p in &partitions {
            ask.add_partition(&self.shared.topic, *p);
        }
        let Ok(committed) = consumer.committed_offsets(ask, Duration::from_secs(10)) else {
            return;
        };
        let mut finished = lock_any(&self.shared.finished);
        let mut done = lock_any(&self.shared.done);
        for p in partitions {
            let Some(elem) = committed.find_partition(&self.shared.topic, p) else {
                continue;
            };
            let theirs = elem.offset().to_raw().unwrap_or(-1);
            if let Some((mine, metadata)) = finished.remove(&p)
                && mine > theirs
            {
                // What it finished past that offset is not done again either.
                if let Some(filter) = DoneFilter::parse(mine, &metadata) {
                    done.insert(p, filter);
                }
                tracing::info!(
                    partition = p,
                    from = mine,
                    committed = theirs,
                    "resuming where this worker finished"
                );
                let _ = tpl.set_partition_offset(&self.shared.topic, p, Offset::Offset(mine));
                continue;
            }
            if let Some(filter) = DoneFilter::parse(theirs, elem.metadata()) {
                done.insert(p, filter);
            }
        }
    }
}

fn lock_any<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// Commits the finished offsets of `partitions` (all tracked ones when empty).
fn commit_partitions(
    consumer: &BaseConsumer<SourceContext>,
    shared: &Shared,
    partitions: &[i32],
    mode: CommitMode,
) {
    let mut tpl = TopicPartitionList::new();
    {
        let tracker = lock(&shared.tracker);
        for (p, o) in tracker.committable() {
            if partitions.is_empty() || partitions.contains(&p) {
                let mut elem = tpl.add_partition(&shared.topic, p);
                let _ = elem.set_offset(Offset::Offset(o));
                elem.set_metadata(tracker.commit_metadata(p));
            }
        }
    }
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        tracing::debug!(error = %e, "offset commit failed; will repeat");
    }
}

/// The handle the dispatcher keeps.
#[derive(Clone)]
pub struct Source {
    shared: Arc<Shared>,
}

impl Source {
    /// Tells the consumer whether the dispatcher has room (pauses reading when not).
    pub fn set_full(&self, full: bool) {
        self.shared.full.store(full, Ordering::Relaxed);
    }
}

/// Starts the consumer thread; it runs until `stop` is cancelled, then commits, closes the
/// consumer (leaving the group) and returns through the join handle.
pub fn start(
    config: &Config,
    tracker: Arc<Mutex<OffsetTracker>>,
    stop: CancellationToken,
) -> Result<
    (
        Source,
        mpsc::UnboundedReceiver<Input>,
        std::thread::JoinHandle<()>,
    ),
    crate::Error,
> {
    let (inputs, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        inputs,
        tracker,
        topic: config.topic_deliveries.clone(),
        group: hookline_kafka::context::group_id(config, GROUP),
        full: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        finished: Mutex::new(HashMap::new()),
        done: Mutex::new(HashMap::new()),
        revoke_wait: config.shutdown_grace()? + Duration::from_secs(2),
    });
    let mut c = hookline_kafka::group_consumer_config(config, GROUP)?;
    if config.worker_group_protocol == "consumer" {
        // KIP-848: the coordinator moves a partition only once its owner has revoked it, and
        // a commit with the member's current epoch is accepted during any rebalance, so a
        // revocation's commit gets through (with the classic protocol one that falls in the
        // middle of a rebalance is refused, and the next owner repeats the work).
        c.remove("partition.assignment.strategy")
            .remove("session.timeout.ms")
            .remove("heartbeat.interval.ms")
            .set("group.protocol", "consumer");
    }
    // A worker holds at most `worker_buffer` jobs; librdkafka's read-ahead stays small too.
    c.set("queued.max.messages.kbytes", "8192")
        .set("fetch.wait.max.ms", "100");
    let consumer: BaseConsumer<SourceContext> = c.create_with_context(SourceContext {
        shared: shared.clone(),
    })?;
    consumer.subscribe(&[&config.topic_deliveries])?;
    let source = Source {
        shared: shared.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("deliveries".into())
        .spawn(move || poll_loop(consumer, shared, stop))?;
    Ok((source, rx, thread))
}

/// Whether the partition's previous owner finished this record (its commit metadata says so).
fn already_done(shared: &Shared, partition: i32, offset: i64) -> bool {
    let mut filters = lock_any(&shared.done);
    let Some(filter) = filters.get(&partition) else {
        return false;
    };
    if filter.passed(offset) {
        filters.remove(&partition);
        return false;
    }
    filter.done(offset)
}

fn poll_loop(consumer: BaseConsumer<SourceContext>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut last_commit = Instant::now();
    while !stop.is_cancelled() {
        let full = shared.full.load(Ordering::Relaxed);
        if full != shared.paused.load(Ordering::Relaxed)
            && let Ok(assigned) = consumer.assignment()
        {
            let r = if full {
                consumer.pause(&assigned)
            } else {
                consumer.resume(&assigned)
            };
            if r.is_ok() {
                shared.paused.store(full, Ordering::Relaxed);
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let (partition, offset) = (m.partition(), m.offset());
                if already_done(&shared, partition, offset) {
                    if shared
                        .inputs
                        .send(Input::Done { partition, offset })
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
                let job = m
                    .payload()
                    .and_then(|p| DeliveryJob::decode(p).ok())
                    .map(Box::new);
                let input = Input::Job {
                    partition: m.partition(),
                    offset: m.offset(),
                    job,
                };
                if shared.inputs.send(input).is_err() {
                    break;
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "consuming deliveries");
            }
            None => {}
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            commit_partitions(&consumer, &shared, &[], CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    commit_partitions(&consumer, &shared, &[], CommitMode::Sync);
    shared.closing.store(true, Ordering::Relaxed);
    // Leaving the group revokes what is left; the dispatcher is gone by then and the
    // callback does not wait for it.
    drop(consumer);
}
