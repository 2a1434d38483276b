//! Services as real processes, for tests that kill them: the binary built by `make test`,
//! configured through `HOOKLINE_` environment variables from the test's [`Config`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use hookline_config::Config;

/// `target/<profile>/<name>`, next to the test executable's `deps/` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile folder");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the suite with `make test`",
        path.display()
    );
    path
}

/// Every setting of `config` as `HOOKLINE_` environment variables.
pub fn env_of(config: &Config) -> Vec<(String, String)> {
    let value = serde_json::to_value(config).expect("config serializes");
    value
        .as_object()
        .expect("config is an object")
        .iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (format!("HOOKLINE_{}", k.to_uppercase()), text)
        })
        .collect()
}

/// A service process, killed with SIGKILL when dropped.
pub struct Service {
    child: Child,
}

impl Service {
    /// Starts binary `name` with `config`, `extra` environment on top.
    pub fn start(name: &str, config: &Config, extra: &[(&str, &str)]) -> Service {
        let mut cmd = Command::new(binary(name));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env_of(config))
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Service {
            child: cmd.spawn().expect("start service process"),
        }
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
