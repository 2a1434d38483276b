//! The delivery worker end to end: per-key order with concurrency across keys, no head-of-line
//! blocking across subscriptions (failing ones are parked in the retry lane), 410 Gone, and
//! nothing lost when the worker is killed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use hookline_proto::Message as _;
use hookline_proto::v1::{DeliveryJob, ParkedState, Subscription};
use serde_json::json;

use crate::support::process::Service;
use crate::support::receiver::{Received, Receiver};
use crate::support::{Stack, TENANT_A, TOKEN_A};

/// Publishes `per_key` events for each of `keys` keys, interleaved, in order per key, with
/// an idempotent producer (so the broker keeps the order); returns every event id.
async fn publish(stack: &Stack, keys: usize, per_key: usize) -> Vec<String> {
    publish_seqs(stack, keys, 0..per_key).await
}

/// Like [`publish`], with sequence numbers `seqs` for every key.
pub(crate) async fn publish_seqs(
    stack: &Stack,
    keys: usize,
    seqs: std::ops::Range<usize>,
) -> Vec<String> {
    let producer: FutureProducer = hookline_kafka::client_config(&stack.config)
        .unwrap()
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut ids = Vec::new();
    let mut sends = Vec::new();
    for seq in seqs {
        for k in 0..keys {
            let id = uuid::Uuid::new_v4().to_string();
            let event = json!({"id": id, "type": "ACCOUNT.UPDATED", "tenant": TENANT_A,
                               "data": {"key": format!("k{k}"), "seq": seq}});
            let (producer, topic) = (producer.clone(), stack.config.topic_events.clone());
            sends.push(async move {
                let payload = event.to_string();
                let key = format!("k{k}");
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .unwrap();
            });
            ids.push(id);
        }
    }
    futures::future::join_all(sends).await;
    ids
}

/// Per key, the sequence numbers in the order requests arrived must never go down: a later
/// event is never attempted before an earlier one of its key is over (retries repeat it).
pub(crate) fn assert_ordered_per_key(received: &[Received]) {
    let mut last: HashMap<String, i64> = HashMap::new();
    for r in received {
        let data = &r.json()["data"];
        let (key, seq) = (
            data["key"].as_str().unwrap().to_owned(),
            data["seq"].as_i64().unwrap(),
        );
        let prev = last.insert(key.clone(), seq).unwrap_or(-1);
        assert!(seq >= prev, "key {key}: seq {seq} arrived after {prev}");
    }
}

