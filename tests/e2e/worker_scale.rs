//! The delivery worker scaled out and under pressure: worker processes joining and leaving
//! under load, hundreds of failing subscriptions beside a healthy one, and a parked
//! subscription with a huge backlog.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use hookline_proto::Message as _;
use hookline_proto::v1::{DeliveryJob, Event};
use serde_json::json;

use crate::support::process::Service;
use crate::support::receiver::{Received, Receiver};
use crate::support::{Stack, eventually};
use crate::worker::{assert_ordered_per_key, delivered_ids, publish_seqs};

const LISTEN: [(&str, &str); 1] = [("HOOKLINE_WORKER_LISTEN", "127.0.0.1:0")];

/// The requests of each delivery id after its first arrival, relative to distinct ids.
fn duplicate_fraction(got: &[Received]) -> (usize, usize, f64) {
    let ok: Vec<&Received> = got
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .collect();
    let unique = ok
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect::<HashSet<_>>()
        .len();
    let dups = ok.len() - unique;
    (unique, dups, dups as f64 / unique.max(1) as f64)
}

/// Only the first arrival of each delivery id, in arrival order.
fn first_arrivals(got: &[Received]) -> Vec<Received> {
    let mut seen = HashSet::new();
    got.iter()
        .filter(|r| seen.insert(r.header("webhook-id").to_owned()))
        .cloned()
        .collect()
}

/// Three worker processes; members join and leave (SIGTERM) every few seconds while events
/// keep coming, then one is killed (SIGKILL). Nothing is lost, first arrivals keep key order,
/// no worker exits on its own, graceful leaves and joins cause no duplicate at the healthy
/// endpoint (they hand finished work over in the commit metadata), and the SIGKILL only few.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_joining_and_leaving_lose_nothing() {
    let stack = Stack::start_without_worker(|c| {
        c.topic_partitions = 6;
        c.retry_schedule = format!("0s,100ms,300ms{}", ",1s".repeat(20));
        c.retry_in_memory_max = "2s".into();
        c.shutdown_grace = "5s".into();
    })
    .await;
    let healthy = Receiver::start(&[], 200).await;
    let flaky = Receiver::start(&[], 200).await;
    flaky.fail_every(4);
    let (healthy_sub, _) = stack
        .fynapse_subscription("healthy", &healthy.url, json!(["ACCOUNT.*"]))
        .await;
    let (flaky_sub, _) = stack
        .fynapse_subscription("flaky", &flaky.url, json!(["ACCOUNT.*"]))
        .await;
    let mut workers: VecDeque<Service> = (0..3)
        .map(|_| Service::start("hookline-delivery-worker", &stack.config, &LISTEN))
        .collect();

    let (keys, per_round) = (40, 10);
    let mut ids = Vec::new();
    let mut graceful_phase_dups = 0;
    for round in 0..8 {
        let seqs = round * per_round..(round + 1) * per_round;
        ids.extend(publish_seqs(&stack, keys, seqs).await);
        // Let the workers make progress on this round before the membership changes.
        let target = (ids.len() - keys * per_round / 2).min(ids.len());
        healthy.wait_for_delivered(target, 120).await;
        for w in &mut workers {
            assert!(w.running(), "a worker exited on its own");
        }
        match round % 2 {
            // A member leaves gracefully, and a new one takes its place.
            0 => {
                let leaving = workers.pop_front().expect("a worker");
                assert!(leaving.terminate(30), "graceful exit within the grace time");
                workers.push_back(Service::start(
                    "hookline-delivery-worker",
                    &stack.config,
                    &LISTEN,
                ));
            }
            // A fourth member joins, then the oldest leaves.
            _ => {
                workers.push_back(Service::start(
                    "hookline-delivery-worker",
                    &stack.config,
                    &LISTEN,
                ));
                let leaving = workers.pop_front().expect("a worker");
                assert!(leaving.terminate(30), "graceful exit within the grace time");
            }
        }
        if round == 5 {
            graceful_phase_dups = duplicate_fraction(&healthy.received()).1;
        }
    }
    // Then one worker is killed.
    workers.pop_front().expect("a worker").kill();
    workers.push_back(Service::start(
        "hookline-delivery-worker",
        &stack.config,
        &LISTEN,
    ));

    let healthy_got = healthy.wait_for_delivered(ids.len(), 180).await;
    let flaky_got = flaky.wait_for_delivered(ids.len(), 180).await;
    for (sub, got) in [(&healthy_sub, &healthy_got), (&flaky_sub, &flaky_got)] {
        let expected: HashSet<String> = ids
            .iter()
            .map(|e| hookline_events::delivery_id(e, sub))
            .collect();
        assert_eq!(delivered_ids(got), expected, "every event delivered");
        assert_ordered_per_key(&first_arrivals(got));
    }
    for w in &mut workers {
        assert!(w.running(), "a worker exited on its own");
    }
    let (unique, dups, fraction) = duplicate_fraction(&healthy_got);
    eprintln!(
        "churn: healthy endpoint {unique} deliveries, {dups} duplicates ({:.2}%), {graceful_phase_dups} of them during graceful leaves and joins; flaky endpoint {} requests",
        fraction * 100.0,
        flaky_got.len()
    );
    // Graceful leaves and joins hand over what finished: no duplicate (guarantee 9).
    assert_eq!(
        graceful_phase_dups, 0,
        "duplicates while members joined and left gracefully"
    );
    // The SIGKILL repeats what the killed worker finished after its last commit; under the
    // whole suite's load its commits lag, so that bound is loose.
    assert!(fraction < 0.5, "duplicates {dups} of {unique}");
    for w in workers {
        assert!(w.terminate(30));
    }
    stack.stop().await;
}

