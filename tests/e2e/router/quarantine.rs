//! Records the router cannot decode go to the quarantine topic whole, with the reason, and the
//! partition moves on: a good event behind them on the same partition is still delivered.

use std::time::Duration;

use hookline_kafka::rdkafka::message::{Header, OwnedHeaders};
use hookline_kafka::rdkafka::producer::FutureRecord;
use serde_json::json;

use super::read_to_end;
use crate::support::receiver::Receiver;
use crate::support::{Stack, TENANT_A};

/// (value, content-type header, what the reason must say)
const BAD: [(&[u8], Option<&str>, &str); 4] = [
    (b"{\"type\": \"ORDER.CREATED\", oops", None, "invalid JSON"),
    (
        b"{\"tenant\": \"tenant_a\", \"data\": {}}",
        Some("application/json"),
        "missing field `type`",
    ),
    (
        b"id,type\n1,ORDER.CREATED",
        Some("text/csv"),
        "unsupported content-type",
    ),
    (
        &[0x0a, 0xff, 0xff, 0xff],
        Some("application/x-protobuf"),
        "invalid protobuf",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_records_are_quarantined_and_the_partition_moves_on() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 200).await;
    // Not in the built-in catalog: registered first.
    stack.register_event_type("ORDER.CREATED").await;
    stack.register_event_type("ORDER.ITEM.SHIPPED").await;
    let (sub, _secret) = stack
        .fynapse_subscription("orders", &receiver.url, json!(["ORDER.*"]))
        .await;
    let producer = stack.producer();
    let events = stack.config.topic_events.clone();
    // One key, so one partition: the good event sits behind every bad one.
    let key = "acct-quarantine";
    for (value, content_type, _) in BAD {
        let mut record = FutureRecord::to(&events).key(key).payload(value);
        if let Some(ct) = content_type {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(ct),
            }));
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("publish a bad record");
    }
    let good_id = "0b9e7c1e-quarantine-good";
    stack
        .publish_json(
            &events,
            key,
            &json!({"id": good_id, "type": "ORDER.CREATED", "tenant": TENANT_A, "data": {"n": 1}}),
        )
        .await;

    let got = receiver.wait_for(1, 60).await;
    assert_eq!(
        got[0].header("webhook-id"),
        hookline_events::delivery_id(good_id, &sub)
    );
    assert_eq!(got[0].json()["event_id"], good_id);

    // The good event was routed in a transaction after the bad ones', so they are committed.
    let quarantined = read_to_end(
        &stack.config.kafka_bootstrap,
        &stack.config.topic_quarantine,
        "read_committed",
    );
    assert_eq!(quarantined.len(), BAD.len(), "each bad record once");
    let mut offsets = Vec::new();
    for (record, (value, content_type, reason)) in quarantined.iter().zip(BAD) {
        assert_eq!(record.value, value, "original bytes kept");
        assert_eq!(record.key, key.as_bytes(), "original key kept");
        assert_eq!(record.header("content-type"), content_type.unwrap_or(""));
        let why = record.header("hookline-quarantine-reason");
        assert!(why.contains(reason), "reason {why:?} should say {reason:?}");
        assert_eq!(record.header("hookline-source-topic"), events);
        offsets.push(
            record
                .header("hookline-source-offset")
                .parse::<i64>()
                .expect("source offset"),
        );
        assert!(!record.header("hookline-source-partition").is_empty());
    }
    assert!(
        offsets.windows(2).all(|w| w[0] + 1 == w[1]),
        "consecutive source offsets in order: {offsets:?}"
    );
    stack.stop().await;
}
