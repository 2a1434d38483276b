//! Driving one run: the matching balance rows become `balance.extracted` events, exactly
//! once per run across crashes.
//!
//! The driver is a transactional producer with id `{group_prefix}.extract.{run id}`. Rows are
//! read in key order from a snapshot of the balances store, starting after the run's
//! checkpoint (`last_key`); each batch of up to `BATCH` events goes to `events` in one Kafka
//! transaction together with the run record carrying the new checkpoint and counts. A new
//! driver's `init_transactions` fences an earlier one and aborts its open transaction, then
//! it reads the last committed run record and carries on after its checkpoint: no row is
//! emitted twice, none is skipped.
//!
//! Two threads share a run: one reads the snapshot and prepares the next batches (select,
//! `data`, protobuf encoding), at most `AHEAD` of them ahead, while the other produces and
//! commits the current one, so preparing overlaps with waiting for a commit. The producer
//! is a `BaseProducer` without per-record delivery futures: a record that fails makes its
//! transaction's commit fail, and the run resumes from its checkpoint.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use hookline_events::BalanceRow;
use hookline_events::time_fmt::{now_ms, rfc3339_micros, rfc3339_millis};
use hookline_events::{CONTENT_TYPE_HEADER, CONTENT_TYPE_PROTOBUF};
use hookline_kafka::KafkaContext;
use hookline_kafka::rdkafka::ClientContext;
use hookline_kafka::rdkafka::config::RDKafkaLogLevel;
use hookline_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use hookline_kafka::rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use hookline_kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use hookline_proto::Message as _;
use hookline_proto::v1::extract_record::Record;
use hookline_proto::v1::{Event, ExtractConfig, ExtractRecord, ExtractRun, RunStatus};
use hookline_runtime::CancellationToken;
use hookline_telemetry::trace::{self, Context as TraceContext, Traced};

use crate::AppState;
use crate::query::{Selected, Selector};
use crate::store::{ROWS, rows_after};

pub const EVENT_TYPE: &str = "balance.extracted";

/// Events per transaction.
const BATCH: usize = 20_000;
/// Rows looked at per transaction at most (a selective query still records progress).
const SCAN: usize = 100_000;
/// Batches prepared ahead of the one being produced.
const AHEAD: usize = 1;
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// A run whose driver committed nothing for this long is taken over by another driver.
pub const LEASE_MS: i64 = 10_000;

pub(crate) fn run_key(tenant: &str, name: &str, run_id: &str) -> String {
    format!("run/{tenant}/{name}/{run_id}")
}

pub(crate) fn cancel_key(tenant: &str, name: &str, run_id: &str) -> String {
    format!("cancel/{tenant}/{name}/{run_id}")
}

pub(crate) fn is_final(run: &ExtractRun) -> bool {
    matches!(
        run.status(),
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
    )
}

/// A run's event for one row; the id is stable per run and row.
#[cfg(test)]
fn event_for(
    config: &ExtractConfig,
    run: &ExtractRun,
    key: &str,
    data: String,
    time: &str,
) -> Event {
    let mut event = event_template(config, run);
    event.id = event_id(&run.run_id, key);
    event.time = time.to_owned();
    event.data_json = data;
    event
}

/// The fields every event of a run shares.
fn event_template(config: &ExtractConfig, run: &ExtractRun) -> Event {
    Event {
        r#type: EVENT_TYPE.to_owned(),
        tenant: config.tenant.clone(),
        metadata: HashMap::from([
            ("eventType".to_owned(), EVENT_TYPE.to_owned()),
            ("startedOn".to_owned(), run.started_on.clone()),
            ("extractConfigurationName".to_owned(), config.name.clone()),
        ]),
        ..Default::default()
    }
}

/// The id of a run's event for the row at `key`: stable per run and row.
#[cfg(test)]
fn event_id(run_id: &str, key: &str) -> String {
    let mut name = String::with_capacity(run_id.len() + key.len() + 9);
    let mut id = String::new();
    push_event_id(&mut name, &mut id, run_id, key);
    id
}

