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

/// The running services; every one is SIGKILLed when this is dropped.
pub struct Services {
    procs: Vec<Process>,
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
        let mut services = Services { procs };
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
    }
}
