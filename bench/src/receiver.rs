//! The webhook receiver: an axum server on a loopback port that verifies every delivery with
//! the stock `standardwebhooks` verifier, records its receive time, and tallies per run:
//! a latency histogram (HDR, microseconds from the send time in `data.t`, or from the
//! event's `event_timestamp` when there is none), distinct deliveries by `webhook-id`,
//! repeats of an id already answered 2xx (duplicates), and per (subscription, ordering key)
//! sequence numbers that go backwards (out of order).
//!
//! Each subscription's endpoint is `/h/{sub}/{mode}`: `sub` is the bench's number for the
//! subscription (it picks the signing secret), `mode` is `ok` (always 200) or `faulty`
//! (answers 500 to a fraction of requests and holds another fraction for a while).
//! `/svix/{sub}/{mode}` takes Svix-dialect deliveries (a Svix endpoint's, Hookline's or
//! Svix's own): `svix-id`, `svix-timestamp`, `svix-signature` (the Standard Webhooks scheme
//! under Svix's header names, checked by the same stock verifier) and the message's payload
//! verbatim as the body, so the bench's fields are at its top level.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hdrhistogram::Histogram;
use serde::Deserialize;
use standardwebhooks::Webhook;

/// Fault injection of `faulty` endpoints.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub fail_fraction: f64,
    pub slow_fraction: f64,
    pub slow: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            fail_fraction: 0.05,
            slow_fraction: 0.001,
            slow: Duration::from_secs(2),
        }
    }
}

/// What one run (a phase of a scenario, one endpoint mode) received.
pub struct RunStats {
    pub latency_us: Histogram<u64>,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub requests: u64,
    pub injected_500: u64,
    pub injected_slow: u64,
    pub first_us: u64,
    pub last_us: u64,
    ids: HashSet<u64>,
    last_seq: HashMap<(u32, String), u64>,
}

impl RunStats {
    fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds"),
            delivered: 0,
            duplicates: 0,
            out_of_order: 0,
            requests: 0,
            injected_500: 0,
            injected_slow: 0,
            first_us: 0,
            last_us: 0,
            ids: HashSet::new(),
            last_seq: HashMap::new(),
        }
    }
}

/// A run's stats per endpoint mode: `[ok, faulty]`.
type ByMode = [Option<RunStats>; 2];

struct Shared {
    secrets: RwLock<HashMap<u32, Arc<Webhook>>>,
    runs: Mutex<HashMap<String, ByMode>>,
    faults: RwLock<Faults>,
    bad_signatures: AtomicU64,
    unreadable: AtomicU64,
}

#[derive(Clone)]
pub struct Receiver {
    shared: Arc<Shared>,
    pub base_url: String,
}

/// The parts of a Fynapse delivery body the bench reads; `data` is the event's verbatim.
/// Strings are borrowed from the body (the receiver allocates little per request).
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    data: Option<Data<'a>>,
    #[serde(borrow)]
    event_timestamp: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct Data<'a> {
    #[serde(borrow)]
    run: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    k: Option<std::borrow::Cow<'a, str>>,
    seq: Option<u64>,
    t: Option<u64>,
    /// Balance rows (`balance.extracted`): the node names the run, the account the row.
    #[serde(borrow)]
    node: Option<std::borrow::Cow<'a, str>>,
}