/// [`event_id`] into `id`, with `name` as scratch space (no allocation once both have
/// grown).
fn push_event_id(name: &mut String, id: &mut String, run_id: &str, key: &str) {
    name.clear();
    name.push_str("extract/");
    name.push_str(run_id);
    name.push('/');
    name.push_str(key);
    let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes());
    id.clear();
    id.push_str(
        uuid.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
}

/// Encodes events of one run: the fields shared by the run are encoded once, and each
/// event is that prefix followed by its own fields (`id`, `time`, `data_json`). Protobuf
/// merges concatenated messages, so the bytes decode to the whole event.
struct Encoder {
    shared: Vec<u8>,
    own: Event,
    name: String,
}

impl Encoder {
    fn new(config: &ExtractConfig, run: &ExtractRun) -> Self {
        Self {
            shared: event_template(config, run).encode_to_vec(),
            own: Event::default(),
            name: String::new(),
        }
    }

    /// Appends the event of the row at `key` to `out`; `data` is taken (left empty, its
    /// buffer swapped with the previous row's).
    fn append(
        &mut self,
        run_id: &str,
        key: &str,
        time: &str,
        data: &mut String,
        out: &mut Vec<u8>,
    ) {
        push_event_id(&mut self.name, &mut self.own.id, run_id, key);
        if self.own.time != time {
            time.clone_into(&mut self.own.time);
        }
        std::mem::swap(&mut self.own.data_json, data);
        out.extend_from_slice(&self.shared);
        self.own.encode(out).expect("a Vec grows as needed");
    }
}

/// Prepared events of one transaction, in two buffers (no allocation per event), and the
/// progress they make.
#[derive(Default)]
struct Batch {
    keys: String,
    payloads: Vec<u8>,
    /// Each event's end in `keys` and in `payloads`.
    ends: Vec<(usize, usize)>,
    /// The checkpoint after this batch: the last key looked at.
    last_key: String,
    skipped: u64,
    /// No row after this batch.
    exhausted: bool,
}

impl Batch {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn events(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut start = (0, 0);
        self.ends.iter().map(move |&(k, p)| {
            let event = (&self.keys[start.0..k], &self.payloads[start.1..p]);
            start = (k, p);
            event
        })
    }
}

/// Reads the rows after `after` from a snapshot and sends batches of events to `tx` until
/// the rows end, an error, or the receiver is gone.
fn prepare(
    state: &AppState,
    config: &ExtractConfig,
    run: &ExtractRun,
    tx: &mpsc::SyncSender<Result<Batch, String>>,
) {
    let result = (|| -> Result<(), String> {
        let snapshot = state.balances.snapshot().map_err(kafka)?;
        let table = snapshot.open_table(ROWS).map_err(kafka)?;
        let mut rows = rows_after(&table, &run.last_key).map_err(kafka)?;
        let selector = Selector::new(&config.query.clone().unwrap_or_default());
        let mut encoder = Encoder::new(config, run);
        let mut row = BalanceRow::default();
        let mut data = String::new();
        // The previous batch's sizes: the next one's buffers are allocated once.
        let mut sizes = (0, 0, 0);
        loop {
            let time = rfc3339_millis(now_ms());
            let mut batch = Batch {
                keys: String::with_capacity(sizes.0 + sizes.0 / 8),
                payloads: Vec::with_capacity(sizes.1 + sizes.1 / 8),
                ends: Vec::with_capacity(sizes.2),
                exhausted: true,
                ..Batch::default()
            };
            let mut scanned = 0;
            for entry in rows.by_ref() {
                let (key, value) = entry.map_err(kafka)?;
                let key = key.value();
                scanned += 1;
                row.clear();
                if row.merge(value.value()).is_ok() {
                    match selector.select(&row, &mut data) {
                        Selected::Data => {
                            encoder.append(&run.run_id, key, &time, &mut data, &mut batch.payloads);
                            batch.keys.push_str(key);
                            batch.ends.push((batch.keys.len(), batch.payloads.len()));
                        }
                        Selected::Invalid => batch.skipped += 1,
                        Selected::No => {}
                    }
                }
                key.clone_into(&mut batch.last_key);
                if batch.len() >= BATCH || scanned >= SCAN {
                    batch.exhausted = false;
                    break;
                }
            }
            sizes = (batch.keys.len(), batch.payloads.len(), batch.len());
            let exhausted = batch.exhausted;
            if tx.send(Ok(batch)).is_err() || exhausted {
                return Ok(());
            }
        }
    })();
    if let Err(e) = result {
        let _ = tx.send(Err(e));
    }
}

