//! A real HTTP receiver on a loopback port: records every request it gets and answers with
//! the statuses it was told to.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
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
) -> StatusCode {
    let mut g = inner.lock().unwrap();
    g.received.push(Received { headers, body });
    let code = g.script.pop_front().unwrap_or(g.then);
    StatusCode::from_u16(code).unwrap()
}

impl Receiver {
    /// Answers `script` in order, then `then` forever.
    pub async fn start(script: &[u16], then: u16) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            received: Vec::new(),
            script: script.iter().copied().collect(),
            then,
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

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        super::eventually(secs, &format!("{n} requests at the receiver"), || {
            let got = self.received();
            async move { (got.len() >= n).then_some(got) }
        })
        .await
    }
}
