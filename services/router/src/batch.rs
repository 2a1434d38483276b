//! The batch loop: gather events, route them, and produce their jobs, their quarantine
//! records and their offsets in one transaction.
//!
//! One batch at a time: gather up to [`MAX_BATCH`] records (what is already there, and, when
//! the previous batch was busy, what arrives within [`LINGER`] of the first), wait until the subscription view is fresh enough for them,
//! route, produce in a transaction, add the offsets, commit. If a revocation happened while
//! gathering, the batch is dropped unproduced; if a transaction step fails, it is aborted (or
//! its producer replaced). Either way the batch's partitions are rewound to their committed
//! offsets and read again, so each event's jobs are committed exactly once. A router fenced
//! by a newer process with its name (its producer fenced) stops with an error; a consumer
//! whose static membership was taken over (after a broker outage longer than the session, by
//! this router's own new session) is replaced and joins again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookline_config::Config;
use hookline_events::time_fmt::now_ms;
use hookline_kafka::rdkafka::consumer::Consumer;
use hookline_kafka::rdkafka::message::{Message, OwnedMessage};
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
use hookline_runtime::CancellationToken;
use hookline_telemetry::trace::Traced;

use crate::Error;
use crate::consumer::{self, EventConsumer};
use crate::route;
use crate::txn::{Failure, TxnProducer};
use crate::view::SubscriptionMatcher;

/// Most records routed in one transaction.
pub const MAX_BATCH: usize = 1000;
/// How long a batch keeps gathering after its first record: a transaction commit costs a
/// few broker round trips, so they are shared by the records of a few milliseconds.
/// The linger applies only after a batch of at least [`BUSY_BATCH`] records: at light load a
/// batch is what arrived while the previous transaction ran, and the first record does not
/// wait for company that is not coming.
pub const LINGER: Duration = Duration::from_millis(5);
/// A batch this large means records arrive faster than transactions commit.
pub const BUSY_BATCH: usize = 64;
/// Memberships lost in a row (no batch committed in between) before this router concludes
/// another process runs under its name.
const MAX_LOST_MEMBERSHIPS: u32 = 3;
/// How long after a broker outage a fenced producer counts as this router's own transaction
/// having timed out.
const RECENT_OUTAGE_MS: i64 = 180_000;
/// Fencings within [`FENCE_WINDOW`] (with no broker outage seen) after which this router
/// concludes another process runs under its name. Losing one broker of a cluster (the
/// transaction or group coordinator's) fences a producer now and then without the process
/// ever seeing every broker down; two processes with one name fence each other at every
/// transaction.
const MAX_FENCINGS: usize = 3;
const FENCE_WINDOW: Duration = Duration::from_secs(60);
/// How long a replaced consumer may take to close before its successor joins anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

pub struct BatchLoop {
    pub config: Config,
    pub transactional_id: String,
    pub matcher: SubscriptionMatcher,
    pub consumer: Arc<EventConsumer>,
    pub producer: TxnProducer,
    pub shutdown: CancellationToken,
    /// Consumer memberships lost since the last committed batch.
    pub lost_memberships: u32,
    /// When the producer was fenced lately (within [`FENCE_WINDOW`]).
    pub fencings: VecDeque<Instant>,
}

enum Gathered {
    Batch(Vec<OwnedMessage>),
    /// The consumer can no longer be used (its static membership was taken over).
    ConsumerLost(String),
    /// A revocation happened while gathering: route none of these, rewind their partitions.
    Revoked(Vec<OwnedMessage>),
    Shutdown,
}

