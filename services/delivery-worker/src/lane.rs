//! The retry lane, read back: one reader per lane partition, shared by every parked
//! subscription whose jobs are in it.
//!
//! [`Lanes`] (owned by the dispatcher, never blocking) starts a reader task for a partition
//! when a subscription on it is to be read back, and ends it when none is left. A reader keeps
//! one consumer assigned to its partition, at the lowest offset any of its subscriptions
//! still wants. It hands each subscription's records over in order, holding a permit per job
//! (`subscription_buffer` per subscription), so a resumed subscription cannot fill the
//! worker's memory; a subscription out of permits is *stalled*: its records are skipped, the
//! others' go on, and once it has permits again the reader goes back to where it stalled.

use std::collections::HashMap;
use std::time::Duration;

use hookline_config::Config;
use hookline_kafka::acl;
use hookline_kafka::rdkafka::ClientContext;
use hookline_kafka::rdkafka::config::RDKafkaLogLevel;
use hookline_kafka::rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use hookline_kafka::rdkafka::error::KafkaError;
use hookline_kafka::rdkafka::message::{Headers as _, Message};
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
use hookline_proto::Message as _;
use hookline_proto::v1::DeliveryJob;
use hookline_runtime::CancellationToken;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use self::cursors::Cursors;

mod cursors;

/// What a lane reader reports, for one subscription and one reading (`generation`).
pub enum LaneEvent {
    /// A job of the subscription at `offset`; `permit` is released when the job is over.
    Job {
        offset: i64,
        /// The `deliveries` record the job was appended for (partition, offset), when the
        /// record says.
        main: Option<(i32, i64)>,
        job: Box<DeliveryJob>,
        permit: OwnedSemaphorePermit,
    },
    /// Every record of the subscription before `next` has been handed over.
    CaughtUp { next: i64 },
}

pub type LaneReport = (String, u64, LaneEvent);

enum Command {
    Read {
        sub: String,
        cursor: i64,
        generation: u64,
    },
    Stop {
        sub: String,
    },
}

/// The dispatcher's handle on every lane reader.
pub struct Lanes {
    config: Config,
    permits: usize,
    readers: HashMap<i32, mpsc::UnboundedSender<Command>>,
    /// Which partition each subscription being read back is on.
    subs: HashMap<String, i32>,
    events: mpsc::UnboundedSender<LaneReport>,
    shutdown: CancellationToken,
}

impl Lanes {
    pub fn new(
        config: &Config,
        events: mpsc::UnboundedSender<LaneReport>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            config: config.clone(),
            permits: config.subscription_buffer,
            readers: HashMap::new(),
            subs: HashMap::new(),
            events,
            shutdown,
        }
    }

    /// Starts (or restarts) reading `sub`'s records of `partition` from `cursor`.
    pub fn read(&mut self, sub: &str, partition: i32, cursor: i64, generation: u64) {
        self.stop(sub);
        self.subs.insert(sub.to_owned(), partition);
        let reader = self.readers.entry(partition).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let reader = Reader {
                config: self.config.clone(),
                partition,
                permits: self.permits,
                events: self.events.clone(),
                subs: Cursors::default(),
                assigned_at: None,
                assigned: false,
                reposition: None,
                next: None,
            };
            tokio::spawn(reader.run(rx, self.shutdown.clone()));
            tx
        });
        let _ = reader.send(Command::Read {
            sub: sub.to_owned(),
            cursor,
            generation,
        });
    }

    pub fn stop(&mut self, sub: &str) {
        let Some(partition) = self.subs.remove(sub) else {
            return;
        };
        if let Some(reader) = self.readers.get(&partition) {
            let _ = reader.send(Command::Stop {
                sub: sub.to_owned(),
            });
        }
        if !self.subs.values().any(|p| *p == partition) {
            // Dropping the sender ends the reader once it has read its commands.
            self.readers.remove(&partition);
        }
    }
}

const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// Reaching the end of the partition is how a reader learns it caught up, not an error.
struct QuietEof;

impl ClientContext for QuietEof {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        hookline_kafka::KafkaContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            hookline_kafka::KafkaContext.error(error, reason);
        }
    }
}

impl ConsumerContext for QuietEof {}

struct Reader {
    config: Config,
    partition: i32,
    permits: usize,
    events: mpsc::UnboundedSender<LaneReport>,
    subs: Cursors,
    /// Where the current reading of the partition started; an end-of-partition counts for a
    /// subscription only when its reading started at or after it.
    assigned_at: Option<i64>,
    assigned: bool,
    /// A position still to be taken (a seek that was refused).
    reposition: Option<i64>,
    /// The offset after the last record received since the partition was (re)positioned, or
    /// the position taken: where an end of partition is. (The consumer's own position is of
    /// no use there: librdkafka resets it on every assign and seek, and it stays unknown
    /// until a record arrives, so a reading that starts at the end would never learn that it
    /// caught up.)
    next: Option<i64>,
}

