//! The operations service (binary `hookline-dead-letter`): what happened to a delivery, and
//! putting it right.
//!
//! - [`run`]: the operations index (`hookline-ops-index`: deliveries, attempts and dead
//!   letters folded on disk), the views of subscriptions and replay runs, the replay driver,
//!   and the HTTP server.
//! - `api.rs`: deliveries, attempts and dead letters (reads).
//! - `replay.rs`: replay runs (one delivery, or by filter; recover) and their driver.
//! - `quarantine.rs`: quarantined records (admin): list, republish.
//! - `query.rs`: query-string checks; `openapi.rs`: the document at `/openapi.json`.
#![forbid(unsafe_code)]

mod api;
mod openapi;
mod quarantine;
mod query;
mod replay;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use hookline_auth::{HasTokens, TokenTable};
use hookline_config::Config;
use hookline_kafka::view::TopicView;
use hookline_ops_index::Index;
use hookline_proto::v1::ReplayRun;
use hookline_runtime::{CancellationToken, Service};
use hookline_state::SubscriptionView;
use tokio::net::TcpListener;

pub use openapi::{OPERATIONS, document as openapi_document};

#[derive(Clone)]
struct AppState {
    index: Index,
    subscriptions: SubscriptionView,
    replays: TopicView<ReplayRun>,
    tokens: Arc<TokenTable>,
    producer: Arc<hookline_kafka::Producer>,
    config: Arc<Config>,
    topic_replays: String,
    in_memory_max_ms: i64,
    /// One replay creation at a time (a request sent twice starts one run).
    create: Arc<tokio::sync::Mutex<()>>,
    /// Wakes the replay driver when a run is recorded.
    wake: Arc<tokio::sync::Notify>,
}

impl HasTokens for AppState {
    fn tokens(&self) -> &TokenTable {
        &self.tokens
    }
}

/// Serves the operations API on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), hookline_runtime::Error> {
    // This service's own Kafka principal (`{service}` in the credential keys).
    let config = config.for_service(hookline_kafka::acl::Principal::DeadLetter.name())?;
    let service = Service::start("dead-letter", None, &config, &shutdown).await?;
    let tokens = TokenTable::from_config(&config)?;
    let index = Index::open(&config)?;
    let subscriptions = hookline_state::subscriptions(&config)?;
    let replays = hookline_kafka::keyed_protobuf_view(&config, &config.topic_replays, |_| {})?;
    let state = AppState {
        index: index.clone(),
        subscriptions: subscriptions.clone(),
        replays: replays.clone(),
        tokens,
        producer: service.producer()?,
        config: Arc::new(config.clone()),
        topic_replays: config.topic_replays.clone(),
        in_memory_max_ms: config.retry_in_memory_max()?.as_millis() as i64,
        create: Arc::default(),
        wake: Arc::default(),
    };
    service.require_current(&subscriptions);
    service.require_current(&replays);
    use openapi::*;
    let app = Router::new()
        .route(DELIVERIES, get(api::deliveries))
        .route(DELIVERY, get(api::get_delivery))
        .route(DELIVERY_ATTEMPTS, get(api::delivery_attempts))
        .route(DELIVERY_REPLAY, post(replay::replay_one))
        .route(ATTEMPTS, get(api::attempts))
        .route(DEAD_LETTERS, get(api::dead_letters))
        .route(DEAD_LETTER, get(api::dead_letter))
        .route(REPLAYS, post(replay::replay_bulk))
        .route(REPLAY, get(replay::get_run))
        .route(QUARANTINE, get(quarantine::list))
        .route(QUARANTINE_REPUBLISH, post(quarantine::republish))
        .layer(DefaultBodyLimit::max(config.api_body_limit))
        .with_state(state.clone());
    let app = service.app(app, openapi::served_document());
    let started = hookline_events::time_fmt::now_ms();
    let caught_up = {
        let (index, subscriptions, replays) =
            (index.clone(), subscriptions.clone(), replays.clone());
        move || async move {
            tokio::join!(
                index.wait_caught_up(started),
                subscriptions.sync(),
                replays.sync()
            );
        }
    };
    service.ready_when(caught_up.clone()());
    {
        // Replay runs are driven once the index and the views have caught up.
        let (state, config, shutdown) = (state.clone(), Arc::new(config.clone()), shutdown.clone());
        tokio::spawn(async move {
            caught_up().await;
            replay::drive_all(state, config, shutdown).await;
        });
    }
    let served = service.serve(listener, app).await;
    index.stop();
    subscriptions.stop();
    replays.stop();
    served
}
