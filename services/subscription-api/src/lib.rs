//! The subscription API: secrets, subscriptions (three dialects) and the event-type catalog
//! over HTTP, stored only as events on compacted topics.
//!
//! - [`run`]: starts the views, waits until they have caught up, then serves.
//! - `store`: writes a record and waits until this process's view has applied it, so a GET
//!   right after a successful write sees that write.
//! - `claims`: name uniqueness across replicas, decided by log order on the claims topic.
//! - `subscriptions`: the one subscription service (validation, names, secrets, writes,
//!   listing) every dialect maps onto; a dialect is its request and response shapes and the
//!   names of its fields (`subscriptions::Face`).
//! - `secrets` and `fynapse`: the `/api/v1/event-deliveries` dialect.
//! - `synctera`: the `/v2/webhooks` dialect; `catalog`: its event types and the admin routes.
//! - `controls`: the delivery controls (rate limit, in-flight limit) every dialect shares:
//!   bounds, checks, each dialect's shape of them and their OpenAPI schema.
//! - `filters`: the payload filter field of both dialects (check, schema) and `filter-test`.
//! - `input`: field limits, path parameters, pagination.
//! - `routes`: the one route table the router and the OpenAPI document are checked against.
//! - `examples`: "send an example" through the pipeline, answered with its first attempt.
//! - `commands`: changes other services ask for (a 410 disabling a subscription), applied
//!   through the same write path.
//! - `svix`: the Svix-compatible face (`/api/v1/app…`, `/api/v1/event-type…`): applications
//!   (their own compacted topic), endpoints (subscriptions of the `Svix` dialect), event
//!   types (the catalog), messages (published to the events topic), Svix's error shapes and
//!   its own OpenAPI document.
#![forbid(unsafe_code)]

mod catalog;
mod claims;
mod commands;
mod controls;
mod examples;
mod filters;
mod fynapse;
mod input;
mod routes;
mod secrets;
mod store;
mod subscriptions;
mod svix;
mod synctera;

use std::sync::Arc;

use hookline_auth::{HasTokens, TokenTable};
use hookline_config::Config;
use hookline_runtime::{CancellationToken, Service};
use tokio::net::TcpListener;

pub use routes::{ApiDoc, documented, table};
pub use store::Store;
pub use svix::SvixDoc;

/// What every handler is given: one `Arc`, so the clone each extractor makes per request is
/// a reference count, not a copy of every view's handles (about 2% of the API's CPU under
/// message ingest, issue 25).
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub(crate) struct Shared {
    pub store: Store,
    pub tokens: Arc<TokenTable>,
    pub health: hookline_runtime::Health,
    /// Reads back the attempts of example sends.
    pub examples: examples::AttemptTail,
    pub topic_deliveries: String,
    /// The Svix face's recent messages.
    pub messages: svix::Messages,
    /// The operations API, asked by the Svix face for attempts, recovers and resends.
    pub operations: svix::Operations,
    /// Compiled event-type schemas, for the Svix face's message checks.
    pub validators: svix::Validators,
}

impl HasTokens for AppState {
    fn tokens(&self) -> &TokenTable {
        &self.tokens
    }
}

/// Serves the API on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), hookline_runtime::Error> {
    // This service's own Kafka principal (`{service}` in the credential keys).
    let config = config.for_service(hookline_kafka::acl::Principal::SubscriptionApi.name())?;
    let service = Service::start("subscription-api", None, &config, &shutdown).await?;
    let tokens = TokenTable::from_config(&config)?;
    let store = Store::start(
        &config,
        service.producer()?,
        claims::view(&config)?,
        catalog::view(&config)?,
    )?;
    service.require_current(&store.subscriptions);
    service.require_current(&store.secrets);
    service.require_current(&store.claims);
    service.require_current(&store.event_types);
    service.require_current(&store.applications);
    let messages = svix::Messages::start(&config)?;
    service.require_current(messages.view());
    let state = AppState(Arc::new(Shared {
        store: store.clone(),
        tokens,
        health: service.health().clone(),
        examples: examples::AttemptTail::start(&config, shutdown.clone())?,
        topic_deliveries: config.topic_deliveries.clone(),
        messages: messages.clone(),
        operations: svix::Operations::new(&config)?,
        validators: svix::Validators::default(),
    }));
    // Its own route table serves the health routes (they are part of its document).
    let app = routes::router(state, config.api_body_limit);
    service.ready_when({
        let store = store.clone();
        async move { store.sync().await }
    });
    let commands = tokio::spawn(commands::run(
        config.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    let served = service.serve(listener, app).await;
    let _ = commands.await;
    store.stop();
    messages.view().stop();
    served
}
