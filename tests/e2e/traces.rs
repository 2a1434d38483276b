//! Traces end to end: the router and the delivery worker run as processes (a tracer provider
//! is process-wide) exporting over OTLP/HTTP to a collector stand-in in this test, which
//! decodes the real OTLP protobuf messages. One event routed to two subscriptions, one of
//! which answers 500 once: one trace across the router's and the worker's spans, each span
//! under the right parent, and the receiver's `traceparent` in that trace; with a producer's
//! `traceparent`, that trace is the producer's. A replay of a delivery joins the same trace.
//! An extract run is one span, each event's span linked to it and continued by the router.
//! Spans reach an `https://` collector too (a certificate made by the test, trusted through
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use hookline_kafka::rdkafka::message::{Header, OwnedHeaders};
use hookline_kafka::rdkafka::producer::FutureRecord;
use hookline_proto::Message as _;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::json;

use crate::support::process::Service;
use crate::support::receiver::{Received, Receiver};
use crate::support::{Stack, TOKEN_A, eventually};

/// One exported span, as the collector decoded it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
    /// `(trace id, span id)` of each linked span.
    links: Vec<(String, String)>,
}

/// An OTLP/HTTP collector stand-in: `POST /v1/traces` with an `ExportTraceServiceRequest`.
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    url: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect()
}

async fn export(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut got = spans.lock().unwrap();
    for rs in request.resource_spans {
        let resource = attributes(&rs.resource.map(|r| r.attributes).unwrap_or_default());
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            got.push(Span {
                service: service.clone(),
                name: span.name.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                attributes: attributes(&span.attributes),
                links: span
                    .links
                    .iter()
                    .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                    .collect(),
            });
        }
    }
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

impl Collector {
    fn app(spans: &Arc<Mutex<Vec<Span>>>) -> axum::Router {
        axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .with_state(spans.clone())
    }

    async fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Self::app(&spans);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { spans, url }
    }

    /// The same over TLS (`https://127.0.0.1:port`), with a certificate for 127.0.0.1 issued
    /// by a CA made here; returns the CA certificate (PEM) too.
    async fn start_tls() -> (Collector, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hookline test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Self::app(&spans);
        let listener = TlsListener {
            tcp: listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        };
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Collector { spans, url }, ca.pem())
    }

    /// Every span named `name`.
    fn named(&self, name: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Waits until trace `trace_id` holds at least `n` spans named `name`.
    async fn wait_for(&self, trace_id: &str, name: &str, n: usize) -> Vec<Span> {
        eventually(60, &format!("{n} {name} spans in trace {trace_id}"), || {
            let spans = self.trace(trace_id);
            let count = spans.iter().filter(|s| s.name == name).count();
            async move { (count >= n).then_some(spans) }
        })
        .await
    }
}

/// `(trace id, parent id)` of a request's `traceparent`.
fn traceparent_of(r: &Received) -> (String, String) {
    let parts: Vec<&str> = r.header("traceparent").split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {:?}", r.header("traceparent"));
    (parts[1].to_owned(), parts[2].to_owned())
}

