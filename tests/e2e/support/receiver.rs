//! A real HTTP receiver on a loopback port: records every request it gets and answers with
//! the statuses it was told to, optionally after a delay; tracks how many requests it was
//! serving at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// One request as received, with the status it was answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Statuses to answer in turn; when empty, `then` is answered.
    script: VecDeque<u16>,
    then: u16,
    delay: Duration,
    serving: usize,
    max_serving: usize,
    /// Answer 500 to every n-th request (0: never).
    fail_every: usize,
    count: usize,
    /// `Retry-After` sent with every 429 and 503 answer.
    retry_after: Option<String>,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let (code, delay, retry_after) = {
        let mut g = inner.lock().unwrap();
        g.count += 1;
        let code = match g.script.pop_front() {
            Some(code) => code,
            None if g.fail_every > 0 && g.count % g.fail_every == 0 => 500,
            None => g.then,
        };
        g.received.push(Received {
            headers,
            body,
            status: code,
            at: std::time::Instant::now(),
        });
        g.serving += 1;
        g.max_serving = g.max_serving.max(g.serving);
        let retry_after = g.retry_after.clone().filter(|_| matches!(code, 429 | 503));
        (code, g.delay, retry_after)
    };
    tokio::time::sleep(delay).await;
    inner.lock().unwrap().serving -= 1;
    let mut headers = HeaderMap::new();
    if let Some(v) = retry_after {
        headers.insert("retry-after", v.parse().unwrap());
    }
    (StatusCode::from_u16(code).unwrap(), headers)
}

impl Receiver {
    /// Answers `script` in order, then `then` forever.
    pub async fn start(script: &[u16], then: u16) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            script: script.iter().copied().collect(),
            then,
            ..Inner::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook", post(handle))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { inner, url }
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// From now on, answer `status` (after the script, if any is left).
    pub fn answer(&self, status: u16) {
        self.inner.lock().unwrap().then = status;
    }

    /// Answer 500 to every `n`-th request from now on (a flaky endpoint).
    pub fn fail_every(&self, n: usize) {
        self.inner.lock().unwrap().fail_every = n;
    }

    /// Send `Retry-After: value` with every 429 and 503 answer.
    pub fn retry_after(&self, value: &str) {
        self.inner.lock().unwrap().retry_after = Some(value.to_owned());
    }

    /// Hold every answer for `delay`.
    pub fn delay(&self, delay: Duration) {
        self.inner.lock().unwrap().delay = delay;
    }

    /// The most requests this receiver was serving at one time.
    pub fn max_concurrent(&self) -> usize {
        self.inner.lock().unwrap().max_serving
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        super::eventually(secs, &format!("{n} requests at the receiver"), || {
            let got = self.received();
            async move { (got.len() >= n).then_some(got) }
        })
        .await
    }

    /// Waits until requests answered 2xx carry at least `n` distinct `webhook-id`s.
    pub async fn wait_for_delivered(&self, n: usize, secs: u64) -> Vec<Received> {
        super::eventually(secs, &format!("{n} delivered ids at the receiver"), || {
            let got = self.received();
            let ids: std::collections::HashSet<String> = got
                .iter()
                .filter(|r| (200..300).contains(&r.status))
                .map(|r| r.header("webhook-id").to_owned())
                .collect();
            async move { (ids.len() >= n).then_some(got) }
        })
        .await
    }
}
