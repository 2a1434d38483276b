//! The balances view on disk: every row of the compacted `balances` topic in an embedded
//! B-tree (redb), keyed `node/account/productName/transactionCurrency`, so a run streams rows
//! in key order from a read transaction (a snapshot) instead of holding them in memory.
//!
//! The store lives in a temporary folder of this process (`hookline-balances-{pid}-…`) and is
//! rebuilt from the topic at every start (Kafka is the only store); at start, the folders of
//! processes that no longer run (left by a SIGKILL) are removed. A reading thread assigns every partition from the
//! beginning and folds up to `BATCH` records per write transaction; like
//! `hookline_kafka::view::TopicView` it publishes its positions and the time at which it was
//! last caught up with the high watermarks, so `sync` means "every row acknowledged before
//! now is in the store". Memory: the page cache (`CACHE_BYTES`), one batch, and librdkafka's
//! prefetch (bounded by `queued.max.messages.kbytes`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hookline_config::Config;
use hookline_events::{CONTENT_TYPE_HEADER, decode_balance};
use hookline_kafka::KafkaContext;
use hookline_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use hookline_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use hookline_kafka::view::ViewState;
use hookline_proto::Message as _;
use redb::{Database, Durability, ReadTransaction, TableDefinition};
use tokio::sync::watch;

/// The store's folder in the temporary folder: this prefix, the process id, `-`, a random
/// suffix.
const DIR_PREFIX: &str = "hookline-balances-";

/// Row key → the row, protobuf `BalanceRow`.
pub const ROWS: TableDefinition<&str, &[u8]> = TableDefinition::new("rows");

const CACHE_BYTES: usize = 32 << 20;
const BATCH: usize = 5_000;
const REFRESH: Duration = Duration::from_millis(100);
/// Every so many batches a commit is made durable, so redb can reuse freed pages.
const DURABLE_EVERY: u32 = 32;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("balances store: {0}")]
    Store(String),
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Store(e.to_string())
}

#[derive(Clone)]
pub struct BalanceStore {
    db: Arc<Database>,
    state: watch::Receiver<ViewState>,
    refresh_now: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    _dir: Arc<tempfile::TempDir>,
}

fn now_ms() -> i64 {
    hookline_events::time_fmt::now_ms()
}

impl BalanceStore {
    /// Creates the store in a fresh temporary folder and starts folding `balances` into it.
    pub fn start(config: &Config) -> Result<Self, hookline_runtime::Error> {
        remove_stale_dirs(&std::env::temp_dir());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.path().join("balances.redb"))
            .map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(ROWS).map_err(err)?;
        txn.commit().map_err(err)?;
        let db = Arc::new(db);
        let mut c = hookline_kafka::client_config(config)?;
        c.set(
            "group.id",
            hookline_kafka::acl::view_group(config, &config.topic_balances),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "8192");
        let consumer: BaseConsumer<KafkaContext> = c
            .create_with_context(KafkaContext)
            .map_err(hookline_kafka::KafkaError::from)?;
        let watermarks: BaseConsumer<KafkaContext> = hookline_kafka::client_config(config)?
            .create_with_context(KafkaContext)
            .map_err(hookline_kafka::KafkaError::from)?;
        let (tx, rx) = watch::channel(ViewState::default());
        let store = Self {
            db: db.clone(),
            state: rx,
            refresh_now: Arc::new(AtomicBool::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
            _dir: Arc::new(dir),
        };
        let reader = Reader {
            consumer,
            watermarks,
            topic: config.topic_balances.clone(),
            partitions: Vec::new(),
            db,
            state: tx,
            refresh_now: store.refresh_now.clone(),
            stop: store.stop.clone(),
        };
        std::thread::Builder::new()
            .name("balances-store".into())
            .spawn(move || reader.run())?;
        Ok(store)
    }

    /// A snapshot of the rows as they are now.
    pub fn snapshot(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(err)
    }

    /// Waits until every row acknowledged up to now is in the store.
    pub async fn sync(&self) {
        let since = now_ms();
        self.refresh_now.store(true, Ordering::Relaxed);
        let mut rx = self.state.clone();
        let _ = rx.wait_for(|s| s.caught_up_at_ms >= since).await;
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Removes the store folders in `tmp` of processes that no longer run. Only where `/proc`
/// tells which processes run (Linux); a folder of another running replica is left alone.
fn remove_stale_dirs(tmp: &std::path::Path) {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || proc.join(pid.to_string()).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => tracing::info!(dir = %entry.path().display(), "stale balances store removed"),
            Err(e) => {
                tracing::warn!(dir = %entry.path().display(), error = %e, "stale balances store not removed")
            }
        }
    }
}

struct Reader {
    consumer: BaseConsumer<KafkaContext>,
    watermarks: BaseConsumer<KafkaContext>,
    topic: String,
    partitions: Vec<i32>,
    db: Arc<Database>,
    state: watch::Sender<ViewState>,
    refresh_now: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

enum Change {
    Put(String, Vec<u8>),
    Delete(String),
}

impl Reader {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && !self.state.is_closed()
    }