/// Checks one event's trace: the router's span (under `producer_span` when the producer
/// gave one, else a root), two deliver spans under it, the attempts under those (the flaky
/// delivery's two under one deliver span), and each request's `traceparent` naming its
/// attempt's span. Returns the route span.
async fn check_trace(
    collector: &Collector,
    trace_id: &str,
    producer_span: Option<&str>,
    ok: &[Received],
    flaky: &[Received],
) -> Span {
    collector.wait_for(trace_id, "POST", 3).await;
    collector.wait_for(trace_id, "deliver", 2).await;
    let spans = collector.wait_for(trace_id, "route", 1).await;
    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let routes = named("route");
    assert_eq!(routes.len(), 1, "{spans:#?}");
    let route = routes[0];
    assert_eq!(route.service, "hookline-router");
    assert_eq!(
        route.parent,
        producer_span.unwrap_or(""),
        "route span's parent"
    );
    assert_eq!(
        route.attributes.get("hookline.fanout").map(String::as_str),
        Some("2")
    );
    let delivers = named("deliver");
    assert_eq!(delivers.len(), 2, "{spans:#?}");
    for d in &delivers {
        assert_eq!(d.service, "hookline-delivery-worker");
        assert_eq!(
            d.parent, route.span_id,
            "deliver span's parent is the route span"
        );
    }
    let attempts = named("POST");
    assert_eq!(attempts.len(), 3, "{spans:#?}");
    for a in &attempts {
        assert_eq!(a.service, "hookline-delivery-worker");
        assert!(
            delivers.iter().any(|d| d.span_id == a.parent),
            "{a:#?} under no deliver span"
        );
    }
    // Each request names its own attempt span, in this trace.
    let requests: Vec<&Received> = ok.iter().chain(flaky).collect();
    assert_eq!(requests.len(), 3);
    let mut seen = Vec::new();
    for r in &requests {
        let (trace, parent) = traceparent_of(r);
        assert_eq!(
            trace, trace_id,
            "the receiver's traceparent is in the event's trace"
        );
        let attempt = attempts
            .iter()
            .find(|a| a.span_id == parent)
            .unwrap_or_else(|| panic!("no attempt span {parent} for a request: {spans:#?}"));
        assert_eq!(
            attempt.attributes.get("http.response.status_code"),
            Some(&r.status.to_string())
        );
        seen.push(parent);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "one attempt span per request");
    // The 500 and its retry are attempts of one delivery.
    let flaky_parents: Vec<&str> = flaky
        .iter()
        .map(|r| {
            let (_, span) = traceparent_of(r);
            attempts
                .iter()
                .find(|a| a.span_id == span)
                .unwrap()
                .parent
                .as_str()
        })
        .collect();
    assert_eq!(
        flaky_parents[0], flaky_parents[1],
        "retries under one deliver span"
    );
    route.clone()
}

