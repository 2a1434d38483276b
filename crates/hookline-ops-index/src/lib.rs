//! The operations index: the `deliveries`, `attempts` and `dead-letters` topics folded into an
//! embedded on-disk store (redb, a B-tree with MVCC reads), for "what happened to this
//! delivery?" queries at any volume.
//!
//! - [`Index::open`]: opens the store in `ops_index_dir` and starts the reading thread.
//! - `store.rs` ([`Store`]): tables, the fold of a batch (with the positions it reaches, in one
//!   transaction: the checkpoint is the data), queries by delivery, subscription, event,
//!   tenant and time, a subscription's deliveries in the order of the log (for replays),
//!   retention sweeps, the layout version (another one is rebuilt).
//! - `summary.rs` ([`Summary`], [`State`]): one delivery's facts and its derived state.
//! - `ingest.rs`: the reading thread.
//! - `keys.rs`: key layouts.
//!
//! A derived view: deleting the folder rebuilds it from the topics; memory is the store's
//! page cache (`ops_index_cache_mb`) plus one batch and librdkafka's bounded prefetch.
#![forbid(unsafe_code)]

mod ingest;
pub mod keys;
#[cfg(test)]
mod log_order_tests;
pub mod store;
pub mod summary;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hookline_config::Config;
use tokio::sync::watch;

pub use store::{LogPage, Page, Scope, Store, Window};
pub use summary::{Quarantined, State, Summary};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("operations index store: {0}")]
    Store(String),
    #[error("operations index folder {0:?}: {1}")]
    Dir(String, std::io::Error),
    #[error(transparent)]
    Kafka(#[from] hookline_kafka::KafkaError),
    #[error("starting the index thread: {0}")]
    Thread(std::io::Error),
}

/// Progress of the reading thread.
#[derive(Debug, Clone, Default)]
pub struct IngestState {
    /// Records folded since this process started (a restart resumes, it does not re-read).
    pub folded: u64,
    /// Wall-clock ms at which the index was last known to have read everything; 0 before.
    pub caught_up_at_ms: i64,
}

/// The store and its reading thread.
#[derive(Clone)]
pub struct Index {
    store: Arc<Store>,
    state: watch::Receiver<IngestState>,
    stop: Arc<AtomicBool>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Index {
    /// Opens the store in `config.ops_index_dir` and starts folding the topics into it from
    /// the positions it holds.
    pub fn open(config: &Config) -> Result<Self, IndexError> {
        let store = Arc::new(Store::open(
            Path::new(&config.ops_index_dir),
            config.ops_index_cache_mb << 20,
        )?);
        let (tx, rx) = watch::channel(IngestState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let ingest = ingest::Ingest::new(config, store.clone(), tx, stop.clone())?;
        std::thread::Builder::new()
            .name("ops-index".into())
            .spawn(move || ingest.run())
            .map_err(IndexError::Thread)?;
        Ok(Self {
            store,
            state: rx,
            stop,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn state(&self) -> IngestState {
        self.state.borrow().clone()
    }

    /// Waits until everything acknowledged before `since_ms` is folded.
    pub async fn wait_caught_up(&self, since_ms: i64) {
        let mut rx = self.state.clone();
        let _ = rx.wait_for(|s| s.caught_up_at_ms >= since_ms).await;
    }

    /// Stops the reading thread (it ends after its current batch).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