fn kafka(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn fenced(e: &KafkaError) -> bool {
    let code = match e {
        KafkaError::Transaction(t) => Some(t.code()),
        _ => e.rdkafka_error_code(),
    };
    matches!(
        code,
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
    )
}

/// The run as last committed: its run record, else the winning claim of a scheduled tick.
pub(crate) fn committed_run(
    state: &AppState,
    tenant: &str,
    name: &str,
    run_id: &str,
) -> Option<ExtractRun> {
    if let Some(ExtractRecord {
        record: Some(Record::Run(r)),
    }) = state.extracts.get(&run_key(tenant, name, run_id))
    {
        return Some(r);
    }
    state.claims.queued(tenant, name, run_id)
}

/// The driver's producer: records are not acknowledged one by one (no delivery future
/// each), the commit reports any failure.
type BulkProducer = BaseProducer<BulkContext>;

/// [`KafkaContext`]'s logging, and a delivery report that does nothing.
struct BulkContext;

impl ClientContext for BulkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        KafkaContext.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        hookline_kafka::context::log_client_error(&error, reason);
    }
}

impl ProducerContext for BulkContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// A transactional producer for a run's batches: the settings of
/// `hookline_kafka::transactional_producer`, with a longer linger (records go out in fewer,
/// larger requests) and a queue that holds a whole batch.
fn bulk_producer(state: &AppState, transactional_id: &str) -> Result<BulkProducer, KafkaError> {
    let mut c = hookline_kafka::client_config(&state.config).map_err(|e| match e {
        hookline_kafka::KafkaError::Client(e) => e,
        other => KafkaError::ClientCreation(other.to_string()),
    })?;
    c.set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", (2 * BATCH).to_string())
        .set("transaction.timeout.ms", "30000")
        .set("message.timeout.ms", "20000");
    c.create_with_context(BulkContext)
}

struct Driver<'a> {
    state: &'a AppState,
    producer: BulkProducer,
    rt: tokio::runtime::Handle,
    /// This drive of the run (one span per process driving it); each event's own span
    /// links to it.
    run_span: Traced,
}

