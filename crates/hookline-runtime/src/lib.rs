//! What every service process shares at run time.
//!
//! - [`shutdown_on_signals`]: SIGTERM and SIGINT, handled in one place, cancel a token.
//! - [`Health`] and [`health_routes`]: `/healthz` (alive, never waits on Kafka), `/readyz`
//!   (ready for traffic: views caught up, brokers reachable, consumers assigned), `/metrics`
//!   (Prometheus text) and the service's `/openapi.json`; [`json_fallbacks`], [`JsonQuery`], [`JsonPath`]: every
//!   answer axum would give in plain text (404, 405, bad query or path) as JSON instead.
//! - [`serve`]: an axum server on a given listener that drains on shutdown.
//! - [`ApiError`]: the JSON error body of every HTTP API (`code`, `message`, `field`).
//! - [`Service`]: the start-up every service's `run` shares (topics, readiness conditions,
//!   the process's one producer, the HTTP app with its health routes, serving); [`Error`]
//!   the error a `run` ends with.
//! - [`init_telemetry`]: logs and metrics as configured; [`service_main`]: the whole `main`
//!   of a service binary.
#![forbid(unsafe_code)]

pub mod cursor;
mod error;
mod http;
mod service;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
pub use error::{ApiError, JsonBody, OptionalJsonBody};
pub use http::{
    JsonPath, JsonQuery, add_common_components, base_document, error_response, health_routes,
    json_fallbacks, json_response, metrics_text, readyz_answer, with_health_paths,
};
pub use service::{Error, Service};
use tokio::net::TcpListener;
pub use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        t.cancel();
    });
    token
}

/// A condition: what is wrong while it fails, `None` while it holds.
type Check = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Readiness of one service: ready once it says so ([`Health::set_ready`], after its views
/// first caught up), and then only while every condition holds: the brokers accept the
/// process's credentials and certificate ([`hookline_kafka::connection_refused`]) and their
/// ACLs allow what it must do ([`hookline_kafka::not_authorized`]), the
/// brokers are reachable ([`hookline_kafka::brokers_reachable`]), its views are current
/// ([`hookline_kafka::view::TopicView::is_current`]), its consumers have had their first
/// assignment. When not ready, [`Health::why_not_ready`] names the first condition that fails.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    /// Conditions, in the order they are asked.
    checks: Arc<std::sync::Mutex<Vec<Check>>>,
    /// A service on Kafka ([`Health::kafka`]).
    on_kafka: bool,
}

impl Health {
    /// The health of a service on Kafka: ready once it says so, while the brokers accept
    /// its connections (a refusal says why: `kafka: authentication failed (SASL)`) and answer.
    pub fn kafka() -> Self {
        let health = Self {
            on_kafka: true,
            ..Self::default()
        };
        health.require_with(|| hookline_kafka::connection_refused().map(str::to_owned));
        health.require_with(hookline_kafka::not_authorized);
        health.require(
            "the Kafka brokers are unreachable",
            hookline_kafka::brokers_reachable,
        );
        health
    }

    /// Ready only while `check` holds too; `why` says what is wrong while it does not.
    pub fn require(
        &self,
        why: impl Into<String>,
        check: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        let why = why.into();
        self.require_with(move || (!check()).then(|| why.clone()));
    }

    /// Ready only while `check` answers `None`; otherwise it says what is wrong.
    pub fn require_with(&self, check: impl Fn() -> Option<String> + Send + Sync + 'static) {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(check));
    }

