//! The delivery worker: consumes `deliveries`, POSTs each job to its subscription's endpoint,
//! signed with every current secret version, and records every attempt.
//!
//! - [`run`]: consume loop, bounded concurrency, offset commits, health server.
//! - `job`: one job from first attempt to delivered, final failure or dead letter.
//! - `http`: one signed HTTP attempt with a capped response read.
//! - `retry`: the retry policy (which failures retry, the schedule with jitter).
//!
//! A job's offset is committed only once the job is delivered or its dead letter is
//! acknowledged by the broker; after a crash it is redelivered with the same delivery id.
#![forbid(unsafe_code)]

mod http;
mod job;
mod retry;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_config::Config;
use hookline_kafka::offsets::OffsetTracker;
use hookline_kafka::rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use hookline_kafka::rdkafka::message::Message;
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
use hookline_proto::Message as _;
use hookline_proto::v1::DeliveryJob;
use hookline_runtime::{CancellationToken, Health};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use job::Outcome;
pub use retry::{Schedule, Verdict, classify};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] hookline_kafka::KafkaError),
    #[error("kafka: {0}")]
    Client(#[from] hookline_kafka::rdkafka::error::KafkaError),
    #[error(transparent)]
    Config(#[from] hookline_config::ConfigError),
    #[error(transparent)]
    State(#[from] hookline_state::StateError),
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// Delivers until `shutdown`, serving `/healthz` and `/readyz` on `listener`.
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
    let ctx = Arc::new(job::Context::start(&config, shutdown.clone())?);
    tokio::select! {
        _ = async { tokio::join!(ctx.subscriptions.sync(), ctx.secrets.sync()) } => {}
        _ = shutdown.cancelled() => { ctx.stop(); return Ok(()); }
    }
    let consumer = hookline_kafka::group_consumer(&config, "delivery-worker")?;
    consumer.subscribe(&[&config.topic_deliveries])?;
    health.set_ready(true);
    tracing::info!(topic = %config.topic_deliveries, "delivery worker ready");

    let result = consume(&config, ctx.clone(), consumer, &shutdown).await;
    health.set_ready(false);
    ctx.stop();
    let _ = server.await;
    result
}

async fn consume(
    config: &Config,
    ctx: Arc<job::Context>,
    consumer: StreamConsumer,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let consumer = Arc::new(consumer);
    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let topic = config.topic_deliveries.clone();
    let committer = {
        let (consumer, tracker, topic, stop) = (
            consumer.clone(),
            tracker.clone(),
            topic.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(COMMIT_EVERY);
            while stop.run_until_cancelled(tick.tick()).await.is_some() {
                commit(&consumer, &topic, &tracker, CommitMode::Async);
            }
        })
    };
    let slots = Arc::new(Semaphore::new(config.worker_concurrency));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let Some(permit) = shutdown
            .run_until_cancelled(slots.clone().acquire_owned())
            .await
        else {
            break;
        };
        let permit = permit.expect("semaphore is never closed");
        let Some(msg) = shutdown.run_until_cancelled(consumer.recv()).await else {
            break;
        };
        let msg = msg?;
        let (partition, offset) = (msg.partition(), msg.offset());
        lock(&tracker).begin(partition, offset);
        let job = match msg.payload().map(DeliveryJob::decode) {
            Some(Ok(job)) => job,
            other => {
                let reason = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "empty record".into(),
                };
                tracing::error!(partition, offset, %reason, "undecodable delivery job skipped");
                lock(&tracker).finish(partition, offset);
                continue;
            }
        };
        drop(msg);
        let (ctx, tracker) = (ctx.clone(), tracker.clone());
        tasks.spawn(async move {
            let _permit = permit;
            if ctx.deliver(job).await.is_completed() {
                lock(&tracker).finish(partition, offset);
            }
        });
    }
    // Give in-flight attempts the grace period; jobs waiting for a retry are handed back
    // (their offsets stay uncommitted and another worker redelivers them).
    let grace = config.shutdown_grace()?;
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    let _ = committer.await;
    commit(&consumer, &topic, &tracker, CommitMode::Sync);
    Ok(())
}

fn lock(t: &Mutex<OffsetTracker>) -> std::sync::MutexGuard<'_, OffsetTracker> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

fn commit(
    consumer: &StreamConsumer,
    topic: &str,
    tracker: &Mutex<OffsetTracker>,
    mode: CommitMode,
) {
    let offsets = lock(tracker).committable();
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        let _ = tpl.add_partition_offset(topic, p, Offset::Offset(o));
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        tracing::debug!(error = %e, "offset commit failed; will repeat");
    }
}
