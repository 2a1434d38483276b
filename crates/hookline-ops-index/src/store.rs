//! The on-disk store: redb tables, the fold of a batch of records (with the topic positions
//! it reaches, in one transaction), the queries, and the retention sweep.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;

use hookline_proto::Message as _;
use hookline_proto::v1::{Attempt, AttemptOutcome, DeadLetter, DeliveryJob};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::IndexError;
use crate::keys::{self, PK_LEN, Pk};
use crate::summary::{Quarantined, Summary};

type Entry<'a> = Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;
type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Next offset to read per `topic/partition`.
const POSITIONS: TableDefinition<&str, i64> = TableDefinition::new("positions");
const ATTEMPTS: Table = TableDefinition::new("attempts");
const ATT_BY_DELIVERY: Table = TableDefinition::new("attempts_by_delivery");
const ATT_BY_SUB: Table = TableDefinition::new("attempts_by_subscription");
const ATT_BY_EVENT: Table = TableDefinition::new("attempts_by_event");
const ATT_BY_TENANT: Table = TableDefinition::new("attempts_by_tenant");
const DEAD: Table = TableDefinition::new("dead_letters");
const DEAD_BY_DELIVERY: Table = TableDefinition::new("dead_letters_by_delivery");
const DEAD_BY_SUB: Table = TableDefinition::new("dead_letters_by_subscription");
const DEAD_BY_TENANT: Table = TableDefinition::new("dead_letters_by_tenant");
const DELIVERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("deliveries");
/// `prefix(subscription) ++ time(created) ++ delivery id`: a subscription's deliveries by age.
const DEL_BY_SUB: Table = TableDefinition::new("deliveries_by_subscription");
/// `prefix(subscription) ++ log position ++ delivery id` → `time(created)`: a subscription's
/// deliveries in the order of the log (see [`Summary::log_position`]), for replays.
const DEL_BY_SUB_LOG: Table = TableDefinition::new("deliveries_by_subscription_log");
/// `time(created) ++ delivery id`: for retention.
const DEL_BY_CREATED: Table = TableDefinition::new("deliveries_by_created");
/// `prefix(replay id) ++ delivery id`: deliveries of a replay run that succeeded since.
const REPLAY_DELIVERED: Table = TableDefinition::new("replay_delivered");
const REPLAY_COUNT: TableDefinition<&str, u64> = TableDefinition::new("replay_delivered_count");
/// Quarantined records by position: [`Quarantined`].
const QUARANTINE: Table = TableDefinition::new("quarantine");
/// `"schema"` → the layout version the tables were written with.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The layout version. An index written with another one (or with none: before versions were
/// kept) is emptied at open and rebuilt from the topics, a derived view. 2: the deliveries of
/// a subscription in the order of the log (`DEL_BY_SUB_LOG`), and the event position in
/// each summary.
pub const SCHEMA: u64 = 2;
/// Every table keyed and valued by bytes.
const BYTE_TABLES: [Table; 14] = [
    ATTEMPTS,
    ATT_BY_DELIVERY,
    ATT_BY_SUB,
    ATT_BY_EVENT,
    ATT_BY_TENANT,
    DEAD,
    DEAD_BY_DELIVERY,
    DEAD_BY_SUB,
    DEAD_BY_TENANT,
    DEL_BY_SUB,
    DEL_BY_SUB_LOG,
    DEL_BY_CREATED,
    REPLAY_DELIVERED,
    QUARANTINE,
];

/// Entries one query may look at before it answers with what it found (and a cursor).
pub const SCAN_BUDGET: usize = 20_000;

/// One record of a folded topic (a batch holds a bounded number of them).
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Job {
        partition: i32,
        offset: i64,
        record_ms: i64,
        job: DeliveryJob,
    },
    Attempt {
        partition: i32,
        offset: i64,
        bytes: Vec<u8>,
        attempt: Attempt,
    },
    DeadLetter {
        partition: i32,
        offset: i64,
        bytes: Vec<u8>,
        letter: DeadLetter,
    },
    Quarantined(Quarantined),
}

/// Records and the positions they bring their partitions to, applied in one transaction.
#[derive(Default)]
pub struct Batch {
    pub records: Vec<Record>,
    /// (`topic`, partition) → next offset.
    pub positions: HashMap<(String, i32), i64>,
}

/// What a list is drawn from.
#[derive(Clone, Debug)]
pub enum Scope {
    Delivery(String),
    Subscription(String),
    Event(String),
    Tenant(String),
    All,
}

/// A window and a page of a list.
#[derive(Clone, Debug)]
pub struct Window {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub cursor: Option<Pk>,
    pub limit: usize,
    pub oldest_first: bool,
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Pk>,
}

