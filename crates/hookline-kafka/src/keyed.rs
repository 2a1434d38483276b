//! The views and writes every service makes the same way: a compacted topic of protobuf
//! values keyed by a string ([`keyed_protobuf_view`]), and an [`Event`] published to the
//! events topic as protobuf ([`publish_event`]).

use std::time::Duration;

use hookline_config::Config;
use hookline_events::{CONTENT_TYPE_HEADER, CONTENT_TYPE_PROTOBUF};
use hookline_proto::v1::Event;
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::view::{TopicView, Update};
use crate::{KafkaError, Producer};

/// A view of `topic`: key → decoded `T`; a tombstone deletes, a record without a key or
/// that does not decode is logged and skipped. `inspect` sees every decoded value first.
pub fn keyed_protobuf_view<T>(
    config: &Config,
    topic: &str,
    inspect: impl Fn(&T) + Send + 'static,
) -> Result<TopicView<T>, KafkaError>
where
    T: prost::Message + Default + Clone + Send + Sync + 'static,
{
    let name = topic.to_owned();
    TopicView::start(config, topic, move |msg| {
        let Some(key) = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return Update::Skip;
        };
        match msg.payload().map(T::decode) {
            None => Update::Delete(key),
            Some(Ok(value)) => {
                inspect(&value);
                Update::Upsert(key, value)
            }
            Some(Err(e)) => {
                tracing::warn!(topic = %name, offset = msg.offset(), error = %e, "undecodable record skipped");
                Update::Skip
            }
        }
    })
}

/// Publishes `event` to `topic` as protobuf (header `content-type: application/x-protobuf`),
/// keyed by `key`, with `cx` as its `traceparent` (the router's span for it continues that
/// trace); waits for the broker's acknowledgement for at most `timeout` in all.
pub async fn publish_event(
    producer: &Producer,
    topic: &str,
    key: &str,
    event: &Event,
    cx: &hookline_telemetry::trace::Context,
    timeout: Duration,
) -> Result<(), rdkafka::error::KafkaError> {
    let payload = event.encode_to_vec();
    let headers = hookline_telemetry::trace::inject_kafka(
        cx,
        OwnedHeaders::new().insert(Header {
            key: CONTENT_TYPE_HEADER,
            value: Some(CONTENT_TYPE_PROTOBUF),
        }),
    );
    let record = FutureRecord::to(topic)
        .key(key)
        .headers(headers)
        .payload(&payload);
    crate::send_within(producer, record, timeout)
        .await
        .map(drop)
}
