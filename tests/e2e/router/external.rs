//! Events from a producer that is not Hookline's code: Python's confluent-kafka (librdkafka
//! from its wheel, installed by `scripts/test.sh`) publishes one JSON and one protobuf event;
//! the protobuf bytes are encoded by hand in `producer.py`, not by prost.

use std::process::Command;

use serde_json::json;

use crate::support::receiver::Receiver;
use crate::support::{Stack, TENANT_A};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_and_protobuf_events_from_python_are_delivered() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 200).await;
    // Not in the built-in catalog: registered first.
    stack.register_event_type("ORDER.CREATED").await;
    stack.register_event_type("ORDER.ITEM.SHIPPED").await;
    let (sub, _secret) = stack
        .fynapse_subscription("orders", &receiver.url, json!(["ORDER.*"]))
        .await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/router/producer.py");
    let out = Command::new("python3")
        .args([
            script,
            &stack.config.kafka_bootstrap,
            &stack.config.topic_events,
            TENANT_A,
        ])
        .output()
        .expect("run python3 (scripts/test.sh installs confluent-kafka)");
    assert!(
        out.status.success(),
        "the Python producer failed (scripts/test.sh installs confluent-kafka):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut got = receiver.wait_for(2, 60).await;
    got.sort_by_key(|r| r.json()["event_id"].as_str().unwrap_or("").to_owned());
    let json_event = got[0].json();
    let proto_event = got[1].json();
    assert_eq!(json_event["event_id"], "py-json-1");
    assert_eq!(json_event["event_type"], "ORDER.CREATED");
    assert_eq!(json_event["event_timestamp"], "2026-04-14T09:54:45.040Z");
    assert_eq!(json_event["data"], json!({"order": "o-1", "amount": 12.50}));
    assert!(
        std::str::from_utf8(&got[0].body).unwrap().contains("12.50"),
        "the decimal kept as sent"
    );
    assert_eq!(proto_event["event_id"], "py-proto-1");
    assert_eq!(proto_event["event_type"], "ORDER.ITEM.SHIPPED");
    assert_eq!(proto_event["metadata"]["source"], "python");
    assert_eq!(proto_event["data"], json!({"order": "o-1", "item": 2}));
    for (r, id) in got.iter().zip(["py-json-1", "py-proto-1"]) {
        assert_eq!(
            r.header("webhook-id"),
            hookline_events::delivery_id(id, &sub)
        );
    }
    stack.stop().await;
}
