//! Quarantined records (admin): the list, from the index, and republishing one to the topic
//! it came from once whatever refused it is fixed. The record is read back from the
//! quarantine topic and produced unchanged (key, value, its own headers; the quarantine
//! headers dropped), so the router decodes it again like any new record.

use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::rfc3339_millis;
use hookline_kafka::acl;
use hookline_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use hookline_kafka::rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use hookline_kafka::rdkafka::producer::FutureRecord;
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
use hookline_ops_index::Quarantined;
use hookline_runtime::{ApiError, JsonPath};
use serde::Serialize;

use crate::AppState;
use crate::api::blocking;
use crate::query::{Params, encode_cursor};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinedOut {
    id: String,
    reason: String,
    quarantined_at: String,
    source_topic: String,
    source_partition: i32,
    source_offset: i64,
    key: String,
    content_type: Option<String>,
    value_preview: String,
    value_bytes: u64,
}

fn out(q: &Quarantined) -> QuarantinedOut {
    QuarantinedOut {
        id: encode_cursor(&hookline_ops_index::keys::pk(
            q.quarantined_ms,
            q.partition,
            q.offset,
        )),
        reason: q.reason.clone(),
        quarantined_at: rfc3339_millis(q.quarantined_ms),
        source_topic: q.source_topic.clone(),
        source_partition: q.source_partition,
        source_offset: q.source_offset,
        key: q.key.clone(),
        content_type: (!q.content_type.is_empty()).then(|| q.content_type.clone()),
        value_preview: q.value_preview.clone(),
        value_bytes: q.value_len,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineList {
    items: Vec<QuarantinedOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    RawQuery(raw): RawQuery,
) -> Result<Json<QuarantineList>, ApiError> {
    who.require(Role::Admin)?;
    let p = Params::parse(raw.as_deref(), &["since", "until", "limit", "cursor"])?;
    let window = p.newest_first()?;
    let store = state.index.store().clone();
    let page = blocking(move || store.quarantined(&window)).await?;
    Ok(Json(QuarantineList {
        items: page.items.iter().map(out).collect(),
        next_cursor: page.next.as_ref().map(encode_cursor),
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Republished {
    topic: String,
    partition: i32,
    offset: i64,
}

pub async fn republish(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(id): JsonPath<String>,
) -> Result<(StatusCode, Json<Republished>), ApiError> {
    who.require(Role::Admin)?;
    let pk = Params::parse(Some(&format!("cursor={id}")), &["cursor"])
        .and_then(|p| p.cursor())
        .map_err(|_| ApiError::invalid("id", "`id` is not a quarantined record's id"))?
        .ok_or_else(|| ApiError::invalid("id", "`id` is required"))?;
    let store = state.index.store().clone();
    let q = blocking(move || store.quarantined_at(&pk))
        .await?
        .ok_or_else(|| ApiError::not_found("quarantined record"))?;
    let config = state.config.clone();
    let (partition, offset) = (q.partition, q.offset);
    let record = tokio::task::spawn_blocking(move || read(&config, partition, offset))
        .await
        .map_err(|_| ApiError::unavailable("reading the record was interrupted"))?
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::not_found("quarantined record (past the topic's retention)"))?;
    let topic = if q.source_topic.is_empty() {
        state.config.topic_events.clone()
    } else {
        q.source_topic.clone()
    };
    let mut headers = OwnedHeaders::new();
    if let Some(h) = record.headers() {
        for h in h.iter() {
            let ours =
                h.key.starts_with("hookline-quarantine-") || h.key.starts_with("hookline-source-");
            if !ours {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
    }
    let key = record.key().unwrap_or_default();
    let mut produce = FutureRecord::to(&topic).key(key).headers(headers);
    if let Some(v) = record.payload() {
        produce = produce.payload(v);
    }
    let acked = hookline_kafka::send_within(&state.producer, produce, Duration::from_secs(15))
        .await
        .map_err(|e| ApiError::unavailable(format!("could not republish: {e}")))?;
    tracing::info!(
        topic,
        partition = acked.partition,
        offset = acked.offset,
        "quarantined record republished"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(Republished {
            topic,
            partition: acked.partition,
            offset: acked.offset,
        }),
    ))
}

/// The record at `partition`/`offset` of the quarantine topic, if still there.
fn read(
    config: &hookline_config::Config,
    partition: i32,
    offset: i64,
) -> Result<Option<OwnedMessage>, String> {
    let topic = &config.topic_quarantine;
    let mut c = hookline_kafka::client_config(config).map_err(|e| e.to_string())?;
    c.set("group.id", acl::group(config, acl::GROUP_QUARANTINE_READER))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer<hookline_kafka::KafkaContext> = c
        .create_with_context(hookline_kafka::KafkaContext)
        .map_err(|e| e.to_string())?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    if offset < low || offset >= high {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.offset() >= offset => {
                return Ok((m.offset() == offset).then(|| m.detach()));
            }
            _ => {}
        }
    }
    Err("reading the quarantined record timed out".into())
}
