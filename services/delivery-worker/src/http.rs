//! One HTTP attempt: sign, POST, read a capped response.
//!
//! Egress safety lives here: redirects are never followed (a 3xx is a failed attempt), no
//! proxy is used, connect and total timeouts apply, the response body is cut at the cap while
//! it is read, and every destination address passes the egress guard (`hookline-egress`):
//! address-literal hosts before the request, resolved names in the client's resolver, so the
//! addresses checked are the addresses dialled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookline_config::Config;
use hookline_egress::{EgressPolicy, GuardedResolver, Lookup, SystemLookup};
use hookline_signing::WebhookSecret;
use rand::Rng as _;

use crate::retry::parse_retry_after;

/// Looks nothing up (`egress_dns = false`): a host name fails the attempt.
struct NoLookup;

impl Lookup for NoLookup {
    fn lookup(&self, host: &str) -> hookline_egress::LookupFuture {
        let host = host.to_owned();
        Box::pin(async move {
            Err(std::io::Error::other(format!(
                "{host:?} is not looked up: egress_dns is false"
            )))
        })
    }
}

/// What one attempt produced.
#[derive(Debug)]
pub struct AttemptResult {
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub duration: Duration,
    /// Empty on success; otherwise `connect`, `timeout`, `status`, `redirect`, `request`, or
    /// [`EGRESS_DENIED`].
    pub error_class: &'static str,
    pub error: String,
    pub body: Vec<u8>,
    /// The request headers sent, signatures masked (for the attempt record).
    pub request_headers: Vec<(String, String)>,
    /// The response headers received, at most [`RECORDED_HEADERS`] of them.
    pub response_headers: Vec<(String, String)>,
}

/// Response headers kept for an attempt record; the rest are dropped.
pub const RECORDED_HEADERS: usize = 32;
/// Longest header value kept for an attempt record, in bytes.
pub const RECORDED_HEADER_VALUE: usize = 512;

/// What an attempt record shows for the value of a subscription's custom header.
pub const CUSTOM_HEADER_MASK: &str = "****";

