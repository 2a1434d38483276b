//! Exactly-once fan-out: a router running as its own process is SIGKILLed several times while
//! events arrive, a second router joins and dies (rebalances), and a frozen router is
//! replaced by a new process with its name and then thawed (fencing); a `read_committed`
//! reader of `deliveries` then sees every expected (event, subscription) delivery id once,
//! and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hookline_config::Config;
use hookline_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use hookline_proto::Message as _;
use hookline_proto::v1::{DeliveryJob, Subscription};
use serde_json::json;

use super::read_to_end;
use crate::support::{TENANT_A, TENANT_B, bootstrap, client};

const EVENTS: usize = 3000;
const KILLS: usize = 4;
const WIDE: usize = 20;
const TYPES: [&str; 4] = [
    "ORDER.CREATED",
    "ORDER.ITEM.SHIPPED",
    "PAYMENT.SETTLED",
    "USER.LOGGED_IN",
];

fn config() -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let t = |name: &str| format!("t{id}.{name}");
    Config {
        kafka_bootstrap: bootstrap(),
        topic_subscriptions: t("subscriptions"),
        topic_secrets: t("secrets"),
        topic_events: t("events"),
        topic_balances: t("balances"),
        topic_extracts: t("extracts"),
        topic_deliveries: t("deliveries"),
        topic_attempts: t("attempts"),
        topic_dead_letters: t("dead-letters"),
        topic_quarantine: t("quarantine"),
        topic_replays: t("replays"),
        ops_index_dir: std::env::temp_dir()
            .join(format!("hookline-ops-index-t{id}"))
            .display()
            .to_string(),
        group_prefix: format!("t{id}"),
        topic_partitions: 3,
        ..Config::default()
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
}

struct RouterProcess {
    child: Child,
    port: u16,
}

