//! The five Hookline services as real processes, configured through `HOOKLINE_` environment
//! variables, each writing its log to a file (printed when a test fails).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hookline_config::Config;

pub use crate::binaries::{binary, env_of};

/// The five services: binary name and the address its `/readyz` answers on.
pub fn services(config: &Config) -> [(&'static str, std::net::SocketAddr); 5] {
    [
        ("hookline-subscription-api", config.api_listen),
        ("hookline-extract-producer", config.extracts_listen),
        ("hookline-dead-letter", config.dead_letters_listen),
        ("hookline-router", config.router_listen),
        ("hookline-delivery-worker", config.worker_listen),
    ]
}

struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// How it ended, once it did.
    exit: Option<ExitStatus>,
}

/// The running services; every one is SIGKILLed when this is dropped, and their operations
/// index removed.
pub struct Services {
    procs: Vec<Process>,
    ops_index_dir: std::path::PathBuf,
}

impl Services {
    /// Starts every service with `config`, logs in `log_dir/<binary>.log`, and waits until
    /// each answers `/readyz`.
    pub async fn start(config: &Config, log_dir: &Path) -> Services {
        std::fs::create_dir_all(log_dir).expect("create the log folder");
        let mut procs = Vec::new();
        for (name, _) in services(config) {
            let log = log_dir.join(format!("{name}.log"));
            let file = File::create(&log).expect("create a service log");
            let child = Command::new(binary(name))
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("NO_COLOR", "1")
                .envs(env_of(config))
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("log file handle"))
                .stderr(file)
                .spawn()
                .unwrap_or_else(|e| panic!("start {name}: {e}"));
            procs.push(Process {
                name,
                child,
                log,
                exit: None,
            });
        }
        let mut services = Services {
            procs,
            ops_index_dir: config.ops_index_dir.clone().into(),
        };
        let client = super::client();
        let deadline = Instant::now() + Duration::from_secs(90);
        for (name, addr) in self::services(config) {
            let url = format!("http://{addr}/readyz");
            loop {
                let exited = services.exited();
                assert!(
                    exited.is_empty(),
                    "{exited:?} exited while starting\n{}",
                    services.log_tails(40)
                );
                if client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} not ready within 90 s\n{}",
                    services.log_tails(40)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        services
    }

    /// The services that have exited so far, with how they ended.
    pub fn exited(&mut self) -> Vec<String> {
        for p in &mut self.procs {
            if p.exit.is_none() {
                p.exit = p.child.try_wait().expect("service status");
            }
        }
        self.procs
            .iter()
            .filter_map(|p| p.exit.map(|status| format!("{} ({status})", p.name)))
            .collect()
    }

    /// The last `lines` lines of every service's log, each under its name.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let state = match p.exit {
                Some(status) => format!("exited: {status}"),
                None => "running".to_owned(),
            };
            out.push_str(&format!(
                "----- {} ({state}), last {lines} lines of {} -----\n{}\n",
                p.name,
                p.log.display(),
                super::tail(&p.log, lines)
            ));
        }
        out
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for p in &mut self.procs {
            // `Child::kill` is SIGKILL; the test's brokers go right after.
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.ops_index_dir);
    }
}

/// One service process that a test stops and starts again (an extra delivery worker, a second
/// router): SIGKILL, or SIGTERM and a wait for it to leave, then started anew with the same
/// configuration, its log appended to the same file.
pub struct Proc {
    pub label: String,
    binary: &'static str,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// Exits the test did not cause, with how they ended.
    crashes: Vec<String>,
}

impl Proc {
    /// Starts `binary` as `label` with `config`, its log in `log_dir/<label>.log`.
    pub fn start(label: &str, binary: &'static str, config: &Config, log_dir: &Path) -> Proc {
        std::fs::create_dir_all(log_dir).expect("create the log folder");
        let mut p = Proc {
            label: label.to_owned(),
            binary,
            env: env_of(config),
            log: log_dir.join(format!("{label}.log")),
            child: None,
            crashes: Vec::new(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let file = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open a service log");
        let child = Command::new(binary(self.binary))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.label));
        self.child = Some(child);
    }

    /// Starts it again after [`Proc::kill`] or [`Proc::terminate`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.label);
        self.spawn();
    }

    /// SIGKILL, and waits until it is gone.
    pub fn kill(&mut self) {
        self.note_exit();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits until it has left (SIGKILL after `within`). Whether it left by
    /// itself.
    pub async fn terminate(&mut self, within: Duration) -> bool {
        self.note_exit();
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Records an exit that the test did not cause.
    fn note_exit(&mut self) {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.crashes.push(format!("{} ({status})", self.label));
            self.child = None;
        }
    }

    /// The exits the test did not cause, so far.
    pub fn crashes(&mut self) -> Vec<String> {
        self.note_exit();
        self.crashes.clone()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "----- {} ({}), last {lines} lines of {} -----\n{}\n",
            self.label,
            if self.child.is_some() {
                "running"
            } else {
                "stopped"
            },
            self.log.display(),
            super::tail(&self.log, lines)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
