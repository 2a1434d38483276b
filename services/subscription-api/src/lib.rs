//! The subscription API: secrets, subscriptions (two dialects) and the event-type catalog
//! over HTTP, stored only as events on compacted topics.
//!
//! - [`run`]: starts the views, waits until they have caught up, then serves.
//! - `store`: writes a record and waits until this process's view has applied it, so a GET
//!   right after a successful write sees that write.
//! - `claims`: name uniqueness across replicas, decided by log order on the claims topic.
//! - `secrets` and `fynapse`: the `/api/v1/event-deliveries` dialect.
//! - `synctera`: the `/v2/webhooks` dialect; `catalog`: its event types and the admin routes.
//! - `input`: field limits, path parameters, pagination.
//! - `routes`: the one route table the router and the OpenAPI document are checked against.
//! - `commands`: changes other services ask for (a 410 disabling a subscription), applied
//!   through the same write path.
#![forbid(unsafe_code)]

mod catalog;
mod claims;
mod commands;
mod fynapse;
mod input;
mod routes;
mod secrets;
mod store;
mod synctera;

use std::sync::Arc;

use hookline_auth::{HasTokens, TokenTable};
use hookline_config::Config;
use hookline_runtime::{CancellationToken, Health};
use tokio::net::TcpListener;

pub use routes::{ApiDoc, documented, table};
pub use store::Store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] hookline_kafka::KafkaError),
    #[error(transparent)]
    State(#[from] hookline_state::StateError),
    #[error(transparent)]
    Auth(#[from] hookline_auth::AuthError),
    #[error(transparent)]
    Config(#[from] hookline_config::ConfigError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Store,
    pub tokens: Arc<TokenTable>,
    pub health: Health,
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
) -> Result<(), Error> {
    if config.create_topics {
        hookline_kafka::ensure_topics(&config).await?;
    }
    let tokens = TokenTable::from_config(&config)?;
    let store = Store::start(&config)?;
    let health = Health::kafka();
    let state = AppState {
        store: store.clone(),
        tokens,
        health: health.clone(),
    };
    let app = routes::router(state, config.api_body_limit);
    let ready = {
        let store = store.clone();
        async move {
            store.sync().await;
            health.set_ready(true);
            tracing::info!("subscription-api ready");
        }
    };
    tokio::spawn(ready);
    let commands = tokio::spawn(commands::run(
        config.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    let served = hookline_runtime::serve(listener, app, shutdown).await;
    let _ = commands.await;
    store.stop();
    Ok(served?)
}
