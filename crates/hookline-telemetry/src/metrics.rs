//! Metrics: instrumented once with the OpenTelemetry metrics API, read two ways.
//!
//! - Pulled: [`render`] gives the Prometheus text every service serves at `/metrics` on its
//!   health port. The reader is `opentelemetry-prometheus` (the OpenTelemetry project's own
//!   Prometheus exporter, maintained with the SDK and released in lock-step with it) over the
//!   `prometheus` crate's registry and text encoder. A pull reader of our own over
//!   `prometheus-client` would re-implement the OpenTelemetry-to-Prometheus name and unit
//!   mapping (`http.client.request.duration` with unit `s` becomes
//!   `http_client_request_duration_seconds`, counters get `_total`) that this exporter
//!   already does to the specification; the same registry also gives the standard
//!   `process_cpu_seconds_total` and `process_resident_memory_bytes` from `/proc`.
//! - Pushed: with an OTLP endpoint, a periodic reader sends the same instruments over
//!   OTLP/HTTP to `{endpoint}/v1/metrics`.
//!
//! [`metrics`] holds every instrument of every service. Adding a metric is one field in
//! [`Instruments`] and one line in [`Instruments::new`]; a service records with
//! `hookline_telemetry::metrics::metrics().field.add(1, &[])`. Labels are bounded sets
//! (outcomes, status classes, route templates, topic and group names): never a
//! subscription, event or delivery id.
//!
//! Until [`init`] runs (or when metrics are turned off) the instruments are no-ops, so
//! recording costs next to nothing and libraries need not know whether metrics are on.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

/// Buckets (seconds) of the latency histograms: the semantic conventions' advice for HTTP
/// durations, extended to a minute for deliveries that waited for retries.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    30.0, 60.0,
];
/// Buckets of the router's fan-out (jobs per event).
const FAN_OUT: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
];
/// How often the OTLP reader pushes.
const OTLP_INTERVAL: Duration = Duration::from_secs(15);

struct Installed {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();
static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

/// What [`init`] sets up.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `service.name` of the exported resource (OTLP); Prometheus names the job itself.
    pub service: String,
    /// Off: no meter provider, every instrument a no-op, `/metrics` answers 404.
    pub enabled: bool,
    /// Base URL of an OTLP/HTTP collector (`http://collector:4318`); none: no push.
    pub otlp_endpoint: Option<String>,
}

/// Installs the process's meter provider once; later calls (all-in-one, tests) are no-ops.
/// Must run before the first [`metrics`] call for the instruments to record.
pub fn init(settings: &Settings) -> Result<(), String> {
    if !settings.enabled || INSTALLED.get().is_some() {
        return Ok(());
    }
    let registry = prometheus::Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .map_err(|e| format!("process metrics: {e}"))?;
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_target_info()
        .scope_info_enabled(false)
        .build()
        .map_err(|e| format!("Prometheus exporter: {e}"))?;
    let resource = Resource::builder()
        .with_service_name(settings.service.clone())
        .build();
    let mut builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(exporter);
    if let Some(endpoint) = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        let otlp = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/metrics", endpoint.trim_end_matches('/')))
            .with_http_client(crate::otlp::client()?)
            .build()
            .map_err(|e| format!("OTLP metric exporter: {e}"))?;
        builder = builder.with_reader(
            PeriodicReader::builder(otlp)
                .with_interval(OTLP_INTERVAL)
                .build(),
        );
    }
    let provider = builder.build();
    if INSTALLED
        .set(Installed {
            registry,
            provider: provider.clone(),
        })
        .is_ok()
    {
        opentelemetry::global::set_meter_provider(provider);
    }
    Ok(())
}

/// Whether [`init`] installed a provider (metrics on).
pub fn enabled() -> bool {
    INSTALLED.get().is_some()
}

/// Every metric of the process in the Prometheus text format; `None` when metrics are off.
pub fn render() -> Option<String> {
    let installed = INSTALLED.get()?;
    let mut out = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&installed.registry.gather(), &mut out)
        .ok()?;
    Some(out)
}

/// Pushes what the OTLP reader has not sent yet and stops it (at process exit).
pub fn shutdown() {
    if let Some(installed) = INSTALLED.get() {
        let _ = installed.provider.shutdown();
    }
}