impl BatchLoop {
    /// Routes until shutdown; the batch in progress is finished first.
    pub async fn run(mut self) -> Result<(), Error> {
        let mut linger = Duration::ZERO;
        loop {
            let batch = match self.gather(linger).await? {
                Gathered::Shutdown => return Ok(()),
                Gathered::ConsumerLost(reason) => {
                    self.replace_consumer(&reason).await?;
                    self.renew_consumer().await?;
                    continue;
                }
                Gathered::Revoked(batch) => {
                    tracing::info!(
                        records = batch.len(),
                        "rebalance while gathering; batch dropped"
                    );
                    self.rewind(&batch).await?;
                    continue;
                }
                Gathered::Batch(batch) => batch,
            };
            linger = if batch.len() >= BUSY_BATCH {
                LINGER
            } else {
                Duration::ZERO
            };
            let result = self.transact(&batch).await;
            let outcome = if result.is_ok() {
                "committed"
            } else {
                "aborted"
            };
            hookline_telemetry::metrics::metrics()
                .router_transactions
                .add(1, &[hookline_telemetry::metrics::kv("outcome", outcome)]);
            match result {
                Ok(()) => self.lost_memberships = 0,
                Err(Failure::Abort(reason)) => {
                    tracing::warn!(%reason, records = batch.len(), "transaction aborted; re-reading its records");
                    match self.producer.abort().await {
                        Ok(()) => {}
                        Err(Failure::Fenced(reason)) => self.fenced(reason).await?,
                        Err(Failure::Fatal(reason) | Failure::Abort(reason)) => {
                            self.replace_producer(&reason).await?
                        }
                    }
                    self.rewind(&batch).await?;
                }
                Err(Failure::Fatal(reason)) => {
                    self.replace_producer(&reason).await?;
                    self.rewind(&batch).await?;
                }
                Err(Failure::Fenced(reason)) => {
                    self.fenced(reason).await?;
                    self.rewind(&batch).await?;
                }
            }
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }

    async fn gather(&self, linger: Duration) -> Result<Gathered, Error> {
        let revocations = consumer::revocations(&self.consumer);
        let first = loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(Gathered::Shutdown),
                msg = self.consumer.recv() => match msg {
                    Ok(m) => break m.detach(),
                    Err(e) if consumer::is_fatal(&e) => return Ok(Gathered::ConsumerLost(e.to_string())),
                    Err(e) => {
                        tracing::debug!(error = %e, "consuming events");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < MAX_BATCH {
            tokio::select! {
                biased;
                msg = self.consumer.recv() => match msg {
                    Ok(m) => batch.push(m.detach()),
                    Err(e) if consumer::is_fatal(&e) => return Ok(Gathered::ConsumerLost(e.to_string())),
                    Err(e) => tracing::debug!(error = %e, "consuming events"),
                },
                // Without a linger: what is already there, and no more.
                () = std::future::ready(()), if linger.is_zero() => break,
                _ = tokio::time::sleep_until(deadline), if !linger.is_zero() => break,
            }
        }
        if consumer::revocations(&self.consumer) != revocations {
            return Ok(Gathered::Revoked(batch));
        }
        Ok(Gathered::Batch(batch))
    }

    /// One transaction for `batch`.
    async fn transact(&self, batch: &[OwnedMessage]) -> Result<(), Failure> {
        // Freshness: every subscription change acknowledged before the newest record's
        // timestamp is in force (capped at now, so a producer clock running ahead cannot
        // stall the partition).
        let now = now_ms();
        let started = std::time::Instant::now();
        if let Some(newest) = batch.iter().filter_map(|m| m.timestamp().to_millis()).max() {
            tokio::select! {
                _ = self.matcher.wait_caught_up(newest.min(now)) => {}
                // Nothing produced, nothing committed: whoever reads these next routes them.
                _ = self.shutdown.cancelled() => return Ok(()),
            }
        }
        phase_took("view", started);
        let (deliveries, quarantine) =
            (&self.config.topic_deliveries, &self.config.topic_quarantine);
        let mut tally = Tally::default();
        let mut records: Vec<route::Outgoing> = Vec::new();
        // Each event's span stays open until its transaction is over.
        let spans: Vec<Traced> = self.matcher.read(|index| {
            batch
                .iter()
                .map(|m| {
                    let (out, span, filtered) = route::outgoing(index, m, deliveries, quarantine);
                    tally.filtered += filtered as u64;
                    records.extend(tally.count(out, quarantine));
                    span
                })
                .collect()
        });
        let result = self.commit_batch(batch, records).await;
        match &result {
            Ok(()) => tally.record(),
            Err(failure) => {
                let error = match failure {
                    Failure::Abort(_) => "transaction_aborted",
                    Failure::Fatal(_) => "transaction_failed",
                    Failure::Fenced(_) => "fenced",
                };
                spans.iter().for_each(|s| s.fail(error));
            }
        }
        result
    }

    async fn commit_batch(
        &self,
        batch: &[OwnedMessage],
        records: Vec<route::Outgoing>,
    ) -> Result<(), Failure> {
        let started = std::time::Instant::now();
        self.producer.produce(records).await?;
        phase_took("produce", started);
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| Failure::Abort("no consumer group metadata".into()))?;
        self.producer.commit(next_offsets(batch)?, group).await?;
        Ok(())
    }

    /// The consumer's static membership was taken over. Its own session expiring (the group
    /// coordinator away, the brokers restarted) ends that way: librdkafka rejoins with a new
    /// member id under the same instance name. So join again, unless the producer is fenced
    /// (a newer process with this name ran `init_transactions`) or memberships keep being
    /// taken without a batch committed in between (another process with this name): then
    /// this one stops.
    async fn replace_consumer(&mut self, reason: &str) -> Result<(), Error> {
        if let Some(fenced) = self.producer.fenced() {
            self.fenced(fenced).await?;
        }
        self.lost_memberships += 1;
        if self.lost_memberships > MAX_LOST_MEMBERSHIPS {
            return Err(Error::Fenced(format!(
                "{reason} ({} times without a batch committed)",
                self.lost_memberships
            )));
        }
        tracing::warn!(%reason, "events consumer lost its group membership; joining again");
        Ok(())
    }

    /// The producer was fenced: by the coordinator's own doing, or by a newer process with
    /// this name. Right after the brokers were away it is the former (this router's
    /// transaction timed out meanwhile and the coordinator bumped its epoch), and so is a
    /// rare fencing with the cluster's brokers up (a coordinator's broker lost or paused): a
    /// new producer takes over. When the group lists a member of another process under this
    /// name, or the producer was fenced [`MAX_FENCINGS`] times within [`FENCE_WINDOW`] with no
    /// outage seen, another process runs under this name: this one stops.
    async fn fenced(&mut self, reason: String) -> Result<(), Error> {
        let now = Instant::now();
        self.fencings.push_back(now);
        while self
            .fencings
            .front()
            .is_some_and(|at| now.duration_since(*at) > FENCE_WINDOW)
        {
            self.fencings.pop_front();
        }
        let other =
            consumer::other_process_named(&self.consumer, &self.config, &self.transactional_id)
                .await;
        if other == Some(true) {
            return Err(Error::Fenced(format!(
                "{reason} (another process is a member of the router group under this name)"
            )));
        }
        if hookline_kafka::context::outage_within(RECENT_OUTAGE_MS) {
            tracing::warn!(%reason, "producer fenced after a broker outage (its transaction timed out); replacing it");
        } else if self.fencings.len() >= MAX_FENCINGS {
            return Err(Error::Fenced(format!(
                "{reason} ({} times within {} s)",
                self.fencings.len(),
                FENCE_WINDOW.as_secs()
            )));
        } else {
            tracing::warn!(%reason, fencings = self.fencings.len(),
                "producer fenced with the brokers up (a coordinator moved, or another process runs under this instance name); replacing it");
        }
        self.new_producer().await
    }

    async fn replace_producer(&mut self, reason: &str) -> Result<(), Error> {
        // Whatever the failing call said, a fenced producer must not be replaced: the new
        // one would fence the newer instance in turn (unless the fencing is the broker's own,
        // after an outage).
        if let Some(fenced) = self.producer.fenced() {
            return self.fenced(fenced).await;
        }
        tracing::warn!(%reason, "transactional producer unusable; replacing it");
        self.new_producer().await
    }

    async fn new_producer(&mut self) -> Result<(), Error> {
        // None when shutting down: the old producer's open transaction then times out on the
        // broker, or is aborted by the next instance with this id.
        if let Some(p) =
            TxnProducer::start(&self.config, &self.transactional_id, &self.shutdown).await?
        {
            self.producer = p;
        }
        Ok(())
    }

    /// Rewinds to the committed offsets by replacing the consumer: a static member that
    /// closes does not leave the group, so the new consumer takes the same partitions back at
    /// once and starts them at their committed offsets. (Seeking the old consumer instead
    /// could leave it reading nothing after a coordinator change.)
    async fn rewind(&mut self, batch: &[OwnedMessage]) -> Result<(), Error> {
        tracing::debug!(
            records = batch.len(),
            "re-reading from the committed offsets"
        );
        self.renew_consumer().await
    }

    /// Closes the consumer, then joins again with a new one under the same instance name
    /// (never two at once: they would fence each other).
    async fn renew_consumer(&mut self) -> Result<(), Error> {
        let new = consumer::create(&self.config, &self.transactional_id)?;
        let old = std::mem::replace(&mut self.consumer, new);
        // Closing may wait for the group coordinator: not on this task, and not for ever.
        let close = tokio::task::spawn_blocking(move || drop(old));
        let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
        consumer::subscribe(&self.consumer, &self.config)?;
        Ok(())
    }
}

/// Records how long a step of a transaction took.
pub(crate) fn phase_took(phase: &'static str, started: std::time::Instant) {
    hookline_telemetry::metrics::metrics().router_phase.record(
        started.elapsed().as_secs_f64(),
        &[hookline_telemetry::metrics::kv("phase", phase)],
    );
}

/// What one transaction routed, recorded as metrics once it committed (or aborted).
#[derive(Default)]
struct Tally {
    fan_outs: Vec<usize>,
    quarantined: u64,
    /// (event, subscription) pairs a payload filter dropped.
    filtered: u64,
}

impl Tally {
    /// Counts one record's outgoing records: its jobs, or its one quarantine record.
    fn count(&mut self, out: Vec<route::Outgoing>, quarantine: &str) -> Vec<route::Outgoing> {
        match out.as_slice() {
            [one] if one.topic == quarantine => self.quarantined += 1,
            jobs => self.fan_outs.push(jobs.len()),
        }
        out
    }

    fn record(self) {
        let m = hookline_telemetry::metrics::metrics();
        m.events_routed.add(self.fan_outs.len() as u64, &[]);
        m.events_quarantined.add(self.quarantined, &[]);
        m.router_filtered.add(self.filtered, &[]);
        for n in self.fan_outs {
            m.fan_out.record(n as f64, &[]);
        }
    }
}

/// The highest offset per partition in `batch`.
fn partitions_of(batch: &[OwnedMessage]) -> BTreeMap<i32, (String, i64)> {
    let mut last: BTreeMap<i32, (String, i64)> = BTreeMap::new();
    for m in batch {
        let e = last
            .entry(m.partition())
            .or_insert_with(|| (m.topic().to_owned(), m.offset()));
        e.1 = e.1.max(m.offset());
    }
    last
}

/// The offsets to commit for `batch`: one past its last record, per partition.
fn next_offsets(batch: &[OwnedMessage]) -> Result<TopicPartitionList, Failure> {
    let mut tpl = TopicPartitionList::new();
    for (partition, (topic, offset)) in partitions_of(batch) {
        tpl.add_partition_offset(&topic, partition, Offset::Offset(offset + 1))
            .map_err(|e| Failure::Abort(e.to_string()))?;
    }
    Ok(tpl)
}
