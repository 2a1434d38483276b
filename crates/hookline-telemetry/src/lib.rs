//! Telemetry of every Hookline process: structured logs, OpenTelemetry traces and metrics.
//!
//! - [`init`]: logs as JSON lines (production) or a human format (development), filtered by
//!   `RUST_LOG` when set, else by the configured level; and, when `otlp_endpoint` is set (and
//!   `telemetry_enabled`), the OpenTelemetry layer exporting Hookline's spans over OTLP
//!   ([`trace`]).
//! - [`trace`]: spans across Kafka hops and the W3C `traceparent` helpers.
//! - [`metrics`]: the OpenTelemetry meter provider, every service's instruments, and their
//!   Prometheus text for `/metrics` (plus OTLP push when an endpoint is set).
#![forbid(unsafe_code)]

pub mod metrics;
pub mod otlp;
pub mod trace;

use hookline_config::Config;
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// What [`init`] started that must be flushed before the process exits: dropping it exports
/// the spans still buffered (waiting at most the exporter's timeout).
#[must_use = "dropping it flushes and stops the trace exporter"]
#[derive(Default)]
pub struct Telemetry {
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber once; later calls (tests, all-in-one) are no-ops.
/// `service` names the process in exported traces (`service.name`).
pub fn init(service: &str, config: &Config) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},rdkafka=warn,hyper=warn,reqwest=warn",
            config.log_level
        ))
    });
    let logs = if config.log_format == "pretty" {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_target(true)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_target(true)
            .boxed()
    }
    .with_filter(filter);
    let endpoint = match config.telemetry_enabled {
        true => config.otlp_endpoint.trim(),
        false => "",
    };
    let provider = match endpoint {
        "" => None,
        endpoint => match trace::exporter(service, endpoint, config.trace_sample_ratio) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("{service}: traces not exported: {e}");
                None
            }
        },
    };
    // Hookline's own spans only (whatever the log level), no events: logs go to the logs.
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("hookline"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.is_span() && m.target().starts_with("hookline")
            }))
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        trace::set_enabled();
        Telemetry { tracer: provider }
    } else {
        Telemetry::default()
    }
}
