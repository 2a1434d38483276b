//! Secret values never reach Kafka's log segments or a log line in clear. The API runs as
//! its own binary with every log line captured in a file; both that file and the broker's
//! segment files of this test's topics are scanned for each value the API returned.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use reqwest::Method as M;
use serde_json::json;

use crate::api_support::{api_config, call};
use crate::support::{TOKEN_A, client, eventually};

/// Whether any `window`-byte slice of `needle` occurs in `hay`: a value stored in clear
/// shows up even when a compressor turned a few of its bytes into back-references.
pub(crate) fn leaks(hay: &[u8], needle: &[u8], window: usize) -> bool {
    let window = window.min(needle.len());
    let pieces: HashSet<&[u8]> = needle.windows(window).collect();
    hay.windows(window).any(|h| pieces.contains(h))
}

pub(crate) fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the broker's folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_values_are_never_in_segments_or_logs_in_clear() {
    let kafka_dir = std::env::var("HOOKLINE_TEST_KAFKA_DIR")
        .expect("HOOKLINE_TEST_KAFKA_DIR is not set: run the suite with `make test`");
    let config = api_config().await;
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("hookline-subscription-api");
    assert!(
        binary.is_file(),
        "{binary:?} missing: `make test` builds every binary first"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = std::env::temp_dir().join(format!("hookline-api-{}.log", uuid::Uuid::new_v4()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(&binary)
        .env("HOOKLINE_KAFKA_BOOTSTRAP", &config.kafka_bootstrap)
        .env("HOOKLINE_TOPIC_SUBSCRIPTIONS", &config.topic_subscriptions)
        .env("HOOKLINE_TOPIC_SECRETS", &config.topic_secrets)
        .env("HOOKLINE_TOPIC_CLAIMS", &config.topic_claims)
        .env("HOOKLINE_TOPIC_EVENT_TYPES", &config.topic_event_types)
        .env("HOOKLINE_TOPIC_APPLICATIONS", &config.topic_applications)
        .env("HOOKLINE_TOPIC_MESSAGES", &config.topic_messages)
        .env(
            "HOOKLINE_TOPIC_SUBSCRIPTION_COMMANDS",
            &config.topic_subscription_commands,
        )
        .env("HOOKLINE_GROUP_PREFIX", &config.group_prefix)
        .env("HOOKLINE_TOKENS", &config.tokens)
        .env("HOOKLINE_MASTER_KEY", &config.master_key)
        .env("HOOKLINE_API_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKLINE_LOG_FORMAT", "json")
        .env("HOOKLINE_LOG_LEVEL", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the API binary");
    let api = format!("http://127.0.0.1:{port}");
    eventually(60, "the API binary to be ready", || {
        let url = format!("{api}/readyz");
        async move {
            client()
                .get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await;

    // A marker in clear (the secret's name) shows that the scans read the right bytes.
    let marker = format!("plaintext-probe-{}", uuid::Uuid::new_v4().simple());
    let mut values = Vec::new();
    let secrets = format!("{api}/api/v1/event-deliveries/secrets");
    let (status, created) = call(M::POST, &secrets, TOKEN_A, Some(json!({"name": marker}))).await;
    assert_eq!(status, 201, "{created}");
    values.push(created["value"].as_str().unwrap().to_owned());
    let (_, rotated) = call(
        M::POST,
        &format!("{secrets}/{marker}/rotate"),
        TOKEN_A,
        None,
    )
    .await;
    values.push(rotated["value"].as_str().unwrap().to_owned());
    let sub = json!({"name": "auto-secret", "endpointUrl": "https://e.com"});
    let subs = format!("{api}/api/v1/event-deliveries/subscriptions");
    let (_, sub) = call(M::POST, &subs, TOKEN_A, Some(sub)).await;
    values.push(sub["secret"]["value"].as_str().unwrap().to_owned());
    let hook = json!({"enabled_events": ["ACCOUNT.*"], "is_enabled": true, "url": "https://e.com"});
    let (_, hook) = call(M::POST, &format!("{api}/v2/webhooks"), TOKEN_A, Some(hook)).await;
    values.push(hook["secret"].as_str().unwrap().to_owned());
    // A custom header's value, accepted once and refused once (a reserved name beside it).
    let header = format!("header-value-{}", uuid::Uuid::new_v4().simple());
    let with_header = json!({"name": "with-header", "endpointUrl": "https://e.com",
        "headers": {"x-api-key": header}});
    let (status, _) = call(M::POST, &subs, TOKEN_A, Some(with_header)).await;
    assert_eq!(status, 201);
    let refused = json!({"name": "refused-header", "endpointUrl": "https://e.com",
        "headers": {"x-api-key": header, "host": "h"}});
    let (status, _) = call(M::POST, &subs, TOKEN_A, Some(refused)).await;
    assert_eq!(status, 400);
    // A refused request with a value in it is logged nowhere either.
    let (status, _) = call(
        M::POST,
        &secrets,
        TOKEN_A,
        Some(json!({"name": marker, "value": values[0]})),
    )
    .await;
    assert_eq!(status, 400);
    child.kill().expect("stop the API binary");
    child.wait().unwrap();

    let mut files = Vec::new();
    files_under(&Path::new(&kafka_dir).join("data"), &mut files);
    let prefix = format!("{}.", config.group_prefix);
    let segments: Vec<Vec<u8>> = files
        .iter()
        .filter(|p| p.to_string_lossy().contains(&prefix))
        .filter(|p| {
            !p.extension()
                .is_some_and(|e| e == "index" || e == "timeindex")
        })
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let logs = std::fs::read(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(
        segments.iter().any(|s| leaks(s, marker.as_bytes(), 24)),
        "the marker is not in this test's segment files: the scan reads the wrong files"
    );
    assert!(
        leaks(&logs, marker.as_bytes(), 24),
        "the marker is not in the captured log"
    );
    assert!(
        !segments.iter().any(|s| leaks(s, header.as_bytes(), 16)),
        "a custom header value is in a log segment"
    );
    assert!(
        !leaks(&logs, header.as_bytes(), 16),
        "a custom header value is in a log line"
    );
    for value in &values {
        let key = base64::engine::general_purpose::STANDARD
            .decode(value.strip_prefix("whsec_").unwrap())
            .unwrap();
        for needle in [value.as_bytes(), &key] {
            assert!(
                !segments.iter().any(|s| leaks(s, needle, 16)),
                "a secret value is in a log segment"
            );
            assert!(!leaks(&logs, needle, 16), "a secret value is in a log line");
        }
    }
}
