//! Delivery controls enforced by the workers: a rate limit held by two worker processes (one
//! joining in the middle) under ten times the load it allows, beside an unlimited
//! subscription on the same partition; an in-flight limit; a `Retry-After` slowing a whole
//! subscription.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Method as M;
use serde_json::{Value, json};

use crate::support::process::Service;
use crate::support::receiver::{Received, Receiver};
use crate::support::{Stack, TENANT_A, TOKEN_A};
use crate::worker::{assert_ordered_per_key, delivered_ids, publish_seqs};
use hookline_kafka::rdkafka::ClientConfig;
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};

const LISTEN: [(&str, &str); 1] = [("HOOKLINE_WORKER_LISTEN", "127.0.0.1:0")];
const SUBS: &str = "/api/v1/event-deliveries/subscriptions";

/// Creates a Fynapse subscription to `ACCOUNT.*` with `extra` fields; returns its id.
async fn subscription(stack: &Stack, name: &str, url: &str, extra: Value) -> String {
    let mut body = json!({"name": name, "endpointUrl": url, "eventTypes": ["ACCOUNT.*"]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, got) = stack
        .call(
            M::POST,
            &format!("{}{SUBS}", stack.api),
            TOKEN_A,
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "create {name}: {got}");
    got["id"].as_str().unwrap().to_owned()
}

/// The `deliveries` partition of a subscription's jobs: librdkafka's default partitioner
/// (`consistent_random`: CRC-32 of the key).
fn partition_of(sub: &str, partitions: u32) -> u32 {
    let mut crc = !0u32;
    for b in sub.bytes() {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc % partitions
}

/// Publishes `per_tick` events every 100 ms for `ticks` ticks, over `keys` keys (`k0`..),
/// each key's `seq` counting up; returns the event ids in order.
async fn publish_paced(stack: &Stack, keys: usize, per_tick: usize, ticks: usize) -> Vec<String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.config.kafka_bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let (mut ids, mut acks) = (Vec::new(), Vec::new());
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    for n in 0..ticks * per_tick {
        if n % per_tick == 0 {
            pace.tick().await;
        }
        let (k, seq) = (n % keys, n / keys);
        let id = uuid::Uuid::new_v4().to_string();
        let event = json!({"id": id, "type": "ACCOUNT.UPDATED", "tenant": TENANT_A,
                           "data": {"key": format!("k{k}"), "seq": seq}})
        .to_string();
        let key = format!("k{k}");
        let record = FutureRecord::to(&stack.config.topic_events)
            .key(&key)
            .payload(&event);
        acks.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        ids.push(id);
    }
    for ack in acks {
        ack.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    ids
}

/// Requests per `window` from the first arrival on, full windows only.
fn per_window(got: &[Received], window: Duration) -> Vec<usize> {
    let first = got.iter().map(|r| r.at).min().unwrap();
    let last = got.iter().map(|r| r.at).max().unwrap();
    let full = ((last - first).as_millis() / window.as_millis()) as usize;
    let mut counts = vec![0; full];
    for r in got {
        let i = ((r.at - first).as_millis() / window.as_millis()) as usize;
        if i < full {
            counts[i] += 1;
        }
    }
    counts
}

/// 20 deliveries a second allowed, 200 a second offered for 3 s (600 events on 10 keys):
/// the backlog drains at the limit (within 10% in every 5-second window at the receiver),
/// through a second worker joining in the middle, in key order, nothing lost; an unlimited
/// subscription on the same partition gets all of its events long before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_rate_limit_holds_across_workers_and_holds_up_nobody() {
    const RATE: usize = 20;
    let stack = Stack::start_without_worker(|c| {
        c.topic_partitions = 2;
        // The limited backlog (600) is past this: it waits in the retry lane, read back
        // 100 at a time, and `deliveries` keeps being read for the other subscription.
        c.subscription_buffer = 100;
    })
    .await;
    let limited = Receiver::start(&[], 200).await;
    let free = Receiver::start(&[], 200).await;
    let limited_sub = subscription(
        &stack,
        "limited",
        &limited.url,
        json!({"rateLimit": {"perSecond": RATE}}),
    )
    .await;
    // An unlimited subscription whose jobs share the limited one's partition.
    let mut free_sub = None;
    for n in 0..20 {
        let id = subscription(&stack, &format!("free-{n}"), &free.url, json!({})).await;
        if partition_of(&id, 2) == partition_of(&limited_sub, 2) {
            free_sub = Some(id);
            break;
        }
        let url = format!("{}{SUBS}/{id}", stack.api);
        assert_eq!(stack.call(M::DELETE, &url, TOKEN_A, None).await.0, 204);
    }
    let free_sub = free_sub.expect("a subscription on the limited one's partition");

    let mut workers = vec![Service::start(
        "hookline-delivery-worker",
        &stack.config,
        &LISTEN,
    )];
    // The offered load: 200 a second for 3 s.
    let ids = publish_paced(&stack, 10, 20, 30).await;
    let published = Instant::now();
    let free_got = free.wait_for_delivered(ids.len(), 60).await;
    let free_done = Instant::now();
    let limited_then = delivered_ids(&limited.received()).len();
    eprintln!(
        "the unlimited subscription done {:.1} s after publishing; the limited one then had {limited_then}: per second {:?}",
        (free_done - published).as_secs_f64(),
        per_window(&limited.received(), Duration::from_secs(1))
    );
    assert!(
        limited_then < ids.len() / 2,
        "the unlimited subscription finished while the limited one had {limited_then} of {}",
        ids.len()
    );
    // A second worker joins while the backlog drains.
    limited.wait_for_delivered(ids.len() / 3, 60).await;
    workers.push(Service::start(
        "hookline-delivery-worker",
        &stack.config,
        &LISTEN,
    ));
    let got = limited.wait_for_delivered(ids.len(), 90).await;
    for w in &mut workers {
        assert!(w.running(), "a worker exited on its own");
    }
    for (sub, got) in [(&limited_sub, &got), (&free_sub, &free_got)] {
        let expected: HashSet<String> = ids
            .iter()
            .map(|e| hookline_events::delivery_id(e, sub))
            .collect();
        assert_eq!(delivered_ids(got), expected, "every event delivered");
        assert_ordered_per_key(got);
    }
    let windows = per_window(&got, Duration::from_secs(5));
    let span = got.iter().map(|r| r.at).max().unwrap() - got.iter().map(|r| r.at).min().unwrap();
    eprintln!(
        "rate limit {RATE}/s: {} requests over {:.1} s ({:.1}/s); per 5 s window {windows:?} \
         (limit {}); the unlimited subscription done {:.1} s after publishing",
        got.len(),
        span.as_secs_f64(),
        got.len() as f64 / span.as_secs_f64(),
        RATE * 5,
        (free_done - published).as_secs_f64()
    );
    let most = RATE * 5 * 11 / 10;
    assert!(
        windows.len() >= 4,
        "the backlog drained at the limit: {windows:?}"
    );
    assert!(
        windows.iter().all(|n| *n <= most),
        "over {most} in a window: {windows:?}"
    );
    // The limit is a ceiling; the average stays near it (a hand-over pauses briefly).
    let mean = windows.iter().sum::<usize>() as f64 / windows.len() as f64;
    assert!(
        mean >= RATE as f64 * 5.0 * 0.7,
        "drained far below the limit: {windows:?}"
    );
    for w in workers {
        assert!(w.terminate(30), "graceful exit");
    }
    stack.stop().await;
}

/// An endpoint that counts the requests it serves at once never sees more than
/// `maxInFlight`, however many keys have work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_max_in_flight_caps_concurrent_requests() {
    let stack = Stack::start(|c| c.topic_partitions = 1).await;
    let slow = Receiver::start(&[], 200).await;
    slow.delay(Duration::from_millis(100));
    subscription(&stack, "narrow", &slow.url, json!({"maxInFlight": 2})).await;
    let ids = publish_seqs(&stack, 10, 0..3).await;
    let got = slow.wait_for_delivered(ids.len(), 60).await;
    assert_ordered_per_key(&got);
    assert_eq!(
        slow.max_concurrent(),
        2,
        "at most (and here exactly) 2 at once"
    );
    stack.stop().await;
}

/// A 429 with `Retry-After: 2` on one key holds back the subscription's other keys too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_retry_after_slows_the_whole_subscription() {
    let stack = Stack::start(|c| c.topic_partitions = 1).await;
    let endpoint = Receiver::start(&[429], 200).await;
    endpoint.retry_after("2");
    subscription(&stack, "asked", &endpoint.url, json!({})).await;
    // One key first: its first attempt is answered 429, Retry-After: 2.
    publish_seqs(&stack, 1, 0..1).await;
    let first = endpoint.wait_for(1, 30).await[0].clone();
    assert_eq!(first.status, 429);
    // Then the next event of that key and four other keys (`publish_seqs` keys k0..k4).
    let more = publish_seqs(&stack, 5, 1..2).await;
    let got = endpoint.wait_for_delivered(1 + more.len(), 30).await;
    for r in got.iter().skip(1) {
        let after = r.at - first.at;
        assert!(
            after >= Duration::from_secs(2),
            "a request {after:?} after the 429 asked for 2 s"
        );
    }
    stack.stop().await;
}