async fn publish(stack: &Stack, key: &str, event_type: &str, traceparent: Option<&str>) {
    let payload = json!({"type": event_type, "tenant": crate::support::TENANT_A,
        "time": "2026-04-14T09:54:45.040Z", "data": {"key": key}})
    .to_string();
    let mut headers = OwnedHeaders::new();
    if let Some(tp) = traceparent {
        headers = headers.insert(Header {
            key: "traceparent",
            value: Some(tp),
        });
    }
    stack
        .producer()
        .send(
            FutureRecord::to(&stack.config.topic_events)
                .key(key)
                .headers(headers)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("publish");
}

/// The router and the delivery worker as processes exporting spans to `collector`.
fn traced_processes(stack: &Stack, collector: &Collector) -> (Service, Service) {
    let env = [
        ("HOOKLINE_OTLP_ENDPOINT", collector.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("HOOKLINE_ROUTER_LISTEN", "127.0.0.1:0"),
        ("HOOKLINE_WORKER_LISTEN", "127.0.0.1:0"),
    ];
    (
        Service::start("hookline-router", &stack.config, &env),
        Service::start("hookline-delivery-worker", &stack.config, &env),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_per_event_across_router_and_worker() {
    let collector = Collector::start().await;
    let stack = Stack::start_without_router_and_worker(|_| {}).await;
    let (ok_a, flaky_a) = (
        Receiver::start(&[], 200).await,
        Receiver::start(&[500], 200).await,
    );
    let (ok_b, flaky_b) = (
        Receiver::start(&[], 200).await,
        Receiver::start(&[500], 200).await,
    );
    stack
        .fynapse_subscription("ok-a", &ok_a.url, json!(["ACCOUNT.*"]))
        .await;
    stack
        .fynapse_subscription("flaky-a", &flaky_a.url, json!(["ACCOUNT.*"]))
        .await;
    stack
        .fynapse_subscription("ok-b", &ok_b.url, json!(["CASE.*"]))
        .await;
    stack
        .fynapse_subscription("flaky-b", &flaky_b.url, json!(["CASE.*"]))
        .await;
    let (router, worker) = traced_processes(&stack, &collector);

    // With the producer's traceparent: the whole trace is the producer's.
    let producer_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer_span = "00f067aa0ba902b7";
    publish(
        &stack,
        "acct-1",
        "ACCOUNT.CREATED",
        Some(&format!("00-{producer_trace}-{producer_span}-01")),
    )
    .await;
    // Without: the router's span starts the trace.
    publish(&stack, "case-1", "CASE.CREATED", None).await;

    let ok = ok_a.wait_for_delivered(1, 90).await;
    let flaky = flaky_a.wait_for_delivered(1, 90).await;
    assert_eq!(
        flaky.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 200]
    );
    let route_a = check_trace(&collector, producer_trace, Some(producer_span), &ok, &flaky).await;

    let ok = ok_b.wait_for_delivered(1, 90).await;
    let flaky = flaky_b.wait_for_delivered(1, 90).await;
    let (trace_b, _) = traceparent_of(&ok[0]);
    assert_ne!(trace_b, producer_trace);
    check_trace(&collector, &trace_b, None, &ok, &flaky).await;

    // A replay (hours later, in production) continues the event's trace: a new deliver span
    // under the same route span.
    let delivery = ok_a.received()[0].header("webhook-id").to_owned();
    let url = format!(
        "{}/api/v1/event-deliveries/deliveries/{delivery}/replay",
        stack.dead_letters
    );
    eventually(60, "the replay accepted", || {
        let url = url.clone();
        async move {
            let (status, _) =
                crate::support::call(reqwest::Method::POST, &url, TOKEN_A, None).await;
            (status == 202).then_some(())
        }
    })
    .await;
    let again = ok_a.wait_for(2, 60).await;
    let (trace, _) = traceparent_of(&again[1]);
    assert_eq!(
        trace, producer_trace,
        "the replay's request is in the event's trace"
    );
    let spans = collector.wait_for(producer_trace, "deliver", 3).await;
    let replayed: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.name == "deliver"
                && !s
                    .attributes
                    .get("hookline.replay.id")
                    .is_none_or(String::is_empty)
        })
        .collect();
    assert_eq!(replayed.len(), 1, "{spans:#?}");
    assert_eq!(replayed[0].parent, route_a.span_id);

    assert!(router.terminate(20), "the router stops cleanly");
    assert!(worker.terminate(20), "the worker stops cleanly");
    stack.stop().await;
}

/// A retry due later than `retry_in_memory_max` goes through the retry lane: read back, the
/// job's next pass is a second `deliver` span under the same `route` span, in the same trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_through_the_retry_lane_stays_in_the_trace() {
    let collector = Collector::start().await;
    let stack = Stack::start_without_router_and_worker(|c| {
        c.retry_schedule = "0s,300ms".into();
        c.retry_in_memory_max = "0s".into();
    })
    .await;
    let flaky = Receiver::start(&[500], 200).await;
    stack
        .fynapse_subscription("parked", &flaky.url, json!(["ACCOUNT.*"]))
        .await;
    let (router, worker) = traced_processes(&stack, &collector);
    let producer_trace = "0af7651916cd43dd8448eb211c80319c";
    publish(
        &stack,
        "acct-9",
        "ACCOUNT.UPDATED",
        Some(&format!("00-{producer_trace}-b7ad6b7169203331-01")),
    )
    .await;
    let got = flaky.wait_for_delivered(1, 90).await;
    assert_eq!(got.iter().map(|r| r.status).collect::<Vec<_>>(), [500, 200]);
    for r in &got {
        assert_eq!(traceparent_of(r).0, producer_trace);
    }
    collector.wait_for(producer_trace, "POST", 2).await;
    collector.wait_for(producer_trace, "route", 1).await;
    let spans = collector.wait_for(producer_trace, "deliver", 2).await;
    let route = spans.iter().find(|s| s.name == "route").unwrap();
    let delivers: Vec<&Span> = spans.iter().filter(|s| s.name == "deliver").collect();
    assert_eq!(delivers.len(), 2, "{spans:#?}");
    assert!(
        delivers.iter().all(|d| d.parent == route.span_id),
        "{spans:#?}"
    );
    let outcomes: Vec<&str> = delivers
        .iter()
        .map(|d| {
            d.attributes
                .get("hookline.outcome")
                .map_or("", String::as_str)
        })
        .collect();
    assert!(
        outcomes.contains(&"parked") && outcomes.contains(&"completed"),
        "{outcomes:?}"
    );
    // Each attempt under its own pass.
    for r in &got {
        let (_, span) = traceparent_of(r);
        let attempt = spans
            .iter()
            .find(|s| s.span_id == span)
            .expect("attempt span");
        assert!(delivers.iter().any(|d| d.span_id == attempt.parent));
    }
    assert!(router.terminate(20), "the router stops cleanly");
    assert!(worker.terminate(20), "the worker stops cleanly");
    stack.stop().await;
}

