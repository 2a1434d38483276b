//! A real HTTP receiver on a loopback port: records every POST's headers, body, arrival time
//! and the status it answered, in arrival order. A healthy receiver answers 200; a flaky one
//! answers 503 to a share of requests, decided by a seeded hash of the request's `webhook-id`
//! and how many requests with that id came before, so a run is repeatable and every delivery
//! eventually gets its 200.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn succeeded(&self) -> bool {
        self.status == 200
    }
}

/// Which requests fail: `per_mille` of them, by a hash under `seed`.
#[derive(Clone, Copy)]
struct Flaky {
    per_mille: u64,
    seed: u64,
}

#[derive(Default)]
struct Inner {
    log: Vec<Received>,
    /// Requests seen per `webhook-id`.
    seen: HashMap<String, u64>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    flaky: Option<Flaky>,
}

pub struct Receiver {
    shared: Shared,
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

async fn handle(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut inner = shared.inner.lock().unwrap();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let nth = inner.seen.entry(id.clone()).or_insert(0);
    let status = match shared.flaky {
        Some(f) if fails(f, &id, *nth) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    *nth += 1;
    inner.log.push(Received {
        at: Instant::now(),
        headers,
        body,
        status: status.as_u16(),
    });
    status
}

fn fails(f: Flaky, id: &str, nth: u64) -> bool {
    // SipHash with fixed keys: the same on every run and machine.
    let mut h = std::hash::DefaultHasher::new();
    (f.seed, id, nth).hash(&mut h);
    h.finish() % 1000 < f.per_mille
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub async fn start() -> Receiver {
        Self::serve(None).await
    }

    /// A receiver that answers 503 to `per_mille` of the requests (seeded by `seed`).
    pub async fn flaky(per_mille: u64, seed: u64) -> Receiver {
        Self::serve(Some(Flaky { per_mille, seed })).await
    }

    async fn serve(flaky: Option<Flaky>) -> Receiver {
        let shared = Shared {
            inner: Arc::default(),
            flaky,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let app = axum::Router::new()
            .route("/hook", post(handle))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            shared,
            url,
            server,
        }
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received_from(0)
    }

    /// The requests after the first `from`, in arrival order (for folding as they come).
    pub fn received_from(&self, from: usize) -> Vec<Received> {
        let inner = self.shared.inner.lock().unwrap();
        inner.log.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
