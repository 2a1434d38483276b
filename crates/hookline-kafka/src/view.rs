//! An in-memory table rebuilt from a topic, read from the beginning on every start.
//!
//! A dedicated thread assigns every partition of the topic (no consumer group, nothing is
//! committed), applies each record through the caller's `apply` function, and after each
//! burst publishes its position. The thread sleeps until a record arrives or a caller asks
//! for freshness (librdkafka wakes it; it polls nothing). Freshness is checked on demand: until the view first caught
//! up, and then only while someone waits for a time the view has not reached
//! (`wait_caught_up`, `sync`), it compares its position with the high watermarks of every
//! partition (one `ListOffsets` request for all of them); when it has reached them it records
//! the time at which those watermarks were asked for as `caught_up_at_ms`. An idle view asks
//! the broker nothing.
//!
//! A view is *current* ([`TopicView::is_current`], part of readiness) once it first caught
//! up, except while it has stayed behind a time some caller waits for for longer than
//! [`BEHIND_MS`] (brokers away, or a backlog it cannot read fast enough).
//!
//! Architecture Invariant: when `caught_up_at_ms >= T`, every record acknowledged by the
//! broker before time `T` has been applied to the table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hookline_config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, watch};

use crate::{KafkaContext, KafkaError};

/// What one record does to the table.
pub enum Update<V> {
    Upsert(String, V),
    Delete(String),
    Skip,
}

/// Progress of a view, published after every burst of records.
#[derive(Debug, Clone, Default)]
pub struct ViewState {
    /// Next offset to read, per partition.
    pub positions: HashMap<i32, i64>,
    /// Wall-clock ms at which the view was last known to be caught up; 0 before the first time.
    pub caught_up_at_ms: i64,
}

pub struct TopicView<V> {
    topic: String,
    table: Arc<RwLock<HashMap<String, V>>>,
    state: watch::Receiver<ViewState>,
    /// The latest time some caller waits for (`caught_up_at_ms >= wanted`).
    wanted: Arc<AtomicI64>,
    /// Since when (ms) a caller has waited for a time the view has not reached; 0 when none.
    behind_since_ms: Arc<AtomicI64>,
    /// Wakes the reader: a caller waits for freshness, or the view stops.
    wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
}

