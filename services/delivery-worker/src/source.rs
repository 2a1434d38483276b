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
//! - Done offsets are committed every [`COMMIT_EVERY`].
//! - Leaving (the source stops): the worker hands its partitions over *before* it closes the
//!   consumer, while it is still a member of the group and polls (so rebalances in progress
//!   are served): it stops reading, has the dispatcher stop every assigned partition's work
//!   (attempts under way finish within the grace time), and commits what finished, with the
//!   commit metadata, until the commit is accepted. Closing then only hands the partitions
//!   on. A commit made from the revocation that closing triggers is not enough: librdkafka
//!   leaves the group as soon as an unassign completes while it terminates, so when a
//!   rebalance was under way as the worker began to leave, that commit reaches the
//!   coordinator after the member left and is refused (`UNKNOWN_MEMBER_ID`), and the next
//!   owner repeats everything since the last periodic commit.
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
use hookline_kafka::rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
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
    /// The worker is handing its partitions over before it closes the consumer: nothing is
    /// read any more, assignments are taken but paused.
    leaving: AtomicBool,
    /// Where this worker finished partitions it no longer has (the offset, and the commit
    /// metadata naming what past it is finished too), in case they come back.
    finished: Mutex<HashMap<i32, (i64, String)>>,
    /// Records past the committed offset that the previous owner finished (commit metadata).
    done: Mutex<HashMap<i32, DoneFilter>>,
    /// How long a revocation may wait for the dispatcher.
    revoke_wait: Duration,
}

/// The consumer group's name (`{group_prefix}.delivery-worker`).
pub const GROUP: &str = hookline_kafka::acl::GROUP_DELIVERY_WORKER;

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
            // Handing over before leaving: taken (the consumer is still a member, and closing
            // will revoke them), but paused and never read, so nothing of them starts here.
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
                if self.shared.leaving.load(Ordering::Relaxed) =>
            {
                tracing::info!(partitions = ?partitions_of(tpl), "assignment while leaving: paused");
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                let _ = consumer.pause(tpl);
                r
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
                // librdkafka keeps a partition's pause across a revocation: one paused (the
                // buffer was full) when it was taken away would stay paused when it comes
                // back, and never be read again. Each assigned partition gets the state of now.
                let _ = if self.shared.paused.load(Ordering::Relaxed) {
                    consumer.pause(tpl)
                } else {
                    consumer.resume(tpl)
                };
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
        if !lost && !self.shared.closing.load(Ordering::Relaxed) {
            // Within a callback the consumer cannot be polled: a refused commit is tried again
            // after a pause (heartbeats go on in librdkafka's own threads meanwhile).
            let deadline = Instant::now() + REVOKE_COMMIT_RETRY;
            while let Err(e) =
                commit_partitions(consumer, &self.shared, &partitions, CommitMode::Sync)
            {
                // A classic-protocol rebalance waits for this very callback: no use waiting.
                let classic_rebalance = matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::RebalanceInProgress | RDKafkaErrorCode::IllegalGeneration
                    )
                );
                if !retriable(&e) || classic_rebalance || Instant::now() >= deadline {
                    tracing::warn!(?partitions, error = %e, "revoked partitions' offsets not committed; their next owner repeats what finished since the last commit");
                    break;
                }
                tracing::debug!(?partitions, error = %e, "revoked partitions' commit refused; trying again");
                std::thread::sleep(Duration::from_millis(100));
            }
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
        let committed = match consumer.committed_offsets(ask, Duration::from_secs(10)) {
            Ok(committed) => committed,
            Err(e) => {
                // librdkafka still starts them at their committed offsets; only what the
                // previous owner finished past those is not known, and is delivered again.
                tracing::warn!(?partitions, error = %e, "committed offsets and their metadata not read; records finished past them will be delivered again");
                return;
            }
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

/// How long a revocation's commit is tried again while the coordinator refuses it for a
/// transient reason.
const REVOKE_COMMIT_RETRY: Duration = Duration::from_secs(2);

/// How long a leaving worker tries to commit what it finished.
const LEAVE_COMMIT_RETRY: Duration = Duration::from_secs(4);

/// A commit refusal that a later attempt may not get: a rebalance under way (the member's
/// epoch moved on), the coordinator moving or busy, a timeout.
fn retriable(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::StaleMemberEpoch
                | C::RebalanceInProgress
                | C::IllegalGeneration
                | C::NotCoordinator
                | C::CoordinatorNotAvailable
                | C::CoordinatorLoadInProgress
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::WaitingForCoordinator
        )
    )
}

/// Commits the finished offsets of `partitions` (all tracked ones when empty).
fn commit_partitions(
    consumer: &BaseConsumer<SourceContext>,
    shared: &Shared,
    partitions: &[i32],
    mode: CommitMode,
) -> Result<(), KafkaError> {
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
        return Ok(());
    }
    consumer.commit(&tpl, mode)
}

/// Leaving: hands every assigned partition over while the consumer is still a member of the
/// group (see the module documentation). Reading stops, the dispatcher stops the partitions'
/// work and answers once their attempts under way are over (or the grace time is), and what
/// finished is committed, with its metadata, until the coordinator accepts it. Meanwhile the
/// consumer is polled, so a rebalance under way is served (a revocation commits its
/// partitions as usual; an assignment is taken but paused) and the commit is not refused for
/// a stale member epoch.
fn hand_over(consumer: &BaseConsumer<SourceContext>, shared: &Shared) {
    shared.leaving.store(true, Ordering::Relaxed);
    let assigned = consumer.assignment().unwrap_or_default();
    let _ = consumer.pause(&assigned);
    let partitions = partitions_of(&assigned);
    tracing::info!(?partitions, "leaving: handing partitions over");
    let (reply, answer) = std::sync::mpsc::channel();
    let asked = !partitions.is_empty()
        && shared
            .inputs
            .send(Input::Revoke {
                partitions,
                lost: false,
                reply,
            })
            .is_ok();
    if asked {
        let deadline = Instant::now() + shared.revoke_wait;
        while Instant::now() < deadline
            && matches!(answer.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty))
        {
            // Serves rebalance callbacks; a record still buffered is dropped unread (it was
            // not begun, so the committed offset does not pass it).
            let _ = consumer.poll(Duration::from_millis(20));
        }
    }
    let deadline = Instant::now() + LEAVE_COMMIT_RETRY;
    loop {
        match commit_partitions(consumer, shared, &[], CommitMode::Sync) {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "leaving: commit refused; trying again");
                let _ = consumer.poll(Duration::from_millis(100));
            }
            Err(e) => {
                tracing::warn!(error = %e, "leaving: finished offsets not committed; the partitions' next owners repeat what finished since the last commit");
                break;
            }
        }
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

    /// Whether reading is paused now (the buffer was full).
    pub fn is_paused(&self) -> bool {
        self.shared.paused.load(Ordering::Relaxed)
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
        leaving: AtomicBool::new(false),
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
            if let Err(e) = commit_partitions(&consumer, &shared, &[], CommitMode::Async) {
                tracing::debug!(error = %e, "offset commit failed; will repeat");
            }
            last_commit = Instant::now();
        }
    }
    hand_over(&consumer, &shared);
    shared.closing.store(true, Ordering::Relaxed);
    // Leaving the group revokes every partition: the dispatcher has nothing of them any
    // more and answers at once, and what finished is already committed.
    drop(consumer);
}
