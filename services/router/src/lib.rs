//! The router: consumes `events`, finds the subscriptions each event matches, and produces one
//! [`DeliveryJob`](hookline_proto::v1::DeliveryJob) per match to `deliveries`, keyed by
//! subscription id, exactly once.
//!
//! - [`run`]: start-up (subscription view, transactional producer, consumer) and the health
//!   server.
//! - [`view::SubscriptionMatcher`]: the `subscriptions` topic as a per-tenant
//!   [`hookline_routing::SubscriptionIndex`], kept current change by change.
//! - [`route`]: the pure step from one consumed record to its jobs, or to its quarantine
//!   record when it cannot be decoded.
//! - `batch`: gathers records and routes them in Kafka transactions that also commit the
//!   consumed offsets; `txn` and `consumer` hold the producer and consumer sides.
//!
//! A job's delivery id is derived from (event id, subscription id), so even a replay of an
//! event carries the ids it had the first time.
#![forbid(unsafe_code)]

mod batch;
mod consumer;
pub mod route;
mod txn;
pub mod view;

use hookline_config::Config;
use hookline_runtime::{CancellationToken, Service};
use tokio::net::TcpListener;

pub use batch::{LINGER, MAX_BATCH};
pub use route::route;
pub use txn::{instance_name, transactional_id};

/// How routing stops: a fenced router (another process runs under its instance name) is
/// told apart from a Kafka failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] hookline_kafka::KafkaError),
    #[error("kafka: {0}")]
    Client(#[from] hookline_kafka::rdkafka::error::KafkaError),
    #[error(transparent)]
    Start(#[from] hookline_runtime::Error),
    /// A newer router process with this instance's name took over (see `router_instance`).
    #[error("fenced by a newer router with the same instance name: {0}")]
    Fenced(String),
}

/// Routes until `shutdown`, serving `/healthz` and `/readyz` on `listener`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // This service's own Kafka principal (`{service}` in the credential keys).
    let config = config
        .for_service(hookline_kafka::acl::Principal::Router.name())
        .map_err(hookline_kafka::KafkaError::from)?;
    let service = Service::start(
        "router",
        Some(hookline_telemetry::metrics::Role::Router),
        &config,
        &shutdown,
    )
    .await?;
    service.require_assignment(consumer::GROUP);
    // The health server also stops when routing stops on an error (e.g. fenced).
    let server_stop = shutdown.child_token();
    let server = service.serve_health(
        listener,
        "Hookline router",
        "The router routes events to delivery jobs; over HTTP it serves only its health and this document.",
        server_stop.clone(),
    );
    let result = route_until_shutdown(config, &service, &shutdown).await;
    service.health().set_ready(false);
    server_stop.cancel();
    let _ = server.await;
    result
}

async fn route_until_shutdown(
    config: Config,
    service: &Service,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let matcher = view::SubscriptionMatcher::start(&config)?;
    tokio::select! {
        _ = matcher.sync() => {}
        _ = shutdown.cancelled() => { matcher.stop(); return Ok(()); }
    }
    let instance = transactional_id(&config, &instance_name(&config));
    // The producer first: its init_transactions aborts whatever a predecessor with the same
    // id left open, before this instance reads anything.
    let Some(producer) = txn::TxnProducer::start(&config, &instance, shutdown).await? else {
        matcher.stop();
        return Ok(());
    };
    let consumer = consumer::start(&config, &instance)?;
    service.require_current(matcher.view());
    service.health().set_ready(true);
    tracing::info!(topic = %config.topic_events, transactional_id = %instance, "router ready");
    let result = batch::BatchLoop {
        config,
        transactional_id: instance,
        matcher: matcher.clone(),
        consumer,
        producer,
        shutdown: shutdown.clone(),
        lost_memberships: 0,
        fencings: Default::default(),
    }
    .run()
    .await;
    matcher.stop();
    result
}