fn mode_index(mode: &str) -> usize {
    usize::from(mode == "faulty")
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn timestamp_us(text: &str) -> Option<u64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

fn id_hash(id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// The Svix headers under the Standard Webhooks names the stock verifier reads.
const SVIX_HEADERS: [(&str, &str); 3] = [
    ("svix-id", "webhook-id"),
    ("svix-timestamp", "webhook-timestamp"),
    ("svix-signature", "webhook-signature"),
];

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((sub, mode)): Path<(u32, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    receive(&shared, sub, &mode, &headers, &body, false).await
}

async fn handle_svix(
    State(shared): State<Arc<Shared>>,
    Path((sub, mode)): Path<(u32, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    // Only Svix's names count: a delivery without them fails verification.
    let mut mapped = HeaderMap::with_capacity(SVIX_HEADERS.len());
    for (svix, standard) in SVIX_HEADERS {
        if let Some(v) = headers.get(svix) {
            mapped.insert(standard, v.clone());
        }
    }
    receive(&shared, sub, &mode, &mapped, &body, true).await
}

async fn receive(
    shared: &Shared,
    sub: u32,
    mode: &str,
    headers: &HeaderMap,
    body: &[u8],
    svix: bool,
) -> StatusCode {
    let received_us = now_us();
    let verifier = shared.secrets.read().expect("lock").get(&sub).cloned();
    let verified = verifier.is_some_and(|w| w.verify(body, headers).is_ok());
    if !verified {
        shared.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    // A Svix delivery is the payload itself; the others wrap the event's data.
    let parsed = if svix {
        serde_json::from_slice::<Data>(body).map(|data| Body {
            data: Some(data),
            event_timestamp: None,
        })
    } else {
        serde_json::from_slice::<Body>(body)
    };
    let Ok(parsed) = parsed else {
        shared.unreadable.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    let data = parsed.data.unwrap_or_default();
    let run: std::borrow::Cow<'_, str> = match (data.run, data.node) {
        (Some(r), _) => r,
        (None, Some(n)) => format!("extract:{n}").into(),
        (None, None) => "".into(),
    };
    let m = mode_index(mode);
    let faults = *shared.faults.read().expect("lock");
    let dice: f64 = if m == 1 { rand::random() } else { 1.0 };
    let fail = dice < faults.fail_fraction;
    let slow = !fail && dice < faults.fail_fraction + faults.slow_fraction;
    if fail || slow {
        {
            let mut runs = shared.runs.lock().expect("lock");
            let stats = stats_of(&mut runs, &run, m);
            stats.requests += 1;
            if fail {
                stats.injected_500 += 1;
            } else {
                stats.injected_slow += 1;
            }
        }
        if fail {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        tokio::time::sleep(faults.slow).await;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let id = id_hash(id);
    let sent_us = data
        .t
        .or_else(|| parsed.event_timestamp.as_deref().and_then(timestamp_us));
    let mut runs = shared.runs.lock().expect("lock");
    let stats = stats_of(&mut runs, &run, m);
    if !slow {
        stats.requests += 1;
    }
    if !stats.ids.insert(id) {
        stats.duplicates += 1;
        return StatusCode::OK;
    }
    stats.delivered += 1;
    if stats.first_us == 0 {
        stats.first_us = received_us;
    }
    stats.last_us = stats.last_us.max(received_us);
    if let Some(sent) = sent_us {
        let _ = stats
            .latency_us
            .record(received_us.saturating_sub(sent).max(1));
    }
    if let (Some(k), Some(seq)) = (data.k, data.seq) {
        match stats.last_seq.get_mut(&(sub, k.to_string())) {
            Some(last) if seq < *last => stats.out_of_order += 1,
            Some(last) => *last = seq,
            None => {
                stats.last_seq.insert((sub, k.into_owned()), seq);
            }
        }
    }
    StatusCode::OK
}

/// The stats of `run` for endpoint mode `m`, made on first use.
fn stats_of<'a>(runs: &'a mut HashMap<String, ByMode>, run: &str, m: usize) -> &'a mut RunStats {
    if !runs.contains_key(run) {
        runs.insert(run.to_owned(), [None, None]);
    }
    runs.get_mut(run).expect("inserted above")[m].get_or_insert_with(RunStats::new)
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Receiver> {
        let shared = Arc::new(Shared {
            secrets: RwLock::default(),
            runs: Mutex::default(),
            faults: RwLock::new(Faults::default()),
            bad_signatures: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/h/{sub}/{mode}", post(handle))
            .route("/svix/{sub}/{mode}", post(handle_svix))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver { shared, base_url })
    }

    pub fn endpoint(&self, sub: u32, faulty: bool) -> String {
        let mode = if faulty { "faulty" } else { "ok" };
        format!("{}/h/{sub}/{mode}", self.base_url)
    }

    /// The endpoint of Svix-dialect deliveries to `sub` (always 200).
    pub fn svix_endpoint(&self, sub: u32) -> String {
        format!("{}/svix/{sub}/ok", self.base_url)
    }

    /// Deliveries to `sub` are verified with `secret` (`whsec_...`).
    pub fn trust(&self, sub: u32, secret: &str) -> anyhow::Result<()> {
        let webhook = Arc::new(Webhook::new(secret).map_err(|e| anyhow::anyhow!("{e:?}"))?);
        self.shared
            .secrets
            .write()
            .expect("lock")
            .insert(sub, webhook);
        Ok(())
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.write().expect("lock") = faults;
    }

    /// Distinct deliveries of `run` answered 2xx, over both endpoint modes.
    pub fn delivered(&self, run: &str) -> u64 {
        let runs = self.shared.runs.lock().expect("lock");
        runs.get(run)
            .into_iter()
            .flatten()
            .flatten()
            .map(|s| s.delivered)
            .sum()
    }

    /// Runs `f` on the stats of `run` for endpoints of `mode`, if any arrived.
    pub fn with_stats<T>(
        &self,
        run: &str,
        mode: &str,
        f: impl FnOnce(&RunStats) -> T,
    ) -> Option<T> {
        let runs = self.shared.runs.lock().expect("lock");
        runs.get(run)
            .and_then(|m| m[mode_index(mode)].as_ref())
            .map(f)
    }

    /// Requests refused: signature that did not verify, body that was not a delivery.
    pub fn rejected(&self) -> (u64, u64) {
        (
            self.shared.bad_signatures.load(Ordering::Relaxed),
            self.shared.unreadable.load(Ordering::Relaxed),
        )
    }

    /// Frees the memory of runs already reported.
    pub fn forget(&self, run: &str) {
        let mut runs = self.shared.runs.lock().expect("lock");
        runs.remove(run);
    }
}
