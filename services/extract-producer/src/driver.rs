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

use std::collections::HashMap;
use std::time::Duration;

use hookline_events::time_fmt::{now_ms, rfc3339_micros, rfc3339_millis};
use hookline_events::{CONTENT_TYPE_HEADER, CONTENT_TYPE_PROTOBUF};
use hookline_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use hookline_kafka::rdkafka::message::{Header, OwnedHeaders};
use hookline_kafka::rdkafka::producer::{FutureRecord, Producer as _};
use hookline_proto::Message as _;
use hookline_proto::v1::extract_record::Record;
use hookline_proto::v1::{Event, ExtractConfig, ExtractRecord, ExtractRun, RunStatus};
use hookline_runtime::CancellationToken;
use hookline_telemetry::trace::{self, Context as TraceContext, Traced};

use crate::AppState;
use crate::query::{Selected, Selector};
use crate::store::{ROWS, row_of, rows_after};

pub const EVENT_TYPE: &str = "balance.extracted";

/// Events per transaction.
const BATCH: usize = 5_000;
/// Rows looked at per transaction at most (a selective query still records progress).
const SCAN: usize = 50_000;
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
fn event_for(
    config: &ExtractConfig,
    run: &ExtractRun,
    key: &str,
    data: String,
    time: &str,
) -> Event {
    let id_name = format!("extract/{}/{key}", run.run_id);
    Event {
        id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id_name.as_bytes()).to_string(),
        r#type: EVENT_TYPE.to_owned(),
        time: time.to_owned(),
        tenant: config.tenant.clone(),
        metadata: HashMap::from([
            ("eventType".to_owned(), EVENT_TYPE.to_owned()),
            ("startedOn".to_owned(), run.started_on.clone()),
            ("extractConfigurationName".to_owned(), config.name.clone()),
        ]),
        data_json: data,
        changed_fields_json: String::new(),
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

struct Driver<'a> {
    state: &'a AppState,
    producer: hookline_kafka::Producer,
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
    let producer = hookline_kafka::transactional_producer(
        &state.config,
        &format!("{}.extract.{run_id}", state.config.group_prefix),
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
    let Some(config) = crate::api::config_of(state, tenant, name) else {
        run.status = RunStatus::Failed as i32;
        run.error = "the extract was deleted".into();
        run.finished_on = rfc3339_micros(time::OffsetDateTime::now_utc());
        return d.commit(&[], &run);
    };
    if run.status() != RunStatus::Running {
        run.status = RunStatus::Running as i32;
        run.heartbeat_ms = now_ms();
        d.commit(&[], &run)?;
        tracing::info!(tenant = %tenant, "extract run started");
    } else {
        tracing::info!(after = %run.last_key, emitted = run.rows_emitted, "extract run resumed");
    }
    // Every row acknowledged before now is in the snapshot.
    d.rt.block_on(state.balances.sync());
    let snapshot = state.balances.snapshot().map_err(kafka)?;
    let table = snapshot.open_table(ROWS).map_err(kafka)?;
    let selector = Selector::new(&config.query.clone().unwrap_or_default());
    let mut rows = rows_after(&table, &run.last_key).map_err(kafka)?;
    let cancel = cancel_key(tenant, name, run_id);
    loop {
        if stop.is_cancelled() {
            // Left running; it resumes from its checkpoint (here or on another replica).
            return Ok(());
        }
        let mut next = run.clone();
        if state.extracts.get(&cancel).is_some() {
            next.status = RunStatus::Cancelled as i32;
            next.finished_on = rfc3339_micros(time::OffsetDateTime::now_utc());
            d.commit(&[], &next)?;
            tracing::info!(emitted = next.rows_emitted, "extract run cancelled");
            return Ok(());
        }
        let time = rfc3339_millis(now_ms());
        let mut events = Vec::with_capacity(BATCH);
        let mut exhausted = true;
        let mut scanned = 0;
        for (key, bytes) in rows.by_ref() {
            scanned += 1;
            if let Some(row) = row_of(&bytes) {
                match selector.select(&row) {
                    Selected::Data(data) => {
                        let event = event_for(&config, &run, &key, data, &time);
                        events.push((key.clone(), event.encode_to_vec()));
                    }
                    Selected::Invalid => next.rows_skipped += 1,
                    Selected::No => {}
                }
            }
            next.last_key = key;
            if events.len() >= BATCH || scanned >= SCAN {
                exhausted = false;
                break;
            }
        }
        next.rows_emitted += events.len() as u64;
        next.heartbeat_ms = now_ms();
        if exhausted {
            next.status = RunStatus::Succeeded as i32;
            next.finished_on = rfc3339_micros(time::OffsetDateTime::now_utc());
        }
        d.commit(&events, &next)?;
        hookline_telemetry::metrics::metrics()
            .extract_rows
            .add(events.len() as u64, &[]);
        run = next;
        if exhausted {
            tracing::info!(
                emitted = run.rows_emitted,
                skipped = run.rows_skipped,
                "extract run finished"
            );
            return Ok(());
        }
    }
}

impl Driver<'_> {
    /// Produces `events` and the run record in one transaction.
    fn commit(&self, events: &[(String, Vec<u8>)], run: &ExtractRun) -> Result<(), String> {
        let result = self.try_commit(events, run);
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
        let headers = OwnedHeaders::new().insert(Header {
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

    fn try_commit(&self, events: &[(String, Vec<u8>)], run: &ExtractRun) -> Result<(), KafkaError> {
        self.producer.begin_transaction()?;
        let topic = &self.state.config.topic_events;
        for (key, payload) in events {
            let mut record = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(payload.as_slice())
                .headers(self.event_headers(key));
            loop {
                match self.producer.send_result(record) {
                    // Acknowledgements are not awaited one by one: the commit flushes and
                    // fails if any produce failed.
                    Ok(_ack) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
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
        let record = FutureRecord::to(&self.state.config.topic_extracts)
            .key(&key)
            .payload(&value);
        let _ack = self.producer.send_result(record).map_err(|(e, _)| e)?;
        self.producer.commit_transaction(TXN_TIMEOUT)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_matches_the_seed_envelope() {
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
        let e = event_for(&config, &run, "k", "{}".into(), "2026-04-14T09:54:45.040Z");
        assert_eq!(e.metadata["startedOn"], "2026-04-14T09:54:43.674940Z");
        assert_eq!(e.metadata["extractConfigurationName"], "test");
        assert_eq!(e.metadata["eventType"], EVENT_TYPE);
        assert_eq!(e.metadata.len(), 3);
        assert_eq!(e.r#type, EVENT_TYPE);
        let again = event_for(&config, &run, "k", "{}".into(), "later");
        assert_eq!(e.id, again.id, "one id per run and row");
    }
}
