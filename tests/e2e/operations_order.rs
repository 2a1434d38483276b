//! The order of a recover: one key's dead letters come back in the order of the log, even
//! when they were routed within the same milliseconds (their times and ids cannot order them).

use std::collections::HashSet;
use std::time::Duration;

use hookline_kafka::rdkafka::producer::FutureRecord;
use reqwest::Method as M;
use serde_json::json;

use crate::support::receiver::Receiver;
use crate::support::{Stack, TENANT_A, TOKEN_A, call, eventually};

/// Events on one key, published in one burst: the router routes them within a few
/// milliseconds, so most share their routing time with others (in ids, a random order).
const EVENTS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recover_delivers_one_key_in_log_order() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 500).await;
    let (sub, _) = stack
        .fynapse_subscription("ops-order", &receiver.url, json!(["ACCOUNT.*"]))
        .await;
    let ops = stack.dead_letters.clone();
    let since =
        hookline_events::time_fmt::rfc3339_millis(hookline_events::time_fmt::now_ms() - 1000);

    // One burst: every record handed to the producer before any is acknowledged.
    let producer = stack.producer();
    let ids: Vec<String> = (0..EVENTS)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let payloads: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            json!({"id": id, "type": "ACCOUNT.UPDATED", "time": "2026-04-14T09:54:45.040Z",
                   "tenant": TENANT_A, "data": {"n": n}})
            .to_string()
        })
        .collect();
    let sends: Vec<_> = payloads
        .iter()
        .map(|p| {
            producer.send(
                FutureRecord::to(&stack.config.topic_events)
                    .key("acc-burst")
                    .payload(p),
                Duration::from_secs(30),
            )
        })
        .collect();
    for ack in futures::future::join_all(sends).await {
        ack.map_err(|(e, _)| e).expect("publish");
    }

    // Three attempts each (the test schedule), one key in order, then dead letters.
    let letters_url =
        format!("{ops}/api/v1/event-deliveries/dead-letters?subscriptionId={sub}&limit=100");
    eventually(120, "every event dead-lettered", || async {
        let (status, body) = call(M::GET, &letters_url, TOKEN_A, None).await;
        assert_eq!(status, 200, "{body}");
        (body["items"].as_array().map_or(0, Vec::len) == EVENTS).then_some(())
    })
    .await;
    // How many routing times the burst shared (for the record: the order must not depend on it).
    let mut times = HashSet::new();
    for id in &ids {
        let delivery = hookline_events::delivery_id(id, &sub);
        let (_, one) = call(
            M::GET,
            &format!("{ops}/api/v1/event-deliveries/deliveries/{delivery}"),
            TOKEN_A,
            None,
        )
        .await;
        times.insert(one["createdAt"].as_str().unwrap_or_default().to_owned());
    }
    eprintln!(
        "{EVENTS} deliveries routed in {} distinct milliseconds",
        times.len()
    );

    // The endpoint is fixed: recover.
    receiver.answer(200);
    let before = receiver.received().len();
    let replays = format!("{ops}/api/v1/event-deliveries/replays");
    let (status, started) = call(
        M::POST,
        &replays,
        TOKEN_A,
        Some(json!({"subscriptionId": sub, "since": since, "outcome": "failed"})),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let replay_id = started["replayId"].as_str().unwrap().to_owned();
    let run = eventually(120, "the recovery delivered", || async {
        let (_, run) = call(M::GET, &format!("{replays}/{replay_id}"), TOKEN_A, None).await;
        (run["delivered"] == EVENTS).then_some(run)
    })
    .await;
    assert_eq!(
        (run["selected"].as_u64(), run["enqueued"].as_u64()),
        (Some(EVENTS as u64), Some(EVENTS as u64)),
        "{run}"
    );
    let got: Vec<u64> = receiver.received()[before..]
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200);
            r.json()["data"]["n"]
                .as_u64()
                .expect("the event's sequence number")
        })
        .collect();
    assert_eq!(
        got,
        (0..EVENTS as u64).collect::<Vec<_>>(),
        "each once, in the order of the log"
    );
    stack.stop().await;
}
