//! Services as real processes, for tests that kill them: the binary built by `make test`,
//! configured through `HOOKLINE_` environment variables from the test's [`Config`].

use std::process::{Child, Command, Stdio};

use hookline_config::Config;

pub use crate::binaries::{binary, env_of};

/// A service process, killed with SIGKILL when dropped.
pub struct Service {
    child: Child,
}

/// Numbers the log files of `HOOKLINE_TEST_LOGS=<folder>`.
static SPAWNED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Service {
    /// Starts binary `name` with `config`, `extra` environment on top.
    pub fn start(name: &str, config: &Config, extra: &[(&str, &str)]) -> Service {
        let mut cmd = Command::new(binary(name));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env_of(config))
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        // Services log to stdout; `HOOKLINE_TEST_LOGS=1` shows their logs, and
        // `HOOKLINE_TEST_LOGS=<folder>` writes one file per process there.
        let logs = std::env::var_os("HOOKLINE_TEST_LOGS").map(std::path::PathBuf::from);
        let file = logs.as_ref().filter(|p| p.is_dir()).map(|dir| {
            let n = SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!("{name}-{n}.log"));
            std::fs::File::create(&path).expect("create a service log file")
        });
        match (logs, file) {
            (_, Some(f)) => cmd.stdout(f),
            (Some(_), None) => cmd.stdout(Stdio::inherit()),
            (None, _) => cmd.stdout(Stdio::null()),
        };
        Service {
            child: cmd.spawn().expect("start service process"),
        }
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL after `secs`); returns whether
    /// it exited by itself, successfully.
    pub fn terminate(mut self, secs: u64) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !status.success() {
                    eprintln!(
                        "process {} exited after SIGTERM with {status}",
                        self.child.id()
                    );
                }
                return status.success();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        eprintln!(
            "process {} still running {secs} s after SIGTERM",
            self.child.id()
        );
        false
    }

    /// Still running (it has not exited on its own).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Peak resident memory (VmHWM) in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// SIGKILL, and reap it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
