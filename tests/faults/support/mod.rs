//! What every fault test needs: brokers of its own ([`kafka::Kafka`]), the five services as
//! processes ([`process::Services`]), a receiver, a subscription, a publisher that outlasts a
//! broker outage, and the checks of guarantees 1, 2, 3 and 9 on what the receiver got.

pub mod kafka;
pub mod process;
pub mod receiver;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hookline_config::Config;
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use serde_json::{Value, json};

use kafka::Kafka;
use process::Services;
use receiver::{Received, Receiver};

pub const TENANT: &str = "tenant_a";
const TOKEN: &str = "faults-token-tenant-a-0123456789";
const TOKEN_ADMIN: &str = "faults-token-admin-0123456789";
/// Ordering keys of the published events; event `n` has key `n % KEYS`, sequence `n / KEYS`.
pub const KEYS: usize = 30;

/// One fault test at a time: each runs up to three brokers and five services, which is all
/// two cores can take.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The last `lines` lines of a text file (ANSI colours removed), or why it cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            strip_ansi(&all[from..].join("\n"))
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences: ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// `N` free loopback addresses, held together so they differ and closed before the services
/// bind them. Taken below the kernel's ephemeral range, as `scripts/kafka.sh` takes the
/// brokers' ports: a service killed and restarted on its port finds it free even while other
/// processes open thousands of connections (whose local ports come from that range).
pub fn free_addrs<const N: usize>() -> [std::net::SocketAddr; N] {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let from = low.saturating_sub(12_000).max(1024);
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(N);
    while listeners.len() < N {
        let port = if from < low {
            rand::Rng::gen_range(&mut rand::thread_rng(), from..low)
        } else {
            0
        };
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(l);
        }
    }
    std::array::from_fn(|i| listeners[i].local_addr().expect("address"))
}

/// A test configuration for brokers at `bootstrap`: topics and groups of its own, topics
/// created with `replication` and `min_insync` replicas.
pub fn config(bootstrap: &str, replication: i32, min_insync: i32) -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let t = |name: &str| format!("f{id}.{name}");
    let [api, extracts, dead_letters, router, worker] = free_addrs::<5>();
    let key: Vec<u8> = uuid::Uuid::new_v4()
        .into_bytes()
        .into_iter()
        .chain(uuid::Uuid::new_v4().into_bytes())
        .collect();
    let config = Config {
        kafka_bootstrap: bootstrap.to_owned(),
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
            .join(format!("hookline-ops-index-f{id}"))
            .display()
            .to_string(),
        group_prefix: format!("f{id}"),
        router_instance: format!("f{id}-router-0"),
        create_topics: false,
        topic_partitions: 3,
        topic_replication: replication,
        topic_min_insync_replicas: min_insync,
        api_listen: api,
        extracts_listen: extracts,
        dead_letters_listen: dead_letters,
        router_listen: router,
        worker_listen: worker,
        tokens: format!("{TOKEN}={TENANT}:editor;{TOKEN_ADMIN}=ops:admin"),
        master_key: base64::engine::general_purpose::STANDARD.encode(key),
        // A healthy receiver: retries only if something else goes wrong, never dead letters
        // within a test's time.
        retry_schedule: "0s,1s,5s,30s,5m".into(),
        retry_jitter: 0.0,
        http_timeout: "10s".into(),
        // The receiver listens on 127.0.0.1; nothing else is allowed past the egress guard.
        egress_allow: "127.0.0.1/32".into(),
        log_format: "pretty".into(),
        log_level: std::env::var("HOOKLINE_FAULTS_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        // librdkafka's own debugging for a failure hunt, e.g. `debug=cgrp,eos`.
        kafka_properties: std::env::var("HOOKLINE_FAULTS_KAFKA_PROPERTIES").unwrap_or_default(),
        shutdown_grace: "2s".into(),
        ..Config::default()
    };
    config.validate().expect("test configuration is valid");
    config
}

/// A running pipeline: topics, the five services, a receiver and one subscription to it.
pub struct Run {
    pub config: Config,
    pub receiver: Receiver,
    pub services: Services,
    pub subscription: String,
}

impl Run {
    /// Creates the topics on `kafka`, starts the services (logs under the brokers' folder)
    /// and the receiver, and subscribes the receiver to every event type of the tenant.
    pub async fn start(kafka: &Kafka, replication: i32, min_insync: i32) -> Run {
        let config = config(&kafka.bootstrap, replication, min_insync);
        hookline_kafka::ensure_topics(&config)
            .await
            .expect("create the test topics");
        let receiver = Receiver::start().await;
        let services = Services::start(&config, &kafka.dir().join("services")).await;
        let (status, body) = call(
            reqwest::Method::POST,
            &format!(
                "http://{}/api/v1/event-deliveries/subscriptions",
                config.api_listen
            ),
            Some(json!({"name": "faults", "endpointUrl": receiver.url, "eventTypes": null})),
        )
        .await;
        assert_eq!(status, 201, "create the subscription: {body}");
        let subscription = body["id"].as_str().expect("subscription id").to_owned();
        Run {
            config,
            receiver,
            services,
            subscription,
        }
    }

