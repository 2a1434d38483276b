//! The delivery worker: consumes `deliveries`, POSTs each job to its subscription's endpoint,
//! signed with every current secret version, and records every attempt.
//!
//! - [`run`]: views, the consumer, the dispatcher, health server.
//! - `source`: the `deliveries` consumer on a thread of its own: rebalance callbacks,
//!   pausing when the dispatcher is full, offset commits.
//! - `dispatch`: the one task that owns the queues, starts jobs and drives parking; it never
//!   waits on I/O.
//! - `queue`: per-subscription, per-key queues (strict order per key, limits per subscription).
//! - `limits`: a subscription's rate limit (GCRA), in-flight cap and `Retry-After` hold, as
//!   the dispatcher asks them before starting its next job (no I/O).
//! - `ownership`: which `deliveries` partitions are ours, since when, and revocations that
//!   wait for their attempts (no I/O).
//! - `park`: parking in the retry lane, a state machine without I/O.
//! - `writer`: the parking machine's Kafka writes (lane appends, parked-state records).
//! - `lane`: one retry-lane reader per lane partition, shared by its parked subscriptions.
//! - `failing`: since when each subscription has failed, for auto-disabling (no I/O).
//! - `job`: one job from first attempt to delivered, dead-lettered, or handed back to park.
//! - `http`: one signed HTTP attempt with a capped response read.
//! - `retry`: the retry policy (which failures retry, the schedule with jitter).
//!
//! A job's offset is committed only once the job is delivered or its dead letter is
//! acknowledged by the broker; after a crash it is redelivered with the same delivery id.
#![forbid(unsafe_code)]

mod dispatch;
mod failing;
mod http;
mod job;
mod lane;
mod limits;
mod ownership;
mod park;
mod queue;
mod retry;
mod source;
mod writer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_config::Config;
use hookline_kafka::offsets::OffsetTracker;
pub use hookline_runtime::Error;
use hookline_runtime::{CancellationToken, Service};
use tokio::net::TcpListener;

pub use job::Outcome;
pub use retry::{Schedule, Verdict, classify};

/// Delivers until `shutdown`, serving `/healthz` and `/readyz` on `listener`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // This service's own Kafka principal (`{service}` in the credential keys).
    let config = config.for_service(hookline_kafka::acl::Principal::DeliveryWorker.name())?;
    let service = Service::start(
        "delivery-worker",
        Some(hookline_telemetry::metrics::Role::Worker),
        &config,
        &shutdown,
    )
    .await?;
    service.require_assignment(source::GROUP);
    let server = service.serve_health(
        listener,
        "Hookline delivery worker",
        "The delivery worker signs and POSTs delivery jobs; over HTTP it serves only its health and this document.",
        shutdown.clone(),
    );
    let parked = parked_view(&config)?;
    // The process's producer: attempt records, dead letters, operational events and the
    // parking machine's writes (its records wait out outages).
    let producer = service.producer()?;
    let ctx = Arc::new(job::Context::start(
        &config,
        parked.clone(),
        producer.clone(),
        shutdown.clone(),
    )?);
    tokio::select! {
        _ = async { tokio::join!(ctx.subscriptions.sync(), ctx.secrets.sync(), parked.sync()) } => {}
        _ = shutdown.cancelled() => { ctx.stop(); parked.stop(); return Ok(()); }
    }
    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let source_stop = CancellationToken::new();
    let (source, inputs, consumer) = source::start(&config, tracker.clone(), source_stop.clone())?;
    let (writes, acks) = writer::start(&config, producer)?;
    service.require_current(&ctx.subscriptions);
    service.require_current(&ctx.secrets);
    service.require_current(&parked);
    service.health().set_ready(true);
    tracing::info!(topic = %config.topic_deliveries, "delivery worker ready");

    // On shutdown the consumer leaves first, while the dispatcher still runs: closing it
    // revokes every partition through the dispatcher, which lets the attempts under way finish
    // within the grace time and answers; the revocation then commits what finished (with a
    // group generation still valid) and the consumer leaves the group. Only then does the
    // dispatcher stop.
    let dispatcher_stop = CancellationToken::new();
    let leave_wait = config.shutdown_grace()? + Duration::from_secs(10);
    let leave = {
        let (shutdown, source_stop, dispatcher_stop) = (
            shutdown.clone(),
            source_stop.clone(),
            dispatcher_stop.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = dispatcher_stop.cancelled() => {}
            }
            source_stop.cancel();
            // Leaving answers the revocation within the grace time; should librdkafka's close
            // not return, the process stops anyway (the group's session timeout then hands
            // the partitions on, from what was committed).
            let left = tokio::task::spawn_blocking(move || consumer.join());
            if tokio::time::timeout(leave_wait, left).await.is_err() {
                tracing::warn!(
                    secs = leave_wait.as_secs(),
                    "leaving the consumer group did not finish; stopping anyway"
                );
            }
            dispatcher_stop.cancel();
        })
    };
    let dispatcher = dispatch::Dispatcher::new(
        ctx.clone(),
        config.clone(),
        parked.clone(),
        tracker,
        source,
        dispatch::Channels {
            inputs,
            writes,
            acks,
        },
        dispatcher_stop.clone(),
    )?;
    dispatcher.run().await;
    dispatcher_stop.cancel();
    let _ = leave.await;
    service.health().set_ready(false);
    parked.stop();
    ctx.stop();
    let _ = server.await;
    Ok(())
}

fn parked_view(
    config: &Config,
) -> Result<hookline_kafka::view::TopicView<hookline_proto::v1::ParkedState>, Error> {
    Ok(hookline_kafka::keyed_protobuf_view(
        config,
        &config.topic_parked,
        |_| {},
    )?)
}
