//! The delivery worker: consumes `deliveries`, POSTs each job to its subscription's endpoint,
//! signed with every current secret version, and records every attempt.
//!
//! - [`run`]: views, the consumer, offset commits, health server.
//! - `dispatch`: the one task that owns the queues, starts jobs and parks subscriptions.
//! - `queue`: per-subscription, per-key queues (strict order per key, limits per subscription).
//! - `lane`: the retry lane and parked-state records of parked subscriptions.
//! - `job`: one job from first attempt to delivered, dead-lettered, or handed back to park.
//! - `http`: one signed HTTP attempt with a capped response read.
//! - `retry`: the retry policy (which failures retry, the schedule with jitter).
//!
//! A job's offset is committed only once the job is delivered or its dead letter is
//! acknowledged by the broker; after a crash it is redelivered with the same delivery id.
#![forbid(unsafe_code)]

mod dispatch;
mod http;
mod job;
mod lane;
mod queue;
mod retry;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_config::Config;
use hookline_kafka::offsets::OffsetTracker;
use hookline_kafka::rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
use hookline_proto::Message as _;
use hookline_runtime::{CancellationToken, Health};
use tokio::net::TcpListener;

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
    #[error("dispatch: {0}")]
    Dispatch(String),
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
    let parked = hookline_kafka::view::TopicView::start(config, &config.topic_parked, |msg| {
        use hookline_kafka::rdkafka::Message as _;
        use hookline_kafka::view::Update;
        let Some(key) = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return Update::Skip;
        };
        match msg.payload().map(hookline_proto::v1::ParkedState::decode) {
            None => Update::Delete(key),
            Some(Ok(state)) => Update::Upsert(key, state),
            Some(Err(e)) => {
                tracing::error!(error = %e, "undecodable parked state skipped");
                Update::Skip
            }
        }
    })?;
    parked.sync().await;
    let dispatcher = dispatch::Dispatcher::new(
        ctx,
        config.clone(),
        parked.clone(),
        tracker.clone(),
        shutdown.clone(),
    )?;
    let result = dispatcher.run(consumer.clone()).await;
    parked.stop();
    let _ = committer.await;
    commit(&consumer, &topic, &tracker, CommitMode::Sync);
    result
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