    /// Waits until `n` distinct events reached the receiver; panics with the progress, the
    /// services' and brokers' logs when a service exits or `secs` pass.
    pub async fn wait_delivered(
        &mut self,
        n: usize,
        secs: u64,
        what: &str,
        kafka: &Kafka,
        load: &Load,
    ) -> Tally {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let tally = Tally::of(&self.receiver.received());
            if tally.first.len() >= n {
                return tally;
            }
            let exited = self.services.exited();
            if !exited.is_empty() || Instant::now() >= deadline {
                let why = if exited.is_empty() {
                    format!("timed out after {secs} s waiting for {what}")
                } else {
                    format!("service(s) exited while waiting for {what}: {exited:?}")
                };
                panic!("{why}\n{}", self.report(&tally, n, kafka, load));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Progress and logs, for a failure message.
    pub fn report(&self, tally: &Tally, expected: usize, kafka: &Kafka, load: &Load) -> String {
        let mut missing: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for n in 0..expected {
            if !tally.first.contains_key(&event_id(n)) {
                missing.entry(n % KEYS).or_default().push(n / KEYS);
            }
        }
        let missing: Vec<String> = missing
            .iter()
            .take(10)
            .map(|(k, seqs)| {
                format!(
                    "key {k}: {} missing from seq {}",
                    seqs.len(),
                    seqs.first().copied().unwrap_or(0)
                )
            })
            .collect();
        let last = tally
            .last_new_at
            .map(|t| format!("{:.1?} ago", t.elapsed()))
            .unwrap_or_else(|| "never".into());
        let mut out = format!(
            "subscription {}; progress: {} of {expected} events delivered ({} requests; last new event {last}); \
             publisher: {} enqueued, {} acknowledged by Kafka, {} failed\n\
             missing: {}\n\
             per-key order violations: {:?}\n",
            self.subscription,
            tally.first.len(),
            tally.requests,
            load.enqueued(),
            load.acked(),
            load.failed(),
            if missing.is_empty() {
                "none".to_owned()
            } else {
                missing.join("; ")
            },
            tally.order_violations,
        );
        out.push_str(&self.services.log_tails(40));
        for node in 1..=kafka.brokers() {
            out.push_str(&format!(
                "----- Kafka node {node}, last 15 lines -----\n{}\n",
                kafka.log_tail(node, 15)
            ));
        }
        out
    }

    /// Checks guarantees 1, 2, 3 and 9 once every event arrived: each of the `expected`
    /// events delivered, nothing else, one delivery id per event, per-key order of first
    /// arrivals, and no service exited.
    pub fn check(&mut self, tally: &Tally, expected: usize, kafka: &Kafka, load: &Load) {
        let unexpected: Vec<&String> = tally
            .first
            .keys()
            .filter(|id| id_number(id).is_none_or(|n| n >= expected))
            .collect();
        let exited = self.services.exited();
        let problems = [
            (tally.first.len() < expected)
                .then(|| format!("{} of {expected} delivered", tally.first.len())),
            (!unexpected.is_empty()).then(|| format!("unexpected events: {unexpected:?}")),
            (!tally.order_violations.is_empty()).then(|| {
                format!(
                    "per-key order of first arrivals broken: {:?}",
                    tally.order_violations
                )
            }),
            (!tally.id_changes.is_empty()).then(|| {
                format!(
                    "events delivered under more than one webhook-id: {:?}",
                    tally.id_changes
                )
            }),
            (!tally.undecodable.is_empty())
                .then(|| format!("bodies not understood: {:?}", tally.undecodable)),
            (!exited.is_empty()).then(|| format!("services exited: {exited:?}")),
        ];
        let problems: Vec<String> = problems.into_iter().flatten().collect();
        assert!(
            problems.is_empty(),
            "{}\n{}",
            problems.join("\n"),
            self.report(tally, expected, kafka, load)
        );
    }
}

/// An authenticated call to the subscription API; the status and the JSON body.
pub async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method, url).bearer_auth(TOKEN);
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

pub fn event_id(n: usize) -> String {
    format!("faults-{n:05}")
}

pub fn id_number(id: &str) -> Option<usize> {
    id.strip_prefix("faults-")?.parse().ok()
}

/// The JSON event number `n` of a load on `keys` keys: key `k{n % keys}`, sequence
/// `n / keys` within its key.
fn event(n: usize, keys: usize) -> (String, String) {
    let key = format!("k{:02}", n % keys);
    let value = json!({
        "id": event_id(n),
        "type": "balance.extracted",
        "tenant": TENANT,
        "data": {"k": key, "seq": n / keys},
    });
    (key, value.to_string())
}

/// What the receiver got, folded: the first arrival of each event and what is wrong.
#[derive(Default)]
pub struct Tally {
    /// Event id → its first arrival.
    pub first: HashMap<String, Instant>,
    /// Requests in all (first arrivals and repeats).
    pub requests: usize,
    /// When the latest first arrival happened.
    pub last_new_at: Option<Instant>,
    /// First arrivals of a key out of sequence order.
    pub order_violations: Vec<String>,
    /// Events that arrived under different `webhook-id`s.
    pub id_changes: Vec<String>,
    pub undecodable: Vec<String>,
}

impl Tally {
    pub fn of(received: &[Received]) -> Tally {
        let mut t = Tally {
            requests: received.len(),
            ..Tally::default()
        };
        let mut webhook_ids: HashMap<String, String> = HashMap::new();
        let mut last_seq: HashMap<String, i64> = HashMap::new();
        for r in received {
            let body: Value = match serde_json::from_slice(&r.body) {
                Ok(v) => v,
                Err(e) => {
                    t.undecodable
                        .push(format!("{e}: {}", String::from_utf8_lossy(&r.body)));
                    continue;
                }
            };
            let (Some(id), Some(key), Some(seq)) = (
                body["event_id"].as_str(),
                body["data"]["k"].as_str(),
                body["data"]["seq"].as_i64(),
            ) else {
                t.undecodable.push(body.to_string());
                continue;
            };
            let webhook_id = r.header("webhook-id");
            match webhook_ids.get(id) {
                Some(known) if known != webhook_id => t
                    .id_changes
                    .push(format!("{id}: {known} then {webhook_id}")),
                Some(_) => {}
                None => {
                    webhook_ids.insert(id.to_owned(), webhook_id.to_owned());
                }
            }
            if t.first.contains_key(id) {
                continue;
            }
            t.first.insert(id.to_owned(), r.at);
            t.last_new_at = Some(r.at);
            let last = last_seq.entry(key.to_owned()).or_insert(-1);
            if seq <= *last {
                t.order_violations.push(format!(
                    "key {key}: seq {seq} first arrived after seq {last}"
                ));
            } else {
                *last = seq;
            }
        }
        t
    }

