//! The subscription API on its own: one or more instances (replicas) over topics of their
//! own, for tests that need no router or worker.

use std::time::Duration;

use base64::Engine as _;
use hookline_config::Config;
use hookline_runtime::CancellationToken;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::{TENANT_A, TENANT_B, TOKEN_A, TOKEN_ADMIN, TOKEN_B, bootstrap, client};

/// A viewer of tenant A.
pub const TOKEN_VIEWER_A: &str = "test-token-viewer-a-0123456789";

/// A configuration with fresh topics (created here) for API instances to share.
pub async fn api_config() -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let t = |name: &str| format!("a{id}.{name}");
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let config = Config {
        kafka_bootstrap: bootstrap(),
        topic_subscriptions: t("subscriptions"),
        topic_secrets: t("secrets"),
        topic_claims: t("claims"),
        topic_event_types: t("event-types"),
        topic_applications: t("applications"),
        topic_messages: t("messages"),
        topic_subscription_commands: t("subscription-commands"),
        group_prefix: format!("a{id}"),
        topic_partitions: 3,
        tokens: format!(
            "{TOKEN_A}={TENANT_A}:editor;{TOKEN_B}={TENANT_B}:editor;\
             {TOKEN_ADMIN}=ops:admin;{TOKEN_VIEWER_A}={TENANT_A}:viewer"
        ),
        master_key: base64::engine::general_purpose::STANDARD.encode(key),
        log_format: "pretty".into(),
        log_level: "warn".into(),
        ..Config::default()
    };
    config.validate().expect("valid test configuration");
    hookline_kafka::ensure_topics(&config)
        .await
        .expect("create test topics");
    config
}

/// One running API instance.
pub struct Api {
    pub url: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Api {
    /// Starts an instance on a fresh loopback port and waits until it is ready.
    pub async fn start(config: &Config) -> Api {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        let run = hookline_subscription_api::run(config.clone(), listener, shutdown.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = run.await {
                panic!("subscription-api failed: {e}");
            }
        });
        crate::support::eventually(60, "the API to be ready", || {
            let url = format!("{url}/readyz");
            async move {
                let ok = client().get(&url).send().await;
                ok.is_ok_and(|r| r.status().is_success()).then_some(())
            }
        })
        .await;
        Api {
            url,
            shutdown,
            task,
        }
    }

    /// Stops the instance and waits until it has finished.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }

    /// `call` against this instance, with `path` under its base URL.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        call(method, &format!("{}{path}", self.url), token, body).await
    }
}

pub use crate::support::call;

/// Asserts a refusal: `status`, a JSON error naming `field`, with a message.
pub fn assert_refused(got: &(u16, Value), status: u16, field: &str, what: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert_eq!(got.1["field"], field, "{what}: {}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        got.1
    );
}