    /// Ready only while `view` is current: caught up once, and not behind a time a caller
    /// has waited for for longer than [`hookline_kafka::view::BEHIND_MS`].
    pub fn require_current<V: Send + Sync + 'static>(
        &self,
        view: &hookline_kafka::view::TopicView<V>,
    ) {
        let view = view.clone();
        self.require(
            format!("the view of topic {} is behind", view.topic()),
            move || view.is_current(),
        );
    }

    /// Ready only once a consumer of group `{group_prefix}.{name}` in this process has had
    /// its first assignment (its context calls `hookline_kafka::context::note_assigned`).
    pub fn require_assignment(&self, config: &hookline_config::Config, name: &str) {
        let group = hookline_kafka::context::group_id(config, name);
        self.require(
            format!("waiting for the partitions of consumer group {group}"),
            move || hookline_kafka::context::assigned(&group),
        );
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// What keeps the service from being ready, if anything.
    pub fn why_not_ready(&self) -> Option<String> {
        if !self.ready.load(Ordering::Relaxed) {
            // A refused connection is what an operator must fix, so it is said even while
            // the service is still reading its topics (which it cannot finish until then).
            let refused = self
                .on_kafka
                .then(hookline_kafka::connection_refused)
                .flatten();
            let denied = self.on_kafka.then(hookline_kafka::not_authorized).flatten();
            return Some(
                refused
                    .map(str::to_owned)
                    .or(denied)
                    .unwrap_or_else(|| "still reading its topics".to_owned()),
            );
        }
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find_map(|check| check())
    }

    pub fn is_ready(&self) -> bool {
        self.why_not_ready().is_none()
    }
}

/// Starts logging, traces and metrics for `service` (its `service.name`, e.g.
/// `hookline-router`) as `config` says (traces and metrics off with
/// `telemetry_enabled = false`); a second call in one process changes nothing. Dropping
/// what it returns exports the spans still buffered.
pub fn init_telemetry(
    config: &hookline_config::Config,
    service: &str,
) -> hookline_telemetry::Telemetry {
    let telemetry = hookline_telemetry::init(service, config);
    let settings = hookline_telemetry::metrics::Settings {
        service: service.to_owned(),
        enabled: config.telemetry_enabled,
        otlp_endpoint: Some(config.otlp_endpoint.clone()).filter(|e| !e.is_empty()),
    };
    if let Err(e) = hookline_telemetry::metrics::init(&settings) {
        tracing::warn!(error = %e, "metrics not exported");
    }
    telemetry
}

/// Serves `app` on `listener` until `shutdown`, then lets in-flight requests finish. Every
/// request is measured (`http.server.request.duration`, by route template) while metrics
/// are on.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = if hookline_telemetry::metrics::enabled() {
        app.layer(axum::middleware::from_fn(http::record_request))
    } else {
        app
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The `main` of a service binary: load and validate configuration (one clear line and exit
/// code 2 on error), start logging and tracing (`service.name` `hookline-{name}`), bind the
/// service's listener, run until SIGTERM/SIGINT.
pub fn service_main<F, Fut, E>(
    name: &'static str,
    listen: fn(&hookline_config::Config) -> std::net::SocketAddr,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(hookline_config::Config, TcpListener, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let config = match hookline_config::Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Dropped last, after the runtime: exports the spans still buffered.
    let _telemetry = init_telemetry(&config, &format!("hookline-{name}"));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let addr = listen(&config);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tracing::info!(service = name, %addr, "starting");
        run(config, listener, shutdown_on_signals())
            .await
            .map_err(|e| e.to_string())
    });
    hookline_telemetry::metrics::shutdown();
    match result {
        Ok(()) => {
            tracing::info!(service = name, "stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(service = name, error = %e, "failed");
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::Health;

    #[test]
    fn ready_only_while_every_condition_holds() {
        let health = Health::default();
        assert!(!health.is_ready(), "not ready before the service says so");
        health.set_ready(true);
        assert!(health.is_ready());
        let assigned = Arc::new(AtomicBool::new(false));
        let a = assigned.clone();
        health.require("unassigned", move || a.load(Ordering::Relaxed));
        assert!(!health.is_ready(), "a required condition does not hold yet");
        assert_eq!(health.why_not_ready().as_deref(), Some("unassigned"));
        assigned.store(true, Ordering::Relaxed);
        assert!(health.clone().is_ready(), "clones share the conditions");
    }

    #[test]
    fn an_assignment_in_the_group_makes_it_ready() {
        let config = hookline_config::Config {
            group_prefix: format!("unit-{}", std::process::id()),
            ..hookline_config::Config::default()
        };
        let health = Health::default();
        health.set_ready(true);
        health.require_assignment(&config, "router");
        assert!(!health.is_ready());
        hookline_kafka::context::note_assigned(&hookline_kafka::context::group_id(
            &config, "router",
        ));
        assert!(health.is_ready());
    }
}
