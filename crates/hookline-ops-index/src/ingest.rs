//! The thread that folds the `deliveries`, `attempts` and `dead-letters` topics into the
//! store: it assigns their partitions at the positions the store holds (the beginning when it
//! holds none), applies what it reads in batches (each one transaction with the positions it
//! reaches), tells when it has caught up with the high watermarks, and sweeps out what is
//! older than the topics' retention.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hookline_config::Config;
use hookline_kafka::KafkaContext;
use hookline_kafka::rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use hookline_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use hookline_kafka::rdkafka::message::{BorrowedMessage, Message};
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
use hookline_proto::Message as _;
use hookline_proto::v1::{Attempt, DeadLetter, DeliveryJob};
use tokio::sync::watch;

use crate::store::{Batch, Record, Store};
use crate::summary::Quarantined;
use crate::{IndexError, IngestState, now_ms};

/// Records per transaction, at most; and bytes of record values.
const MAX_BATCH: usize = 5_000;
const MAX_BATCH_BYTES: usize = 8 << 20;
/// How long a batch gathers before it is written.
const LINGER: Duration = Duration::from_millis(200);
/// How often the reader compares its positions with the watermarks until it first caught up
/// (readiness waits for that), and afterwards, when only the published freshness moves.
const CATCH_UP_CHECK: Duration = Duration::from_millis(250);
const CAUGHT_UP_CHECK: Duration = Duration::from_secs(5);
const RETENTION_CHECK: Duration = Duration::from_secs(600);
const SWEEP_CHUNK: usize = 5_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Job,
    Attempt,
    DeadLetter,
    Quarantine,
}

pub(crate) struct Ingest {
    consumer: BaseConsumer<KafkaContext>,
    watermarks: BaseConsumer<KafkaContext>,
    admin_config: hookline_kafka::rdkafka::ClientConfig,
    topics: Vec<(String, Kind)>,
    partitions: Vec<(String, i32)>,
    positions: HashMap<(String, i32), i64>,
    store: Arc<Store>,
    state: watch::Sender<IngestState>,
    stop: Arc<AtomicBool>,
}