/// A page of a subscription's deliveries (in the order of the log, or newest first).
pub struct LogPage {
    /// Each delivery's id and summary.
    pub items: Vec<(String, Summary)>,
    /// Where the next page starts (an opaque cursor), `None` once every delivery was seen.
    pub next: Option<Vec<u8>>,
}

/// First byte of a cursor of [`Store::deliveries_in_log_order`]. No key of the creation-time
/// index starts with it (their first byte is the high byte of a length of at most 255), so
/// a cursor of either can be told apart.
const LOG_CURSOR: u8 = b'L';

pub struct Store {
    db: Database,
}

fn err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Store(e.to_string())
}

impl Store {
    /// Opens (or creates) the store in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::Dir(dir.display().to_string(), e))?;
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(dir.join("index.redb"))
            .map_err(err)?;
        let store = Self { db };
        store.reopen_tables()?;
        store.check_schema()?;
        Ok(store)
    }

    /// Empties an index written with another layout (it is rebuilt from the topics: its
    /// positions go too) and records the current one.
    fn check_schema(&self) -> Result<(), IndexError> {
        let found = {
            let txn = self.db.begin_read().map_err(err)?;
            match txn.open_table(META) {
                Ok(t) => t.get("schema").map_err(err)?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(err(e)),
            }
        };
        if found == Some(SCHEMA) {
            return Ok(());
        }
        if !self.positions()?.is_empty() {
            tracing::warn!(
                found = found.unwrap_or(1),
                current = SCHEMA,
                "operations index written with another layout: rebuilding it from the topics"
            );
            self.clear()?;
        }
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(META)
            .map_err(err)?
            .insert("schema", SCHEMA)
            .map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(())
    }

    /// Creates the tables that do not exist.
    fn reopen_tables(&self) -> Result<(), IndexError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            txn.open_table(POSITIONS).map_err(err)?;
            for t in BYTE_TABLES {
                txn.open_table(t).map_err(err)?;
            }
            txn.open_table(DELIVERIES).map_err(err)?;
            txn.open_table(REPLAY_COUNT).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(())
    }

    /// Drops the layout version, as an index written before versions were kept.
    #[cfg(test)]
    pub(crate) fn forget_schema_for_test(&self) {
        let txn = self.db.begin_write().unwrap();
        txn.delete_table(META).unwrap();
        txn.commit().unwrap();
    }

    /// Empties every table: the topics the index was folded from are gone (recreated).
    pub fn clear(&self) -> Result<(), IndexError> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.delete_table(POSITIONS).map_err(err)?;
        txn.delete_table(DELIVERIES).map_err(err)?;
        txn.delete_table(REPLAY_COUNT).map_err(err)?;
        for t in BYTE_TABLES {
            txn.delete_table(t).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        self.reopen_tables()
    }

    /// The positions the index has folded up to: `(topic, partition)` → next offset.
    pub fn positions(&self) -> Result<HashMap<(String, i32), i64>, IndexError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(POSITIONS).map_err(err)?;
        let mut out = HashMap::new();
        for entry in table.iter().map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            let parsed = k
                .value()
                .rsplit_once('/')
                .and_then(|(topic, p)| Some((topic.to_owned(), p.parse::<i32>().ok()?)));
            if let Some(key) = parsed {
                out.insert(key, v.value());
            }
        }
        Ok(out)
    }

    /// Folds `batch` and records its positions, atomically: after a crash the index holds
    /// either all of it or none of it, and reading resumes from the positions it holds.
    pub fn apply(&self, batch: Batch) -> Result<(), IndexError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            // Each summary touched, with its creation time and log position as indexed before.
            let mut summaries: HashMap<String, (Summary, i64, Option<[u8; 12]>)> = HashMap::new();
            let mut deliveries = txn.open_table(DELIVERIES).map_err(err)?;
            let mut attempts = txn.open_table(ATTEMPTS).map_err(err)?;
            let mut att_delivery = txn.open_table(ATT_BY_DELIVERY).map_err(err)?;
            let mut att_sub = txn.open_table(ATT_BY_SUB).map_err(err)?;
            let mut att_event = txn.open_table(ATT_BY_EVENT).map_err(err)?;
            let mut att_tenant = txn.open_table(ATT_BY_TENANT).map_err(err)?;
            let mut dead = txn.open_table(DEAD).map_err(err)?;
            let mut dead_delivery = txn.open_table(DEAD_BY_DELIVERY).map_err(err)?;
            let mut dead_sub = txn.open_table(DEAD_BY_SUB).map_err(err)?;
            let mut dead_tenant = txn.open_table(DEAD_BY_TENANT).map_err(err)?;
            let mut replay_delivered = txn.open_table(REPLAY_DELIVERED).map_err(err)?;
            let mut replay_count = txn.open_table(REPLAY_COUNT).map_err(err)?;
            let mut quarantine = txn.open_table(QUARANTINE).map_err(err)?;
            let load = |id: &str,
                        summaries: &mut HashMap<String, (Summary, i64, Option<[u8; 12]>)>|
             -> Result<(), IndexError> {
                if !summaries.contains_key(id) {
                    let found = deliveries
                        .get(id)
                        .map_err(err)?
                        .and_then(|v| Summary::decode(v.value()).ok());
                    let log = found.as_ref().map(Summary::log_position);
                    let found = found.unwrap_or_default();
                    let created = found.created_ms;
                    summaries.insert(id.to_owned(), (found, created, log));
                }
                Ok(())
            };
            for record in &batch.records {
                match record {
                    Record::Job {
                        partition,
                        offset,
                        record_ms,
                        job,
                    } => {
                        load(&job.delivery_id, &mut summaries)?;
                        if let Some((s, ..)) = summaries.get_mut(&job.delivery_id) {
                            s.job(job, *partition, *offset, *record_ms);
                        }
                    }
                    Record::Attempt {
                        partition,
                        offset,
                        bytes,
                        attempt: a,
                    } => {
                        let pk = keys::pk(a.started_at_ms, *partition, *offset);
                        attempts
                            .insert(pk.as_slice(), bytes.as_slice())
                            .map_err(err)?;
                        for (table, value) in [
                            (&mut att_delivery, &a.delivery_id),
                            (&mut att_sub, &a.subscription_id),
                            (&mut att_event, &a.event_id),
                            (&mut att_tenant, &a.tenant),
                        ] {
                            let k = keys::with(&keys::prefix(value), &pk);
                            table.insert(k.as_slice(), [].as_slice()).map_err(err)?;
                        }
                        load(&a.delivery_id, &mut summaries)?;
                        if let Some((s, ..)) = summaries.get_mut(&a.delivery_id) {
                            s.attempt(a);
                        }
                        if !a.replay_id.is_empty() && a.outcome == AttemptOutcome::Succeeded as i32
                        {
                            let k =
                                keys::with(&keys::prefix(&a.replay_id), a.delivery_id.as_bytes());
                            let new = replay_delivered
                                .insert(k.as_slice(), [].as_slice())
                                .map_err(err)?
                                .is_none();
                            if new {
                                let n = replay_count
                                    .get(a.replay_id.as_str())
                                    .map_err(err)?
                                    .map_or(0, |v| v.value());
                                replay_count
                                    .insert(a.replay_id.as_str(), n + 1)
                                    .map_err(err)?;
                            }
                        }
                    }
                    Record::Quarantined(q) => {
                        let pk = keys::pk(q.quarantined_ms, q.partition, q.offset);
                        quarantine
                            .insert(pk.as_slice(), q.encode_to_vec().as_slice())
                            .map_err(err)?;
                    }
                    Record::DeadLetter {
                        partition,
                        offset,
                        bytes,
                        letter,
                    } => {
                        let Some(job) = &letter.job else { continue };
                        let pk = keys::pk(letter.dead_lettered_at_ms, *partition, *offset);
                        dead.insert(pk.as_slice(), bytes.as_slice()).map_err(err)?;
                        for (table, value) in [
                            (&mut dead_delivery, &job.delivery_id),
                            (&mut dead_sub, &job.subscription_id),
                            (&mut dead_tenant, &job.tenant),
                        ] {
                            let k = keys::with(&keys::prefix(value), &pk);
                            table.insert(k.as_slice(), [].as_slice()).map_err(err)?;
                        }
                        load(&job.delivery_id, &mut summaries)?;
                        if let Some((s, ..)) = summaries.get_mut(&job.delivery_id) {
                            s.dead_letter(letter);
                        }
                    }
                }
            }
            let mut by_sub = txn.open_table(DEL_BY_SUB).map_err(err)?;
            let mut by_log = txn.open_table(DEL_BY_SUB_LOG).map_err(err)?;
            let mut by_created = txn.open_table(DEL_BY_CREATED).map_err(err)?;
            for (id, (s, created_before, log_before)) in summaries {
                let log = s.log_position();
                if log_before != Some(log) || s.created_ms != created_before {
                    if let Some(before) = log_before {
                        by_log
                            .remove(del_by_log_key(&s.subscription_id, &before, &id).as_slice())
                            .map_err(err)?;
                    }
                    by_log
                        .insert(
                            del_by_log_key(&s.subscription_id, &log, &id).as_slice(),
                            keys::time_key(s.created_ms).as_slice(),
                        )
                        .map_err(err)?;
                }
                if s.created_ms != created_before {
                    if created_before != 0 {
                        by_sub
                            .remove(
                                del_by_sub_key(&s.subscription_id, created_before, &id).as_slice(),
                            )
                            .map_err(err)?;
                        by_created
                            .remove(del_by_created_key(created_before, &id).as_slice())
                            .map_err(err)?;
                    }
                    by_sub
                        .insert(
                            del_by_sub_key(&s.subscription_id, s.created_ms, &id).as_slice(),
                            [].as_slice(),
                        )
                        .map_err(err)?;
                    by_created
                        .insert(
                            del_by_created_key(s.created_ms, &id).as_slice(),
                            [].as_slice(),
                        )
                        .map_err(err)?;
                }
                deliveries
                    .insert(id.as_str(), s.encode_to_vec().as_slice())
                    .map_err(err)?;
            }
            let mut positions = txn.open_table(POSITIONS).map_err(err)?;
            for ((topic, partition), next) in &batch.positions {
                positions
                    .insert(format!("{topic}/{partition}").as_str(), *next)
                    .map_err(err)?;
            }
        }
        txn.commit().map_err(err)?;
        Ok(())
    }

    pub fn delivery(&self, id: &str) -> Result<Option<Summary>, IndexError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(DELIVERIES).map_err(err)?;
        Ok(table
            .get(id)
            .map_err(err)?
            .and_then(|v| Summary::decode(v.value()).ok()))
    }

    pub fn replay_delivered(&self, replay_id: &str) -> Result<u64, IndexError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(REPLAY_COUNT).map_err(err)?;
        Ok(table.get(replay_id).map_err(err)?.map_or(0, |v| v.value()))
    }

    /// Attempts in `scope`, newest first (or oldest first), kept by `keep`.
    pub fn attempts(
        &self,
        scope: &Scope,
        window: &Window,
        keep: impl Fn(&Attempt) -> bool,
    ) -> Result<Page<Attempt>, IndexError> {
        let index = match scope {
            Scope::Delivery(_) => Some(ATT_BY_DELIVERY),
            Scope::Subscription(_) => Some(ATT_BY_SUB),
            Scope::Event(_) => Some(ATT_BY_EVENT),
            Scope::Tenant(_) => Some(ATT_BY_TENANT),
            Scope::All => None,
        };
        self.list(ATTEMPTS, index, scope, window, |b| {
            Attempt::decode(b).ok().filter(|a| keep(a))
        })
    }

    /// Dead letters in `scope`, newest first (or oldest first), kept by `keep`.
    pub fn dead_letters(
        &self,
        scope: &Scope,
        window: &Window,
        keep: impl Fn(&DeadLetter) -> bool,
    ) -> Result<Page<DeadLetter>, IndexError> {
        let index = match scope {
            Scope::Delivery(_) => Some(DEAD_BY_DELIVERY),
            Scope::Subscription(_) => Some(DEAD_BY_SUB),
            Scope::Tenant(_) => Some(DEAD_BY_TENANT),
            Scope::Event(_) => {
                return Err(IndexError::Store("no event index of dead letters".into()));
            }
            Scope::All => None,
        };
        self.list(DEAD, index, scope, window, |b| {
            DeadLetter::decode(b).ok().filter(|d| keep(d))
        })
    }

    fn list<T>(
        &self,
        primary: Table,
        index: Option<Table>,
        scope: &Scope,
        w: &Window,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Page<T>, IndexError> {
        let prefix = match scope {
            Scope::Delivery(v) | Scope::Subscription(v) | Scope::Event(v) | Scope::Tenant(v) => {
                keys::prefix(v)
            }
            Scope::All => Vec::new(),
        };
        let lo = keys::with(&prefix, &keys::time_key(w.since_ms.unwrap_or(0)));
        let mut lo_bound = Bound::Included(lo);
        let mut hi_bound = match w.until_ms {
            Some(u) => Bound::Excluded(keys::with(&prefix, &keys::time_key(u))),
            None if prefix.is_empty() => Bound::Unbounded,
            None => Bound::Excluded(keys::prefix_end(&prefix)),
        };
        if let Some(c) = &w.cursor {
            let at = keys::with(&prefix, c);
            if w.oldest_first {
                if matches!(&lo_bound, Bound::Included(lo) if *lo <= at) {
                    lo_bound = Bound::Excluded(at);
                }
            } else if match &hi_bound {
                Bound::Excluded(hi) => at < *hi,
                _ => true,
            } {
                hi_bound = Bound::Excluded(at);
            }
        }
        // An empty window (or a cursor before it): nothing, and no inverted range.
        if let (Bound::Included(lo) | Bound::Excluded(lo), Bound::Excluded(hi)) =
            (&lo_bound, &hi_bound)
            && lo >= hi
        {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let txn = self.db.begin_read().map_err(err)?;
        let primary = txn.open_table(primary).map_err(err)?;
        let index = index.map(|t| txn.open_table(t)).transpose().map_err(err)?;
        let range = (as_slice(&lo_bound), as_slice(&hi_bound));
        let table = index.as_ref().unwrap_or(&primary);
        let iter = table.range::<&[u8]>(range).map_err(err)?;
        let mut items = Vec::new();
        let mut last: Option<Pk> = None;
        let mut scanned = 0usize;
        let mut step = |entry: Entry<'_>| -> Result<bool, IndexError> {
            let (k, v) = entry.map_err(err)?;
            let key = k.value();
            let Some(pk) = key
                .get(key.len().saturating_sub(PK_LEN)..)
                .and_then(|s| Pk::try_from(s).ok())
            else {
                return Ok(true);
            };
            last = Some(pk);
            scanned += 1;
            let value = if index.is_some() {
                primary
                    .get(pk.as_slice())
                    .map_err(err)?
                    .map(|g| decode(g.value()))
            } else {
                Some(decode(v.value()))
            };
            if let Some(Some(item)) = value {
                items.push(item);
            }
            Ok(items.len() < w.limit && scanned < SCAN_BUDGET)
        };
        let mut exhausted = true;
        if w.oldest_first {
            for entry in iter {
                if !step(entry)? {
                    exhausted = false;
                    break;
                }
            }
        } else {
            for entry in iter.rev() {
                if !step(entry)? {
                    exhausted = false;
                    break;
                }
            }
        }
        Ok(Page {
            items,
            next: if exhausted { None } else { last },
        })
    }

    /// Quarantined records, newest first.
    pub fn quarantined(&self, window: &Window) -> Result<Page<Quarantined>, IndexError> {
        self.list(QUARANTINE, None, &Scope::All, window, |b| {
            Quarantined::decode(b).ok()
        })
    }

    /// One quarantined record by its position key (its id in the API).
    pub fn quarantined_at(&self, pk: &Pk) -> Result<Option<Quarantined>, IndexError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUARANTINE).map_err(err)?;
        Ok(table
            .get(pk.as_slice())
            .map_err(err)?
            .and_then(|v| Quarantined::decode(v.value()).ok()))
    }

    /// A subscription's deliveries created in [`since_ms`, `until_ms`), oldest first, after
    /// `after` (a key this returned before), at most `limit`, with the key of each.
    pub fn deliveries_of(
        &self,
        subscription_id: &str,
        since_ms: i64,
        until_ms: i64,
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, String, Summary)>, IndexError> {
        let prefix = keys::prefix(subscription_id);
        let lo = keys::with(&prefix, &keys::time_key(since_ms));
        let hi = keys::with(&prefix, &keys::time_key(until_ms));
        let lo_bound = if !after.is_empty() && after >= lo.as_slice() {
            Bound::Excluded(after.to_vec())
        } else {
            Bound::Included(lo)
        };
        let txn = self.db.begin_read().map_err(err)?;
        let index = txn.open_table(DEL_BY_SUB).map_err(err)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(err)?;
        let range = (as_slice(&lo_bound), Bound::Excluded(hi.as_slice()));
        let mut out = Vec::new();
        for entry in index.range::<&[u8]>(range).map_err(err)? {
            let (k, _) = entry.map_err(err)?;
            let key = k.value();
            let id = String::from_utf8_lossy(&key[prefix.len() + 8..]).into_owned();
            if let Some(s) = deliveries
                .get(id.as_str())
                .map_err(err)?
                .and_then(|v| Summary::decode(v.value()).ok())
            {
                out.push((key.to_vec(), id, s));
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// A subscription's deliveries created in [`since_ms`, `until_ms`), newest first, older
    /// than `before` (the position this returned with a page; `None`: from the newest), at
    /// most `limit`; with the position of the last one when more may follow.
    pub fn deliveries_newest_first(
        &self,
        subscription_id: &str,
        since_ms: i64,
        until_ms: i64,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<LogPage, IndexError> {
        let prefix = keys::prefix(subscription_id);
        let lo = keys::with(&prefix, &keys::time_key(since_ms));
        let mut hi = keys::with(&prefix, &keys::time_key(until_ms));
        if let Some(b) = before {
            hi = hi.min(keys::with(&prefix, b));
        }
        let txn = self.db.begin_read().map_err(err)?;
        let index = txn.open_table(DEL_BY_SUB).map_err(err)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(err)?;
        let mut out = Vec::new();
        let mut last = None;
        for entry in index
            .range::<&[u8]>(lo.as_slice()..hi.as_slice())
            .map_err(err)?
            .rev()
        {
            if out.len() >= limit {
                return Ok(LogPage {
                    items: out,
                    next: last,
                });
            }
            let (k, _) = entry.map_err(err)?;
            let key = k.value();
            let id = String::from_utf8_lossy(&key[prefix.len() + 8..]).into_owned();
            last = Some(key[prefix.len()..].to_vec());
            if let Some(s) = deliveries
                .get(id.as_str())
                .map_err(err)?
                .and_then(|v| Summary::decode(v.value()).ok())
            {
                out.push((id, s));
            }
        }
        Ok(LogPage {
            items: out,
            next: None,
        })
    }

    /// A subscription's deliveries created in [`since_ms`, `until_ms`), in the order of the log:
    /// by the position of their event on the events topic, which per key is the order the
    /// events were published, routed and first delivered in (never an order of ids or times:
    /// a burst shares its milliseconds). Those whose event position is unknown come last, by
    /// creation time. Goes on from `after` (a cursor this returned; empty: from the start) and
    /// answers at most `limit` deliveries after looking at most [`SCAN_BUDGET`] entries.
    pub fn deliveries_in_log_order(
        &self,
        subscription_id: &str,
        since_ms: i64,
        until_ms: i64,
        after: &[u8],
        limit: usize,
    ) -> Result<LogPage, IndexError> {
        let prefix = keys::prefix(subscription_id);
        let hi = keys::prefix_end(&prefix);
        let lo_bound = match after.split_first() {
            Some((&LOG_CURSOR, key)) if key.starts_with(&prefix) => Bound::Excluded(key.to_vec()),
            Some(_) => return Err(IndexError::Store("not a cursor of this order".into())),
            None => Bound::Included(prefix.clone()),
        };
        let txn = self.db.begin_read().map_err(err)?;
        let index = txn.open_table(DEL_BY_SUB_LOG).map_err(err)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(err)?;
        let range = (as_slice(&lo_bound), Bound::Excluded(hi.as_slice()));
        let (mut items, mut last, mut scanned) = (Vec::new(), None, 0usize);
        let mut exhausted = true;
        for entry in index.range::<&[u8]>(range).map_err(err)? {
            if items.len() >= limit || scanned >= SCAN_BUDGET {
                exhausted = false;
                break;
            }
            let (k, v) = entry.map_err(err)?;
            let key = k.value();
            scanned += 1;
            last = Some(key.to_vec());
            let created = keys::pk_time(v.value());
            if created < since_ms || created >= until_ms {
                continue;
            }
            let id = String::from_utf8_lossy(&key[prefix.len() + 12..]).into_owned();
            if let Some(s) = deliveries
                .get(id.as_str())
                .map_err(err)?
                .and_then(|v| Summary::decode(v.value()).ok())
            {
                items.push((id, s));
            }
        }
        Ok(LogPage {
            items,
            next: (!exhausted).then(|| {
                let mut cursor = vec![LOG_CURSOR];
                cursor.extend(last.unwrap_or(prefix));
                cursor
            }),
        })
    }

    /// Whether `cursor` is one of [`Store::deliveries_in_log_order`] (else one of
    /// [`Store::deliveries_of`], by creation time: a replay run begun by an earlier version).
    pub fn is_log_cursor(cursor: &[u8]) -> bool {
        cursor.first() == Some(&LOG_CURSOR)
    }

    /// Removes what is older than the cutoffs (epoch ms), at most `max` entries of each kind
    /// per call; returns how many were removed.
    pub fn sweep(
        &self,
        attempts_before: Option<i64>,
        dead_letters_before: Option<i64>,
        deliveries_before: Option<i64>,
        quarantine_before: Option<i64>,
        max: usize,
    ) -> Result<usize, IndexError> {
        let txn = self.db.begin_write().map_err(err)?;
        let mut removed = 0;
        {
            if let Some(cutoff) = quarantine_before {
                let mut table = txn.open_table(QUARANTINE).map_err(err)?;
                for pk in first_keys(&table, cutoff, max)? {
                    table.remove(pk.as_slice()).map_err(err)?;
                    removed += 1;
                }
            }
            if let Some(cutoff) = attempts_before {
                let mut primary = txn.open_table(ATTEMPTS).map_err(err)?;
                let old = first_keys(&primary, cutoff, max)?;
                let mut indexes = [
                    txn.open_table(ATT_BY_DELIVERY).map_err(err)?,
                    txn.open_table(ATT_BY_SUB).map_err(err)?,
                    txn.open_table(ATT_BY_EVENT).map_err(err)?,
                    txn.open_table(ATT_BY_TENANT).map_err(err)?,
                ];
                for pk in old {
                    let gone = primary.remove(pk.as_slice()).map_err(err)?;
                    if let Some(a) = gone.and_then(|v| Attempt::decode(v.value()).ok()) {
                        let values = [&a.delivery_id, &a.subscription_id, &a.event_id, &a.tenant];
                        for (t, value) in indexes.iter_mut().zip(values) {
                            t.remove(keys::with(&keys::prefix(value), &pk).as_slice())
                                .map_err(err)?;
                        }
                    }
                    removed += 1;
                }
            }
            if let Some(cutoff) = dead_letters_before {
                let mut primary = txn.open_table(DEAD).map_err(err)?;
                let old = first_keys(&primary, cutoff, max)?;
                let mut indexes = [
                    txn.open_table(DEAD_BY_DELIVERY).map_err(err)?,
                    txn.open_table(DEAD_BY_SUB).map_err(err)?,
                    txn.open_table(DEAD_BY_TENANT).map_err(err)?,
                ];
                for pk in old {
                    let gone = primary.remove(pk.as_slice()).map_err(err)?;
                    if let Some(job) = gone
                        .and_then(|v| DeadLetter::decode(v.value()).ok())
                        .and_then(|d| d.job)
                    {
                        let values = [&job.delivery_id, &job.subscription_id, &job.tenant];
                        for (t, value) in indexes.iter_mut().zip(values) {
                            t.remove(keys::with(&keys::prefix(value), &pk).as_slice())
                                .map_err(err)?;
                        }
                    }
                    removed += 1;
                }
            }
            if let Some(cutoff) = deliveries_before {
                let mut by_created = txn.open_table(DEL_BY_CREATED).map_err(err)?;
                let mut by_sub = txn.open_table(DEL_BY_SUB).map_err(err)?;
                let mut by_log = txn.open_table(DEL_BY_SUB_LOG).map_err(err)?;
                let mut deliveries = txn.open_table(DELIVERIES).map_err(err)?;
                let hi = keys::time_key(cutoff);
                let old: Vec<Vec<u8>> = by_created
                    .range::<&[u8]>(..hi.as_slice())
                    .map_err(err)?
                    .take(max)
                    .filter_map(|e| e.ok().map(|(k, _)| k.value().to_vec()))
                    .collect();
                for k in old {
                    by_created.remove(k.as_slice()).map_err(err)?;
                    let id = String::from_utf8_lossy(&k[8..]).into_owned();
                    let gone = deliveries.remove(id.as_str()).map_err(err)?;
                    if let Some(s) = gone.and_then(|v| Summary::decode(v.value()).ok()) {
                        by_sub
                            .remove(
                                del_by_sub_key(&s.subscription_id, s.created_ms, &id).as_slice(),
                            )
                            .map_err(err)?;
                        by_log
                            .remove(
                                del_by_log_key(&s.subscription_id, &s.log_position(), &id)
                                    .as_slice(),
                            )
                            .map_err(err)?;
                    }
                    removed += 1;
                }
            }
        }
        txn.commit().map_err(err)?;
        Ok(removed)
    }

    /// Entries per table, for tests and the benchmark.
    pub fn counts(&self) -> Result<(u64, u64, u64), IndexError> {
        let txn = self.db.begin_read().map_err(err)?;
        Ok((
            txn.open_table(ATTEMPTS).map_err(err)?.len().map_err(err)?,
            txn.open_table(DEAD).map_err(err)?.len().map_err(err)?,
            txn.open_table(DELIVERIES)
                .map_err(err)?
                .len()
                .map_err(err)?,
        ))
    }
}

fn first_keys(
    table: &redb::Table<'_, &'static [u8], &'static [u8]>,
    before_ms: i64,
    max: usize,
) -> Result<Vec<Pk>, IndexError> {
    let hi = keys::time_key(before_ms);
    Ok(table
        .range::<&[u8]>(..hi.as_slice())
        .map_err(err)?
        .take(max)
        .filter_map(|e| e.ok().and_then(|(k, _)| Pk::try_from(k.value()).ok()))
        .collect())
}

fn as_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn del_by_sub_key(sub: &str, created_ms: i64, id: &str) -> Vec<u8> {
    let mut k = keys::prefix(sub);
    k.extend_from_slice(&keys::time_key(created_ms));
    k.extend_from_slice(id.as_bytes());
    k
}

fn del_by_log_key(sub: &str, log_position: &[u8; 12], id: &str) -> Vec<u8> {
    let mut k = keys::prefix(sub);
    k.extend_from_slice(log_position);
    k.extend_from_slice(id.as_bytes());
    k
}

fn del_by_created_key(created_ms: i64, id: &str) -> Vec<u8> {
    keys::with(&keys::time_key(created_ms), id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ops-index-test-{}", uuid::Uuid::new_v4()));
        (Store::open(&dir, 4 << 20).unwrap(), dir)
    }

    fn attempt(delivery: &str, sub: &str, at: i64, outcome: AttemptOutcome) -> Attempt {
        Attempt {
            delivery_id: delivery.into(),
            subscription_id: sub.into(),
            tenant: "t".into(),
            event_id: format!("e-{delivery}"),
            started_at_ms: at,
            outcome: outcome as i32,
            ..Default::default()
        }
    }

    fn batch(attempts: &[Attempt], next: i64) -> Batch {
        let mut b = Batch::default();
        for (i, a) in attempts.iter().enumerate() {
            b.records.push(Record::Attempt {
                partition: 0,
                offset: next - attempts.len() as i64 + i as i64,
                bytes: a.encode_to_vec(),
                attempt: a.clone(),
            });
        }
        b.positions.insert(("attempts".into(), 0), next);
        b
    }

    fn window(limit: usize, cursor: Option<Pk>) -> Window {
        Window {
            since_ms: None,
            until_ms: None,
            cursor,
            limit,
            oldest_first: false,
        }
    }

    #[test]
    fn pages_newest_first_with_filters_and_checkpoints() {
        let (s, dir) = store();
        let list: Vec<Attempt> = (0..25)
            .map(|i| {
                let outcome = if i % 5 == 4 {
                    AttemptOutcome::Succeeded
                } else {
                    AttemptOutcome::Retryable
                };
                attempt(
                    &format!("d{}", i / 5),
                    if i < 10 { "s1" } else { "s2" },
                    1000 + i,
                    outcome,
                )
            })
            .collect();
        s.apply(batch(&list, 25)).unwrap();
        assert_eq!(s.positions().unwrap()[&("attempts".to_owned(), 0)], 25);
        // By subscription, newest first, in pages of 4.
        let scope = Scope::Subscription("s2".into());
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = s.attempts(&scope, &window(4, cursor), |_| true).unwrap();
            seen.extend(page.items.iter().map(|a| a.started_at_ms));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, (1010..1025).rev().collect::<Vec<_>>());
        // A window and a filter.
        let w = Window {
            since_ms: Some(1005),
            until_ms: Some(1015),
            ..window(100, None)
        };
        let page = s
            .attempts(&Scope::All, &w, |a| {
                a.outcome == AttemptOutcome::Succeeded as i32
            })
            .unwrap();
        let times: Vec<i64> = page.items.iter().map(|a| a.started_at_ms).collect();
        assert_eq!(times, vec![1014, 1009]);
        // One delivery's attempts in order, and its summary.
        let w = Window {
            oldest_first: true,
            ..window(10, None)
        };
        let page = s
            .attempts(&Scope::Delivery("d1".into()), &w, |_| true)
            .unwrap();
        let times: Vec<i64> = page.items.iter().map(|a| a.started_at_ms).collect();
        assert_eq!(times, vec![1005, 1006, 1007, 1008, 1009]);
        let d1 = s.delivery("d1").unwrap().unwrap();
        assert_eq!((d1.attempts, d1.created_ms), (5, 1005));
        assert_eq!(d1.state(2000, 10_000), crate::State::Succeeded);
        // Deliveries of a subscription by age, resumable after a key.
        let first = s.deliveries_of("s2", 0, i64::MAX, &[], 1).unwrap();
        assert_eq!(first[0].1, "d2");
        let rest = s.deliveries_of("s2", 0, i64::MAX, &first[0].0, 10).unwrap();
        let ids: Vec<&str> = rest.iter().map(|(_, id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["d3", "d4"]);
        // Newest first, in pages, within a window.
        let ids =
            |p: &LogPage| -> Vec<String> { p.items.iter().map(|(id, _)| id.clone()).collect() };
        let page = s
            .deliveries_newest_first("s2", 0, i64::MAX, None, 2)
            .unwrap();
        assert_eq!(ids(&page), ["d4", "d3"]);
        let page = s
            .deliveries_newest_first("s2", 0, i64::MAX, page.next.as_deref(), 2)
            .unwrap();
        assert_eq!((ids(&page), page.next), (vec!["d2".to_owned()], None));
        let page = s
            .deliveries_newest_first("s2", 1012, 1020, None, 10)
            .unwrap();
        assert_eq!(ids(&page), ["d3"], "created in [1012, 1020)");
        // Retention removes the old entries and their index entries.
        let removed = s.sweep(Some(1010), None, Some(1010), None, 1000).unwrap();
        assert_eq!(removed, 10 + 2);
        let page = s
            .attempts(
                &Scope::Subscription("s1".into()),
                &window(100, None),
                |_| true,
            )
            .unwrap();
        assert!(page.items.is_empty());
        assert!(s.delivery("d0").unwrap().is_none());
        assert_eq!(s.counts().unwrap().0, 15);
        s.clear().unwrap();
        assert_eq!(s.counts().unwrap(), (0, 0, 0));
        assert!(s.positions().unwrap().is_empty());
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
