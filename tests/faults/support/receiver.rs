//! A real HTTP receiver on a loopback port: answers every POST 200 and records its headers,
//! body and arrival time, in arrival order.

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
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

type Log = Arc<Mutex<Vec<Received>>>;

pub struct Receiver {
    log: Log,
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

async fn handle(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> StatusCode {
    log.lock().unwrap().push(Received {
        at: Instant::now(),
        headers,
        body,
    });
    StatusCode::OK
}

impl Receiver {
    pub async fn start() -> Receiver {
        let log: Log = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let app = axum::Router::new()
            .route("/hook", post(handle))
            .with_state(log.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { log, url, server }
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