impl Ingest {
    pub(crate) fn new(
        config: &Config,
        store: Arc<Store>,
        state: watch::Sender<IngestState>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, IndexError> {
        let mut c = hookline_kafka::client_config(config)?;
        c.set(
            "group.id",
            hookline_kafka::acl::group(config, hookline_kafka::acl::GROUP_OPS_INDEX),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        // Bounded memory: what librdkafka prefetches per partition.
        .set("queued.max.messages.kbytes", "2048")
        .set("fetch.max.bytes", "4194304");
        let consumer = c.create_with_context(KafkaContext).map_err(kafka)?;
        let watermarks = hookline_kafka::client_config(config)?
            .create_with_context(KafkaContext)
            .map_err(kafka)?;
        Ok(Self {
            consumer,
            watermarks,
            admin_config: hookline_kafka::client_config(config)?,
            topics: vec![
                (config.topic_deliveries.clone(), Kind::Job),
                (config.topic_attempts.clone(), Kind::Attempt),
                (config.topic_dead_letters.clone(), Kind::DeadLetter),
                (config.topic_quarantine.clone(), Kind::Quarantine),
            ],
            partitions: Vec::new(),
            positions: HashMap::new(),
            store,
            state,
            stop,
        })
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.state.is_closed()
    }

    /// Assigns every partition of the three topics at the stored positions, waiting for the
    /// topics to exist.
    fn assign(&mut self) -> Result<bool, IndexError> {
        let mut stored = self.store.positions()?;
        let mut warned = Instant::now();
        while !self.stopped() {
            let mut partitions = Vec::new();
            for (topic, _) in &self.topics {
                match self
                    .consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                {
                    Ok(m) => partitions.extend(
                        m.topics()
                            .iter()
                            .filter(|t| t.name() == topic && t.error().is_none())
                            .flat_map(|t| t.partitions().iter().map(|p| (topic.clone(), p.id()))),
                    ),
                    Err(e) => tracing::debug!(topic, error = %e, "metadata"),
                }
            }
            let topics_seen: std::collections::HashSet<&String> =
                partitions.iter().map(|(t, _)| t).collect();
            if topics_seen.len() == self.topics.len() {
                // A position past a partition's end: the topics were recreated, and the
                // index describes records that no longer exist. It starts over.
                let stale = partitions.iter().any(|k| {
                    stored.get(k).is_some_and(|next| {
                        self.watermarks
                            .fetch_watermarks(&k.0, k.1, Duration::from_secs(5))
                            .is_ok_and(|(_, high)| *next > high)
                    })
                });
                if stale {
                    tracing::warn!(
                        "operations index is ahead of its topics (recreated?): rebuilding it"
                    );
                    self.store.clear()?;
                    stored.clear();
                }
                let mut tpl = TopicPartitionList::new();
                for (topic, p) in &partitions {
                    let at = match stored.get(&(topic.clone(), *p)) {
                        Some(next) => Offset::Offset(*next),
                        None => Offset::Beginning,
                    };
                    tpl.add_partition_offset(topic, *p, at).map_err(kafka)?;
                }
                self.consumer.assign(&tpl).map_err(kafka)?;
                self.positions = partitions
                    .iter()
                    .map(|k| (k.clone(), stored.get(k).copied().unwrap_or(0)))
                    .collect();
                self.partitions = partitions;
                let resumed = stored.values().filter(|o| **o > 0).count();
                tracing::info!(
                    partitions = self.partitions.len(),
                    resumed,
                    "operations index reading"
                );
                return Ok(true);
            }
            if warned.elapsed() > Duration::from_secs(10) {
                tracing::warn!("operations index: waiting for its topics to exist");
                warned = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(false)
    }

    fn decode(&self, msg: &BorrowedMessage<'_>) -> Option<Record> {
        let kind = self
            .topics
            .iter()
            .find(|(t, _)| t == msg.topic())
            .map(|(_, k)| *k)?;
        let (partition, offset) = (msg.partition(), msg.offset());
        if kind == Kind::Quarantine {
            return Some(Record::Quarantined(quarantined(msg)));
        }
        let payload = msg.payload()?;
        let record = match kind {
            Kind::Quarantine => None,
            Kind::Job => DeliveryJob::decode(payload).ok().map(|mut job| {
                // Only the event's identity is kept: the job is read back from the topic.
                if let Some(e) = job.event.as_mut() {
                    e.data_json = String::new();
                    e.changed_fields_json = String::new();
                    e.metadata.clear();
                }
                Record::Job {
                    partition,
                    offset,
                    record_ms: msg.timestamp().to_millis().unwrap_or_else(now_ms),
                    job,
                }
            }),
            Kind::Attempt => Attempt::decode(payload)
                .ok()
                .map(|attempt| Record::Attempt {
                    partition,
                    offset,
                    bytes: payload.to_vec(),
                    attempt,
                }),
            Kind::DeadLetter => DeadLetter::decode(payload)
                .ok()
                .map(|letter| Record::DeadLetter {
                    partition,
                    offset,
                    bytes: payload.to_vec(),
                    letter,
                }),
        };
        if record.is_none() {
            tracing::warn!(
                topic = msg.topic(),
                partition,
                offset,
                "undecodable record skipped by the operations index"
            );
        }
        record
    }

    pub(crate) fn run(mut self) {
        match self.assign() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(error = %e, "operations index cannot start reading");
                return;
            }
        }
        let mut last_check = Instant::now() - CATCH_UP_CHECK;
        let mut retention: Option<Cutoffs> = None;
        let mut retention_checked = Instant::now() - RETENTION_CHECK + Duration::from_secs(10);
        let mut sweeping = false;
        let mut folded = 0u64;
        while !self.stopped() {
            let mut batch = Batch::default();
            let mut bytes = 0usize;
            let started = Instant::now();
            while batch.records.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                let wait = if batch.records.is_empty() {
                    Duration::from_millis(50)
                } else {
                    LINGER.saturating_sub(started.elapsed())
                };
                match self.consumer.poll(wait) {
                    Some(Ok(msg)) => {
                        bytes += msg.payload_len();
                        if let Some(r) = self.decode(&msg) {
                            batch.records.push(r);
                        }
                        batch
                            .positions
                            .insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "operations index read error");
                        break;
                    }
                    None => {
                        if batch.records.is_empty() || started.elapsed() >= LINGER {
                            break;
                        }
                    }
                }
            }
            let n = batch.records.len() as u64;
            if !batch.positions.is_empty() {
                let reached = batch.positions.clone();
                if let Err(e) = self.store.apply(batch) {
                    // The batch is read again from the stored positions.
                    tracing::error!(error = %e, "operations index: a batch could not be written");
                    std::thread::sleep(Duration::from_secs(1));
                    if let Err(e) = self.reseek() {
                        tracing::warn!(error = %e, "operations index: seeking back");
                    }
                    continue;
                }
                folded += n;
                self.positions.extend(reached);
            }
            let interval = if self.state.borrow().caught_up_at_ms > 0 {
                CAUGHT_UP_CHECK
            } else {
                CATCH_UP_CHECK
            };
            let caught_up = if last_check.elapsed() >= interval {
                last_check = Instant::now();
                self.check_caught_up()
            } else {
                None
            };
            self.state.send_modify(|s| {
                s.folded = folded;
                if let Some(t) = caught_up {
                    s.caught_up_at_ms = s.caught_up_at_ms.max(t);
                }
            });
            if retention_checked.elapsed() >= RETENTION_CHECK {
                retention_checked = Instant::now();
                retention = self.retention();
                sweeping = retention.is_some();
            }
            if let (true, Some(c)) = (sweeping, retention) {
                {
                    let now = now_ms();
                    match self.store.sweep(
                        c.attempts.map(|r| now - r),
                        c.dead_letters.map(|r| now - r),
                        c.deliveries.map(|r| now - r),
                        c.quarantine.map(|r| now - r),
                        SWEEP_CHUNK,
                    ) {
                        Ok(0) => sweeping = false,
                        Ok(n) => tracing::debug!(removed = n, "operations index retention"),
                        Err(e) => {
                            tracing::warn!(error = %e, "operations index retention sweep");
                            sweeping = false;
                        }
                    }
                }
            }
        }
    }