/// Several hundred subscriptions whose endpoint fails, beside one healthy subscription on
/// the same partitions: the healthy one keeps receiving while the others retry and park.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_failing_subscriptions_hold_up_nobody() {
    let stack = Stack::start(|c| {
        c.topic_partitions = 1;
        c.retry_schedule = format!("0s,100ms{}", ",2s".repeat(20));
        c.retry_in_memory_max = "500ms".into();
    })
    .await;
    let failing = Receiver::start(&[], 503).await;
    let healthy = Receiver::start(&[], 200).await;
    let failing_subs = 300;
    for n in 0..failing_subs {
        stack
            .fynapse_subscription(&format!("failing-{n}"), &failing.url, json!(["ACCOUNT.*"]))
            .await;
    }
    stack
        .fynapse_subscription("healthy", &healthy.url, json!(["ACCOUNT.*"]))
        .await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for round in 0..4 {
        ids.extend(publish_seqs(&stack, 5, round * 5..(round + 1) * 5).await);
        let got = healthy.wait_for_delivered(ids.len(), 60).await;
        assert_ordered_per_key(&got);
    }
    let healthy_secs = started.elapsed().as_secs_f64();
    // Meanwhile every failing subscription was tried and is retrying.
    let tried = eventually(60, "every failing subscription tried", || {
        let ids: HashSet<String> = failing
            .received()
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        async move { (ids.len() >= failing_subs * 5).then_some(ids.len()) }
    })
    .await;
    eprintln!(
        "{failing_subs} failing subscriptions: healthy got all {} events in {healthy_secs:.1} s; {} attempts at the failing endpoint ({tried} distinct deliveries)",
        ids.len(),
        failing.received().len()
    );
    stack.stop().await;
}

