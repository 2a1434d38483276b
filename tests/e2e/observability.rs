//! Metrics end to end: a real Prometheus (Debian's package, unpacked by
//! `scripts/prometheus.sh`) scrapes `/metrics` on every service's port of a stack under a
//! small load; `promtool` accepts the alert rules, Prometheus loads and evaluates them; and
//! every PromQL expression of the Grafana dashboard and of the alert rules returns data
//! from that Prometheus. An alert expression is checked part by part: each operand of its
//! top-level `and`/`or`/`unless` and each side of a comparison that is not a plain number
//! (`x > 0.2` is checked as `x`), since the whole expression is empty while it does not fire.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::support::receiver::Receiver;
use crate::support::{Stack, TENANT_A, TOKEN_A, client};

/// Grafana's variables, as the test's Prometheus has them.
const NAMESPACE: &str = "hookline-e2e";
const RATE_INTERVAL: &str = "20s";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The folder holding `prometheus` and `promtool`: `HOOKLINE_PROMETHEUS_BIN` (set by
/// `scripts/test.sh`), else what `scripts/prometheus.sh` fetches.
fn prometheus_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("HOOKLINE_PROMETHEUS_BIN") {
        return PathBuf::from(dir);
    }
    let out = Command::new(repo().join("scripts/prometheus.sh"))
        .args(["-q", "ensure"])
        .output()
        .expect("run scripts/prometheus.sh");
    assert!(
        out.status.success(),
        "scripts/prometheus.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("a path");
    PathBuf::from(text.lines().last().expect("a path").trim())
}

/// A Prometheus server on a loopback port, stopped and its data removed on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://")
}

impl Prometheus {
    /// Scrapes every `(job, base URL)` each second with the alert rules loaded.
    fn start(bin: &Path, targets: &[(&str, &str)]) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "hookline-prometheus-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("prometheus folder");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n",
        );
        config += &format!(
            "  - {}\nscrape_configs:\n",
            repo().join("deploy/prometheus/alerts.yaml").display()
        );
        for (job, url) in targets {
            config += &format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{}\"]\n        labels: {{namespace: {NAMESPACE}, pod: {job}-0}}\n",
                host_port(url)
            );
        }
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(bin.join("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client().get(format!("{}/-/ready", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
                panic!("prometheus exited ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "prometheus not ready in 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let r = client()
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .expect("prometheus answers");
        let body: Value = r.json().await.expect("prometheus JSON");
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// Whether `expr` gives at least one sample with a number (not NaN) now.
    async fn has_data(&self, expr: &str) -> bool {
        let data = self.api("/api/v1/query", &[("query", expr)]).await;
        data["result"].as_array().is_some_and(|r| {
            r.iter().any(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| !v.is_nan())
            })
        })
    }
}

/// Splits `expr` at top-level (outside parentheses, brackets and braces) occurrences of any
/// of `words`, each standing alone between spaces.
fn split_top(expr: &str, words: &[&str]) -> Vec<String> {
    let (mut parts, mut current, mut depth, mut quoted) = (Vec::new(), String::new(), 0i32, false);
    let tokens: Vec<&str> = expr.split_inclusive(' ').collect();
    for token in tokens {
        let word = token.trim();
        if depth == 0 && !quoted && words.contains(&word) {
            parts.push(std::mem::take(&mut current));
            continue;
        }
        for c in token.chars() {
            match c {
                '"' => quoted = !quoted,
                '(' | '[' | '{' if !quoted => depth += 1,
                ')' | ']' | '}' if !quoted => depth -= 1,
                _ => {}
            }
        }
        current.push_str(token);
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The parts of an alert expression that must each return data (see the module doc).
fn checked_parts(expr: &str) -> Vec<String> {
    let expr = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    split_top(&expr, &["and", "or", "unless"])
        .into_iter()
        .flat_map(|operand| split_top(&operand, &[">", "<", "==", "!=", ">=", "<="]))
        .filter(|side| side.parse::<f64>().is_err())
        .collect()
}

fn dashboard_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/hookline.json"))
        .expect("read the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            exprs.push(
                expr.replace("$namespace", NAMESPACE)
                    .replace("$__rate_interval", RATE_INTERVAL),
            );
        }
    }
    exprs
}