/// The instruments, created on first use from the installed provider (no-ops before).
pub fn metrics() -> &'static Instruments {
    INSTRUMENTS.get_or_init(|| Instruments::new(&opentelemetry::global::meter("hookline")))
}

/// One attribute, for recording calls.
pub fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}

/// Every instrument of every Hookline service. Prometheus names in the field docs.
pub struct Instruments {
    /// `hookline_events_routed_total`: events the router decoded and matched (router).
    pub events_routed: Counter<u64>,
    /// `hookline_events_quarantined_total`: records the router could not decode (router).
    pub events_quarantined: Counter<u64>,
    /// `hookline_router_filtered_total`: (event, subscription) pairs whose subscription
    /// selected the event's type but whose payload filter dropped it: no job (router).
    pub router_filtered: Counter<u64>,
    /// `hookline_router_fanout`: delivery jobs per routed event (router).
    pub fan_out: Histogram<f64>,
    /// `hookline_router_transactions_total{outcome=committed|aborted}` (router).
    pub router_transactions: Counter<u64>,
    /// `hookline_router_transaction_phase_duration_seconds{phase=view|produce|offsets|commit}`:
    /// each step of a router transaction: waiting for the subscription view, producing the
    /// jobs until every one is acknowledged, adding the offsets, committing (router).
    pub router_phase: Histogram<f64>,
    /// `hookline_deliveries_total{outcome=delivered|dead_lettered}`: finished deliveries
    /// (worker).
    pub deliveries: Counter<u64>,
    /// `hookline_delivery_attempts_total{status_class=2xx|3xx|4xx|5xx|error}` (worker).
    pub attempts: Counter<u64>,
    /// `http_client_request_duration_seconds{http_request_method, http_response_status_code,
    /// error_type}`: one HTTP attempt (worker). Status code: a bounded set; error type: the
    /// attempt's error class (`timeout`, `connect`, ...).
    pub attempt_duration: Histogram<f64>,
    /// `hookline_delivery_latency_seconds`: from the event's time to its delivery (worker).
    pub delivery_latency: Histogram<f64>,
    /// `hookline_deliveries_in_flight`: HTTP attempts under way (worker).
    pub in_flight: UpDownCounter<i64>,
    /// `hookline_parked_subscriptions`: subscriptions parked in the retry lane on this
    /// worker's partitions (worker).
    pub parked_subscriptions: Gauge<i64>,
    /// `hookline_retry_lane_backlog`: jobs appended to the retry lane and not finished, on
    /// this worker's partitions (worker).
    pub retry_lane_backlog: Gauge<i64>,
    /// `hookline_worker_buffered_jobs{state=queued|held|appending}`: jobs read from
    /// `deliveries` and held in memory (worker): queued for an attempt, held until a newly
    /// assigned partition's parked subscriptions are adopted, or being appended to the retry
    /// lane. Reading pauses while their sum reaches `worker_buffer`.
    pub worker_buffered: Gauge<i64>,
    /// `hookline_worker_reading_paused`: 1 while the worker has paused reading `deliveries`
    /// because its buffer is full (worker).
    pub worker_reading_paused: Gauge<i64>,
    /// `hookline_consumer_lag{group, topic}`: records not yet consumed by a consumer group
    /// member, summed over its assigned partitions (librdkafka statistics).
    pub consumer_lag: Gauge<i64>,
    /// `http_server_request_duration_seconds{http_request_method, http_route,
    /// http_response_status_code}`: every HTTP API request (every service).
    pub server_duration: Histogram<f64>,
    /// `hookline_extract_rows_total`: balance rows emitted by finished extract runs (extract
    /// producer).
    pub extract_rows: Counter<u64>,
}