/// `v1,<base64>` signatures, one per signing secret, with the base64 masked.
fn masked_signature(signature: &str) -> String {
    signature
        .split(' ')
        .map(|s| match s.split_once(',') {
            Some((version, _)) => format!("{version},****"),
            None => "****".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn capped(value: &str) -> String {
    if value.len() <= RECORDED_HEADER_VALUE {
        return value.to_owned();
    }
    let mut end = RECORDED_HEADER_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// The error class of an attempt refused by the egress guard: no packet was sent to the
/// destination. Final: retrying cannot help until an operator changes the allow-list.
pub const EGRESS_DENIED: &str = "egress_denied";

/// The outgoing request of one attempt.
pub struct Outgoing<'a> {
    pub url: &'a str,
    pub delivery_id: &'a str,
    pub body: Vec<u8>,
    pub secrets: &'a [WebhookSecret],
    pub traceparent: &'a str,
    /// The subscription's custom headers, opened (names lowercase, none reserved). Sent
    /// before Hookline's own headers; recorded with their values masked.
    pub headers: &'a [(String, String)],
    /// A Svix endpoint's delivery: the message id, sent as `svix-id` and signed over, with
    /// `svix-timestamp` and `svix-signature` instead of the `webhook-*` set.
    pub svix_id: Option<&'a str>,
    /// A Svix endpoint that asked for the `webhook-*` set too: the same three values under
    /// both sets of names.
    pub both_header_sets: bool,
}

/// The names of the id, timestamp and signature headers, and the id they carry.
fn signature_headers<'a>(out: &Outgoing<'a>) -> ([&'static str; 3], &'a str) {
    match out.svix_id {
        Some(id) => (["svix-id", "svix-timestamp", "svix-signature"], id),
        None => (
            ["webhook-id", "webhook-timestamp", "webhook-signature"],
            out.delivery_id,
        ),
    }
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
    body_limit: usize,
    user_agent: String,
}

impl Sender {
    pub fn new(config: &Config) -> Result<Self, crate::Error> {
        if config.egress_dns {
            Self::with_lookup(config, Arc::new(SystemLookup))
        } else {
            Self::with_lookup(config, Arc::new(NoLookup))
        }
    }

    /// A sender resolving host names through `lookup` (tests inject their DNS answers).
    pub fn with_lookup(config: &Config, lookup: Arc<dyn Lookup>) -> Result<Self, crate::Error> {
        let policy = Arc::new(EgressPolicy::new(config.egress_allow()?));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver::new(policy.clone(), lookup)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.http_connect_timeout()?)
            .timeout(config.http_timeout()?)
            // As many idle connections as attempts in flight: fewer closes and re-opens them.
            .pool_max_idle_per_host(config.worker_concurrency)
            .build()
            .map_err(|e| anyhow::anyhow!("HTTP client: {e}"))?;
        Ok(Self {
            client,
            policy,
            body_limit: config.response_body_limit,
            user_agent: config.user_agent.clone(),
        })
    }

    pub async fn send(&self, out: Outgoing<'_>) -> AttemptResult {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let (names, signed_id) = signature_headers(&out);
        let signature = hookline_signing::sign(out.secrets, signed_id, timestamp, &out.body);
        let timestamp = timestamp.to_string();
        // The id, timestamp and signature headers: one set, or both for a Svix endpoint
        // that asked for the `webhook-*` set too.
        let both = out.svix_id.is_some() && out.both_header_sets;
        let sets: &[[&'static str; 3]] = if both {
            &[
                names,
                ["webhook-id", "webhook-timestamp", "webhook-signature"],
            ]
        } else {
            std::slice::from_ref(&names)
        };
        let traceparent = if out.traceparent.is_empty() {
            new_traceparent()
        } else {
            out.traceparent.to_owned()
        };
        let started = Instant::now();
        let mut result = AttemptResult {
            status: None,
            retry_after: None,
            duration: Duration::ZERO,
            error_class: "",
            error: String::new(),
            body: Vec::new(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        };
        let url = match reqwest::Url::parse(out.url) {
            Ok(url) => url,
            Err(e) => {
                result.error_class = "request";
                result.error = format!("invalid URL: {e}");
                return result;
            }
        };
        // The client dials an address-literal host without asking the resolver.
        if let Err(denied) = self.policy.check_url(&url) {
            result.error_class = EGRESS_DENIED;
            result.error = denied.to_string();
            return result;
        }
        let signed = sets.iter().flat_map(|[id, time, sig]| {
            [
                (*id, signed_id.to_owned()),
                (*time, timestamp.clone()),
                (*sig, masked_signature(&signature)),
            ]
        });
        result.request_headers = [
            ("content-type", "application/json".to_owned()),
            ("user-agent", self.user_agent.clone()),
            ("idempotency-key", out.delivery_id.to_owned()),
        ]
        .into_iter()
        .chain(signed)
        .chain([("traceparent", traceparent.clone())])
        .map(|(k, v)| (k.to_owned(), capped(&v)))
        .chain(
            out.headers
                .iter()
                .map(|(k, _)| (k.clone(), CUSTOM_HEADER_MASK.to_owned())),
        )
        .collect();
        let mut request = self.client.post(url);
        for (name, value) in out.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request = request
            .header("content-type", "application/json")
            .header("user-agent", &self.user_agent)
            .header("idempotency-key", out.delivery_id);
        for [id, time, sig] in sets {
            request = request
                .header(*id, signed_id)
                .header(*time, &timestamp)
                .header(*sig, &signature);
        }
        let request = request.header("traceparent", traceparent).body(out.body);
        match request.send().await {
            Ok(mut response) => {
                let status = response.status();
                result.status = Some(status.as_u16());
                result.response_headers = response
                    .headers()
                    .iter()
                    .take(RECORDED_HEADERS)
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            capped(&String::from_utf8_lossy(v.as_bytes())),
                        )
                    })
                    .collect();
                result.retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
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
                result.error_class = if hookline_egress::denial_in(&e).is_some() {
                    EGRESS_DENIED
                } else if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                result.error = match hookline_egress::denial_in(&e) {
                    Some(denied) => denied.to_string(),
                    None => error_chain(&e),
                };
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

#[cfg(test)]
mod tests;
