//! The stack under test: topics with names unique to this run, then each of the five
//! services as its own process (so CPU and memory are measured per service), configured
//! by `HOOKLINE_` environment variables, logs in the results folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use rand::Rng as _;

use crate::procstat::Watched;

/// Service binaries, with the name each has in the report.
const SERVICES: [(&str, &str); 5] = [
    ("subscription-api", "hookline-subscription-api"),
    ("extract-producer", "hookline-extract-producer"),
    ("router", "hookline-router"),
    ("delivery-worker", "hookline-delivery-worker"),
    ("dead-letter", "hookline-dead-letter"),
];

/// Topic settings and their suffix; every topic gets the run's prefix.
const TOPICS: [&str; 17] = [
    "subscriptions",
    "applications",
    "messages",
    "secrets",
    "events",
    "balances",
    "extracts",
    "deliveries",
    "attempts",
    "dead_letters",
    "quarantine",
    "claims",
    "event_types",
    "subscription_commands",
    "retry_lane",
    "parked",
    "replays",
];

pub struct StackOptions<'a> {
    pub bin_dir: &'a Path,
    pub log_dir: &'a Path,
    pub bootstrap: &'a str,
    pub run_id: &'a str,
    pub tenants: &'a [&'a str],
    /// Extra `HOOKLINE_` settings (retry schedule, ...), applied last.
    pub settings: &'a [(String, String)],
    /// One service to profile (`make profile`).
    pub profile: Option<&'a Profile>,
}

/// How `make profile` looks at one service: `perf` samples it (attached once it is up, so
/// its CPU figures stay its own), `callgrind` runs it under valgrind from the start
/// (instruction counts are repeatable on a busy machine; about 50 times slower).
#[derive(Clone, Debug)]
pub struct Profile {
    pub service: String,
    pub tool: String,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (service, tool) = s.split_once(':').unwrap_or((s, "perf"));
        if !SERVICES.iter().any(|(n, _)| *n == service) {
            return Err(format!(
                "unknown service {service}; one of {:?}",
                SERVICES.map(|(n, _)| n)
            ));
        }
        if !matches!(tool, "perf" | "callgrind") {
            return Err(format!("unknown tool {tool}: perf or callgrind"));
        }
        Ok(Profile {
            service: service.to_owned(),
            tool: tool.to_owned(),
        })
    }
}

pub struct Stack {
    pub env: Vec<(String, String)>,
    children: Vec<(String, Child)>,
    pub api_url: String,
    pub extracts_url: String,
    pub tokens: HashMap<String, String>,
    /// An admin's token (registers the bench's event types in the catalog).
    pub admin_token: String,
    /// `perf record` attached to the profiled service, and the files it and the report go to.
    profiler: Option<(Child, PathBuf)>,
    log_dir: PathBuf,
}

fn token() -> String {
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::File::create(dir.join(format!("{name}.log")))?)
}

fn self_env(env: &[(String, String)]) -> impl Iterator<Item = (&String, &String)> {
    env.iter().map(|(k, v)| (k, v))
}

