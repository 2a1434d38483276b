//! The router: consumes `events`, finds the subscriptions each event matches, and produces one
//! [`DeliveryJob`] per match to `deliveries`, keyed by subscription id.
//!
//! - [`run`]: the consume-route-produce loop and the health server.
//! - [`route`]: the pure matching step over the subscription view.
//!
//! Offsets are committed only after every job of an event was acknowledged by the broker
//! (at-least-once); a job's delivery id is derived from (event id, subscription id), so a
//! repeat after a crash carries the same id.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use hookline_config::Config;
use hookline_events::time_fmt::now_ms;
use hookline_events::{CONTENT_TYPE_HEADER, Event, RecordPosition, decode_event};
use hookline_kafka::rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use hookline_kafka::rdkafka::message::{BorrowedMessage, Message};
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
use hookline_proto::Message as _;
use hookline_proto::v1::{DeliveryJob, Subscription};
use hookline_runtime::{CancellationToken, Health};
use hookline_state::SubscriptionView;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] hookline_kafka::KafkaError),
    #[error("kafka: {0}")]
    Client(#[from] hookline_kafka::rdkafka::error::KafkaError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// Events being routed at once; bounds memory while keeping many produces in flight.
const WINDOW: usize = 1024;
const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// The delivery jobs for `event` under the current subscriptions.
pub fn route(
    subs: &SubscriptionView,
    event: &Event,
    key: &[u8],
    at: RecordPosition<'_>,
) -> Vec<DeliveryJob> {
    let matching: Vec<Subscription> = subs.read(|table| {
        table
            .values()
            .filter(|s| s.enabled && s.tenant == event.tenant)
            .filter(|s| hookline_routing::selects(&s.event_types, &event.r#type))
            .cloned()
            .collect()
    });
    let routed_at_ms = now_ms();
    matching
        .into_iter()
        .map(|s| DeliveryJob {
            delivery_id: hookline_events::delivery_id(&event.id, &s.id),
            subscription_id: s.id,
            tenant: event.tenant.clone(),
            event: Some(event.clone()),
            ordering_key: key.to_vec(),
            attempt: 0,
            due_at_ms: 0,
            source_topic: at.topic.to_owned(),
            source_partition: at.partition,
            source_offset: at.offset,
            traceparent: String::new(),
            routed_at_ms,
        })
        .collect()
}

/// Routes until `shutdown`, serving `/healthz` and `/readyz` on `listener`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if config.create_topics {
        hookline_kafka::ensure_topics(&config).await?;
    }
    let health = Health::default();
    let server = tokio::spawn(hookline_runtime::serve(
        listener,
        hookline_runtime::health_routes(health.clone()),
        shutdown.clone(),
    ));
    let subs = hookline_state::subscriptions(&config)?;
    tokio::select! {
        _ = subs.sync() => {}
        _ = shutdown.cancelled() => { subs.stop(); return Ok(()); }
    }
    let producer = hookline_kafka::producer(&config)?;
    let consumer = hookline_kafka::group_consumer(&config, "router")?;
    consumer.subscribe(&[&config.topic_events])?;
    health.set_ready(true);
    tracing::info!(topic = %config.topic_events, "router ready");

    let result = route_loop(&config, &subs, &consumer, &producer, &shutdown).await;
    health.set_ready(false);
    subs.stop();
    let _ = server.await;
    result
}

async fn route_loop(
    config: &Config,
    subs: &SubscriptionView,
    consumer: &StreamConsumer,
    producer: &FutureProducer,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let mut in_flight = FuturesOrdered::new();
    // Next offset to commit per partition; only moves forward in completion order.
    let mut done: HashMap<i32, i64> = HashMap::new();
    let mut commit_tick = tokio::time::interval(COMMIT_EVERY);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some((partition, offset)) = in_flight.next(), if !in_flight.is_empty() => {
                done.insert(partition, offset + 1);
            }
            _ = commit_tick.tick() => commit(consumer, &config.topic_events, &mut done, CommitMode::Async),
            msg = consumer.recv(), if in_flight.len() < WINDOW => {
                let msg = msg?;
                let jobs = jobs_for(subs, &msg).await;
                in_flight.push_back(produce_all(producer, &config.topic_deliveries, jobs, msg.partition(), msg.offset()));
            }
        }
    }
    // Hand back nothing half-done: finish what is in flight, then commit it.
    while let Some((partition, offset)) = in_flight.next().await {
        done.insert(partition, offset + 1);
    }
    commit(consumer, &config.topic_events, &mut done, CommitMode::Sync);
    Ok(())
}

async fn jobs_for(subs: &SubscriptionView, msg: &BorrowedMessage<'_>) -> Vec<DeliveryJob> {
    let at = RecordPosition {
        topic: msg.topic(),
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp_ms: msg.timestamp().to_millis(),
    };
    let event = match decode_event(
        at,
        hookline_kafka::header(msg, CONTENT_TYPE_HEADER),
        msg.payload(),
    ) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(partition = at.partition, offset = at.offset, error = %e, "undecodable event skipped");
            return Vec::new();
        }
    };
    // Every subscription change acknowledged before the event was produced is in force.
    if let Some(ts) = at.timestamp_ms {
        subs.wait_caught_up(ts).await;
    }
    route(subs, &event, msg.key().unwrap_or_default(), at)
}

/// Produces every job and resolves once all are acknowledged; retries until they are, since
/// an event's offset must not move past an unproduced job.
async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    jobs: Vec<DeliveryJob>,
    partition: i32,
    offset: i64,
) -> (i32, i64) {
    let sends = jobs.iter().map(|job| {
        let payload = job.encode_to_vec();
        async move {
            loop {
                let record = FutureRecord::to(topic).key(&job.subscription_id).payload(&payload);
                match producer.send(record, Duration::from_secs(30)).await {
                    Ok(_) => break,
                    Err((e, _)) => {
                        tracing::warn!(error = %e, delivery_id = %job.delivery_id, "producing job failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    });
    futures::future::join_all(sends).await;
    (partition, offset)
}

fn commit(consumer: &StreamConsumer, topic: &str, done: &mut HashMap<i32, i64>, mode: CommitMode) {
    if done.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in done.drain() {
        if let Err(e) = tpl.add_partition_offset(topic, p, Offset::Offset(o)) {
            tracing::warn!(error = %e, "bad offset");
        }
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        tracing::warn!(error = %e, "offset commit failed; will repeat");
    }
}