impl Instruments {
    fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(SECONDS.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        let gauge = |name: &'static str, description: &'static str| {
            meter.i64_gauge(name).with_description(description).build()
        };
        Self {
            events_routed: counter("hookline.events.routed", "Events decoded and routed"),
            events_quarantined: counter(
                "hookline.events.quarantined",
                "Records the router could not decode, copied to the quarantine topic",
            ),
            router_filtered: counter(
                "hookline.router.filtered",
                "Events a subscription's payload filter dropped (one per event and subscription)",
            ),
            fan_out: meter
                .f64_histogram("hookline.router.fanout")
                .with_description("Delivery jobs per routed event")
                .with_boundaries(FAN_OUT.to_vec())
                .build(),
            router_transactions: counter(
                "hookline.router.transactions",
                "Router Kafka transactions by outcome",
            ),
            router_phase: seconds(
                "hookline.router.transaction.phase.duration",
                "Each step of a router transaction",
            ),
            deliveries: counter("hookline.deliveries", "Finished deliveries by outcome"),
            attempts: counter(
                "hookline.delivery.attempts",
                "HTTP delivery attempts by status class",
            ),
            attempt_duration: seconds(
                "http.client.request.duration",
                "Duration of one HTTP delivery attempt",
            ),
            delivery_latency: seconds(
                "hookline.delivery.latency",
                "From the event's time to its delivery",
            ),
            in_flight: meter
                .i64_up_down_counter("hookline.deliveries.in_flight")
                .with_description("HTTP delivery attempts under way")
                .build(),
            parked_subscriptions: gauge(
                "hookline.parked_subscriptions",
                "Subscriptions parked in the retry lane (this worker's partitions)",
            ),
            retry_lane_backlog: gauge(
                "hookline.retry_lane.backlog",
                "Jobs in the retry lane not finished yet (this worker's partitions)",
            ),
            worker_buffered: gauge(
                "hookline.worker.buffered_jobs",
                "Jobs read from deliveries held in memory, by state",
            ),
            worker_reading_paused: gauge(
                "hookline.worker.reading_paused",
                "1 while reading deliveries is paused because the buffer is full",
            ),
            consumer_lag: gauge(
                "hookline.consumer.lag",
                "Records behind the end of the assigned partitions, per group and topic",
            ),
            server_duration: seconds(
                "http.server.request.duration",
                "Duration of HTTP API requests",
            ),
            extract_rows: counter(
                "hookline.extract.rows",
                "Balance rows emitted by finished extract runs",
            ),
        }
    }
}

/// Which service's series [`announce`] starts at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Router,
    Worker,
    Extracts,
}

/// Starts a service's labelled counters at zero, so a rule or panel over an outcome that
/// has not happened yet (`outcome="aborted"`) reads 0 rather than nothing.
pub fn announce(role: Role) {
    let m = metrics();
    match role {
        Role::Router => {
            for outcome in ["committed", "aborted"] {
                m.router_transactions.add(0, &[kv("outcome", outcome)]);
            }
            m.events_routed.add(0, &[]);
            m.events_quarantined.add(0, &[]);
            m.router_filtered.add(0, &[]);
        }
        Role::Worker => {
            for outcome in ["delivered", "dead_lettered"] {
                m.deliveries.add(0, &[kv("outcome", outcome)]);
            }
            for class in ["2xx", "3xx", "4xx", "5xx", "error"] {
                m.attempts.add(0, &[kv("status_class", class)]);
            }
            m.in_flight.add(0, &[]);
            m.parked_subscriptions.record(0, &[]);
            m.retry_lane_backlog.record(0, &[]);
            for state in ["queued", "held", "appending"] {
                m.worker_buffered.record(0, &[kv("state", state)]);
            }
            m.worker_reading_paused.record(0, &[]);
        }
        Role::Extracts => m.extract_rows.add(0, &[]),
    }
}

/// The status class of an HTTP attempt: `2xx` ... `5xx`, `error` without a response.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruments_render_with_prometheus_names() {
        init(&Settings {
            service: "test".into(),
            enabled: true,
            otlp_endpoint: None,
        })
        .unwrap();
        let m = metrics();
        m.events_routed.add(2, &[]);
        m.deliveries.add(1, &[kv("outcome", "delivered")]);
        m.attempt_duration.record(
            0.02,
            &[
                kv("http.request.method", "POST"),
                kv("http.response.status_code", 200),
            ],
        );
        m.consumer_lag
            .record(7, &[kv("group", "g"), kv("topic", "t")]);
        let text = render().unwrap();
        for want in [
            "hookline_events_routed_total 2",
            "hookline_deliveries_total{outcome=\"delivered\"} 1",
            "http_client_request_duration_seconds_bucket{http_request_method=\"POST\",http_response_status_code=\"200\",le=\"0.025\"} 1",
            "hookline_consumer_lag{group=\"g\",topic=\"t\"} 7",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "error");
    }
}