impl Reader {
    fn consumer(&self) -> Result<StreamConsumer<QuietEof>, hookline_kafka::KafkaError> {
        let mut c = hookline_kafka::client_config(&self.config)?;
        c.set("group.id", acl::group(&self.config, acl::GROUP_LANE_READER))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("queued.max.messages.kbytes", "2048")
            .set("fetch.wait.max.ms", "100")
            .set("isolation.level", "read_committed");
        Ok(c.create_with_context(QuietEof)?)
    }

    /// Reads from `at` on: the first time by assigning the partition, later by seeking it
    /// (assigning again while the previous assignment's fetcher stops races inside
    /// librdkafka). A seek that is refused (the fetcher not started yet) is tried again on the
    /// next tick.
    fn position_at(&mut self, consumer: &StreamConsumer<QuietEof>, at: i64) {
        let topic = &self.config.topic_retry_lane;
        if !self.assigned {
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition_offset(topic, self.partition, Offset::Offset(at));
            match consumer.assign(&tpl) {
                Ok(()) => {
                    self.assigned = true;
                    self.assigned_at = Some(at);
                    self.next = Some(at);
                    self.reposition = None;
                }
                Err(e) => {
                    tracing::debug!(partition = self.partition, error = %e, "retry-lane reader: assign");
                    self.reposition = Some(at);
                }
            }
            return;
        }
        // Synchronous: once it returns, nothing read before it is handed out, and the
        // position (for end-of-partition reports) is the new one.
        match consumer.seek(topic, self.partition, Offset::Offset(at), SEEK_TIMEOUT) {
            Ok(()) => {
                self.assigned_at = Some(at);
                self.next = Some(at);
                self.reposition = None;
            }
            Err(e) => {
                tracing::debug!(partition = self.partition, error = %e, "retry-lane reader: seek");
                // No end of partition counts until the seek is done.
                self.assigned_at = None;
                self.next = None;
                self.reposition = Some(at.min(self.reposition.unwrap_or(at)));
            }
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        let consumer = loop {
            match self.consumer() {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "retry-lane reader: creating its client; retrying");
                    if stop
                        .run_until_cancelled(tokio::time::sleep(Duration::from_secs(1)))
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Read { sub, cursor, generation }) => {
                        self.subs.read(sub, cursor, generation, self.permits);
                        // Start over at the lowest offset wanted: reading from there also
                        // reports the end of the partition anew.
                        if let Some(at) = self.subs.lowest_wanted() {
                            self.position_at(&consumer, at);
                        }
                    }
                    Some(Command::Stop { sub }) => self.subs.stop(&sub),
                },
                _ = tick.tick() => {
                    // A stalled subscription with room again: go back to where it stalled.
                    let back = self.subs.resume_stalled();
                    if let Some(at) = back.into_iter().chain(self.reposition).min() {
                        self.position_at(&consumer, at);
                    }
                }
                msg = consumer.recv(), if !self.subs.is_empty() => match msg {
                    // A position still to be taken: what arrives meanwhile is from the old one.
                    _ if self.reposition.is_some() => continue,
                    Ok(m) => {
                        let offset = m.offset();
                        self.next = self.next.map(|n| n.max(offset + 1));
                        let Some(sub) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                            continue;
                        };
                        let Some((generation, permit)) = self.subs.take(sub, offset) else {
                            continue;
                        };
                        let Some(Ok(job)) = m.payload().map(DeliveryJob::decode) else {
                            tracing::warn!(offset, "undecodable retry-lane record skipped");
                            continue;
                        };
                        let main = m.headers().and_then(|h| {
                            h.iter()
                                .find(|h| h.key == crate::writer::MAIN_HEADER)
                                .and_then(|h| h.value)
                                .and_then(crate::writer::parse_main_header)
                        });
                        let event = LaneEvent::Job { offset, main, job: Box::new(job), permit };
                        if self.events.send((sub.to_owned(), generation, event)).is_err() {
                            return;
                        }
                    }
                    Err(KafkaError::PartitionEOF(_)) => {
                        // (An end reported for the old position is not ours either; see above.)
                        let (Some(next), Some(from)) = (self.next, self.assigned_at) else {
                            continue;
                        };
                        for (sub, generation) in self.subs.caught_up(next, from) {
                            let event = LaneEvent::CaughtUp { next };
                            if self.events.send((sub, generation, event)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(partition = self.partition, error = %e, "retry-lane reader");
                        if stop
                            .run_until_cancelled(tokio::time::sleep(Duration::from_millis(200)))
                            .await
                            .is_none()
                        {
                            return;
                        }
                    }
                },
            }
        }
    }
}
