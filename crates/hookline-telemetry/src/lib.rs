//! Telemetry of every Hookline process.
//!
//! - [`init`]: structured logs, JSON lines (production) or a human format (development),
//!   filtered by `RUST_LOG` when set, else by the configured level.
//! - [`metrics`]: the OpenTelemetry meter provider, every service's instruments, and their
//!   Prometheus text for `/metrics` (plus OTLP push when an endpoint is set).
#![forbid(unsafe_code)]

pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests, all-in-one) are no-ops.
pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{level},rdkafka=warn,hyper=warn,reqwest=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = if format == "pretty" {
        builder.compact().try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}