    /// How long after `since` the first event that had not arrived before it arrived.
    pub fn first_new_after(&self, since: Instant) -> Option<Duration> {
        self.first
            .values()
            .filter(|at| **at >= since)
            .min()
            .map(|at| at.duration_since(since))
    }

    /// The longest time after `since` without a new event arriving (from `since` to the first
    /// new arrival, and between consecutive new arrivals).
    pub fn longest_pause_after(&self, since: Instant) -> Duration {
        let mut times: Vec<Instant> = self
            .first
            .values()
            .copied()
            .filter(|at| *at >= since)
            .collect();
        times.sort();
        let mut prev = since;
        let mut longest = Duration::ZERO;
        for at in times {
            longest = longest.max(at.duration_since(prev));
            prev = at;
        }
        longest
    }
}

/// A publisher of `total` events in two halves, at a steady rate, with a producer that keeps
/// every record until Kafka takes it (idempotent, so retries across an outage keep each key's
/// order and add no duplicates). The second half starts when released, and never before the
/// first half is enqueued, so each key's events are enqueued in sequence order.
pub struct Load {
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
    gate: Option<tokio::sync::oneshot::Sender<()>>,
    enqueued: Arc<AtomicUsize>,
    acked: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    producer: FutureProducer,
}

impl Load {
    /// `total` events on [`KEYS`] keys.
    pub fn start(bootstrap: &str, topic: &str, total: usize, per_second: u32) -> Load {
        Self::start_keys(bootstrap, topic, total, per_second, KEYS)
    }

    /// `total` events on `keys` keys.
    pub fn start_keys(
        bootstrap: &str,
        topic: &str,
        total: usize,
        per_second: u32,
        keys: usize,
    ) -> Load {
        let plain = Config {
            kafka_bootstrap: bootstrap.to_owned(),
            ..Config::default()
        };
        let producer: FutureProducer = hookline_kafka::client_config(&plain)
            .expect("client settings")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // Longer than any outage a test makes: records wait for the broker to return.
            .set("message.timeout.ms", "600000")
            .set("reconnect.backoff.max.ms", "1000")
            .create()
            .expect("test producer");
        let (gate, opened) = tokio::sync::oneshot::channel::<()>();
        let enqueued = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(publish(
            producer.clone(),
            topic.to_owned(),
            (total, keys),
            per_second,
            opened,
            [enqueued.clone(), acked.clone(), failed.clone()],
        ));
        Load {
            task: Some(task),
            gate: Some(gate),
            enqueued,
            acked,
            failed,
            producer,
        }
    }