/// Events for two subscriptions (one answers 200, one 500: dead letters), an undecodable
/// record now and then (quarantine), and API reads, until `stop`.
async fn load(stack: Arc<Stack>, stop: Arc<AtomicBool>) {
    let producer: FutureProducer = hookline_kafka::client_config(&stack.config)
        .expect("client settings")
        .create()
        .expect("producer");
    let topic = stack.config.topic_events.clone();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let payload = if n.is_multiple_of(20) {
            "not json".to_owned()
        } else {
            json!({"id": uuid::Uuid::new_v4().to_string(), "type": "ACCOUNT.UPDATED",
                   "tenant": TENANT_A, "data": {"n": n}})
            .to_string()
        };
        let key = format!("k{}", n % 4);
        let _ = producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await;
        if n.is_multiple_of(5) {
            let _ = client()
                .get(format!(
                    "{}/api/v1/event-deliveries/subscriptions",
                    stack.api
                ))
                .bearer_auth(TOKEN_A)
                .send()
                .await;
            let _ = client()
                .get(format!("{}/api/v1/extracts", stack.extracts))
                .bearer_auth(TOKEN_A)
                .send()
                .await;
            let _ = client()
                .get(format!(
                    "{}/api/v1/event-deliveries/dead-letters",
                    stack.dead_letters
                ))
                .bearer_auth(TOKEN_A)
                .send()
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_sees_every_panel_and_rule() {
    let bin = prometheus_bin();
    let rules = repo().join("deploy/prometheus/alerts.yaml");
    let checked = Command::new(bin.join("promtool"))
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("run promtool");
    assert!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // One attempt per delivery: the failing endpoint's deliveries are dead-lettered at once.
    let stack = Arc::new(Stack::start(|c| c.retry_schedule = "0s".into()).await);
    let healthy = Receiver::start(&[], 200).await;
    let failing = Receiver::start(&[], 500).await;
    stack
        .fynapse_subscription("healthy", &healthy.url, json!(["ACCOUNT.*"]))
        .await;
    stack
        .fynapse_subscription("failing", &failing.url, json!(["ACCOUNT.*"]))
        .await;

    // Every service serves Prometheus text on its port.
    let targets = [
        ("hookline-subscription-api", stack.api.as_str()),
        ("hookline-extract-producer", stack.extracts.as_str()),
        ("hookline-dead-letter", stack.dead_letters.as_str()),
        ("hookline-router", stack.router.as_str()),
        ("hookline-delivery-worker", stack.worker.as_str()),
    ];
    for (job, url) in targets {
        let r = client()
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status(), 200, "{job} /metrics");
        let text = r.text().await.unwrap();
        assert!(text.contains("# TYPE process_cpu_seconds_total"), "{job}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(stack.clone(), stop.clone()));
    let mut prometheus = Prometheus::start(&bin, &targets);
    prometheus.wait_ready().await;

    // Every rule loaded; every expression of the rules and of the dashboard returns data.
    let groups = prometheus.api("/api/v1/rules", &[]).await;
    let rule_list: Vec<Value> = groups["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(rule_list.len(), 7, "every rule of alerts.yaml loaded");
    let mut exprs = dashboard_expressions();
    for rule in &rule_list {
        exprs.extend(checked_parts(rule["query"].as_str().expect("query")));
    }
    // And what the load did is counted, not only announced at zero.
    let group = |name: &str| format!("{}.{name}", stack.config.group_prefix);
    for positive in [
        "sum(hookline_events_routed_total)".to_owned(),
        "sum(hookline_events_quarantined_total)".to_owned(),
        "sum(hookline_deliveries_total{outcome=\"delivered\"})".to_owned(),
        "sum(hookline_deliveries_total{outcome=\"dead_lettered\"})".to_owned(),
        "sum(hookline_delivery_attempts_total{status_class=\"5xx\"})".to_owned(),
        "sum(http_client_request_duration_seconds_count)".to_owned(),
        "sum(hookline_router_fanout_count)".to_owned(),
        "sum(http_server_request_duration_seconds_count{http_route=\"/api/v1/event-deliveries/subscriptions\"})".to_owned(),
        format!("count(hookline_consumer_lag{{group=\"{}\"}})", group("router")),
        format!("count(hookline_consumer_lag{{group=\"{}\"}})", group("delivery-worker")),
    ] {
        exprs.push(format!("({positive}) > 0"));
    }
    let mut missing = exprs.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !missing.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for expr in missing {
            if !prometheus.has_data(&expr).await {
                still.push(expr);
            }
        }
        missing = still;
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Every rule evaluates without error.
    let groups = prometheus.api("/api/v1/rules", &[]).await;
    let unhealthy: Vec<String> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["health"] != "ok")
        .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect();
    // The dashboard's namespace variable finds the stack.
    let namespaces = prometheus
        .api(
            "/api/v1/label/namespace/values",
            &[("match[]", "process_cpu_seconds_total")],
        )
        .await;
    let up = prometheus
        .api(
            "/api/v1/query",
            &[("query", "sum(up{job=~\"hookline-.*\"})")],
        )
        .await;

    eprintln!("{} expressions checked against Prometheus", exprs.len());
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    drop(prometheus);
    assert!(
        missing.is_empty(),
        "{} of {} expressions returned no data:\n{}",
        missing.len(),
        exprs.len(),
        missing.join("\n")
    );
    assert!(unhealthy.is_empty(), "rules not evaluated: {unhealthy:?}");
    assert!(
        namespaces
            .as_array()
            .is_some_and(|v| v.contains(&json!(NAMESPACE))),
        "{namespaces}"
    );
    assert_eq!(
        up["result"][0]["value"][1], "5",
        "every service scraped: {up}"
    );
    assert!(!healthy.received().is_empty() && !failing.received().is_empty());
    Arc::try_unwrap(stack)
        .ok()
        .expect("the load has stopped")
        .stop()
        .await;
}

#[test]
fn alert_expressions_are_checked_by_their_parts() {
    assert_eq!(
        checked_parts("sum(rate(a[5m])) > 3 * sum(rate(a[1h]))\nand sum(increase(a[5m])) > 10"),
        vec![
            "sum(rate(a[5m]))",
            "3 * sum(rate(a[1h]))",
            "sum(increase(a[5m]))"
        ]
    );
    assert_eq!(
        checked_parts("sum(x) > 0 and (sum(y) or vector(0)) == 0"),
        vec!["sum(x)", "(sum(y) or vector(0))"]
    );
    assert_eq!(
        checked_parts("up{job=~\"h-.*\"} == 0"),
        vec!["up{job=~\"h-.*\"}"]
    );
}
