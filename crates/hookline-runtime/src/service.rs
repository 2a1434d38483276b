//! [`Service`]: the start-up every service's `run` shares.
//!
//! A service's `run` is the same shape everywhere:
//!
//! ```text
//! let service = Service::start("router", Some(Role::Router), &config, &shutdown).await?;
//! let producer = service.producer()?;            // the process's one producer
//! let view = ...;                                 // its views
//! service.require_current(&view);                 // readiness conditions
//! service.ready_when(async move { view.sync().await });
//! service.serve(listener, api_routes, document).await?;
//! ```

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use hookline_config::Config;
use hookline_telemetry::metrics::Role;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Health;

/// The error a service's `run` ends with: what failed, with its cause.
pub type Error = anyhow::Error;

/// One service of a process: its name, readiness, shutdown and the process's producer.
#[derive(Clone)]
pub struct Service {
    name: &'static str,
    config: Config,
    health: Health,
    shutdown: CancellationToken,
}

impl Service {
    /// Starts service `name` (e.g. `router`): creates missing topics when `create_topics`
    /// is set, starts `role`'s labelled counters at zero, not ready yet. Readiness requires
    /// reachable brokers from the start.
    pub async fn start(
        name: &'static str,
        role: Option<Role>,
        config: &Config,
        shutdown: &CancellationToken,
    ) -> Result<Self, Error> {
        if config.create_topics {
            hookline_kafka::ensure_topics(config).await?;
        }
        if let Some(role) = role {
            hookline_telemetry::metrics::announce(role);
        }
        Ok(Self {
            name,
            config: config.clone(),
            health: Health::kafka(),
            shutdown: shutdown.clone(),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The process's one (non-transactional) producer, shared by every service in it.
    pub fn producer(&self) -> Result<Arc<hookline_kafka::Producer>, Error> {
        Ok(hookline_kafka::process_producer(&self.config)?)
    }

    /// Ready only while `view` stays current (see [`Health::require_current`]).
    pub fn require_current<V: Send + Sync + 'static>(
        &self,
        view: &hookline_kafka::view::TopicView<V>,
    ) {
        self.health.require_current(view);
    }

    /// Ready only once this process's consumer of group `{group_prefix}.{group}` has had
    /// its first assignment.
    pub fn require_assignment(&self, group: &str) {
        self.health.require_assignment(&self.config, group);
    }

    /// Becomes ready once `caught_up` (its views read to their end) finishes, unless the
    /// service stops first.
    pub fn ready_when(&self, caught_up: impl Future<Output = ()> + Send + 'static) {
        let (health, shutdown, name) = (self.health.clone(), self.shutdown.clone(), self.name);
        tokio::spawn(async move {
            tokio::select! {
                () = caught_up => {
                    health.set_ready(true);
                    tracing::info!(service = name, "ready");
                }
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// `api` (already given its state) with the health routes (`/healthz`, `/readyz`,
    /// `/metrics`, `/openapi.json` serving `doc`) and JSON 404/405 answers.
    pub fn app(&self, api: Router, doc: utoipa::openapi::OpenApi) -> Router {
        crate::json_fallbacks(api.merge(crate::health_routes(self.health.clone(), doc)))
    }

    /// Serves `app` (see [`Service::app`]) on `listener` until shutdown; not ready from then.
    pub async fn serve(&self, listener: TcpListener, app: Router) -> Result<(), Error> {
        let served = crate::serve(listener, app, self.shutdown.clone()).await;
        self.health.set_ready(false);
        served.map_err(|e| anyhow::anyhow!("serving HTTP: {e}"))
    }

    /// For a service that serves only its health: serves it on `listener` in the background
    /// until `stop` (a child of the service's shutdown, so the server also stops when the
    /// service's work ends on an error).
    pub fn serve_health(
        &self,
        listener: TcpListener,
        title: &str,
        description: &str,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let app = crate::json_fallbacks(crate::health_routes(
            self.health.clone(),
            crate::base_document(title, description),
        ));
        tokio::spawn(crate::serve(listener, app, stop))
    }
}
