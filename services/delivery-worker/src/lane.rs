//! The retry lane: where a parked subscription's jobs wait, in order, and the parked-state
//! record that says where its unfinished jobs start.
//!
//! - [`append`]: one job to the lane (keyed by subscription id, so one partition holds all of a
//!   subscription's jobs in the order they were appended).
//! - [`write_state`] / [`clear_state`]: the compacted parked-state record.
//! - [`spawn_reader`]: reads one subscription's jobs from its cursor and hands them over,
//!   holding a permit per job so a resumed subscription cannot fill the worker's memory.

use std::sync::Arc;
use std::time::Duration;

use hookline_config::Config;
use hookline_kafka::rdkafka::ClientContext;
use hookline_kafka::rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use hookline_kafka::rdkafka::error::KafkaError;
use hookline_kafka::rdkafka::message::Message;
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
use hookline_proto::Message as _;
use hookline_proto::v1::{DeliveryJob, ParkedState};
use hookline_runtime::CancellationToken;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

const PRODUCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Enqueues `job` for the lane at once, so appends keep the order of the calls; the future
/// resolves to its (partition, offset) once the broker has it.
pub fn append(
    producer: &FutureProducer,
    topic: &str,
    job: &DeliveryJob,
) -> Result<impl std::future::Future<Output = Result<(i32, i64), String>> + use<>, KafkaError> {
    let payload = job.encode_to_vec();
    let record = FutureRecord::to(topic)
        .key(&job.subscription_id)
        .payload(&payload);
    let delivery = producer.send_result(record).map_err(|(e, _)| e)?;
    Ok(async move {
        match delivery.await {
            Ok(Ok(d)) => Ok((d.partition, d.offset)),
            Ok(Err((e, _))) => Err(e.to_string()),
            Err(_) => Err("producer dropped".to_owned()),
        }
    })
}

pub async fn write_state(
    producer: &FutureProducer,
    topic: &str,
    state: &ParkedState,
) -> Result<(), KafkaError> {
    let payload = state.encode_to_vec();
    let record = FutureRecord::to(topic)
        .key(&state.subscription_id)
        .payload(&payload);
    producer
        .send(record, PRODUCE_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

pub async fn clear_state(
    producer: &FutureProducer,
    topic: &str,
    subscription_id: &str,
) -> Result<(), KafkaError> {
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(subscription_id);
    producer
        .send(record, PRODUCE_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// What a lane reader reports.
pub enum LaneEvent {
    /// A job of the subscription at `offset`; `permit` is released when the job is over.
    Job {
        offset: i64,
        job: Box<DeliveryJob>,
        permit: OwnedSemaphorePermit,
    },
    /// Everything before `next` has been read (the end of the partition at that moment).
    CaughtUp {
        next: i64,
    },
    Failed(String),
}

/// Reaching the end of the partition is how a reader learns it caught up, not an error.
struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            tracing::error!(%error, reason, "retry-lane reader client error");
        }
    }
}

impl ConsumerContext for QuietEof {}

pub struct Reader {
    pub stop: CancellationToken,
}

/// Where a parked subscription's unfinished jobs start.
pub struct LaneCursor {
    pub subscription_id: String,
    pub partition: i32,
    pub cursor: i64,
    /// Tells this reading apart from earlier ones of the same subscription.
    pub generation: u64,
}

/// Reads the subscription's jobs from the cursor until stopped; at most `permits` of them
/// are handed over and not yet finished at any time.
pub fn spawn_reader(
    config: &Config,
    at: LaneCursor,
    permits: usize,
    events: mpsc::UnboundedSender<(String, u64, LaneEvent)>,
    parent: &CancellationToken,
) -> Result<Reader, hookline_kafka::KafkaError> {
    let LaneCursor {
        subscription_id,
        partition,
        cursor,
        generation,
    } = at;
    let mut c = hookline_kafka::client_config(config)?;
    c.set("group.id", format!("{}.lane-reader", config.group_prefix))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // A reader keeps little read ahead: it skips other subscriptions' records, and many
        // readers may run at once.
        .set("queued.max.messages.kbytes", "1024")
        .set("max.partition.fetch.bytes", "262144")
        .set("isolation.level", "read_committed");
    let consumer: StreamConsumer<QuietEof> = c.create_with_context(QuietEof)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&config.topic_retry_lane, partition, Offset::Offset(cursor))?;
    consumer.assign(&tpl)?;
    let stop = parent.child_token();
    let reader = Reader { stop: stop.clone() };
    let permits = Arc::new(Semaphore::new(permits));
    tokio::spawn(async move {
        let send = |e: LaneEvent| {
            events
                .send((subscription_id.clone(), generation, e))
                .is_ok()
        };
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = consumer.recv() => m,
            };
            match msg {
                Ok(m) => {
                    if m.key() != Some(subscription_id.as_bytes()) {
                        continue;
                    }
                    let offset = m.offset();
                    let Some(Ok(job)) = m.payload().map(DeliveryJob::decode) else {
                        tracing::error!(offset, "undecodable retry-lane record skipped");
                        continue;
                    };
                    drop(m);
                    let permit = tokio::select! {
                        _ = stop.cancelled() => return,
                        p = permits.clone().acquire_owned() => p.expect("never closed"),
                    };
                    if !send(LaneEvent::Job {
                        offset,
                        job: Box::new(job),
                        permit,
                    }) {
                        return;
                    }
                }
                Err(KafkaError::PartitionEOF(_)) => {
                    let next = consumer
                        .position()
                        .ok()
                        .and_then(|tpl| tpl.elements().first().and_then(|e| e.offset().to_raw()))
                        .unwrap_or(cursor);
                    if !send(LaneEvent::CaughtUp { next }) {
                        return;
                    }
                }
                Err(e) => {
                    let _ = send(LaneEvent::Failed(e.to_string()));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok(reader)
}