    /// Lets the second half go.
    pub fn release_second_half(&mut self) {
        if let Some(gate) = self.gate.take() {
            let _ = gate.send(());
        }
    }

    pub fn enqueued(&self) -> usize {
        self.enqueued.load(Ordering::Relaxed)
    }
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits until Kafka acknowledged every event; panics on a failed publish.
    pub async fn finish(&mut self) {
        self.release_second_half();
        if let Some(task) = self.task.take() {
            task.await
                .expect("publisher task")
                .unwrap_or_else(|e| panic!("publishing: {e}"));
        }
    }

    /// The id of the broker leading `partition` of `topic`, from the cluster's metadata.
    pub async fn leader(&self, topic: &str, partition: i32) -> i32 {
        let producer = self.producer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let meta = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .expect("metadata");
            meta.topics()[0]
                .partitions()
                .iter()
                .find(|p| p.id() == partition)
                .unwrap_or_else(|| panic!("{topic} has no partition {partition}"))
                .leader()
        })
        .await
        .expect("metadata task")
    }

    /// The partitions of `topic` that hold records.
    pub async fn partitions_with_records(&self, topic: &str) -> Vec<i32> {
        let producer = self.producer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let client = producer.client();
            let meta = client
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .expect("metadata");
            meta.topics()[0]
                .partitions()
                .iter()
                .map(|p| p.id())
                .filter(|p| {
                    client
                        .fetch_watermarks(&topic, *p, Duration::from_secs(10))
                        .is_ok_and(|(low, high)| high > low)
                })
                .collect()
        })
        .await
        .expect("watermarks task")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn publish(
    producer: FutureProducer,
    topic: String,
    (total, keys): (usize, usize),
    per_second: u32,
    opened: tokio::sync::oneshot::Receiver<()>,
    [enqueued, acked, failed]: [Arc<AtomicUsize>; 3],
) -> Result<(), String> {
    let mut pending = Vec::with_capacity(total);
    let mut opened = Some(opened);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    for n in 0..total {
        if n == total / 2 {
            if let Some(gate) = opened.take() {
                let _ = gate.await;
            }
            tick.reset();
        }
        tick.tick().await;
        let (key, value) = event(n, keys);
        let record = FutureRecord::to(&topic).key(&key).payload(&value);
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| format!("enqueue event {n}: {e}"))?;
        enqueued.fetch_add(1, Ordering::Relaxed);
        let (acked, failed) = (acked.clone(), failed.clone());
        pending.push(tokio::spawn(async move {
            match delivery.await {
                Ok(Ok(_)) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Ok(Err((e, _))) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    Err(format!("event {n}: {e}"))
                }
                Err(_) => Err(format!("event {n}: the producer went away")),
            }
        }));
    }
    for result in futures::future::join_all(pending).await {
        result.map_err(|e| format!("delivery report task: {e}"))??;
    }
    Ok(())
}

/// Every record of `topic` up to its end as of this call (read_uncommitted: the retry lane and
/// the parked states are written without transactions), as (partition, key, value).
pub async fn read_to_end(config: &Config, topic: &str) -> Vec<(i32, Vec<u8>, Vec<u8>)> {
    use hookline_kafka::rdkafka::consumer::{BaseConsumer, Consumer as _};
    use hookline_kafka::rdkafka::message::Message as _;
    use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
    let config = config.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = hookline_kafka::client_config(&config)
            .expect("client settings")
            .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let meta = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for p in meta.topics()[0].partitions() {
            let (_, high) = consumer
                .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            if high > 0 {
                tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)
                    .expect("partition");
                ends.insert(p.id(), high);
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return out;
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(120);
        // The position, not the last record: a transaction's control record ends a partition
        // of `deliveries` and is never handed out.
        let at_end = |consumer: &BaseConsumer| {
            let pos = consumer.position().expect("position");
            ends.iter().all(|(p, high)| {
                pos.find_partition(&topic, *p)
                    .and_then(|e| e.offset().to_raw())
                    .is_some_and(|o| o >= *high)
            })
        };
        while !at_end(&consumer) {
            assert!(Instant::now() < deadline, "reading {topic} timed out");
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push((
                    m.partition(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
        }
        out
    })
    .await
    .expect("reader task")
}
