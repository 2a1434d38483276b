//! OpenTelemetry traces: one trace per event across every Kafka hop.
//!
//! - [`exporter`]: the OTLP/HTTP span exporter and tracer provider behind the `tracing` layer
//!   that [`crate::init`] installs when `otlp_endpoint` is set; [`enabled`] says whether it did.
//! - [`Traced`]: a unit of Hookline's work (routing an event, delivering a job, one HTTP
//!   attempt) with the context it passes on. With tracing on it is a `tracing` span exported
//!   over OTLP; off, no span is made and the parent's context is passed on unchanged, so the
//!   `traceparent` still travels from the producer to the receiver at the cost of a string.
//! - Propagation in W3C Trace Context form: [`from_kafka`] and [`inject_kafka`] for record
//!   headers, [`inject_http`] for HTTP headers, [`from_traceparent`] and [`traceparent`] for
//!   the value kept in a delivery job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// A trace context (the current span's, or a parent's read from a record).
pub use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C Trace Context header, in Kafka record headers and HTTP requests alike.
pub const TRACEPARENT: &str = "traceparent";
/// Its companion carrying vendor state.
pub const TRACESTATE: &str = "tracestate";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are made and exported (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn set_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The tracer provider exporting to `endpoint` (the collector's OTLP/HTTP base URL, e.g.
/// `http://otel-collector:4318`; `/v1/traces` is appended) in batches, sampling root spans
/// at `ratio` and following the parent's decision otherwise. Batch settings come from the
/// standard `OTEL_BSP_*` variables (`OTEL_BSP_SCHEDULE_DELAY`, default 5 s).
pub fn exporter(
    service_name: &str,
    endpoint: &str,
    ratio: f64,
) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let endpoint = endpoint.trim_end_matches('/');
    let url = if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_http_client(crate::otlp::client()?)
        .with_headers(HashMap::new())
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// A span of Hookline's work and the context it passes on (see the module's summary).
#[derive(Clone, Debug)]
pub struct Traced {
    span: tracing::Span,
    cx: Context,
}

impl Traced {
    /// Starts a span whose parent is `parent` (a remote context read from a record or a
    /// job; an empty context makes it a root). `make` creates the `tracing` span and is
    /// called only when tracing is on.
    pub fn start(parent: &Context, make: impl FnOnce() -> tracing::Span) -> Self {
        if !enabled() {
            return Self::off(parent.clone());
        }
        let span = make();
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent.clone());
        }
        let cx = span.context();
        Self::on(span, cx, parent)
    }

    /// Starts a child span of `self`; `make` is given the parent `tracing` span and called
    /// only when tracing is on.
    pub fn child(&self, make: impl FnOnce(&tracing::Span) -> tracing::Span) -> Self {
        if !enabled() || self.span.is_none() {
            return Self::off(self.cx.clone());
        }
        let span = make(&self.span);
        let cx = span.context();
        Self::on(span, cx, &self.cx)
    }

    fn off(cx: Context) -> Self {
        Self {
            span: tracing::Span::none(),
            cx,
        }
    }

    /// A span the layer did not see (filtered out) passes the parent's context on.
    fn on(span: tracing::Span, cx: Context, parent: &Context) -> Self {
        if cx.span().span_context().is_valid() {
            Self { span, cx }
        } else {
            Self {
                span,
                cx: parent.clone(),
            }
        }
    }

    /// The `tracing` span (disabled when tracing is off): record fields, instrument futures.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The context to pass on: this span's, or with tracing off the parent's.
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// The W3C `traceparent` of [`Self::context`]; empty when there is none.
    pub fn traceparent(&self) -> String {
        traceparent(&self.cx)
    }

    /// Links another trace's span to this one (an extract run and the events it emitted).
    pub fn link(&self, other: &Context) {
        let sc = other.span().span_context().clone();
        if sc.is_valid() && !self.span.is_none() {
            self.span.add_link(sc);
        }
    }

    /// Marks the span failed, with `error.type`.
    pub fn fail(&self, error_type: &str) {
        if !self.span.is_none() {
            self.span.set_attribute("error.type", error_type.to_owned());
            self.span
                .set_status(opentelemetry::trace::Status::error(error_type.to_owned()));
        }
    }

    /// Sets one attribute (with tracing on).
    pub fn set_attribute(&self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        if !self.span.is_none() {
            self.span.set_attribute(key, value);
        }
    }
}