/// Drives the run to its end (or until `stop`, or a failure: it resumes later from its
/// checkpoint). Blocking: call on the blocking pool.
pub(crate) fn drive(
    state: &AppState,
    tenant: &str,
    name: &str,
    run_id: &str,
    rt: tokio::runtime::Handle,
    stop: &CancellationToken,
) -> Result<(), String> {
    let producer = bulk_producer(
        state,
        &format!(
            "{}{run_id}",
            hookline_kafka::acl::txn_prefix(&state.config, hookline_kafka::acl::TXN_EXTRACT)
        ),
    )
    .map_err(kafka)?;
    // Fences an earlier driver of this run and aborts its open transaction.
    producer.init_transactions(TXN_TIMEOUT).map_err(kafka)?;
    let run_span = Traced::start(&TraceContext::new(), || {
        tracing::info_span!(
            "extract_run",
            otel.kind = "producer",
            hookline.service = "extract-producer",
            extract = %name,
            run_id = %run_id,
        )
    });
    let d = Driver {
        state,
        producer,
        rt,
        run_span,
    };
    d.rt.block_on(state.extracts.sync());
    let mut run = committed_run(state, tenant, name, run_id).ok_or("run not found")?;
    if is_final(&run) {
        return Ok(());
    }
    // Logs of the run name it, traced or not.
    let span = match d.run_span.span().is_none() {
        true => tracing::info_span!("extract_run", extract = %name, run_id = %run_id),
        false => d.run_span.span().clone(),
    };
    let _enter = span.enter();
    let Some(config) = crate::records::config_of(state, tenant, name) else {
        run.status = RunStatus::Failed as i32;
        run.error = "the extract was deleted".into();
        run.finished_on = rfc3339_micros(time::OffsetDateTime::now_utc());
        return d.commit(&Batch::default(), &run);
    };
    if run.status() != RunStatus::Running {
        run.status = RunStatus::Running as i32;
        run.heartbeat_ms = now_ms();
        d.commit(&Batch::default(), &run)?;
        tracing::info!(tenant = %tenant, "extract run started");
    } else {
        tracing::info!(after = %run.last_key, emitted = run.rows_emitted, "extract run resumed");
    }
    // Every row acknowledged before now is in the snapshot.
    d.rt.block_on(state.balances.sync());
    let cancel = cancel_key(tenant, name, run_id);
    std::thread::scope(|scope| {
        let (tx, batches) = mpsc::sync_channel(AHEAD);
        let (config, start) = (&config, run.clone());
        std::thread::Builder::new()
            .name("extract-prepare".into())
            .spawn_scoped(scope, move || prepare(state, config, &start, &tx))
            .map_err(kafka)?;
        // Returning drops `batches`: the preparing thread stops at its next batch.
        loop {
            if stop.is_cancelled() {
                // Left running; it resumes from its checkpoint (here or on another replica).
                return Ok(());
            }
            let mut next = run.clone();
            if state.extracts.get(&cancel).is_some() {
                next.status = RunStatus::Cancelled as i32;
                next.finished_on = rfc3339_micros(time::OffsetDateTime::now_utc());
                d.commit(&Batch::default(), &next)?;
                tracing::info!(emitted = next.rows_emitted, "extract run cancelled");
                return Ok(());
            }
            let batch = batches
                .recv()
                .map_err(|_| "the rows could not be read".to_owned())??;
            if !batch.last_key.is_empty() {
                next.last_key.clone_from(&batch.last_key);
            }
            next.rows_skipped += batch.skipped;
            next.rows_emitted += batch.len() as u64;
            next.heartbeat_ms = now_ms();
            if batch.exhausted {
                next.status = RunStatus::Succeeded as i32;
                next.finished_on = rfc3339_micros(time::OffsetDateTime::now_utc());
            }
            d.commit(&batch, &next)?;
            hookline_telemetry::metrics::metrics()
                .extract_rows
                .add(batch.len() as u64, &[]);
            run = next;
            if batch.exhausted {
                tracing::info!(
                    emitted = run.rows_emitted,
                    skipped = run.rows_skipped,
                    "extract run finished"
                );
                return Ok(());
            }
        }
    })
}