    /// Assigns every partition from the beginning once the topic exists.
    fn assign(&mut self) -> bool {
        while self.running() {
            let partitions: Vec<i32> = self
                .consumer
                .fetch_metadata(Some(&self.topic), Duration::from_secs(5))
                .ok()
                .and_then(|m| {
                    m.topics()
                        .iter()
                        .find(|t| t.name() == self.topic && t.error().is_none())
                        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                })
                .unwrap_or_default();
            if !partitions.is_empty() {
                let mut tpl = TopicPartitionList::new();
                for p in &partitions {
                    let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Beginning);
                }
                if self.consumer.assign(&tpl).is_ok() {
                    self.partitions = partitions;
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    fn run(mut self) {
        if !self.assign() {
            return;
        }
        let mut positions: HashMap<i32, i64> = self.partitions.iter().map(|p| (*p, 0)).collect();
        let mut last_refresh = Instant::now() - REFRESH;
        let mut batches = 0u32;
        let (mut caught_up_once, mut waiting) = (false, false);
        while self.running() {
            let mut changes = Vec::new();
            let mut timeout = Duration::from_millis(20);
            while changes.len() < BATCH {
                match self.consumer.poll(timeout) {
                    Some(Ok(msg)) => {
                        positions.insert(msg.partition(), msg.offset() + 1);
                        timeout = Duration::ZERO;
                        let Some(value) = msg.payload() else {
                            if let Some(k) = msg.key() {
                                changes.push(Change::Delete(String::from_utf8_lossy(k).into()));
                            }
                            continue;
                        };
                        match decode_balance(
                            hookline_kafka::header(&msg, CONTENT_TYPE_HEADER),
                            value,
                        ) {
                            // Keyed by the row itself, so rows from any producer compact alike.
                            Ok(row) => changes.push(Change::Put(
                                hookline_events::balance_key(&row),
                                row.encode_to_vec(),
                            )),
                            Err(e) => {
                                tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %e, "invalid balance row skipped")
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "balances read error");
                        break;
                    }
                    None => break,
                }
            }
            let applied = !changes.is_empty();
            if applied {
                batches += 1;
                if let Err(e) = self.write(changes, batches.is_multiple_of(DURABLE_EVERY)) {
                    // The disk is full or failing: nothing can be served correctly.
                    tracing::error!(error = %e, "balances store write failed; reading stops");
                    return;
                }
            }
            // Watermarks are asked for only until the first catch-up and while a caller of
            // `sync` waits, not in the background (an idle store sends no requests).
            let asked = self.refresh_now.swap(false, Ordering::Relaxed);
            waiting |= asked;
            let caught_up_at = if (asked || waiting || !caught_up_once)
                && (asked || last_refresh.elapsed() >= REFRESH)
            {
                last_refresh = Instant::now();
                self.check_caught_up(&positions)
            } else {
                None
            };
            if caught_up_at.is_some() {
                caught_up_once = true;
                waiting = false;
            }
            if applied || caught_up_at.is_some() {
                self.state.send_modify(|s| {
                    s.positions.clone_from(&positions);
                    if let Some(t) = caught_up_at {
                        s.caught_up_at_ms = s.caught_up_at_ms.max(t);
                    }
                });
            }
        }
    }

    fn write(&self, changes: Vec<Change>, durable: bool) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        // The store is rebuilt from the topic at every start: durability is not needed,
        // except now and then so freed pages can be reused.
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        {
            let mut rows = txn.open_table(ROWS).map_err(err)?;
            for c in changes {
                match c {
                    Change::Put(k, v) => {
                        rows.insert(k.as_str(), v.as_slice()).map_err(err)?;
                    }
                    Change::Delete(k) => {
                        rows.remove(k.as_str()).map_err(err)?;
                    }
                }
            }
        }
        txn.commit().map_err(err)
    }

    /// The time the watermarks were asked for, if every partition has reached them.
    fn check_caught_up(&mut self, positions: &HashMap<i32, i64>) -> Option<i64> {
        let asked_at = now_ms();
        let own = self.consumer.position().ok();
        for p in &self.partitions {
            let (low, high) = self
                .watermarks
                .fetch_watermarks(&self.topic, *p, Duration::from_secs(5))
                .ok()?;
            let mine = positions.get(p).copied().unwrap_or(0);
            // Transaction markers may sit past the last record; the consumer's own position
            // accounts for them.
            let consumer_pos = own
                .as_ref()
                .and_then(|tpl| tpl.find_partition(&self.topic, *p))
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(0);
            if low < high && mine.max(consumer_pos) < high {
                return None;
            }
        }
        Some(asked_at)
    }
}

/// Rows of a snapshot after `after` (all rows when empty), in key order.
pub fn rows_after<'a>(
    table: &'a redb::ReadOnlyTable<&'static str, &'static [u8]>,
    after: &str,
) -> Result<redb::Range<'a, &'static str, &'static [u8]>, StoreError> {
    use std::ops::Bound;
    if after.is_empty() {
        table.range::<&str>(..).map_err(err)
    } else {
        table
            .range::<&str>((Bound::Excluded(after), Bound::Unbounded))
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_of_dead_processes_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        // No process has this id (above the kernel's pid_max).
        let dead = tmp.path().join(format!("{DIR_PREFIX}99999999-abc"));
        let mine = tmp
            .path()
            .join(format!("{DIR_PREFIX}{}-abc", std::process::id()));
        let other = tmp.path().join("hookline-balances-x");
        for d in [&dead, &mine, &other] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("balances.redb"), b"x").unwrap();
        }
        remove_stale_dirs(tmp.path());
        assert!(!dead.exists() || !std::path::Path::new("/proc/self").exists());
        assert!(mine.exists() && other.exists());
    }
}