    /// After a failed write: back to the positions the store holds.
    fn reseek(&mut self) -> Result<(), IndexError> {
        let stored = self.store.positions()?;
        for (topic, p) in &self.partitions {
            let at = stored
                .get(&(topic.clone(), *p))
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            self.consumer
                .seek(topic, *p, at, Duration::from_secs(5))
                .map_err(kafka)?;
        }
        Ok(())
    }

    /// The time the watermarks were asked for, if every partition has reached them: one
    /// request per topic for the high watermarks, the low ones only for partitions not
    /// reached (an emptied partition counts as reached).
    fn check_caught_up(&mut self) -> Option<i64> {
        let asked_at = now_ms();
        let own = self.consumer.position().ok();
        let mut topics: Vec<&String> = self.partitions.iter().map(|(t, _)| t).collect();
        topics.dedup();
        for topic in topics {
            let parts: Vec<i32> = self
                .partitions
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| *p)
                .collect();
            let timeout = Duration::from_secs(5);
            let highs =
                hookline_kafka::watermarks(&self.watermarks, topic, &parts, Offset::End, timeout)
                    .ok()?;
            let behind: Vec<i32> = parts
                .iter()
                .copied()
                .filter(|p| {
                    let mine = self
                        .positions
                        .get(&(topic.clone(), *p))
                        .copied()
                        .unwrap_or(0);
                    let consumer_pos = own
                        .as_ref()
                        .and_then(|tpl| tpl.find_partition(topic, *p))
                        .and_then(|e| e.offset().to_raw())
                        .unwrap_or(0);
                    mine.max(consumer_pos) < highs.get(p).copied().unwrap_or(0)
                })
                .collect();
            if behind.is_empty() {
                continue;
            }
            let lows = hookline_kafka::watermarks(
                &self.watermarks,
                topic,
                &behind,
                Offset::Beginning,
                timeout,
            )
            .ok()?;
            let emptied = behind
                .iter()
                .all(|p| lows.get(p).copied().unwrap_or(0) >= highs.get(p).copied().unwrap_or(0));
            if !emptied {
                return None;
            }
        }
        Some(asked_at)
    }

    /// The topics' `retention.ms` (None: infinite or unknown).
    fn retention(&self) -> Option<Cutoffs> {
        let admin: AdminClient<KafkaContext> =
            self.admin_config.create_with_context(KafkaContext).ok()?;
        let specs: Vec<ResourceSpecifier<'_>> = self
            .topics
            .iter()
            .map(|(t, _)| ResourceSpecifier::Topic(t))
            .collect();
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let results = futures::executor::block_on(admin.describe_configs(&specs, &opts)).ok()?;
        let mut ms = Vec::new();
        for r in results {
            let value = r
                .ok()
                .and_then(|c| c.get("retention.ms").and_then(|e| e.value.clone()))
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|v| *v > 0);
            ms.push(value);
        }
        let (deliveries, attempts, dead_letters) = (ms.first()?, ms.get(1)?, ms.get(2)?);
        let quarantine = ms.get(3).copied().flatten();
        // A summary lasts as long as anything about its delivery may.
        let longest = [deliveries, attempts, dead_letters]
            .iter()
            .try_fold(0i64, |acc, r| r.map(|r| acc.max(r)));
        Some(Cutoffs {
            attempts: *attempts,
            dead_letters: *dead_letters,
            deliveries: longest,
            quarantine,
        })
    }
}

/// Longest value preview kept of a quarantined record.
const PREVIEW: usize = 1024;

fn quarantined(msg: &BorrowedMessage<'_>) -> Quarantined {
    let text = |name: &str| {
        hookline_kafka::header(msg, name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let value = msg.payload().unwrap_or_default();
    let key = msg.key().unwrap_or_default();
    Quarantined {
        partition: msg.partition(),
        offset: msg.offset(),
        quarantined_ms: msg.timestamp().to_millis().unwrap_or_else(now_ms),
        reason: text("hookline-quarantine-reason"),
        source_topic: text("hookline-source-topic"),
        source_partition: text("hookline-source-partition").parse().unwrap_or(-1),
        source_offset: text("hookline-source-offset").parse().unwrap_or(-1),
        key: String::from_utf8_lossy(&key[..key.len().min(256)]).into_owned(),
        // A cut in the middle of a character becomes a replacement character.
        value_preview: String::from_utf8_lossy(&value[..value.len().min(PREVIEW)]).into_owned(),
        value_len: value.len() as u64,
        content_type: text("content-type"),
    }
}

#[derive(Clone, Copy)]
struct Cutoffs {
    attempts: Option<i64>,
    dead_letters: Option<i64>,
    deliveries: Option<i64>,
    quarantine: Option<i64>,
}

fn kafka(e: hookline_kafka::rdkafka::error::KafkaError) -> IndexError {
    IndexError::Kafka(hookline_kafka::KafkaError::Client(e))
}