impl RouterProcess {
    fn start(config: &Config, instance: &str) -> Self {
        let port = free_port();
        let child = Command::new(crate::support::process::binary("hookline-router"))
            .env("HOOKLINE_KAFKA_BOOTSTRAP", &config.kafka_bootstrap)
            .env("HOOKLINE_TOPIC_SUBSCRIPTIONS", &config.topic_subscriptions)
            .env("HOOKLINE_TOPIC_EVENTS", &config.topic_events)
            .env("HOOKLINE_TOPIC_DELIVERIES", &config.topic_deliveries)
            .env("HOOKLINE_TOPIC_QUARANTINE", &config.topic_quarantine)
            .env("HOOKLINE_GROUP_PREFIX", &config.group_prefix)
            .env("HOOKLINE_ROUTER_INSTANCE", instance)
            .env("HOOKLINE_ROUTER_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKLINE_CREATE_TOPICS", "false")
            .env("HOOKLINE_LOG_FORMAT", "pretty")
            .env("HOOKLINE_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the router process");
        RouterProcess { child, port }
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("router status") {
                panic!("the router process exited while starting: {status}");
            }
            if client()
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "router not ready in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sigkill(mut self) {
        // `Child::kill` sends SIGKILL on Unix: no shutdown code runs.
        self.child.kill().expect("SIGKILL the router");
        let status = self.child.wait().expect("reap the router");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "the router died of SIGKILL");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("send a signal");
        assert!(status.success(), "kill -{name}");
    }

    fn sigterm(mut self) {
        self.signal("TERM");
        let status = self.child.wait().expect("reap the router");
        assert!(status.success(), "the router stopped cleanly: {status}");
    }

    /// Waits for the process to end by itself; its exit status.
    async fn exited(mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("router status") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the fenced router still runs after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn subscription(id: &str, tenant: &str, enabled: bool, types: &[&str]) -> Subscription {
    Subscription {
        id: id.into(),
        tenant: tenant.into(),
        enabled,
        event_types: types.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    }
}

fn producer(config: &Config) -> FutureProducer {
    hookline_kafka::client_config(config)
        .expect("client settings")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("test producer")
}

async fn send(p: &FutureProducer, topic: &str, key: &str, value: &[u8]) {
    p.send(
        FutureRecord::to(topic).key(key).payload(value),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .expect("produce");
}

/// Records ever written to `deliveries`, committed or not.
fn deliveries_written(config: &Config) -> i64 {
    deliveries_end(config, "read_uncommitted")
}

/// The end of `deliveries` for a reader with `isolation`: the high watermarks, or for
/// `read_committed` the last stable offsets (held back by any open transaction).
fn deliveries_end(config: &Config, isolation: &str) -> i64 {
    let reader: BaseConsumer = hookline_kafka::client_config(config)
        .expect("client settings")
        .set("isolation.level", isolation)
        .create()
        .expect("watermark reader");
    (0..config.topic_partitions)
        .map(|p| {
            reader
                .fetch_watermarks(&config.topic_deliveries, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum()
}

/// Waits until some router writes to `deliveries` (for at most 15 s: with the publisher
/// done there may be nothing left to route, and a kill then still tests a restart).
async fn wait_for_production(config: &Config) {
    let start = std::time::Instant::now();
    let before = deliveries_written(config);
    let deadline = start + Duration::from_secs(15);
    while deliveries_written(config) <= before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "routing observed after {:?} ({} -> {} records)",
        start.elapsed(),
        before,
        deliveries_written(config)
    );
}

/// Freezes `router` (SIGSTOP) at a moment when a transaction with produced records is open,
/// trying for a while; true if it got one. The router stays frozen.
async fn freeze_inside_a_transaction(router: &RouterProcess, config: &Config) -> bool {
    for _ in 0..400 {
        router.signal("STOP");
        if deliveries_end(config, "read_committed") < deliveries_written(config) {
            return true;
        }
        router.signal("CONT");
        let ms = (uuid::Uuid::new_v4().as_u128() % 8) as u64;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    router.signal("STOP");
    false
}

/// Deliveries a `read_committed` reader sees, counted per delivery id.
fn committed_deliveries(config: &Config) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in read_to_end(
        &config.kafka_bootstrap,
        &config.topic_deliveries,
        "read_committed",
    ) {
        let job = DeliveryJob::decode(r.value.as_slice()).expect("a DeliveryJob");
        assert_eq!(
            r.key,
            job.subscription_id.as_bytes(),
            "keyed by subscription"
        );
        *seen.entry(job.delivery_id).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out_is_exactly_once_across_sigkills() {
    let config = config();
    hookline_kafka::ensure_topics(&config)
        .await
        .expect("create topics");
    let p = producer(&config);

    // Tenant A's events fan out widely, so transactions are large and a kill often lands
    // inside one.
    let wide = (0..WIDE).map(|k| subscription(&format!("s-a-wide-{k}"), TENANT_A, true, &["*"]));
    let subs: Vec<Subscription> = [
        subscription("s-a-all", TENANT_A, true, &["*"]),
        subscription("s-a-order", TENANT_A, true, &["ORDER.*"]),
        subscription("s-a-mixed", TENANT_A, true, &["ORDER.CREATED", "PAYMENT.*"]),
        subscription("s-a-off", TENANT_A, false, &["*"]),
        subscription("s-b-empty", TENANT_B, true, &[]),
        subscription("s-b-pay", TENANT_B, true, &["PAYMENT.SETTLED"]),
    ]
    .into_iter()
    .chain(wide)
    .collect();
    for s in &subs {
        send(&p, &config.topic_subscriptions, &s.id, &s.encode_to_vec()).await;
    }
    let events: Vec<(String, &str, &str)> = (0..EVENTS)
        .map(|i| {
            let tenant = if i % 2 == 0 { TENANT_A } else { TENANT_B };
            (format!("ev-{i}"), tenant, TYPES[i % 3 + (i / 7) % 2])
        })
        .collect();
    let expected: BTreeSet<String> = events
        .iter()
        .flat_map(|(id, tenant, kind)| {
            subs.iter()
                .filter(move |s| {
                    s.enabled
                        && s.tenant == *tenant
                        && hookline_routing::selects(&s.event_types, kind)
                })
                .map(move |s| hookline_events::delivery_id(id, &s.id))
        })
        .collect();
    assert!(
        expected.len() > EVENTS,
        "events fan out to several subscriptions"
    );

    // Events arrive all through the kills, in chunks, from another task.
    let publisher = {
        let p = p.clone();
        let topic = config.topic_events.clone();
        let events: Vec<(String, String, String)> = events
            .iter()
            .map(|(id, t, k)| (id.clone(), t.to_string(), k.to_string()))
            .collect();
        tokio::spawn(async move {
            // A steady trickle, so the router is nearly always inside a transaction.
            for chunk in events.chunks(10) {
                let sends = chunk.iter().enumerate().map(|(n, (id, tenant, kind))| {
                    let value = json!({"id": id, "type": kind, "tenant": tenant, "data": {"n": n}})
                        .to_string();
                    let (p, topic) = (p.clone(), topic.clone());
                    let key = format!("acct-{}", n % 17);
                    async move { send(&p, &topic, &key, value.as_bytes()).await }
                });
                futures::future::join_all(sends).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // A second instance shares the partitions until it is killed: its arrival revokes some of
    // the first one's partitions, and its death (once its session times out) hands them back.
    let mut second = RouterProcess::start(&config, "kill-test-b");
    second.wait_ready().await;
    let mut inside = 0;
    for k in 0..KILLS {
        let mut router = RouterProcess::start(&config, "kill-test");
        router.wait_ready().await;
        wait_for_production(&config).await;
        let caught = freeze_inside_a_transaction(&router, &config).await;
        inside += usize::from(caught);
        router.sigkill();
        eprintln!(
            "kill {}: SIGKILL, inside an open transaction: {caught}",
            k + 1
        );
        if k == 1 {
            second.sigkill();
            second = RouterProcess::start(&config, "kill-test-b");
            eprintln!("second instance killed and restarted");
        }
    }
    second.sigkill();

    // A zombie: frozen mid-work, replaced by a new process with its name, then thawed. The new
    // one fences it (transactional id and static membership); the zombie must stop without
    // committing anything.
    let mut zombie = RouterProcess::start(&config, "kill-test");
    zombie.wait_ready().await;
    wait_for_production(&config).await;
    let caught = freeze_inside_a_transaction(&zombie, &config).await;
    eprintln!("zombie frozen inside an open transaction: {caught}");
    let mut router = RouterProcess::start(&config, "kill-test");
    router.wait_ready().await;
    zombie.signal("CONT");
    let status = zombie.exited().await;
    assert!(
        !status.success(),
        "the fenced router stops with an error: {status}"
    );
    eprintln!("fenced router exited: {status}");
    publisher.await.expect("publisher");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let seen = committed_deliveries(&config);
        let total: usize = seen.values().sum();
        if total >= expected.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {total} of {} deliveries after 120 s",
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    router.sigterm();

    let seen = committed_deliveries(&config);
    let duplicates: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "duplicated deliveries: {duplicates:?}"
    );
    let got: BTreeSet<String> = seen.into_keys().collect();
    let missing: Vec<&String> = expected.difference(&got).collect();
    let unexpected: Vec<&String> = got.difference(&expected).collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(unexpected.is_empty(), "{} unexpected", unexpected.len());
    let raw = read_to_end(
        &config.kafka_bootstrap,
        &config.topic_deliveries,
        "read_uncommitted",
    )
    .len();
    eprintln!(
        "{} deliveries committed exactly once; {raw} records in the log including aborted \
         ones; {inside} of {KILLS} kills inside an open transaction",
        expected.len(),
    );
    assert!(
        inside == 0 || raw > expected.len(),
        "a kill inside an open transaction leaves aborted records in the log"
    );
}
