//! The security suite's own pieces: a SASL_SSL broker started by `scripts/kafka.sh`
//! (`--security sasl_ssl`, a folder under `.hookline/`, killed and removed on drop) whose
//! ACLs the tests set from the table (`hookline_kafka::acl`) for their own topic names, a
//! test configuration that connects to it with each service as its own principal
//! (`hookline-{service}`), `hookline all` or one service as a process with its log in a
//! file, and a real HTTP receiver. `HOOKLINE_SECURITY_KEEP=1` keeps the broker's
//! folder (its log, the services' logs) until a later run without it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use base64::Engine as _;
use hookline_config::Config;

use crate::binaries::{binary, env_of};

pub const TOKEN: &str = "security-suite-editor-token";
pub const TENANT: &str = "tenant_sec";

/// The repository root (`tests/` is this crate's folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

const DIR_PREFIX: &str = "security-";

/// A single-node Kafka whose client listener speaks SASL_SSL with ACLs enforced.
pub struct SecuredKafka {
    dir: PathBuf,
    pub bootstrap: String,
}

impl SecuredKafka {
    pub async fn start() -> SecuredKafka {
        let state = repo_root().join(".hookline");
        std::fs::create_dir_all(&state).expect("create .hookline");
        if std::env::var_os("HOOKLINE_SECURITY_KEEP").is_none() {
            remove_abandoned(&state);
        }
        let dir = state.join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        let mut kafka = SecuredKafka {
            dir,
            bootstrap: String::new(),
        };
        kafka.bootstrap = kafka
            .script(&["start", "--security", "sasl_ssl"])
            .await
            .unwrap_or_else(|e| panic!("starting a SASL_SSL Kafka: {e}"));
        kafka
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A value of the broker's `client.env` (what an outside Hookline client sets).
    pub fn client_env(&self, key: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join("client.env")).expect("client.env");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} is not in client.env"))
            .to_owned()
    }

    /// The password kafka.sh made for `user` (admin or a principal's `hookline-...`).
    pub fn password(&self, user: &str) -> String {
        std::fs::read_to_string(self.password_file(user))
            .expect("password file")
            .trim()
            .to_owned()
    }

    pub fn password_file(&self, user: &str) -> PathBuf {
        self.dir.join("secrets").join(format!("{user}.password"))
    }

    /// Sets the SCRAM-SHA-512 password of `user` to the contents of `file`, as the broker's
    /// admin.
    pub async fn scram_user(&self, user: &str, file: &Path) {
        let file = file.to_string_lossy().into_owned();
        self.script(&[
            "scram-user",
            "--user",
            user,
            "--password-file",
            &file,
            "--mechanism",
            "SCRAM-SHA-512",
        ])
        .await
        .unwrap_or_else(|e| panic!("scram-user {user}: {e}"));
    }

    /// Makes the broker's ACLs exactly the table's for `configs` (their topic names and group
    /// prefixes), as `make acls` does for the local stack.
    pub async fn apply_acls(&self, configs: &[&Config]) {
        let text: String = configs
            .iter()
            .map(|c| hookline_kafka::acl::render_acl_file(c))
            .collect();
        let file = self.dir.join("test-acls.txt");
        std::fs::write(&file, text).expect("write the ACL file");
        let file = file.to_string_lossy().into_owned();
        self.script(&["acls", "--file", &file])
            .await
            .unwrap_or_else(|e| panic!("applying the ACLs: {e}"));
    }

    /// Stops the broker and starts it again on its ports (its TLS files read anew).
    pub async fn restart(&self) {
        self.script(&["stop"])
            .await
            .unwrap_or_else(|e| panic!("stopping the broker: {e}"));
        self.script(&["start"])
            .await
            .unwrap_or_else(|e| panic!("starting the broker again: {e}"));
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.join("kafka.log"), lines)
    }

    async fn script(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(repo_root().join("scripts/kafka.sh"));
        cmd.arg("-q")
            .arg(args[0])
            .arg("--dir")
            .arg(&self.dir)
            .args(&args[1..])
            .env("HOOKLINE_KAFKA_OWNER_PID", std::process::id().to_string());
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("kafka.sh task")
            .map_err(|e| format!("cannot run scripts/kafka.sh: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "scripts/kafka.sh {} failed ({}):\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for SecuredKafka {
    fn drop(&mut self) {
        if std::env::var_os("HOOKLINE_SECURITY_KEEP").is_some() {
            let _ = Command::new(repo_root().join("scripts/kafka.sh"))
                .args(["-q", "kill", "--dir"])
                .arg(&self.dir)
                .output();
            eprintln!("HOOKLINE_SECURITY_KEEP: kept {}", self.dir.display());
        } else {
            kill_and_remove(&self.dir);
        }
    }
}

fn kill_and_remove(dir: &Path) {
    let _ = Command::new(repo_root().join("scripts/kafka.sh"))
        .args(["-q", "kill", "--dir"])
        .arg(dir)
        .output();
    let _ = std::fs::remove_dir_all(dir);
}

/// Removes broker folders of earlier runs whose test process is gone.
fn remove_abandoned(state: &Path) {
    let Ok(entries) = std::fs::read_dir(state) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            kill_and_remove(&entry.path());
        }
    }
}

fn free_addrs<const N: usize>() -> [std::net::SocketAddr; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("address"))
}

