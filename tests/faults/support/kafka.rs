//! Kafka brokers of the suite's own, through `scripts/kafka.sh`: one node or a cluster in a
//! folder under `.hookline/`, nodes killed with SIGKILL and started again on their ports, and
//! everything stopped and removed when the guard is dropped (also when the test panics;
//! `HOOKLINE_FAULTS_KEEP=1` keeps the folder, with the brokers' and services' logs, until a
//! later run without it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (`tests/` is this crate's folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Prefix of the suite's broker folders under `.hookline/`, followed by the test process id.
const DIR_PREFIX: &str = "faults-";

/// Brokers started by `scripts/kafka.sh` in a folder of their own; dropped = killed and removed.
pub struct Kafka {
    dir: PathBuf,
    brokers: usize,
    pub bootstrap: String,
}

impl Kafka {
    /// Starts `brokers` nodes (1: the single-node shape; more: a cluster whose internal topics
    /// have replication factor 3 and min.insync.replicas 2) and waits until they serve.
    pub async fn start(brokers: usize) -> Kafka {
        let state = repo_root().join(".hookline");
        std::fs::create_dir_all(&state).expect("create .hookline");
        if std::env::var_os("HOOKLINE_FAULTS_KEEP").is_none() {
            remove_abandoned(&state);
        }
        let dir = state.join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        // The guard exists before the first broker does: a failed start is cleaned up too.
        let mut kafka = Kafka {
            dir,
            brokers,
            bootstrap: String::new(),
        };
        let brokers_arg = brokers.to_string();
        kafka.bootstrap = kafka
            .script(&["start", "--brokers", &brokers_arg])
            .await
            .unwrap_or_else(|e| panic!("starting {brokers} Kafka node(s): {e}"));
        kafka
    }

    /// How many nodes there are.
    pub fn brokers(&self) -> usize {
        self.brokers
    }

    /// The folder holding the brokers' state and logs (the test keeps service logs here too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILLs node `node` (1-based; the single broker is node 1) and waits until it is gone.
    pub async fn kill_node(&self, node: usize) {
        let n = node.to_string();
        self.script(&["kill-node", "--node", &n])
            .await
            .unwrap_or_else(|e| panic!("killing Kafka node {node}: {e}"));
    }

    /// SIGSTOPs node `node`: the process stays, its sockets stay open, and it answers nothing
    /// (a stalled machine, a long GC pause) until [`Kafka::resume_node`].
    pub async fn pause_node(&self, node: usize) {
        let n = node.to_string();
        self.script(&["pause-node", "--node", &n])
            .await
            .unwrap_or_else(|e| panic!("pausing Kafka node {node}: {e}"));
    }

    /// SIGCONTs node `node` after [`Kafka::pause_node`].
    pub async fn resume_node(&self, node: usize) {
        let n = node.to_string();
        self.script(&["resume-node", "--node", &n])
            .await
            .unwrap_or_else(|e| panic!("resuming Kafka node {node}: {e}"));
    }

    /// Starts node `node` again on its remembered ports and waits until it serves.
    pub async fn start_node(&self, node: usize) {
        let n = node.to_string();
        let bootstrap = self
            .script(&["start-node", "--node", &n])
            .await
            .unwrap_or_else(|e| panic!("restarting Kafka node {node}: {e}"));
        assert_eq!(
            bootstrap, self.bootstrap,
            "node {node} came back on other ports"
        );
    }

    /// The last `lines` lines of node `node`'s log.
    pub fn log_tail(&self, node: usize, lines: usize) -> String {
        let path = if self.brokers == 1 {
            self.dir.join("kafka.log")
        } else {
            self.dir.join(format!("node-{node}")).join("kafka.log")
        };
        super::tail(&path, lines)
    }

    /// Runs `scripts/kafka.sh -q CMD --dir DIR ARGS...` off the async threads; its stdout.
    async fn script(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(repo_root().join("scripts/kafka.sh"));
        cmd.arg("-q")
            .arg(args[0])
            .arg("--dir")
            .arg(&self.dir)
            .args(&args[1..])
            // Brokers die with this test process even when it is killed (no Drop then).
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

impl Drop for Kafka {
    fn drop(&mut self) {
        if std::env::var_os("HOOKLINE_FAULTS_KEEP").is_some() {
            kill(&self.dir);
            eprintln!("HOOKLINE_FAULTS_KEEP: kept {}", self.dir.display());
        } else {
            kill_and_remove(&self.dir);
        }
    }
}

fn kill(dir: &Path) {
    let _ = Command::new(repo_root().join("scripts/kafka.sh"))
        .args(["-q", "kill", "--dir"])
        .arg(dir)
        .output();
}

fn kill_and_remove(dir: &Path) {
    kill(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// Removes broker folders of earlier runs whose test process is gone (killed before its
/// guards could run); their brokers were already stopped by kafka.sh's owner watch.
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