/// The context named by a W3C `traceparent` value; empty when it is absent or malformed.
pub fn from_traceparent(value: &str) -> Context {
    if value.is_empty() {
        return Context::new();
    }
    let mut carrier = HashMap::with_capacity(1);
    carrier.insert(TRACEPARENT.to_owned(), value.to_owned());
    TraceContextPropagator::new().extract(&carrier)
}

/// The context named by `value`, or [`new_root`] when it names none (a job written before
/// jobs carried one).
pub fn from_traceparent_or_new(value: &str) -> Context {
    let cx = from_traceparent(value);
    if cx.span().span_context().is_valid() {
        cx
    } else {
        new_root()
    }
}

/// The W3C `traceparent` of `cx`; empty when it holds no valid span context.
pub fn traceparent(cx: &Context) -> String {
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return String::new();
    }
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// A context that starts a trace without a span of its own (tracing off, no parent): a
/// random trace id, not sampled. Kept in a job, it holds every attempt and replay of the
/// delivery in one trace id for the receiver.
pub fn new_root() -> Context {
    use rand_like::random_u128;
    let (trace, span) = loop {
        let t = random_u128();
        let s = random_u128() as u64;
        if t != 0 && s != 0 {
            break (t, s);
        }
    };
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::default(),
        true,
        TraceState::default(),
    ))
}

/// Randomness without another dependency: the SDK's id generator.
mod rand_like {
    use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};

    pub fn random_u128() -> u128 {
        let g = RandomIdGenerator::default();
        u128::from_be_bytes(g.new_trace_id().to_bytes())
    }
}

/// The parent context in a record's headers (`traceparent`, `tracestate`); empty when none.
pub fn from_kafka<H: Headers>(headers: Option<&H>) -> Context {
    match headers {
        Some(h) => TraceContextPropagator::new().extract(&KafkaExtractor(h)),
        None => Context::new(),
    }
}

/// `headers` with `cx`'s `traceparent` (and `tracestate`) added; unchanged when `cx` holds
/// no valid span context.
pub fn inject_kafka(cx: &Context, headers: OwnedHeaders) -> OwnedHeaders {
    let mut injector = Pairs::default();
    TraceContextPropagator::new().inject_context(cx, &mut injector);
    injector.0.iter().fold(headers, |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_str()),
        })
    })
}

/// Adds `cx`'s `traceparent` (and `tracestate`) to HTTP headers.
pub fn inject_http(cx: &Context, headers: &mut http::HeaderMap) {
    let mut injector = Pairs::default();
    TraceContextPropagator::new().inject_context(cx, &mut injector);
    for (k, v) in injector.0 {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            headers.insert(name, value);
        }
    }
}

struct KafkaExtractor<'a, H>(&'a H);

impl<H: Headers> Extractor for KafkaExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

#[derive(Default)]
struct Pairs(Vec<(String, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Message as _, OwnedMessage};

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_round_trips() {
        let cx = from_traceparent(PARENT);
        assert!(cx.span().span_context().is_remote());
        assert_eq!(traceparent(&cx), PARENT);
        assert_eq!(traceparent(&from_traceparent("")), "");
        assert_eq!(traceparent(&from_traceparent("00-zz-yy-01")), "");
    }

    #[test]
    fn kafka_headers_carry_the_context_both_ways() {
        let cx = from_traceparent(PARENT);
        let headers = inject_kafka(
            &cx,
            OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some("application/json"),
            }),
        );
        let msg = OwnedMessage::new(
            None,
            None,
            "t".into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            0,
            Some(headers),
        );
        let back = from_kafka(msg.headers());
        assert_eq!(traceparent(&back), PARENT);
        assert_eq!(traceparent(&from_kafka::<OwnedHeaders>(None)), "");
    }

    #[test]
    fn http_headers_get_the_traceparent() {
        let mut h = http::HeaderMap::new();
        inject_http(&from_traceparent(PARENT), &mut h);
        assert_eq!(h.get(TRACEPARENT).unwrap(), PARENT);
    }

    #[test]
    fn tracing_off_passes_the_parent_on() {
        assert!(!enabled());
        let parent = from_traceparent(PARENT);
        let t = Traced::start(&parent, || panic!("no span is made when tracing is off"));
        assert!(t.span().is_none());
        assert_eq!(t.traceparent(), PARENT);
        let child = t.child(|_| panic!("no span"));
        assert_eq!(child.traceparent(), PARENT);
        let root = new_root();
        let tp = traceparent(&root);
        assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
        assert_ne!(tp, traceparent(&new_root()));
    }
}
