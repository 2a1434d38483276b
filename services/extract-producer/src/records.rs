//! The records of the extracts topic (configurations, runs, cancels): their keys, lookups
//! in this process's view, and writes that wait until the view holds them. The modules
//! above (`driver`, `schedule`, `api`) share these; this one needs none of them.

use hookline_kafka::rdkafka::producer::FutureRecord;
use hookline_proto::Message as _;
use hookline_proto::v1::extract_record::Record;
use hookline_proto::v1::{ExtractConfig, ExtractRecord};

use crate::AppState;

pub(crate) fn config_key(tenant: &str, name: &str) -> String {
    format!("config/{tenant}/{name}")
}

pub(crate) fn config_of(state: &AppState, tenant: &str, name: &str) -> Option<ExtractConfig> {
    match state.extracts.get(&config_key(tenant, name))?.record? {
        Record::Config(c) => Some(c),
        _ => None,
    }
}

/// Writes an extracts record (a tombstone for `None`) and waits until the view holds it.
pub(crate) async fn write_value(
    state: &AppState,
    key: &str,
    record: Option<&ExtractRecord>,
) -> Result<(), String> {
    let payload = record.map(|r| r.encode_to_vec());
    let mut r = FutureRecord::to(&state.config.topic_extracts).key(key);
    if let Some(p) = &payload {
        r = r.payload(p);
    }
    let delivery =
        hookline_kafka::send_within(&state.producer, r, std::time::Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())?;
    state
        .extracts
        .wait_for_offset(delivery.partition, delivery.offset)
        .await;
    Ok(())
}

pub(crate) async fn write(
    state: &AppState,
    key: &str,
    record: &ExtractRecord,
) -> Result<(), String> {
    write_value(state, key, Some(record)).await
}
