//! One HTTP attempt: sign, POST, read a capped response.

use std::time::{Duration, Instant};

use hookline_config::Config;
use hookline_signing::WebhookSecret;
use rand::Rng as _;

use crate::retry::parse_retry_after;

/// What one attempt produced.
#[derive(Debug)]
pub struct AttemptResult {
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub duration: Duration,
    /// Empty on success; otherwise `connect`, `timeout`, `status`, `redirect`, `request`.
    pub error_class: &'static str,
    pub error: String,
    pub body: Vec<u8>,
}

/// The outgoing request of one attempt.
pub struct Outgoing<'a> {
    pub url: &'a str,
    pub delivery_id: &'a str,
    pub body: Vec<u8>,
    pub secrets: &'a [WebhookSecret],
    pub traceparent: &'a str,
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    body_limit: usize,
    user_agent: String,
}

impl Sender {
    pub fn new(config: &Config) -> Result<Self, crate::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.http_connect_timeout()?)
            .timeout(config.http_timeout()?)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| crate::Error::Http(e.to_string()))?;
        Ok(Self {
            client,
            body_limit: config.response_body_limit,
            user_agent: config.user_agent.clone(),
        })
    }

    pub async fn send(&self, out: Outgoing<'_>) -> AttemptResult {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let signature = hookline_signing::sign(out.secrets, out.delivery_id, timestamp, &out.body);
        let traceparent = if out.traceparent.is_empty() {
            new_traceparent()
        } else {
            out.traceparent.to_owned()
        };
        let started = Instant::now();
        let request = self
            .client
            .post(out.url)
            .header("content-type", "application/json")
            .header("user-agent", &self.user_agent)
            .header("idempotency-key", out.delivery_id)
            .header("webhook-id", out.delivery_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("traceparent", traceparent)
            .body(out.body);
        let mut result = AttemptResult {
            status: None,
            retry_after: None,
            duration: Duration::ZERO,
            error_class: "",
            error: String::new(),
            body: Vec::new(),
        };
        match request.send().await {
            Ok(mut response) => {
                let status = response.status();
                result.status = Some(status.as_u16());
                result.retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                // Read at most the cap from the socket, then drop the connection.
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            let room = self.body_limit - result.body.len();
                            result
                                .body
                                .extend_from_slice(&chunk[..chunk.len().min(room)]);
                            if result.body.len() >= self.body_limit {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            result.error = format!("reading response: {e}");
                            break;
                        }
                    }
                }
                if status.is_redirection() {
                    result.error_class = "redirect";
                    result.error = "redirects are not followed".into();
                } else if !status.is_success() {
                    result.error_class = "status";
                    if result.error.is_empty() {
                        result.error = format!("HTTP {}", status.as_u16());
                    }
                }
            }
            Err(e) => {
                result.error_class = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                result.error = error_chain(&e);
            }
        }
        result.duration = started.elapsed();
        result
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A W3C `traceparent` for a delivery that carried none.
fn new_traceparent() -> String {
    let mut rng = rand::thread_rng();
    format!(
        "00-{:032x}-{:016x}-01",
        rng.gen_range(1..=u128::MAX),
        rng.gen_range(1..=u64::MAX)
    )
}
