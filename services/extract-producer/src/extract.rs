//! One extract run: matching balance rows become `balance.extracted` events.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use hookline_events::time_fmt::{now_ms, rfc3339_micros, rfc3339_millis};
use hookline_events::{BalanceRow, CONTENT_TYPE_HEADER, CONTENT_TYPE_PROTOBUF};
use hookline_kafka::rdkafka::message::{Header, OwnedHeaders};
use hookline_kafka::rdkafka::producer::FutureRecord;
use hookline_proto::Message as _;
use hookline_proto::v1::{
    BalanceQuery, Event, ExtractConfig, ExtractRecord, ExtractRun, RunStatus,
};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::AppState;

pub const EVENT_TYPE: &str = "balance.extracted";

/// Produces in flight at once during a run.
const IN_FLIGHT: usize = 10_000;

pub(crate) fn run_key(tenant: &str, name: &str, run_id: &str) -> String {
    format!("run/{tenant}/{name}/{run_id}")
}

pub(crate) fn config_key(tenant: &str, name: &str) -> String {
    format!("config/{tenant}/{name}")
}

fn selected(query: &BalanceQuery, row: &BalanceRow) -> bool {
    let any = |set: &[String], v: &str| set.is_empty() || set.iter().any(|s| s == v);
    any(&query.nodes, &row.node)
        && any(&query.accounts, &row.account)
        && any(&query.product_names, &row.product_name)
        && any(&query.transaction_currencies, &row.transaction_currency)
}

/// The seed's `data` object; `balance` is the row's decimal text as a JSON number.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    node: &'a str,
    account: &'a str,
    balance: &'a RawValue,
    product_name: &'a str,
    transaction_currency: &'a str,
}

fn event_for(
    config: &ExtractConfig,
    run: &ExtractRun,
    key: &str,
    row: &BalanceRow,
) -> Option<Event> {
    let balance: Box<RawValue> = RawValue::from_string(row.balance.clone()).ok()?;
    let data = Data {
        node: &row.node,
        account: &row.account,
        balance: &balance,
        product_name: &row.product_name,
        transaction_currency: &row.transaction_currency,
    };
    let id_name = format!("extract/{}/{key}", run.run_id);
    Some(Event {
        id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id_name.as_bytes()).to_string(),
        r#type: EVENT_TYPE.to_owned(),
        time: rfc3339_millis(now_ms()),
        tenant: config.tenant.clone(),
        metadata: HashMap::from([
            ("eventType".to_owned(), EVENT_TYPE.to_owned()),
            ("startedOn".to_owned(), run.started_on.clone()),
            ("extractConfigurationName".to_owned(), config.name.clone()),
        ]),
        data_json: serde_json::to_string(&data).ok()?,
        changed_fields_json: String::new(),
    })
}

/// A new run record, not yet started.
pub(crate) fn new_run(config: &ExtractConfig) -> ExtractRun {
    ExtractRun {
        run_id: uuid::Uuid::new_v4().to_string(),
        extract_name: config.name.clone(),
        tenant: config.tenant.clone(),
        started_on: rfc3339_micros(time::OffsetDateTime::now_utc()),
        finished_on: String::new(),
        rows_emitted: 0,
        status: RunStatus::Running as i32,
        error: String::new(),
    }
}

/// Runs the extract to completion and records the outcome.
pub(crate) async fn execute(
    state: &AppState,
    config: &ExtractConfig,
    mut run: ExtractRun,
) -> ExtractRun {
    let key = run_key(&run.tenant, &run.extract_name, &run.run_id);
    if let Err(e) = write_run(state, &key, &run).await {
        run.status = RunStatus::Failed as i32;
        run.error = e;
        return run;
    }
    // Every row acknowledged before the run started is part of it.
    state.balances.sync().await;
    let query = config.query.clone().unwrap_or_default();
    let mut rows: Vec<(String, BalanceRow)> = state.balances.read(|t| {
        t.iter()
            .filter(|(_, r)| selected(&query, r))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    });
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    tracing::info!(extract = %run.extract_name, run_id = %run.run_id, rows = rows.len(), "extract run started");

    let mut sends = FuturesUnordered::new();
    let mut failure = None;
    for (key, row) in &rows {
        let Some(event) = event_for(config, &run, key, row) else {
            failure = Some(format!("row {key} has an invalid balance"));
            break;
        };
        let payload = event.encode_to_vec();
        let producer = state.producer.clone();
        let topic = state.topic_events.clone();
        let key = key.clone();
        sends.push(async move {
            let headers = OwnedHeaders::new().insert(Header {
                key: CONTENT_TYPE_HEADER,
                value: Some(CONTENT_TYPE_PROTOBUF),
            });
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            producer
                .send(record, Duration::from_secs(60))
                .await
                .map_err(|(e, _)| e.to_string())
        });
        if sends.len() >= IN_FLIGHT {
            if let Some(Err(e)) = sends.next().await {
                failure.get_or_insert(e);
            } else {
                run.rows_emitted += 1;
            }
        }
    }
    while let Some(result) = sends.next().await {
        match result {
            Ok(_) => run.rows_emitted += 1,
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    run.finished_on = rfc3339_micros(time::OffsetDateTime::now_utc());
    match failure {
        None => run.status = RunStatus::Succeeded as i32,
        Some(e) => {
            run.status = RunStatus::Failed as i32;
            run.error = e;
        }
    }
    if let Err(e) = write_run(state, &key, &run).await {
        tracing::error!(run_id = %run.run_id, error = %e, "could not record the run's outcome");
    }
    tracing::info!(extract = %run.extract_name, run_id = %run.run_id, rows = run.rows_emitted, status = ?run.status(), "extract run finished");
    run
}

pub(crate) async fn write_run(state: &AppState, key: &str, run: &ExtractRun) -> Result<(), String> {
    let record = ExtractRecord {
        record: Some(hookline_proto::v1::extract_record::Record::Run(run.clone())),
    };
    write(state, key, &record).await
}

/// Writes an extracts record and waits until the view holds it.
pub(crate) async fn write(
    state: &AppState,
    key: &str,
    record: &ExtractRecord,
) -> Result<(), String> {
    let payload = record.encode_to_vec();
    let delivery = state
        .producer
        .send(
            FutureRecord::to(&state.topic_extracts)
                .key(key)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e.to_string())?;
    state
        .extracts
        .wait_for_offset(delivery.partition, delivery.offset)
        .await;
    Ok(())
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
        let row = BalanceRow {
            node: "Node1".into(),
            account: "222".into(),
            product_name: String::new(),
            transaction_currency: "GBP".into(),
            balance: "1.0".into(),
        };
        let e = event_for(&config, &run, "k", &row).unwrap();
        assert_eq!(
            e.data_json,
            r#"{"node":"Node1","account":"222","balance":1.0,"productName":"","transactionCurrency":"GBP"}"#
        );
        assert_eq!(e.metadata["startedOn"], "2026-04-14T09:54:43.674940Z");
        assert_eq!(e.metadata["extractConfigurationName"], "test");
        assert_eq!(e.r#type, EVENT_TYPE);
    }

    #[test]
    fn empty_query_fields_match_everything() {
        let row = BalanceRow {
            node: "N".into(),
            account: "1".into(),
            ..Default::default()
        };
        assert!(selected(&BalanceQuery::default(), &row));
        let q = BalanceQuery {
            nodes: vec!["M".into()],
            ..Default::default()
        };
        assert!(!selected(&q, &row));
    }
}
