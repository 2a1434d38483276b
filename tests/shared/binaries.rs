//! Shared by the test suites: where the service binaries are, and a configuration as the
//! environment of a service process.

use std::path::PathBuf;

use hookline_config::Config;

/// `target/<profile>/<name>`, next to the test executable's `deps/` folder (or in
/// `HOOKLINE_TEST_BIN_DIR`).
pub fn binary(name: &str) -> PathBuf {
    // Another build's binaries (e.g. `target/release` for a measurement).
    if let Some(dir) = std::env::var_os("HOOKLINE_TEST_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile folder");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace` first (`make test` does)",
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