/// A parked subscription whose backlog grows to 200,000 jobs: nothing fatal, and the
/// worker's memory stays bounded (the jobs wait in the retry lane, not in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_backlog_of_200_000_jobs_stays_bounded() {
    let stack = Stack::start_without_worker(|c| {
        c.topic_partitions = 2;
        c.retry_schedule = "0s,1h".into();
    })
    .await;
    let failing = Receiver::start(&[], 500).await;
    let (sub, _) = stack
        .fynapse_subscription("backlog", &failing.url, json!([]))
        .await;
    let mut worker = Service::start("hookline-delivery-worker", &stack.config, &LISTEN);
    // Jobs are written straight to `deliveries`, as the router would: 200,000 of one
    // subscription, over 100 ordering keys.
    let producer: FutureProducer = hookline_kafka::client_config(&stack.config)
        .unwrap()
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .unwrap();
    let total = 200_000;
    let data = json!({"pad": "x".repeat(200)}).to_string();
    let mut pending = Vec::with_capacity(10_000);
    for n in 0..total {
        let job = DeliveryJob {
            delivery_id: uuid::Uuid::new_v4().to_string(),
            subscription_id: sub.clone(),
            tenant: crate::support::TENANT_A.into(),
            ordering_key: format!("k{}", n % 100).into_bytes(),
            event: Some(Event {
                id: uuid::Uuid::new_v4().to_string(),
                r#type: "ACCOUNT.UPDATED".into(),
                tenant: crate::support::TENANT_A.into(),
                data_json: data.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = job.encode_to_vec();
        loop {
            let record = FutureRecord::to(&stack.config.topic_deliveries)
                .key(&sub)
                .payload(&payload);
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        if pending.len() == 10_000 {
            for r in futures::future::join_all(pending.drain(..)).await {
                assert!(matches!(r, Ok(Ok(_))), "job written");
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        assert!(matches!(r, Ok(Ok(_))), "job written");
    }
    // Every job reaches the retry lane (the subscription's first attempts fail, its next
    // attempt is an hour away), and the worker never holds more than its bounds.
    let lane = stack.config.topic_retry_lane.clone();
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(worker.running(), "the worker exited");
        peak = peak.max(worker.peak_rss());
        let appended = lane_records(&stack.config, &lane);
        if appended >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{appended} of {total} jobs in the lane after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    peak = peak.max(worker.peak_rss());
    eprintln!(
        "backlog of {total} parked jobs: worker peak RSS {} MB",
        peak / 1_000_000
    );
    assert!(
        peak < 400_000_000,
        "worker peak RSS {} MB for a parked backlog",
        peak / 1_000_000
    );
    worker.kill();
    stack.stop().await;
}

/// Records on `topic`, from its watermarks.
fn lane_records(config: &hookline_config::Config, topic: &str) -> usize {
    use hookline_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = hookline_kafka::client_config(config)
        .unwrap()
        .create()
        .unwrap();
    let Ok(meta) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return 0;
    };
    let partitions: Vec<i32> = meta
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let counts: HashMap<i32, i64> = partitions
        .iter()
        .filter_map(|p| {
            consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(5))
                .ok()
                .map(|(lo, hi)| (*p, hi - lo))
        })
        .collect();
    counts.values().sum::<i64>() as usize
}

/// A free port on 127.0.0.1, for a worker whose `/metrics` the test reads.
fn free_listen() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("address").to_string()
}

/// The value of metric line `name` (labels included) of the service listening at `addr`.
async fn metric(addr: &str, name: &str) -> Option<f64> {
    let client = reqwest::Client::builder().no_proxy().build().ok()?;
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn reading_paused(addr: &str) -> Option<bool> {
    metric(addr, "hookline_worker_reading_paused")
        .await
        .map(|v| v == 1.0)
}

/// A partition taken away from a worker while its buffer was full (reading paused) comes
/// back to it after the worker has room again: it is read. (librdkafka keeps a partition's
/// pause across a revocation; the worker used to leave such a partition paused for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_revoked_while_reading_was_paused_is_read_when_it_comes_back() {
    let stack = Stack::start_without_worker(|c| {
        c.topic_partitions = 3;
        c.worker_buffer = 20;
        c.subscription_in_flight = 1;
        c.shutdown_grace = "5s".into();
    })
    .await;
    let receiver = Receiver::start(&[], 200).await;
    // Slow answers keep worker A's buffer full, reading paused.
    receiver.delay(Duration::from_secs(5));
    // Deliveries are partitioned by subscription: a dozen of them cover every partition.
    let mut subs = Vec::new();
    for i in 0..12 {
        let (id, _) = stack
            .fynapse_subscription(&format!("s{i}"), &receiver.url, json!(["ACCOUNT.*"]))
            .await;
        subs.push(id);
    }
    let a_listen = free_listen();
    let a = Service::start(
        "hookline-delivery-worker",
        &stack.config,
        &[("HOOKLINE_WORKER_LISTEN", &a_listen)],
    );
    let mut ids = publish_seqs(&stack, 4, 0..5).await;
    eventually(60, "worker A's buffer full, reading paused", || async {
        reading_paused(&a_listen).await.filter(|p| *p)
    })
    .await;
    // B joins while A is paused: the partitions that move to B leave A paused.
    let b_listen = free_listen();
    let b = Service::start(
        "hookline-delivery-worker",
        &stack.config,
        &[("HOOKLINE_WORKER_LISTEN", &b_listen)],
    );
    eventually(60, "worker B sending (a partition moved to it)", || async {
        metric(&b_listen, "hookline_deliveries_in_flight")
            .await
            .filter(|n| *n > 0.0)
    })
    .await;
    // Room again: everything so far is delivered, and A reads again.
    receiver.delay(Duration::ZERO);
    let expected = ids.len() * subs.len();
    receiver.wait_for_delivered(expected, 120).await;
    eventually(30, "worker A reading again", || async {
        reading_paused(&a_listen).await.filter(|p| !*p)
    })
    .await;
    // B leaves: its partitions go back to A, which is not full now.
    assert!(b.terminate(30), "B leaves within the grace time");
    // One more event (12 jobs), too few to fill A's buffer (which would pause and resume
    // every partition, the returned one too).
    ids.extend(publish_seqs(&stack, 1, 100..101).await);
    let got = receiver
        .wait_for_delivered(ids.len() * subs.len(), 60)
        .await;
    let expected: HashSet<String> = ids
        .iter()
        .flat_map(|e| subs.iter().map(move |s| hookline_events::delivery_id(e, s)))
        .collect();
    assert_eq!(delivered_ids(&got), expected, "every event delivered");
    drop(a);
    stack.stop().await;
}