/// [`config`] with each service as its own principal: user `hookline-{service}`, password in
/// `{secrets}/hookline-{service}.password` (`secrets`: kafka.sh's folder of passwords, or
/// another with the same file names).
pub fn per_service_config(kafka: &SecuredKafka, secrets: &Path) -> Config {
    config(
        kafka,
        "hookline-{service}",
        &secrets.join("hookline-{service}.password"),
    )
}

/// A configuration of topics, groups and ports of its own that connects to `kafka` over
/// SASL_SSL with SCRAM-SHA-512 as `user`, its password read from `password_file`.
pub fn config(kafka: &SecuredKafka, user: &str, password_file: &Path) -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let t = |name: &str| format!("s{id}.{name}");
    let [api, extracts, dead_letters, router, worker] = free_addrs::<5>();
    let key: Vec<u8> = uuid::Uuid::new_v4()
        .into_bytes()
        .into_iter()
        .chain(uuid::Uuid::new_v4().into_bytes())
        .collect();
    let config = Config {
        kafka_bootstrap: kafka.bootstrap.clone(),
        kafka_security_protocol: kafka.client_env("HOOKLINE_KAFKA_SECURITY_PROTOCOL"),
        kafka_sasl_mechanism: kafka.client_env("HOOKLINE_KAFKA_SASL_MECHANISM"),
        kafka_sasl_username: user.to_owned(),
        kafka_sasl_password_file: password_file.to_string_lossy().into_owned(),
        kafka_ssl_ca_file: kafka.client_env("HOOKLINE_KAFKA_SSL_CA_FILE"),
        // Reconnect within 2 s (librdkafka's default backs off up to 10 s): the recovery
        // is the same, the test shorter.
        kafka_properties: "reconnect.backoff.max.ms=2000".into(),
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
            .join(format!("hookline-ops-index-s{id}"))
            .display()
            .to_string(),
        group_prefix: format!("s{id}"),
        router_instance: format!("s{id}-router-0"),
        create_topics: false,
        topic_partitions: 2,
        api_listen: api,
        extracts_listen: extracts,
        dead_letters_listen: dead_letters,
        router_listen: router,
        worker_listen: worker,
        tokens: format!("{TOKEN}={TENANT}:editor"),
        master_key: base64::engine::general_purpose::STANDARD.encode(key),
        retry_schedule: "0s,1s,5s".into(),
        retry_jitter: 0.0,
        egress_allow: "127.0.0.1/32".into(),
        log_format: "json".into(),
        log_level: "info".into(),
        shutdown_grace: "2s".into(),
        ..Config::default()
    };
    config.validate().expect("test configuration is valid");
    config
}

/// The five services' health addresses.
pub fn health_addrs(config: &Config) -> [(&'static str, std::net::SocketAddr); 5] {
    [
        ("subscription-api", config.api_listen),
        ("extract-producer", config.extracts_listen),
        ("dead-letter", config.dead_letters_listen),
        ("router", config.router_listen),
        ("delivery-worker", config.worker_listen),
    ]
}

/// `hookline all` (every service in one process) with `config`, its log in `log`;
/// SIGKILLed on drop.
pub struct Hookline {
    child: Mutex<Child>,
    pub log: PathBuf,
}

impl Hookline {
    pub fn start(config: &Config, log: PathBuf) -> Hookline {
        Self::start_binary("hookline", &["all"], config, log)
    }

    /// The service binary `name` (e.g. `hookline-subscription-api`) with `args`.
    pub fn start_binary(name: &str, args: &[&str], config: &Config, log: PathBuf) -> Hookline {
        let file = std::fs::File::create(&log).expect("create the service log");
        let child = Command::new(binary(name))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .envs(env_of(config))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Hookline {
            child: Mutex::new(child),
            log,
        }
    }

    /// Panics (with its log) if the process has exited.
    pub fn assert_running(&self) {
        let status = self
            .child
            .lock()
            .unwrap()
            .try_wait()
            .expect("process status");
        if let Some(status) = status {
            panic!(
                "the service process exited ({status}):\n{}",
                tail(&self.log, 60)
            );
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Hookline {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// `GET url`: status and body text (status 0 when nothing answers).
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client.get(url).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Polls `check` every 100 ms until it gives `Some`, or panics after `secs` with `what`
/// and `context()`.
pub async fn wait_for<T, F, Fut>(
    secs: u64,
    what: &str,
    mut check: F,
    context: impl Fn() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs} s\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One request as received.
#[derive(Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP receiver on a loopback port that answers 200 to every POST.
pub struct Receiver {
    pub url: String,
    log: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/hook",
                post(
                    |State(log): State<Arc<Mutex<Vec<Received>>>>,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        log.lock().unwrap().push(Received { headers, body });
                        "ok"
                    },
                ),
            )
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, log, task }
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