impl<V> Clone for TopicView<V> {
    fn clone(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            table: self.table.clone(),
            state: self.state.clone(),
            wanted: self.wanted.clone(),
            behind_since_ms: self.behind_since_ms.clone(),
            wake: self.wake.clone(),
            stop: self.stop.clone(),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// While a caller waits and the view is behind, freshness is asked again at most this often
/// (and after every burst of records).
const RECHECK: Duration = Duration::from_millis(20);
/// For how long a view may stay behind a time a caller waits for before it is no longer
/// current (and its service no longer ready).
pub const BEHIND_MS: i64 = 10_000;
/// How long the reading consumer's fetch may wait at the broker for new records (the broker
/// answers as soon as records arrive; this is how often an idle view asks again).
const FETCH_WAIT_MS: &str = "500";
/// Failed watermark queries in a row after which the watermark client is made anew.
const WATERMARK_FAILURES_BEFORE_RENEW: u32 = 2;

impl<V: Send + Sync + 'static> TopicView<V> {
    /// Starts reading `topic` from the beginning (once the topic exists). `apply` maps a
    /// record to a table update; it must not panic on bad input (return `Update::Skip` and
    /// log instead).
    pub fn start<F>(config: &Config, topic: &str, apply: F) -> Result<Self, KafkaError>
    where
        F: Fn(&BorrowedMessage<'_>) -> Update<V> + Send + 'static,
    {
        let mut c = crate::client_config(config)?;
        c.set("group.id", crate::acl::view_group(config, topic))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            // A view is small and mostly idle: a small prefetch keeps its memory down.
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .set("queued.min.messages", "1000")
            .set("queued.max.messages.kbytes", "4096");
        let consumer: StreamConsumer<KafkaContext> = c.create_with_context(KafkaContext)?;
        // Watermarks are asked on a client of their own: the broker answers one connection's
        // requests in order, so on the reading client a watermark query would first wait out
        // the pending fetch long-poll (`fetch.wait.max.ms`, 500 ms by default).
        let watermarks_config = crate::client_config(config)?;
        let watermarks: BaseConsumer<KafkaContext> =
            watermarks_config.create_with_context(KafkaContext)?;
        let table = Arc::new(RwLock::new(HashMap::new()));
        let (tx, rx) = watch::channel(ViewState::default());
        let view = Self {
            topic: topic.to_owned(),
            table: table.clone(),
            state: rx,
            wanted: Arc::new(AtomicI64::new(0)),
            behind_since_ms: Arc::new(AtomicI64::new(0)),
            wake: Arc::new(Notify::new()),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let reader = Reader {
            denied: format!(
                "kafka: not authorized to read topic {topic}{}",
                crate::context::as_user(config)
            ),
            consumer,
            watermarks,
            watermarks_config,
            watermark_failures: 0,
            behind_reported: None,
            topic: topic.to_owned(),
            partitions: Vec::new(),
            table,
            state: tx,
            wanted: view.wanted.clone(),
            behind_since_ms: view.behind_since_ms.clone(),
            wake: view.wake.clone(),
            stop: view.stop.clone(),
            apply,
        };
        std::thread::Builder::new()
            .name(format!("view-{topic}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(reader.run()),
                    Err(e) => tracing::error!(topic = %reader.topic, error = %e, "view runtime"),
                }
            })
            .map_err(|e| KafkaError::CreateTopic {
                topic: topic.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(view)
    }

    /// Runs `f` over the table under a read lock.
    pub fn read<R>(&self, f: impl FnOnce(&HashMap<String, V>) -> R) -> R {
        let guard = self.table.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    pub fn get(&self, key: &str) -> Option<V>
    where
        V: Clone,
    {
        self.read(|t| t.get(key).cloned())
    }

    pub fn state(&self) -> ViewState {
        self.state.borrow().clone()
    }

    /// True once the view has read everything that existed when it started.
    pub fn is_ready(&self) -> bool {
        self.state.borrow().caught_up_at_ms > 0
    }

    /// Ready, and not behind a time some caller has waited for for longer than [`BEHIND_MS`].
    pub fn is_current(&self) -> bool {
        let behind_since = self.behind_since_ms.load(Ordering::Relaxed);
        self.is_ready() && (behind_since == 0 || now_ms() - behind_since < BEHIND_MS)
    }

    /// Waits until every record acknowledged before `since_ms` is in the table.
    pub async fn wait_caught_up(&self, since_ms: i64) {
        let mut rx = self.state.clone();
        if rx.borrow().caught_up_at_ms >= since_ms {
            return;
        }
        self.wanted.fetch_max(since_ms, Ordering::Relaxed);
        self.wake.notify_one();
        let _ = rx.wait_for(|s| s.caught_up_at_ms >= since_ms).await;
    }

    /// Waits until the record at (`partition`, `offset`) is in the table.
    pub async fn wait_for_offset(&self, partition: i32, offset: i64) {
        let mut rx = self.state.clone();
        let _ = rx
            .wait_for(|s| s.positions.get(&partition).is_some_and(|p| *p > offset))
            .await;
    }

    /// Waits until everything acknowledged up to now is in the table.
    pub async fn sync(&self) {
        self.wait_caught_up(now_ms()).await;
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Stops the reader thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

struct Reader<V, F> {
    /// The line readiness shows while the ACLs deny reading the topic.
    denied: String,
    consumer: StreamConsumer<KafkaContext>,
    watermarks: BaseConsumer<KafkaContext>,
    /// To make the watermark client anew: one that lost the leader of a partition (its
    /// broker died) may keep timing out although the partition has a new leader.
    watermarks_config: rdkafka::ClientConfig,
    watermark_failures: u32,
    /// When a view kept behind was last reported.
    behind_reported: Option<Instant>,
    topic: String,
    partitions: Vec<i32>,
    table: Arc<RwLock<HashMap<String, V>>>,
    state: watch::Sender<ViewState>,
    wanted: Arc<AtomicI64>,
    behind_since_ms: Arc<AtomicI64>,
    wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
    apply: F,
}

impl<V, F> Reader<V, F>
where
    V: Send + Sync,
    F: Fn(&BorrowedMessage<'_>) -> Update<V>,
{
    /// Assigns every partition from the beginning, waiting for the topic to exist: a service
    /// may start before its topics are created, or just after (metadata still propagating).
    fn assign(&mut self) -> bool {
        let mut waited = Instant::now();
        while !self.stop.load(Ordering::Relaxed) && !self.state.is_closed() {
            let partitions: Vec<i32> = match self
                .consumer
                .fetch_metadata(Some(&self.topic), Duration::from_secs(5))
            {
                Ok(m) => {
                    let topic = m.topics().iter().find(|t| t.name() == self.topic);
                    let error = topic.and_then(|t| t.error()).map(RDKafkaErrorCode::from);
                    if error.is_some_and(crate::context::is_denial) {
                        crate::context::note_denied(self.denied.clone());
                    } else if topic.is_some() {
                        crate::context::note_allowed(&self.denied);
                    }
                    topic
                        .filter(|_| error.is_none())
                        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                        .unwrap_or_default()
                }
                Err(e) => {
                    tracing::debug!(topic = %self.topic, error = %e, "metadata");
                    Vec::new()
                }
            };
            if !partitions.is_empty() {
                let mut tpl = TopicPartitionList::new();
                for p in &partitions {
                    let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Beginning);
                }
                match self.consumer.assign(&tpl) {
                    Ok(()) => {
                        self.partitions = partitions;
                        return true;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %self.topic, error = %e, "cannot assign partitions")
                    }
                }
            }
            if waited.elapsed() > Duration::from_secs(10) {
                tracing::warn!(topic = %self.topic, "waiting for the topic to exist");
                waited = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    async fn run(mut self) {
        if !self.assign() {
            return;
        }
        let mut positions: HashMap<i32, i64> = self.partitions.iter().map(|p| (*p, 0)).collect();
        let mut caught_up_at_ms = 0i64;
        let mut last_check: Option<Instant> = None;
        let mut applied = 0usize;
        while !self.stop.load(Ordering::Relaxed) && !self.state.is_closed() {
            // Asked only when someone needs an answer: before the first catch-up (readiness)
            // and while a caller waits for a time not reached yet. A check that found the view
            // behind is repeated after the next burst of records, or after `RECHECK`.
            let needed =
                caught_up_at_ms == 0 || self.wanted.load(Ordering::Relaxed) > caught_up_at_ms;
            let due = match last_check {
                None => true,
                Some(at) => applied > 0 || at.elapsed() >= RECHECK,
            };
            let caught_up_at = if needed && due {
                last_check = Some(Instant::now());
                self.check_caught_up(&positions)
            } else {
                None
            };
            if let Some(t) = caught_up_at {
                caught_up_at_ms = caught_up_at_ms.max(t);
                // The next waiter's check is immediate.
                last_check = None;
            }
            if caught_up_at_ms == 0 || self.wanted.load(Ordering::Relaxed) > caught_up_at_ms {
                let _ = self.behind_since_ms.compare_exchange(
                    0,
                    now_ms(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            } else {
                self.behind_since_ms.store(0, Ordering::Relaxed);
            }
            if applied > 0 || caught_up_at.is_some() {
                self.state.send_modify(|s| {
                    s.positions.clone_from(&positions);
                    s.caught_up_at_ms = caught_up_at_ms;
                });
            }
            let still_needed = caught_up_at.is_none() && needed;
            applied = 0;
            tokio::select! {
                first = self.consumer.recv() => {
                    let mut next = Some(first);
                    while let Some(result) = next.take() {
                        match result {
                            Ok(msg) => {
                                let update = (self.apply)(&msg);
                                self.write(update);
                                positions.insert(msg.partition(), msg.offset() + 1);
                                applied += 1;
                            }
                            Err(e) => {
                                // Brokers away: the client reconnects by itself.
                                tracing::debug!(topic = %self.topic, error = %e, "view read error");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                break;
                            }
                        }
                        if applied >= 10_000 {
                            break;
                        }
                        // What is ready already belongs to this burst.
                        next = tokio::select! {
                            biased;
                            r = self.consumer.recv() => Some(r),
                            () = std::future::ready(()) => None,
                        };
                    }
                }
                () = self.wake.notified() => {}
                () = tokio::time::sleep(RECHECK), if still_needed => {}
                () = self.state.closed() => {}
            }
        }
    }

    fn write(&self, update: Update<V>) {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        match update {
            Update::Upsert(k, v) => {
                table.insert(k, v);
            }
            Update::Delete(k) => {
                table.remove(&k);
            }
            Update::Skip => {}
        }
    }

    fn renew_watermarks_client(&mut self) {
        match self.watermarks_config.create_with_context(KafkaContext) {
            Ok(c) => {
                tracing::info!(topic = %self.topic, "watermark queries kept failing; new client");
                self.watermarks = c;
                self.watermark_failures = 0;
            }
            Err(e) => tracing::warn!(topic = %self.topic, error = %e, "watermark client"),
        }
    }

    /// Returns the time the watermarks were asked for, if every partition has reached them.
    /// One request asks every partition's high watermark; the low watermarks are asked only
    /// for partitions the view has not reached (an emptied partition counts as reached).
    fn check_caught_up(&mut self, positions: &HashMap<i32, i64>) -> Option<i64> {
        let asked_at = now_ms();
        let highs = match crate::watermarks(
            &self.watermarks,
            &self.topic,
            &self.partitions,
            Offset::End,
            Duration::from_secs(5),
        ) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(topic = %self.topic, error = %e, "watermarks");
                self.watermark_failures += 1;
                if self.watermark_failures >= WATERMARK_FAILURES_BEFORE_RENEW {
                    self.renew_watermarks_client();
                }
                return None;
            }
        };
        self.watermark_failures = 0;
        // The broker may place transaction markers past the last record; the consumer's own
        // position accounts for those.
        let own = self.consumer.position().ok();
        let behind: Vec<i32> = self
            .partitions
            .iter()
            .copied()
            .filter(|p| {
                let high = highs.get(p).copied().unwrap_or(0);
                let mine = positions.get(p).copied().unwrap_or(0);
                let consumer_pos = own
                    .as_ref()
                    .and_then(|tpl| tpl.find_partition(&self.topic, *p))
                    .and_then(|e| e.offset().to_raw())
                    .unwrap_or(0);
                mine.max(consumer_pos) < high
            })
            .collect();
        if behind.is_empty() {
            return Some(asked_at);
        }
        // Behind, unless every such partition is empty (retention or compaction removed all).
        let lows = crate::watermarks(
            &self.watermarks,
            &self.topic,
            &behind,
            Offset::Beginning,
            Duration::from_secs(5),
        )
        .ok()?;
        let emptied = behind
            .iter()
            .all(|p| lows.get(p).copied().unwrap_or(0) >= highs.get(p).copied().unwrap_or(0));
        if !emptied {
            self.report_behind(&behind, positions, &highs, own.as_ref());
        }
        emptied.then_some(asked_at)
    }

    /// A caller has waited past [`BEHIND_MS`]: says where each lagging partition stands, at
    /// most once per [`BEHIND_MS`].
    fn report_behind(
        &mut self,
        behind: &[i32],
        positions: &HashMap<i32, i64>,
        highs: &HashMap<i32, i64>,
        own: Option<&TopicPartitionList>,
    ) {
        let since = self.behind_since_ms.load(Ordering::Relaxed);
        let every = Duration::from_millis(BEHIND_MS as u64);
        if since == 0
            || now_ms() - since < BEHIND_MS
            || self.behind_reported.is_some_and(|at| at.elapsed() < every)
        {
            return;
        }
        self.behind_reported = Some(Instant::now());
        let at: Vec<String> = behind
            .iter()
            .map(|p| {
                let consumer = own
                    .and_then(|tpl| tpl.find_partition(&self.topic, *p))
                    .map(|e| format!("{:?}", e.offset()))
                    .unwrap_or_default();
                format!(
                    "{p}: read to {}, consumer at {consumer}, end {}",
                    positions.get(p).copied().unwrap_or(0),
                    highs.get(p).copied().unwrap_or(0)
                )
            })
            .collect();
        tracing::warn!(topic = %self.topic, behind_for_ms = now_ms() - since, partitions = ?at,
            "view still behind what a caller waits for");
    }
}