impl Driver<'_> {
    /// Produces the batch's events and the run record in one transaction.
    fn commit(&self, batch: &Batch, run: &ExtractRun) -> Result<(), String> {
        let result = self.try_commit(batch, run);
        if let Err(e) = &result {
            if !fenced(e) {
                let _ = self.producer.abort_transaction(TXN_TIMEOUT);
            }
            tracing::warn!(error = %e, "extract batch not committed; the run resumes from its checkpoint");
        }
        result.map_err(kafka)
    }

    /// An event's headers: its content type and, with tracing on, the context of a span of
    /// its own (a new trace, continued by the router) linked to the run's span.
    fn event_headers(&self, key: &str) -> OwnedHeaders {
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: CONTENT_TYPE_HEADER,
            value: Some(CONTENT_TYPE_PROTOBUF),
        });
        if !trace::enabled() {
            return headers;
        }
        let event = Traced::start(&TraceContext::new(), || {
            tracing::info_span!(
                parent: None,
                "extract_event",
                otel.kind = "producer",
                hookline.service = "extract-producer",
                hookline.balance.key = %key,
            )
        });
        event.link(self.run_span.context());
        trace::inject_kafka(event.context(), headers)
    }

    fn try_commit(&self, batch: &Batch, run: &ExtractRun) -> Result<(), KafkaError> {
        self.producer.begin_transaction()?;
        let topic = &self.state.config.topic_events;
        for (key, payload) in batch.events() {
            let mut record = BaseRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(self.event_headers(key));
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // Serves delivery reports, which frees the queue.
                        record = r;
                        self.producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        let value = ExtractRecord {
            record: Some(Record::Run(run.clone())),
        }
        .encode_to_vec();
        let key = run_key(&run.tenant, &run.extract_name, &run.run_id);
        let record = BaseRecord::to(&self.state.config.topic_extracts)
            .key(&key)
            .payload(&value);
        self.producer.send(record).map_err(|(e, _)| e)?;
        // Every acknowledgement first, serving delivery reports as they come: the client's
        // `commit_transaction` flushes before committing, and while anything is outstanding
        // that flush polls in whole 100 ms steps. Records time out (`message.timeout.ms`), so
        // this ends.
        while self.producer.in_flight_count() > 0 {
            self.producer.poll(Duration::from_millis(1));
        }
        // Fails if any record of the batch failed.
        self.producer.commit_transaction(TXN_TIMEOUT)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An extract and one of its runs.
    fn fixture() -> (ExtractConfig, ExtractRun) {
        let config = ExtractConfig {
            name: "test".into(),
            tenant: "t".into(),
            ..Default::default()
        };
        let run = ExtractRun {
            run_id: "r".into(),
            started_on: "2026-04-14T09:54:43.674940Z".into(),
            ..Default::default()
        };
        (config, run)
    }

    #[test]
    fn event_matches_the_seed_envelope() {
        let (config, run) = fixture();
        let e = event_for(&config, &run, "k", "{}".into(), "2026-04-14T09:54:45.040Z");
        assert_eq!(e.metadata["startedOn"], "2026-04-14T09:54:43.674940Z");
        assert_eq!(e.metadata["extractConfigurationName"], "test");
        assert_eq!(e.metadata["eventType"], EVENT_TYPE);
        assert_eq!(e.metadata.len(), 3);
        assert_eq!(e.r#type, EVENT_TYPE);
        let again = event_for(&config, &run, "k", "{}".into(), "later");
        assert_eq!(e.id, again.id, "one id per run and row");
    }

    #[test]
    fn encoded_events_decode_to_the_whole_event() {
        let (config, run) = fixture();
        let mut encoder = Encoder::new(&config, &run);
        let mut batch = Batch::default();
        for (key, data) in [("a/1", r#"{"balance":1.5}"#), ("b/2", "{}")] {
            let mut data = data.to_owned();
            encoder.append(
                "r",
                key,
                "2026-04-14T09:54:45.040Z",
                &mut data,
                &mut batch.payloads,
            );
            batch.keys.push_str(key);
            batch.ends.push((batch.keys.len(), batch.payloads.len()));
        }
        let events: Vec<(&str, Event)> = batch
            .events()
            .map(|(k, p)| (k, Event::decode(p).expect("an event")))
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].0, "a/1");
        assert_eq!(
            events[0].1,
            event_for(
                &config,
                &run,
                "a/1",
                r#"{"balance":1.5}"#.into(),
                "2026-04-14T09:54:45.040Z"
            )
        );
        assert_eq!(events[1].0, "b/2");
        assert_eq!(
            events[1].1,
            event_for(
                &config,
                &run,
                "b/2",
                "{}".into(),
                "2026-04-14T09:54:45.040Z"
            )
        );
    }
}
