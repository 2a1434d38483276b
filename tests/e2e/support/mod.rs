//! What every end-to-end test needs: the test broker, a stack of real services on loopback
//! ports with topics of its own, a real HTTP receiver, and API helpers.

pub mod process;
pub mod receiver;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use hookline_config::Config;
use hookline_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use hookline_kafka::rdkafka::message::Message;
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
use hookline_runtime::CancellationToken;
use serde_json::Value;
use tokio::net::TcpListener;

pub const TENANT_A: &str = "tenant_a";
pub const TENANT_B: &str = "tenant_b";
pub const TOKEN_A: &str = "test-token-tenant-a-0123456789";
pub const TOKEN_B: &str = "test-token-tenant-b-0123456789";
pub const TOKEN_ADMIN: &str = "test-token-admin-0123456789";

/// The broker that `make test` started for this run.
pub fn bootstrap() -> String {
    std::env::var("HOOKLINE_TEST_KAFKA_BOOTSTRAP").expect(
        "HOOKLINE_TEST_KAFKA_BOOTSTRAP is not set: run the end-to-end suite with `make test` \
         (it starts a Kafka broker for the run)",
    )
}

/// A full Hookline stack on loopback ports, with topics and consumer groups of its own.
pub struct Stack {
    pub config: Config,
    pub api: String,
    pub extracts: String,
    pub dead_letters: String,
    /// The router's and the worker's health ports (`/healthz`, `/readyz`, `/metrics`).
    pub router: String,
    pub worker: String,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = l.local_addr().expect("local address");
    (l, addr)
}

impl Stack {
    /// Starts every service with `tune` applied to a test configuration, and waits until all
    /// of them are ready.
    pub async fn start(tune: impl FnOnce(&mut Config)) -> Stack {
        Self::start_with(tune, true).await
    }

    /// Like [`Stack::start`], without the delivery worker: the test runs it as a process.
    pub async fn start_without_worker(tune: impl FnOnce(&mut Config)) -> Stack {
        Self::start_with(tune, false).await
    }

    async fn start_with(tune: impl FnOnce(&mut Config), with_worker: bool) -> Stack {
        Self::start_parts(tune, with_worker, true).await
    }

    /// Like [`Stack::start`], with the delivery worker and the operations (dead-letter)
    /// service only if asked for (a test may run them as processes; the operations service
    /// is then to listen on `config.dead_letters_listen`).
    pub async fn start_parts(
        tune: impl FnOnce(&mut Config),
        with_worker: bool,
        with_dead_letter: bool,
    ) -> Stack {
        Self::start_selected(tune, true, with_worker, with_dead_letter).await
    }

    /// The subscription API, extract producer and operations service only: the test runs
    /// the router and the delivery worker as processes.
    pub async fn start_without_router_and_worker(tune: impl FnOnce(&mut Config)) -> Stack {
        Self::start_selected(tune, false, false, true).await
    }

    async fn start_selected(
        tune: impl FnOnce(&mut Config),
        with_router: bool,
        with_worker: bool,
        with_dead_letter: bool,
    ) -> Stack {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let t = |name: &str| format!("t{id}.{name}");
        let mut config = Config {
            kafka_bootstrap: bootstrap(),
            topic_subscriptions: t("subscriptions"),
            topic_secrets: t("secrets"),
            topic_events: t("events"),
            topic_balances: t("balances"),
            topic_extracts: t("extracts"),
            topic_deliveries: t("deliveries"),
            topic_attempts: t("attempts"),
            topic_dead_letters: t("dead-letters"),
            topic_retry_lane: t("retry-lane"),
            topic_parked: t("parked"),
            topic_claims: t("claims"),
            topic_event_types: t("event-types"),
            topic_applications: t("applications"),
            topic_messages: t("messages"),
            topic_subscription_commands: t("subscription-commands"),
            topic_quarantine: t("quarantine"),
            topic_replays: t("replays"),
            ops_index_dir: std::env::temp_dir()
                .join(format!("hookline-ops-index-t{id}"))
                .display()
                .to_string(),
            group_prefix: format!("t{id}"),
            create_topics: false,
            topic_partitions: 3,
            tokens: format!(
                "{TOKEN_A}={TENANT_A}:editor;{TOKEN_B}={TENANT_B}:editor;{TOKEN_ADMIN}=ops:admin"
            ),
            master_key: base64::engine::general_purpose::STANDARD.encode(rand_bytes()),
            retry_schedule: "0s,200ms,200ms".into(),
            retry_jitter: 0.0,
            http_timeout: "5s".into(),
            // Receivers listen on 127.0.0.1; nothing else is allowed past the egress guard.
            egress_allow: "127.0.0.1/32".into(),
            log_format: "pretty".into(),
            // `HOOKLINE_TEST_LOG_LEVEL` (with `HOOKLINE_TEST_LOGS=1`) for a failure hunt.
            log_level: std::env::var("HOOKLINE_TEST_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            shutdown_grace: "2s".into(),
            ..Config::default()
        };
        tune(&mut config);
        config.validate().expect("test configuration is valid");
        hookline_kafka::ensure_topics(&config)
            .await
            .expect("create test topics");
        hookline_telemetry_init(&config);

        let shutdown = CancellationToken::new();
        let (api_l, api) = listener().await;
        let (ext_l, ext) = listener().await;
        let (dl_l, dl) = listener().await;
        let (router_l, router) = listener().await;
        let (worker_l, worker) = listener().await;
        // Where the operations service listens (a test may run it as a process there).
        config.dead_letters_listen = dl;
        let c = || config.clone();
        let s = || shutdown.clone();
        let mut tasks = vec![
            spawn(
                "subscription-api",
                hookline_subscription_api::run(c(), api_l, s()),
            ),
            spawn(
                "extract-producer",
                hookline_extract_producer::run(c(), ext_l, s()),
            ),
        ];
        if with_router {
            tasks.push(spawn("router", hookline_router::run(c(), router_l, s())));
        } else {
            drop(router_l);
        }
        if with_dead_letter {
            tasks.push(spawn(
                "dead-letter",
                hookline_dead_letter::run(c(), dl_l, s()),
            ));
        } else {
            drop(dl_l);
        }
        if with_worker {
            tasks.push(spawn(
                "delivery-worker",
                hookline_delivery_worker::run(c(), worker_l, s()),
            ));
        } else {
            drop(worker_l);
        }
        let stack = Stack {
            config,
            api: format!("http://{api}"),
            extracts: format!("http://{ext}"),
            dead_letters: format!("http://{dl}"),
            router: format!("http://{router}"),
            worker: format!("http://{worker}"),
            shutdown,
            tasks,
        };
        let mut ready = vec![api, ext];
        if with_router {
            ready.push(router);
        }
        if with_dead_letter {
            ready.push(dl);
        }
        if with_worker {
            ready.push(worker);
        }
        for addr in ready {
            wait_ready(&format!("http://{addr}/readyz"), &stack.tasks).await;
        }
        stack
    }

    /// Stops every service and waits for them to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        let _ = std::fs::remove_dir_all(&self.config.ops_index_dir);
    }