/// TLS connections on a TCP listener; a failed handshake is dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A free port on 127.0.0.1 for a process to listen on.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_extract_run_is_one_span_and_its_events_are_linked_and_routed() {
    let collector = Collector::start().await;
    let stack = Stack::start_without_router_and_worker(|_| {}).await;
    // A subscription for the router to route to (no worker runs: nothing is delivered).
    let receiver = Receiver::start(&[], 200).await;
    stack
        .fynapse_subscription("Balances", &receiver.url, json!(["balance.extracted"]))
        .await;
    let balances = stack.config.topic_balances.clone();
    for account in 1..=3 {
        let row = json!({"node": "N1", "account": account.to_string(), "productName": "",
            "transactionCurrency": "EUR", "balance": "1.50"});
        stack
            .publish_json(&balances, &format!("row{account}"), &row)
            .await;
    }
    // The extract producer and the router as processes exporting their spans.
    let extracts = free_addr();
    let env = [
        ("HOOKLINE_OTLP_ENDPOINT", collector.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("HOOKLINE_EXTRACTS_LISTEN", extracts.as_str()),
        ("HOOKLINE_ROUTER_LISTEN", "127.0.0.1:0"),
    ];
    let extract_producer = Service::start("hookline-extract-producer", &stack.config, &env);
    let router = Service::start("hookline-router", &stack.config, &env);
    let base = format!("http://{extracts}/api/v1/extracts");
    let client = crate::support::client();
    eventually(60, "the extract producer process is ready", || {
        let r = client.get(format!("http://{extracts}/readyz")).send();
        async move { r.await.ok().filter(|r| r.status() == 200).map(drop) }
    })
    .await;
    let (status, body) = crate::support::call(
        reqwest::Method::POST,
        &base,
        TOKEN_A,
        Some(
            json!({"name": "eur", "target": "Webhook", "dataSource": "Balances",
            "query": {"transactionCurrencies": ["EUR"]}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, run) = crate::support::call(
        reqwest::Method::POST,
        &format!("{base}/eur/runs?wait=true"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["rowsEmitted"], 3, "{run}");

    let run_span = eventually(60, "the extract_run span", || {
        let runs = collector.named("extract_run");
        async move { runs.into_iter().next() }
    })
    .await;
    assert_eq!(run_span.service, "hookline-extract-producer");
    assert_eq!(collector.named("extract_run").len(), 1, "one span per run");
    let events = eventually(60, "3 extract_event spans", || {
        let events = collector.named("extract_event");
        async move { (events.len() >= 3).then_some(events) }
    })
    .await;
    assert_eq!(events.len(), 3, "{events:#?}");
    for event in &events {
        assert!(
            event
                .links
                .contains(&(run_span.trace_id.clone(), run_span.span_id.clone())),
            "the event's span is linked to the run's: {event:#?} {run_span:#?}"
        );
        // The router continues the event's trace: its route span is a child of the event's.
        let routes = collector.wait_for(&event.trace_id, "route", 1).await;
        let route = routes.iter().find(|s| s.name == "route").unwrap();
        assert_eq!(route.service, "hookline-router");
        assert_eq!(route.parent, event.span_id, "{routes:#?}");
    }
    assert!(
        extract_producer.terminate(20),
        "the extract producer stops cleanly"
    );
    assert!(router.terminate(20), "the router stops cleanly");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spans_reach_an_https_collector() {
    let (collector, ca_pem) = Collector::start_tls().await;
    let dir = std::env::temp_dir().join(format!("hookline-otlp-ca-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let stack = Stack::start_without_router_and_worker(|_| {}).await;
    let env = [
        ("HOOKLINE_OTLP_ENDPOINT", collector.url.as_str()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.to_str().unwrap()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("HOOKLINE_ROUTER_LISTEN", "127.0.0.1:0"),
    ];
    let router = Service::start("hookline-router", &stack.config, &env);
    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    publish(
        &stack,
        "acct-tls",
        "ACCOUNT.CREATED",
        Some(&format!("00-{trace}-00f067aa0ba902b8-01")),
    )
    .await;
    let spans = collector.wait_for(trace, "route", 1).await;
    assert_eq!(spans[0].service, "hookline-router");
    assert!(router.terminate(20), "the router stops cleanly");
    stack.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