pub(crate) fn delivered_ids(received: &[Received]) -> HashSet<String> {
    received
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_subscription_is_parked_and_holds_up_nobody() {
    let stack = Stack::start(|c| {
        // One partition: both subscriptions share every partition.
        c.topic_partitions = 1;
        c.retry_schedule = format!("0s,50ms{}", ",1s".repeat(40));
        c.retry_in_memory_max = "100ms".into();
    })
    .await;
    let failing = Receiver::start(&[], 500).await;
    let healthy = Receiver::start(&[], 200).await;
    let (failing_sub, _) = stack
        .fynapse_subscription("failing", &failing.url, json!(["ACCOUNT.*"]))
        .await;
    stack
        .fynapse_subscription("healthy", &healthy.url, json!(["ACCOUNT.*"]))
        .await;

    let ids = publish(&stack, 5, 10).await;
    // The healthy subscription gets everything while the other one still fails.
    let got = healthy.wait_for_delivered(ids.len(), 60).await;
    assert!(failing.received().iter().all(|r| r.status == 500));
    assert!(!failing.received().is_empty());
    assert_ordered_per_key(&got);

    // Parked, it is still tried when due: wait for a third attempt of one delivery (the
    // first two are made in memory, the third only after resuming from the retry lane).
    crate::support::eventually(60, "an attempt after resuming", || {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for r in failing.received() {
            *counts.entry(r.header("webhook-id").to_owned()).or_default() += 1;
        }
        async move { counts.values().any(|n| *n >= 3).then_some(()) }
    })
    .await;
    // The failing one recovers: everything arrives, in order per key, nothing dead-lettered.
    failing.answer(200);
    let got = failing.wait_for_delivered(ids.len(), 90).await;
    assert_ordered_per_key(&got);
    let expected: HashSet<String> = ids
        .iter()
        .map(|e| hookline_events::delivery_id(e, &failing_sub))
        .collect();
    assert_eq!(delivered_ids(&got), expected);
    let url = format!(
        "{}/api/v1/event-deliveries/dead-letters?subscriptionId={failing_sub}",
        stack.dead_letters
    );
    let (status, letters) = stack.call(reqwest::Method::GET, &url, TOKEN_A, None).await;
    assert_eq!((status, letters), (200, json!({"items": []})));
    // It was parked (a parked-state record) and is back to normal (then a tombstone).
    let parked_topic = stack.config.topic_parked.clone();
    let states = stack
        .read_topic(&parked_topic, |v| {
            v.len() >= 2 && v.last().is_some_and(Vec::is_empty)
        })
        .await;
    assert!(
        states.first().is_some_and(|b| !b.is_empty()) && states.last().is_some_and(Vec::is_empty),
        "parked, then cleared: {} records",
        states.len()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_run_concurrently_each_in_order() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 200).await;
    receiver.delay(Duration::from_millis(200));
    stack
        .fynapse_subscription("many-keys", &receiver.url, json!([]))
        .await;
    let ids = publish(&stack, 8, 4).await;
    let got = receiver.wait_for_delivered(ids.len(), 60).await;
    assert_ordered_per_key(&got);
    assert!(
        receiver.max_concurrent() >= 2,
        "deliveries of different keys overlap (max {} at once)",
        receiver.max_concurrent()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gone_disables_the_subscription() {
    let stack = Stack::start(|_| {}).await;
    let gone = Receiver::start(&[], 410).await;
    let control = Receiver::start(&[], 200).await;
    let (gone_sub, _) = stack
        .fynapse_subscription("gone", &gone.url, json!(["ACCOUNT.*"]))
        .await;
    stack
        .fynapse_subscription("control", &control.url, json!(["ACCOUNT.*"]))
        .await;
    publish(&stack, 1, 1).await;
    control.wait_for_delivered(1, 60).await;
    gone.wait_for(1, 60).await;

    let url = format!(
        "{}/api/v1/event-deliveries/dead-letters?subscriptionId={gone_sub}",
        stack.dead_letters
    );
    let letters = crate::support::eventually(30, "the 410 dead letter", || {
        let (stack, url) = (&stack, url.clone());
        async move {
            let (_, body) = stack.call(reqwest::Method::GET, &url, TOKEN_A, None).await;
            body["items"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
                .then(|| body["items"].clone())
        }
    })
    .await;
    assert_eq!(letters[0]["lastStatus"], 410);
    assert_eq!(letters[0]["attempts"], 1, "410 is final");
    let topic = stack.config.topic_subscriptions.clone();
    let records = stack
        .read_topic(&topic, |v| {
            v.iter().any(|b| {
                Subscription::decode(b.as_slice()).is_ok_and(|s| s.id == gone_sub && !s.enabled)
            })
        })
        .await;
    assert!(
        records
            .iter()
            .any(|b| Subscription::decode(b.as_slice())
                .is_ok_and(|s| s.id == gone_sub && !s.enabled))
    );

    // A later event reaches the control subscription but not the disabled one.
    publish(&stack, 1, 1).await;
    control.wait_for_delivered(2, 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gone.received().len(), 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_worker_loses_nothing() {
    let stack = Stack::start_without_worker(|c| c.topic_partitions = 2).await;
    let receiver = Receiver::start(&[], 200).await;
    let (sub, _) = stack
        .fynapse_subscription("survivor", &receiver.url, json!([]))
        .await;
    let listen = [("HOOKLINE_WORKER_LISTEN", "127.0.0.1:0")];
    let mut worker = Service::start("hookline-delivery-worker", &stack.config, &listen);
    let ids = publish(&stack, 20, 100).await;
    for _ in 0..3 {
        receiver.wait_for(receiver.received().len() + 200, 60).await;
        worker.kill();
        worker = Service::start("hookline-delivery-worker", &stack.config, &listen);
    }
    let got = receiver.wait_for_delivered(ids.len(), 120).await;
    let expected: HashSet<String> = ids
        .iter()
        .map(|e| hookline_events::delivery_id(e, &sub))
        .collect();
    let seen: HashSet<String> = got
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(delivered_ids(&got), expected, "every event delivered");
    assert_eq!(seen, expected, "repeats carry only the same delivery ids");
    worker.kill();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_subscription_survives_worker_kills() {
    let stack = Stack::start_without_worker(|c| {
        c.retry_schedule = format!("0s,50ms{}", ",1s".repeat(60));
        c.retry_in_memory_max = "100ms".into();
    })
    .await;
    let receiver = Receiver::start(&[], 500).await;
    let (sub, _) = stack
        .fynapse_subscription("parked", &receiver.url, json!([]))
        .await;
    let listen = [("HOOKLINE_WORKER_LISTEN", "127.0.0.1:0")];
    let mut worker = Service::start("hookline-delivery-worker", &stack.config, &listen);
    let ids = publish(&stack, 10, 30).await;
    // Parked: its state record is on the topic.
    let parked_topic = stack.config.topic_parked.clone();
    stack
        .read_topic(&parked_topic, |v| v.iter().any(|b| !b.is_empty()))
        .await;
    for _ in 0..2 {
        worker.kill();
        worker = Service::start("hookline-delivery-worker", &stack.config, &listen);
        // The new worker adopts the parked subscription and keeps trying it.
        let before = receiver.received().len();
        receiver.wait_for(before + 1, 60).await;
    }
    receiver.answer(200);
    let got = receiver.wait_for_delivered(ids.len(), 120).await;
    let expected: HashSet<String> = ids
        .iter()
        .map(|e| hookline_events::delivery_id(e, &sub))
        .collect();
    assert_eq!(
        delivered_ids(&got),
        expected,
        "every job of the parked subscription delivered"
    );
    worker.kill();
    stack.stop().await;
}

/// Issue #22: a flaky endpoint (every 7th request fails) parks its subscription again and
/// again, each job that fails re-parking it from the lowest unfinished lane offset. Every
/// event is still delivered once: the receiver gets one 2xx per event and otherwise only the
/// failures it caused itself, in order per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flaky_endpoint_gets_each_event_once_besides_its_own_failures() {
    let stack = Stack::start(|c| {
        c.topic_partitions = 1;
        // Every failed attempt parks the subscription: its retry is due in 1 s.
        c.retry_schedule = format!("0s{}", ",1s".repeat(40));
        c.retry_in_memory_max = "100ms".into();
    })
    .await;
    let flaky = Receiver::start(&[], 200).await;
    flaky.fail_every(7);
    let (sub, _) = stack
        .fynapse_subscription("flaky", &flaky.url, json!(["ACCOUNT.*"]))
        .await;
    let ids = publish(&stack, 10, 12).await;
    flaky.wait_for_delivered(ids.len(), 120).await;
    // Resumed once everything was delivered: nothing of it is left to be attempted.
    let parked_topic = stack.config.topic_parked.clone();
    let states = stack
        .read_topic(&parked_topic, |v| {
            v.len() >= 2 && v.last().is_some_and(Vec::is_empty)
        })
        .await;
    assert!(
        states.first().is_some_and(|b| !b.is_empty()) && states.last().is_some_and(Vec::is_empty),
        "parked, then cleared: {} records",
        states.len()
    );
    let got = flaky.received();
    assert_ordered_per_key(&got);
    let mut delivered: HashMap<String, usize> = HashMap::new();
    for r in got.iter().filter(|r| (200..300).contains(&r.status)) {
        *delivered
            .entry(r.header("webhook-id").to_owned())
            .or_default() += 1;
    }
    let expected: HashSet<String> = ids
        .iter()
        .map(|e| hookline_events::delivery_id(e, &sub))
        .collect();
    assert_eq!(delivered.keys().cloned().collect::<HashSet<_>>(), expected);
    let repeated = delivered.values().filter(|n| **n > 1).count();
    let failures = got.iter().filter(|r| r.status >= 300).count();
    assert_eq!(
        (repeated, got.len()),
        (0, ids.len() + failures),
        "{repeated} events delivered more than once; {} requests for {} events and {failures} failures",
        got.len(),
        ids.len()
    );
    stack.stop().await;
}

/// Issue #22: a parked subscription whose lane jobs were all delivered (its cursor at the end
/// of its lane partition, as a worker leaves it that loses the partition right after moving
/// the cursor there) is read back and resumed by the worker that adopts it. The lane reader
/// used to learn where the partition ends from the consumer's position, which stays unknown
/// until a record arrives: with nothing to read, the subscription stayed parked for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_adopted_parking_with_nothing_left_in_its_lane_resumes() {
    let stack = Stack::start_without_worker(|c| c.topic_partitions = 1).await;
    let receiver = Receiver::start(&[], 200).await;
    let (sub, _) = stack
        .fynapse_subscription("adopted", &receiver.url, json!([]))
        .await;
    // A lane job of the subscription, delivered: the parked state's cursor is past it.
    let producer = stack.producer();
    let job = DeliveryJob {
        subscription_id: sub.clone(),
        ..Default::default()
    };
    let state = ParkedState {
        subscription_id: sub.clone(),
        main_partition: 0,
        lane_partition: 0,
        cursor: 1,
        due_at_ms: 0,
        reason: "retrying".into(),
        ..Default::default()
    };
    for (topic, value) in [
        (&stack.config.topic_retry_lane, job.encode_to_vec()),
        (&stack.config.topic_parked, state.encode_to_vec()),
    ] {
        producer
            .send(
                FutureRecord::to(topic).key(&sub).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let listen = [("HOOKLINE_WORKER_LISTEN", "127.0.0.1:0")];
    let worker = Service::start("hookline-delivery-worker", &stack.config, &listen);
    // Adopted, read back (nothing left), resumed: the record is tombstoned.
    let parked_topic = stack.config.topic_parked.clone();
    let states = stack
        .read_topic(&parked_topic, |v| v.last().is_some_and(Vec::is_empty))
        .await;
    assert!(
        states.last().is_some_and(Vec::is_empty),
        "still parked: {} records, none a tombstone",
        states.len()
    );
    // It runs from `deliveries` again.
    let ids = publish(&stack, 2, 3).await;
    let got = receiver.wait_for_delivered(ids.len(), 60).await;
    assert_eq!(got.len(), ids.len(), "each delivered once");
    worker.kill();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_endpoint_holds_up_nobody() {
    let stack = Stack::start(|c| {
        c.topic_partitions = 1;
        c.http_timeout = "2s".into();
    })
    .await;
    let hanging = Receiver::start(&[], 200).await;
    hanging.delay(Duration::from_secs(3600));
    let healthy = Receiver::start(&[], 200).await;
    stack
        .fynapse_subscription("hanging", &hanging.url, json!(["ACCOUNT.*"]))
        .await;
    stack
        .fynapse_subscription("healthy", &healthy.url, json!(["ACCOUNT.*"]))
        .await;
    let ids = publish(&stack, 40, 5).await;
    let got = healthy.wait_for_delivered(ids.len(), 60).await;
    assert_ordered_per_key(&got);
    assert!(
        !hanging.received().is_empty(),
        "the hanging endpoint was tried"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_may_opt_out_of_ordering() {
    let stack = Stack::start(|_| {}).await;
    let strict = Receiver::start(&[], 200).await;
    let unordered = Receiver::start(&[], 200).await;
    for r in [&strict, &unordered] {
        r.delay(Duration::from_millis(200));
    }
    let subs = format!("{}/api/v1/event-deliveries/subscriptions", stack.api);
    for (name, url, ordering) in [
        ("strict", &strict.url, "strict"),
        ("unordered", &unordered.url, "none"),
    ] {
        let body = json!({"name": name, "endpointUrl": url, "ordering": ordering});
        let (status, created) = stack
            .call(reqwest::Method::POST, &subs, TOKEN_A, Some(body))
            .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["ordering"], ordering);
    }
    // One ordering key: strict delivers one at a time, `none` overlaps them.
    let ids = publish(&stack, 1, 6).await;
    let got = strict.wait_for_delivered(ids.len(), 60).await;
    unordered.wait_for_delivered(ids.len(), 60).await;
    assert_ordered_per_key(&got);
    assert_eq!(
        strict.max_concurrent(),
        1,
        "strict: one delivery of a key at a time"
    );
    assert!(
        unordered.max_concurrent() >= 2,
        "none: deliveries of one key overlap"
    );
    stack.stop().await;
}

/// The latest state of subscription `id` on the subscriptions topic, once `until` holds.
async fn latest_state(
    stack: &Stack,
    id: &str,
    until: impl Fn(&Subscription) -> bool,
) -> Subscription {
    let topic = stack.config.topic_subscriptions.clone();
    let latest = |v: &[Vec<u8>]| {
        v.iter()
            .rev()
            .filter_map(|b| Subscription::decode(b.as_slice()).ok())
            .find(|s| s.id == id)
    };
    let records = stack
        .read_topic(&topic, |v| latest(v).is_some_and(|s| until(&s)))
        .await;
    latest(&records).expect("the subscription's state")
}

async fn send_command(stack: &Stack, command: &hookline_proto::v1::SubscriptionCommand) {
    let payload = command.encode_to_vec();
    stack
        .producer()
        .send(
            FutureRecord::to(&stack.config.topic_subscription_commands)
                .key(&command.subscription_id)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("command written");
}

/// A 410's disable is applied by the subscription API on the state it holds then: it keeps
/// an edit made meanwhile, and is dropped when the subscription changed since the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disabling_never_reverts_an_edit() {
    // One partition: the commands are applied in the order they were sent.
    let stack = Stack::start(|c| c.topic_partitions = 1).await;
    let (a, _) = stack
        .fynapse_subscription("a", "http://127.0.0.1:9/a", json!([]))
        .await;
    let (b, _) = stack
        .fynapse_subscription("b", "http://127.0.0.1:9/b", json!([]))
        .await;
    let seen = latest_state(&stack, &a, |_| true).await.version;
    // An edit lands after the attempt that saw `seen`.
    let url = format!("{}/api/v1/event-deliveries/subscriptions/{a}", stack.api);
    let (status, _) = stack
        .call(
            reqwest::Method::PATCH,
            &url,
            TOKEN_A,
            Some(json!({"description": "fixed"})),
        )
        .await;
    assert_eq!(status, 200);
    let edited = latest_state(&stack, &a, |s| s.version > seen).await;
    let command = |id: &str, version: u64| hookline_proto::v1::SubscriptionCommand {
        subscription_id: id.to_owned(),
        disable: true,
        seen_version: version,
        reason: "endpoint answered 410 Gone".into(),
        at_ms: hookline_events::time_fmt::now_ms(),
    };
    // The stale command is dropped; the next one (for b) shows it was read.
    send_command(&stack, &command(&a, seen)).await;
    let b_seen = latest_state(&stack, &b, |s| s.version > 0).await.version;
    send_command(&stack, &command(&b, b_seen)).await;
    latest_state(&stack, &b, |s| !s.enabled).await;
    let still = latest_state(&stack, &a, |s| s.version >= edited.version).await;
    assert!(
        still.enabled,
        "a subscription edited since the attempt stays enabled"
    );
    assert_eq!(still.version, edited.version);
    // A command for the current version disables it and keeps the edit.
    send_command(&stack, &command(&a, edited.version)).await;
    let disabled = latest_state(&stack, &a, |s| !s.enabled).await;
    assert_eq!(disabled.description.as_deref(), Some("fixed"));
    assert_eq!(disabled.version, edited.version + 1);
    stack.stop().await;
}