    pub fn producer(&self) -> FutureProducer {
        hookline_kafka::client_config(&self.config)
            .expect("client settings")
            .set("acks", "all")
            .create()
            .expect("test producer")
    }

    /// Publishes a JSON record as an outside producer would.
    pub async fn publish_json(&self, topic: &str, key: &str, value: &Value) {
        let payload = value.to_string();
        self.producer()
            .send(
                FutureRecord::to(topic).key(key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("publish");
    }

    /// An authenticated API call; returns the status and the JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        call(method, url, token, body).await
    }

    /// Registers event type `name` in the catalog (as the admin), so subscriptions may name it.
    pub async fn register_event_type(&self, name: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("{}/admin/v1/event-types", self.api),
                TOKEN_ADMIN,
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "register {name}: {body}");
    }

    /// Creates a Fynapse subscription for tenant A with an auto-created secret; returns
    /// (subscription id, secret value).
    pub async fn fynapse_subscription(
        &self,
        name: &str,
        url: &str,
        event_types: Value,
    ) -> (String, String) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("{}/api/v1/event-deliveries/subscriptions", self.api),
                TOKEN_A,
                Some(serde_json::json!({"name": name, "endpointUrl": url, "eventTypes": event_types})),
            )
            .await;
        assert_eq!(status, 201, "create subscription: {body}");
        let id = body["id"].as_str().expect("id").to_owned();
        let secret = body["secret"]["value"]
            .as_str()
            .expect("auto-created secret value")
            .to_owned();
        (id, secret)
    }

    /// Every record on `topic`, read with `read_committed`, until `until` accepts them or the
    /// time runs out.
    /// Every committed record of `topic` as its bytes, in each partition's order, once
    /// `until` holds of them or 30 s have passed.
    pub async fn read_topic(
        &self,
        topic: &str,
        until: impl Fn(&[Vec<u8>]) -> bool,
    ) -> Vec<Vec<u8>> {
        let (consumer, _) = self.reader(topic);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut values = Vec::new();
        while std::time::Instant::now() < deadline && !until(&values) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                values.push(m.payload().unwrap_or_default().to_vec());
            }
        }
        values
    }

    /// Every committed record of `topic` up to its end as of this call.
    pub fn read_to_end(&self, topic: &str) -> Vec<Vec<u8>> {
        let (consumer, ends) = self.reader(topic);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut values = Vec::new();
        loop {
            let pos = consumer.position().expect("position");
            let done = ends.iter().all(|(p, high)| {
                *high == 0
                    || pos
                        .find_partition(topic, *p)
                        .and_then(|e| e.offset().to_raw())
                        .is_some_and(|o| o >= *high)
            });
            if done {
                return values;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "reading {topic} timed out"
            );
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                values.push(m.payload().unwrap_or_default().to_vec());
            }
        }
    }

    /// A read_committed reader assigned every partition of `topic` from the beginning, and
    /// each partition's high watermark.
    fn reader(&self, topic: &str) -> (BaseConsumer, Vec<(i32, i64)>) {
        let consumer: BaseConsumer = hookline_kafka::client_config(&self.config)
            .expect("client settings")
            .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let meta = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for p in meta.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            ends.push((p.id(), high));
        }
        consumer.assign(&tpl).expect("assign");
        (consumer, ends)
    }
}

fn spawn<E: std::fmt::Display>(
    name: &'static str,
    f: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = f.await {
            panic!("{name} failed: {e}");
        }
    })
}

fn hookline_telemetry_init(config: &Config) {
    // Logs and metrics; no traces: the tests' configurations name no OTLP endpoint.
    drop(hookline_runtime::init_telemetry(config, "hookline-e2e"));
}

fn rand_bytes() -> [u8; 32] {
    let a = uuid::Uuid::new_v4().into_bytes();
    let b = uuid::Uuid::new_v4().into_bytes();
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&a);
    out[16..].copy_from_slice(&b);
    out
}

/// An authenticated call; returns the status and the JSON body (or the text as a string).
pub async fn call(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("HTTP call");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

async fn wait_ready(url: &str, services: &[tokio::task::JoinHandle<()>]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            !services.iter().any(|t| t.is_finished()),
            "a service stopped while starting"
        );
        if client()
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
