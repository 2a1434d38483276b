//! The subscription API: secrets and subscriptions over HTTP, stored only as events on the
//! compacted `secrets` and `subscriptions` topics.
//!
//! - [`run`]: starts the views, waits until they have caught up, then serves.
//! - `store`: writes a record and waits until this process's view has applied it, so a GET
//!   right after a successful write sees that write.
//! - `fynapse`: the `/api/v1/event-deliveries` dialect.
#![forbid(unsafe_code)]

mod fynapse;
mod store;

use std::sync::Arc;

use axum::Router;
use hookline_auth::{HasTokens, TokenTable};
use hookline_config::Config;
use hookline_runtime::{CancellationToken, Health};
use tokio::net::TcpListener;

pub use store::Store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] hookline_kafka::KafkaError),
    #[error(transparent)]
    State(#[from] hookline_state::StateError),
    #[error(transparent)]
    Auth(#[from] hookline_auth::AuthError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Store,
    pub tokens: Arc<TokenTable>,
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
    let health = Health::default();
    let app = Router::new()
        .merge(fynapse::routes())
        .with_state(AppState {
            store: store.clone(),
            tokens,
        })
        .merge(hookline_runtime::health_routes(health.clone()));
    let ready = {
        let store = store.clone();
        let health = health.clone();
        async move {
            store.sync().await;
            health.set_ready(true);
            tracing::info!("subscription-api ready");
        }
    };
    tokio::spawn(ready);
    let served = hookline_runtime::serve(listener, app, shutdown).await;
    store.stop();
    Ok(served?)
}
