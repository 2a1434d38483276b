//! Calls to the stack's HTTP APIs: a signing secret, subscriptions (many at once), balance
//! extracts and their runs.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{Value, json};

/// Subscription creations in flight at once.
const CREATE_CONCURRENCY: usize = 32;

#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    pub base: String,
}

/// One subscription to create: its endpoint and the event types it selects.
pub struct SubSpec {
    pub name: String,
    pub url: String,
    pub event_types: Vec<String>,
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(1800))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    async fn call(
        &self,
        token: &str,
        path: &str,
        body: Value,
        retries: u32,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        for attempt in 0.. {
            let response = self
                .client
                .post(&url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(value);
            }
            // A busy API (503, 500 while Kafka is slow) is retried a few times.
            if status.is_server_error() && attempt < retries {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                continue;
            }
            bail!("POST {url} answered {status}: {value}");
        }
        unreachable!("the loop returns")
    }

    /// Registers `types` in the event catalog (a subscription may name only catalog types,
    /// or patterns matching one); a pattern `P.*` is covered by registering `P.any`. Types
    /// already registered are fine.
    pub async fn register_types(
        &self,
        admin_token: &str,
        types: impl IntoIterator<Item = String>,
    ) -> anyhow::Result<()> {
        let names: std::collections::BTreeSet<String> = types
            .into_iter()
            .map(|t| match t.strip_suffix(".*") {
                Some(prefix) => format!("{prefix}.any"),
                None => t,
            })
            .collect();
        let url = format!("{}/admin/v1/event-types", self.base);
        stream::iter(names)
            .map(|name| {
                let url = url.clone();
                async move {
                    let response = self
                        .client
                        .post(&url)
                        .bearer_auth(admin_token)
                        .json(&json!({ "name": name }))
                        .send()
                        .await
                        .with_context(|| format!("POST {url}"))?;
                    let status = response.status();
                    if status.is_success() || status == reqwest::StatusCode::CONFLICT {
                        return Ok(());
                    }
                    let body = response.text().await.unwrap_or_default();
                    bail!("POST {url} ({name}) answered {status}: {body}")
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// Creates a secret named `name`; returns its `whsec_` value.
    pub async fn secret(&self, token: &str, name: &str) -> anyhow::Result<String> {
        let v = self
            .call(
                token,
                "/api/v1/event-deliveries/secrets",
                json!({"name": name}),
                5,
            )
            .await?;
        v["value"]
            .as_str()
            .map(str::to_owned)
            .context("secret response lacks `value`")
    }

    /// Creates every subscription of `specs`, signed by the secret `secret_ref`, several at
    /// a time; returns their ids in order and how long it took.
    pub async fn subscriptions(
        &self,
        token: &str,
        secret_ref: &str,
        specs: Vec<SubSpec>,
    ) -> anyhow::Result<(Vec<String>, Duration)> {
        let started = Instant::now();
        let ids: Vec<String> = stream::iter(specs)
            .map(|s| async move {
                let v = self
                    .call(
                        token,
                        "/api/v1/event-deliveries/subscriptions",
                        json!({"name": s.name, "endpointUrl": s.url,
                               "eventTypes": s.event_types, "secretRef": secret_ref}),
                        5,
                    )
                    .await?;
                v["id"]
                    .as_str()
                    .map(str::to_owned)
                    .context("subscription response lacks `id`")
            })
            .buffered(CREATE_CONCURRENCY)
            .try_collect()
            .await?;
        Ok((ids, started.elapsed()))
    }

    /// Configures a Webhook extract of the balances of `node`.
    pub async fn extract(&self, token: &str, name: &str, node: &str) -> anyhow::Result<()> {
        self.call(
            token,
            "/api/v1/extracts",
            json!({"name": name, "target": "Webhook", "dataSource": "Balances",
                   "query": {"nodes": [node]}}),
            5,
        )
        .await
        .map(drop)
    }

    /// Runs extract `name` and answers when the run is done.
    pub async fn run_extract(&self, token: &str, name: &str) -> anyhow::Result<Value> {
        self.call(
            token,
            &format!("/api/v1/extracts/{name}/runs?wait=true"),
            Value::Null,
            0,
        )
        .await
    }
}