impl Stack {
    pub async fn start(opts: StackOptions<'_>) -> anyhow::Result<Stack> {
        let ports = free_ports(5)?;
        let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
        let tokens: HashMap<String, String> = opts
            .tenants
            .iter()
            .map(|t| (t.to_string(), token()))
            .collect();
        let admin_token = token();
        let token_list: Vec<String> = tokens
            .iter()
            .map(|(tenant, tok)| format!("{tok}={tenant}:editor"))
            .chain([format!("{admin_token}=bench-ops:admin")])
            .collect();
        let mut master = [0u8; 32];
        rand::thread_rng().fill(&mut master);
        let mut env: Vec<(String, String)> = vec![
            ("HOOKLINE_KAFKA_BOOTSTRAP".into(), opts.bootstrap.into()),
            ("HOOKLINE_GROUP_PREFIX".into(), opts.run_id.into()),
            ("HOOKLINE_ROUTER_INSTANCE".into(), opts.run_id.into()),
            ("HOOKLINE_API_LISTEN".into(), addr(0)),
            ("HOOKLINE_EXTRACTS_LISTEN".into(), addr(1)),
            ("HOOKLINE_DEAD_LETTERS_LISTEN".into(), addr(2)),
            ("HOOKLINE_ROUTER_LISTEN".into(), addr(3)),
            ("HOOKLINE_WORKER_LISTEN".into(), addr(4)),
            ("HOOKLINE_TOKENS".into(), token_list.join(";")),
            (
                "HOOKLINE_MASTER_KEY".into(),
                base64::engine::general_purpose::STANDARD.encode(master),
            ),
            // The receiver listens on loopback, which the egress guard refuses unless allowed.
            ("HOOKLINE_EGRESS_ALLOW".into(), "127.0.0.1/32".into()),
            ("HOOKLINE_LOG_FORMAT".into(), "json".into()),
            ("HOOKLINE_LOG_LEVEL".into(), "warn".into()),
            // The operations service's index, beside the run's logs.
            (
                "HOOKLINE_OPS_INDEX_DIR".into(),
                opts.log_dir.join("ops-index").display().to_string(),
            ),
        ];
        for t in TOPICS {
            env.push((
                format!("HOOKLINE_TOPIC_{}", t.to_uppercase()),
                format!("{}.{}", opts.run_id, t.replace('_', "-")),
            ));
        }
        env.extend(opts.settings.iter().cloned());
        let mut stack = Stack {
            env,
            children: Vec::new(),
            api_url: format!("http://{}", addr(0)),
            extracts_url: format!("http://{}", addr(1)),
            tokens,
            admin_token,
            profiler: None,
            log_dir: opts.log_dir.to_path_buf(),
        };
        let topics = stack
            .command(opts.bin_dir, "hookline", opts.log_dir, "topics")?
            .arg("topics")
            .status()
            .context("running `hookline topics`")?;
        if !topics.success() {
            bail!(
                "`hookline topics` failed (log in {})",
                opts.log_dir.display()
            );
        }
        for (name, bin) in SERVICES {
            let mut cmd = stack.command(opts.bin_dir, bin, opts.log_dir, name)?;
            if let Some(p) = opts
                .profile
                .filter(|p| p.service == name && p.tool == "callgrind")
            {
                let out = opts.log_dir.join(format!("callgrind.{}.out", p.service));
                let mut wrapped = Command::new("valgrind");
                wrapped
                    .arg("--tool=callgrind")
                    .arg(format!("--callgrind-out-file={}", out.display()))
                    .arg(cmd.get_program())
                    .envs(self_env(&stack.env))
                    .stdin(Stdio::null())
                    .stdout(log_file(opts.log_dir, name)?)
                    .stderr(log_file(opts.log_dir, &format!("{name}.valgrind"))?);
                cmd = wrapped;
            }
            let child = cmd.spawn().with_context(|| format!("starting {bin}"))?;
            stack.children.push((name.to_owned(), child));
        }
        let client = reqwest::Client::builder().no_proxy().build()?;
        for i in 0..5 {
            stack.wait_ready(&client, &addr(i)).await?;
        }
        if let Some(p) = opts.profile.filter(|p| p.tool == "perf") {
            let pid = stack
                .children
                .iter()
                .find(|(n, _)| *n == p.service)
                .map(|(_, c)| c.id())
                .context("profiled service")?;
            let data = opts.log_dir.join(format!("perf.{}.data", p.service));
            let perf = Command::new("perf")
                .args(["record", "-F", "499", "-g", "-p", &pid.to_string(), "-o"])
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file(opts.log_dir, "perf")?)
                .spawn()
                .context("starting perf record (is perf installed?)")?;
            stack.profiler = Some((perf, data));
        }
        Ok(stack)
    }

    fn command(
        &self,
        bin_dir: &Path,
        bin: &str,
        log_dir: &Path,
        log: &str,
    ) -> anyhow::Result<Command> {
        let path: PathBuf = bin_dir.join(bin);
        if !path.is_file() {
            bail!(
                "{} is missing: build with `cargo build --release`",
                path.display()
            );
        }
        let out = std::fs::File::create(log_dir.join(format!("{log}.log")))?;
        let mut cmd = Command::new(path);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        Ok(cmd)
    }

    async fn wait_ready(&mut self, client: &reqwest::Client, addr: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            for (name, child) in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    bail!("{name} exited during start ({status}); see its log");
                }
            }
            if Instant::now() > deadline {
                bail!("{addr} not ready after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn value(&self, key: &str) -> &str {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    pub fn watched(&self) -> Vec<Watched> {
        self.children
            .iter()
            .map(|(name, child)| Watched {
                name: name.clone(),
                pid: child.id(),
            })
            .collect()
    }

    /// Which services have exited (they should not have).
    pub fn exited(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(name, child)| match child.try_wait() {
                Ok(Some(status)) => Some(format!("{name} ({status})")),
                _ => None,
            })
            .collect()
    }

    /// Ends `perf record` (SIGINT: it writes its data) and writes the top of its report to
    /// `profile.<service>.txt`; callgrind's output is annotated once its service stopped.
    fn finish_profiles(&mut self) {
        if let Some((mut perf, data)) = self.profiler.take() {
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
            let service = data
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("perf."))
                .and_then(|n| n.strip_suffix(".data"))
                .unwrap_or("service")
                .to_owned();
            let report = Command::new("perf")
                .args([
                    "report",
                    "--stdio",
                    "--no-children",
                    "-g",
                    "none",
                    "--sort",
                    "dso,symbol",
                    "--percent-limit",
                    "0.3",
                    "-i",
                ])
                .arg(&data)
                .stderr(Stdio::null())
                .output();
            if let Ok(out) = report {
                let _ = std::fs::write(
                    self.log_dir.join(format!("profile.{service}.txt")),
                    out.stdout,
                );
            }
        }
        let Ok(dir) = std::fs::read_dir(&self.log_dir) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(service) = name
                .strip_prefix("callgrind.")
                .and_then(|n| n.strip_suffix(".out"))
                && let Ok(out) = Command::new("callgrind_annotate")
                    .arg(entry.path())
                    .stderr(Stdio::null())
                    .output()
            {
                let _ = std::fs::write(
                    self.log_dir.join(format!("profile.{service}.txt")),
                    out.stdout,
                );
            }
        }
    }

    /// SIGTERM to every service, SIGKILL to those still running after 30 s.
    pub fn stop(&mut self) {
        for (_, child) in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for (_, child) in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let was_running = !self.children.is_empty();
        self.children.clear();
        if was_running {
            self.finish_profiles();
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}
