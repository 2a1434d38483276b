//! The operations API: attempts and dead letters queried from the on-disk index, replays and
//! recovery through the real pipeline, runs that survive a SIGKILL, an index rebuilt.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use hookline_proto::Message as _;
use hookline_proto::v1::{DeadLetter, DeliveryJob, Event};
use reqwest::Method as M;
use serde_json::{Value, json};

use crate::support::process::Service;
use crate::support::receiver::Receiver;
use crate::support::{Stack, TENANT_A, TOKEN_A, TOKEN_ADMIN, TOKEN_B, call, eventually};

const VIEWER_A: &str = "test-token-viewer-a-0123456789";

fn account_event(id: &str, n: u32) -> Value {
    json!({"id": id, "type": "ACCOUNT.UPDATED", "time": "2026-04-14T09:54:45.040Z",
           "tenant": TENANT_A, "data": {"n": n}})
}

async fn post(url: &str, token: &str, body: Option<Value>, key: Option<&str>) -> (u16, Value) {
    let mut req = crate::support::client().post(url).bearer_auth(token);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("HTTP call");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_are_queryable_and_dead_letters_recovered_and_replayed() {
    let stack = Stack::start(|c| {
        c.tokens.push_str(&format!(";{VIEWER_A}={TENANT_A}:viewer"));
    })
    .await;
    let ops = stack.dead_letters.clone();
    let receiver = Receiver::start(&[], 503).await;
    let (sub, _) = stack
        .fynapse_subscription("ops-failing", &receiver.url, json!(["ACCOUNT.*"]))
        .await;
    // Hookline's own events about those deliveries.
    let watcher = Receiver::start(&[], 200).await;
    stack
        .fynapse_subscription("ops-watcher", &watcher.url, json!(["hookline.delivery.*"]))
        .await;
    let since =
        hookline_events::time_fmt::rfc3339_millis(hookline_events::time_fmt::now_ms() - 1000);
    let events = stack.config.topic_events.clone();
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for (n, id) in ids.iter().enumerate() {
        stack
            .publish_json(&events, "acc-1", &account_event(id, n as u32))
            .await;
    }
    let deliveries: Vec<String> = ids
        .iter()
        .map(|e| hookline_events::delivery_id(e, &sub))
        .collect();

    // Three attempts each (the test schedule), then dead letters, all in the index.
    let letters_url = format!("{ops}/api/v1/event-deliveries/dead-letters?subscriptionId={sub}");
    let letters = eventually(60, "three dead letters", || async {
        let (status, body) = call(M::GET, &letters_url, TOKEN_A, None).await;
        assert_eq!(status, 200, "{body}");
        (body["items"].as_array().map_or(0, Vec::len) == 3).then_some(body)
    })
    .await;
    assert_eq!(
        letters["items"][0]["lastAttempt"]["status"], 503,
        "{letters}"
    );
    let d0 = &deliveries[0];
    let (status, one) = call(
        M::GET,
        &format!("{ops}/api/v1/event-deliveries/deliveries/{d0}"),
        VIEWER_A,
        None,
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["state"], "dead_lettered", "{one}");
    assert_eq!(
        (one["attempts"].clone(), one["lastStatus"].clone()),
        (json!(3), json!(503))
    );
    assert_eq!(
        (one["eventId"].as_str(), one["subscriptionId"].as_str()),
        (Some(ids[0].as_str()), Some(sub.as_str()))
    );
    let (_, letter) = call(
        M::GET,
        &format!("{ops}/api/v1/event-deliveries/dead-letters/{d0}"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(
        (
            letter["reason"].as_str(),
            letter["lastAttempt"]["attempt"].as_u64()
        ),
        (Some("retries exhausted"), Some(3))
    );

    // A delivery's attempts, in order, with the headers sent (signature masked).
    let (_, attempts) = call(
        M::GET,
        &format!("{ops}/api/v1/event-deliveries/deliveries/{d0}/attempts"),
        TOKEN_A,
        None,
    )
    .await;
    let items = attempts["items"].as_array().expect("items");
    assert_eq!(
        items
            .iter()
            .map(|a| a["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let headers: HashMap<String, String> = items[0]["requestHeaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_owned(),
                h["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(headers["webhook-id"], *d0);
    assert_eq!(headers["webhook-signature"], "v1,****");
    assert_eq!(items[0]["outcome"], "retryable");
    assert!(!items[0]["responseHeaders"].as_array().unwrap().is_empty());
    // By event and by subscription, with an outcome filter.
    let (_, by_event) = call(
        M::GET,
        &format!("{ops}/api/v1/event-deliveries/attempts?eventId={}", ids[1]),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(by_event["items"].as_array().unwrap().len(), 3, "{by_event}");
    let (_, by_sub) = call(
        M::GET,
        &format!(
            "{ops}/api/v1/event-deliveries/attempts?subscriptionId={sub}&outcome=failed&limit=4"
        ),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(by_sub["items"].as_array().unwrap().len(), 4);
    let next = by_sub["nextCursor"].as_str().expect("a next page");
    let (_, rest) = call(M::GET, &format!("{ops}/api/v1/event-deliveries/attempts?subscriptionId={sub}&outcome=failed&limit=100&cursor={next}"), TOKEN_A, None).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 5, "{rest}");
    let (_, none) = call(
        M::GET,
        &format!("{ops}/api/v1/event-deliveries/attempts?subscriptionId={sub}&outcome=succeeded"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(none["items"], json!([]));

    // Bad input names its field; tenant B sees nothing and replays nothing; a viewer cannot replay.
    let (status, e) = call(
        M::GET,
        &format!("{ops}/api/v1/event-deliveries/attempts?limit=0"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!((status, e["field"].as_str()), (400, Some("limit")));
    let (status, e) = call(
        M::GET,
        &format!("{ops}/api/v1/event-deliveries/attempts?colour=red"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!((status, e["field"].as_str()), (400, Some("colour")));
    let (status, _) = call(
        M::GET,
        &format!("{ops}/api/v1/event-deliveries/deliveries/{d0}"),
        TOKEN_B,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, theirs) = call(M::GET, &letters_url, TOKEN_B, None).await;
    assert_eq!(theirs["items"], json!([]));
    let replay_d0 = format!("{ops}/api/v1/event-deliveries/deliveries/{d0}/replay");
    assert_eq!(post(&replay_d0, TOKEN_B, None, None).await.0, 404);
    assert_eq!(post(&replay_d0, VIEWER_A, None, None).await.0, 403);
    let replays = format!("{ops}/api/v1/event-deliveries/replays");
    let (status, e) = post(
        &replays,
        TOKEN_A,
        Some(json!({"subscriptionId": sub, "since": since, "colour": 1})),
        None,
    )
    .await;
    assert_eq!((status, e["field"].as_str()), (400, Some("colour")));
    assert_eq!(
        post(
            &replays,
            TOKEN_B,
            Some(json!({"subscriptionId": sub, "since": since})),
            None
        )
        .await
        .0,
        404
    );

    // The endpoint is fixed: recover everything that failed since `since`, once per run.
    receiver.answer(200);
    let before = receiver.received().len();
    let body = json!({"subscriptionId": sub, "since": since, "outcome": "failed"});
    let (status, started) = post(&replays, TOKEN_A, Some(body.clone()), Some("recover-1")).await;
    assert_eq!(status, 202, "{started}");
    let replay_id = started["replayId"].as_str().unwrap().to_owned();
    let (status, again) = post(&replays, TOKEN_A, Some(body), Some("recover-1")).await;
    assert_eq!(
        (status, again["replayId"].as_str()),
        (202, Some(replay_id.as_str()))
    );
    let run = eventually(60, "the recovery delivered", || async {
        let (_, run) = call(M::GET, &format!("{replays}/{replay_id}"), VIEWER_A, None).await;
        (run["delivered"] == 3).then_some(run)
    })
    .await;
    assert_eq!(
        (
            run["state"].as_str(),
            run["selected"].as_u64(),
            run["enqueued"].as_u64()
        ),
        (Some("completed"), Some(3), Some(3)),
        "{run}"
    );
    let got: Vec<String> = receiver.received()[before..]
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(
        got, deliveries,
        "each once, in key order, with its delivery id"
    );
    let replayed: Vec<DeliveryJob> = jobs_on(&stack)
        .into_iter()
        .filter(|j| j.replay_id == replay_id)
        .collect();
    assert_eq!(
        replayed.len(),
        3,
        "enqueued once for two identical requests"
    );
    assert!(replayed.iter().all(|j| j.attempt == 0));
    // Each dead letter was reported exhausted, and each recovered delivery recovered.
    let reports = watcher.wait_for_delivered(6, 60).await;
    let mut recovered: Vec<String> = reports
        .iter()
        .map(|r| r.json())
        .filter(|b| b["event_type"] == "hookline.delivery.recovered")
        .map(|b| {
            assert_eq!(b["data"]["replayId"], replay_id.as_str());
            b["data"]["deliveryId"].as_str().unwrap().to_owned()
        })
        .collect();
    recovered.sort();
    let mut expected = deliveries.clone();
    expected.sort();
    assert_eq!(recovered, expected, "one recovered event per delivery");

    // A delivered one sent again: the same webhook-id, and its summary says so.
    let (status, one) = post(&replay_d0, TOKEN_A, None, None).await;
    assert_eq!(status, 202, "{one}");
    receiver.wait_for(before + 4, 30).await;
    assert_eq!(
        receiver.received()[before + 3].header("webhook-id"),
        d0.as_str()
    );
    let summary = eventually(30, "the resend recorded", || async {
        let (_, s) = call(
            M::GET,
            &format!("{ops}/api/v1/event-deliveries/deliveries/{d0}"),
            TOKEN_A,
            None,
        )
        .await;
        (s["attempts"] == 5 && s["state"] == "succeeded").then_some(s)
    })
    .await;
    assert_eq!(summary["replayId"], one["replayId"]);

    // Every documented operation is routed.
    let doc: Value = crate::support::client()
        .get(format!("{ops}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path == "/healthz" || path == "/readyz" || path == "/metrics" {
            continue;
        }
        let concrete = path
            .replace("{deliveryId}", "no-such-delivery")
            .replace("{replayId}", "no-such-replay")
            .replace("{id}", "no-such-record");
        for method in item.as_object().unwrap().keys() {
            let method = M::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, answer) =
                call(method.clone(), &format!("{ops}{concrete}"), TOKEN_A, None).await;
            assert!(
                status != 405 && answer["code"] != "unknown_route",
                "{method} {path}: {answer}"
            );
            assert!(status < 500, "{method} {path}: {status} {answer}");
            operations += 1;
        }
    }
    assert_eq!(operations, hookline_dead_letter::OPERATIONS.len());

    // An undecodable event: listed in quarantine (admin only), and republished it comes back
    // through the router (still undecodable: quarantined again).
    stack
        .producer()
        .send(
            FutureRecord::to(&events).key("acc-q").payload("not json"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let quarantine = format!("{ops}/admin/v1/quarantine");
    let listed = eventually(60, "the quarantined record listed", || async {
        let (status, body) = call(M::GET, &quarantine, TOKEN_ADMIN, None).await;
        assert_eq!(status, 200, "{body}");
        (body["items"].as_array().map_or(0, Vec::len) == 1).then_some(body)
    })
    .await;
    let item = &listed["items"][0];
    assert_eq!(
        (item["key"].as_str(), item["valuePreview"].as_str()),
        (Some("acc-q"), Some("not json"))
    );
    assert_eq!(item["sourceTopic"].as_str(), Some(events.as_str()));
    assert!(!item["reason"].as_str().unwrap().is_empty());
    assert_eq!(call(M::GET, &quarantine, TOKEN_A, None).await.0, 403);
    let id = item["id"].as_str().unwrap();
    let (status, republished) = post(
        &format!("{quarantine}/{id}/republish"),
        TOKEN_ADMIN,
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, republished["topic"].as_str()),
        (202, Some(events.as_str())),
        "{republished}"
    );
    eventually(60, "the republished record quarantined again", || async {
        let (_, body) = call(M::GET, &quarantine, TOKEN_ADMIN, None).await;
        (body["items"].as_array().map_or(0, Vec::len) == 2).then_some(())
    })
    .await;
    let (status, e) = post(
        &format!("{quarantine}/nonsense/republish"),
        TOKEN_ADMIN,
        None,
        None,
    )
    .await;
    assert_eq!((status, e["field"].as_str()), (400, Some("id")));

    // A disabled subscription gets 409, and nothing starts.
    let (status, hook) = call(
        M::POST,
        &format!("{}/v2/webhooks", stack.api),
        TOKEN_A,
        Some(json!({"enabled_events": ["ACCOUNT.*"], "is_enabled": false, "url": receiver.url})),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let (status, e) = post(
        &replays,
        TOKEN_A,
        Some(json!({"subscriptionId": hook["id"], "since": since})),
        None,
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (409, Some("conflict")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("disabled"), "{e}");
    stack.stop().await;
}

fn dead_letter(sub: &str, n: usize, at_ms: i64) -> DeadLetter {
    let event_id = uuid::Uuid::new_v4().to_string();
    DeadLetter {
        job: Some(DeliveryJob {
            delivery_id: hookline_events::delivery_id(&event_id, sub),
            subscription_id: sub.to_owned(),
            tenant: TENANT_A.into(),
            ordering_key: format!("k{}", n % 10).into_bytes(),
            attempt: 3,
            routed_at_ms: at_ms,
            event: Some(Event {
                id: event_id,
                r#type: "ACCOUNT.UPDATED".into(),
                tenant: TENANT_A.into(),
                data_json: "{}".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        reason: "retries exhausted".into(),
        dead_lettered_at_ms: at_ms + 10,
        ..Default::default()
    }
}

async fn wait_ready(base: &str) {
    eventually(120, "the operations service ready", || async {
        crate::support::client()
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_run_killed_mid_way_enqueues_each_delivery_once_and_the_index_rebuilds() {
    let stack = Stack::start_parts(|_| {}, false, false).await;
    let (sub, _) = stack
        .fynapse_subscription("ops-bulk", "http://127.0.0.1:9/hook", json!(["ACCOUNT.*"]))
        .await;
    let total = 5_000;
    let start_ms = hookline_events::time_fmt::now_ms() - 60_000;
    let producer: FutureProducer = hookline_kafka::client_config(&stack.config)
        .unwrap()
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let mut acks = Vec::new();
    for n in 0..total {
        let payload = dead_letter(&sub, n, start_ms + n as i64).encode_to_vec();
        let record = FutureRecord::to(&stack.config.topic_dead_letters)
            .key(&sub)
            .payload(&payload);
        acks.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for a in futures::future::join_all(acks).await {
        a.unwrap().unwrap();
    }
    let base = stack.dead_letters.clone();
    let ops = Service::start("hookline-dead-letter", &stack.config, &[]);
    wait_ready(&base).await;
    let replays = format!("{base}/api/v1/event-deliveries/replays");
    let since = hookline_events::time_fmt::rfc3339_millis(start_ms - 1000);
    let (status, started) = post(
        &replays,
        TOKEN_A,
        Some(json!({"subscriptionId": sub, "since": since, "outcome": "failed"})),
        Some("bulk"),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let id = started["replayId"].as_str().unwrap().to_owned();
    let progress = eventually(60, "the run under way", || async {
        let (_, run) = call(M::GET, &format!("{replays}/{id}"), TOKEN_A, None).await;
        (run["enqueued"].as_u64().unwrap_or(0) > 0).then_some(run)
    })
    .await;
    ops.kill();
    assert_eq!(progress["selected"], total, "{progress}");
    let at_kill = progress["enqueued"].as_u64().unwrap();
    eprintln!("killed at {at_kill} of {total} enqueued");
    assert!(
        at_kill < total as u64,
        "the kill came after the run had finished: {progress}"
    );

    let ops = Service::start("hookline-dead-letter", &stack.config, &[]);
    wait_ready(&base).await;
    let run = eventually(120, "the run completed after the restart", || async {
        let (_, run) = call(M::GET, &format!("{replays}/{id}"), TOKEN_A, None).await;
        (run["state"] == "completed").then_some(run)
    })
    .await;
    assert_eq!(run["enqueued"], total, "{run}");
    let jobs = jobs_on(&stack);
    let ours: Vec<&DeliveryJob> = jobs.iter().filter(|j| j.replay_id == id).collect();
    let unique: HashSet<&str> = ours.iter().map(|j| j.delivery_id.as_str()).collect();
    assert_eq!(
        (ours.len(), unique.len()),
        (total, total),
        "each selected delivery enqueued exactly once"
    );

    // The same answers from an index rebuilt from the topics.
    let letters_url =
        format!("{base}/api/v1/event-deliveries/dead-letters?subscriptionId={sub}&limit=100");
    let (_, before) = call(M::GET, &letters_url, TOKEN_A, None).await;
    let some = before["items"][7]["deliveryId"]
        .as_str()
        .unwrap()
        .to_owned();
    let one_url = format!("{base}/api/v1/event-deliveries/deliveries/{some}");
    let (_, one_before) = call(M::GET, &one_url, TOKEN_A, None).await;
    assert!(ops.terminate(30), "a clean stop");
    // The checkpoint is kept with the index: a restart resumes from it.
    {
        let store = hookline_ops_index::Store::open(
            std::path::Path::new(&stack.config.ops_index_dir),
            4 << 20,
        )
        .expect("open the index");
        let folded: i64 = store
            .positions()
            .unwrap()
            .iter()
            .filter(|((topic, _), _)| *topic == stack.config.topic_dead_letters)
            .map(|(_, next)| *next)
            .sum();
        assert_eq!(
            folded, total as i64,
            "every dead letter folded, and recorded so"
        );
    }
    std::fs::remove_dir_all(&stack.config.ops_index_dir).expect("delete the index");
    let ops = Service::start("hookline-dead-letter", &stack.config, &[]);
    wait_ready(&base).await;
    let (_, after) = call(M::GET, &letters_url, TOKEN_A, None).await;
    assert_eq!(after, before);
    let (_, one_after) = call(M::GET, &one_url, TOKEN_A, None).await;
    assert_eq!(one_after, one_before);
    ops.kill();
    let _ = std::fs::remove_dir_all(&stack.config.ops_index_dir);
    stack.stop().await;
}

/// Memory of the operations service while it folds a backlog of attempt records from Kafka
/// (a measurement more than a test: `--ignored` runs it; `OPS_RSS_ATTEMPTS` sets the count).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn the_index_folds_a_backlog_in_bounded_memory() {
    let total: usize = std::env::var("OPS_RSS_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let stack = Stack::start_parts(|_| {}, false, false).await;
    let producer: FutureProducer = hookline_kafka::client_config(&stack.config)
        .unwrap()
        .set("linger.ms", "50")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .unwrap();
    let now = hookline_events::time_fmt::now_ms();
    let mut acks = Vec::with_capacity(10_000);
    for n in 0..total {
        let delivery = n / 2;
        let sub = format!("sub-{:04}", delivery % 1000);
        let attempt = hookline_proto::v1::Attempt {
            delivery_id: format!("{delivery:032x}"),
            subscription_id: sub.clone(),
            tenant: format!("tenant-{}", delivery % 50),
            event_id: format!("evt-{delivery:024x}"),
            event_type: "ACCOUNT.UPDATED".into(),
            attempt: (n % 2) as u32 + 1,
            started_at_ms: now - 3_600_000 + (n / 10) as i64,
            status_code: 200,
            outcome: hookline_proto::v1::AttemptOutcome::Succeeded as i32,
            response_body: br#"{"ok":true}"#.to_vec(),
            request_headers: vec![hookline_proto::v1::Header {
                name: "webhook-signature".into(),
                value: "v1,****".into(),
            }],
            ..Default::default()
        };
        let payload = attempt.encode_to_vec();
        let record = FutureRecord::to(&stack.config.topic_attempts)
            .key(&sub)
            .payload(&payload);
        acks.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        if acks.len() == 10_000 {
            for a in futures::future::join_all(acks.drain(..)).await {
                a.unwrap().unwrap();
            }
        }
    }
    for a in futures::future::join_all(acks).await {
        a.unwrap().unwrap();
    }
    let started = std::time::Instant::now();
    let ops = Service::start("hookline-dead-letter", &stack.config, &[]);
    let base = stack.dead_letters.clone();
    eventually(1800, "the backlog folded", || async {
        crate::support::client()
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let peak = ops.peak_rss();
    eprintln!(
        "folded {total} attempts in {secs:.0} s ({:.0}/s, start-up included), peak RSS {} MB",
        total as f64 / secs,
        peak >> 20
    );
    assert!(peak < 200 << 20, "peak RSS {} MB", peak >> 20);
    let (_, page) = call(
        M::GET,
        &format!("{base}/api/v1/event-deliveries/attempts?subscriptionId=sub-0007&limit=5"),
        TOKEN_ADMIN,
        None,
    )
    .await;
    assert_eq!(page["items"].as_array().map_or(0, Vec::len), 5, "{page}");
    ops.kill();
    stack.stop().await;
}

/// Runs the `hookline` command with `args` against the stack's operations API; its stdout.
fn hookline_cli(stack: &Stack, args: &[&str]) -> String {
    let out = std::process::Command::new(crate::binaries::binary("hookline"))
        .args(args)
        .args(["--url", &stack.dead_letters, "--token", TOKEN_A])
        .env_remove("HOOKLINE_TOKEN")
        .output()
        .expect("run hookline");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hookline {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The operator's commands: a failed delivery's attempts in the terminal, then `hookline
/// recover` sends everything failed again and follows the run to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_sees_why_and_recovers_from_the_terminal() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 503).await;
    let (sub, _) = stack
        .fynapse_subscription("ops-cli", &receiver.url, json!(["ACCOUNT.*"]))
        .await;
    let since =
        hookline_events::time_fmt::rfc3339_millis(hookline_events::time_fmt::now_ms() - 1000);
    let ids: Vec<String> = (0..2).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for (n, id) in ids.iter().enumerate() {
        stack
            .publish_json(
                &stack.config.topic_events,
                "acc-1",
                &account_event(id, n as u32),
            )
            .await;
    }
    let letters_url = format!(
        "{}/api/v1/event-deliveries/dead-letters?subscriptionId={sub}",
        stack.dead_letters
    );
    eventually(60, "two dead letters", || async {
        let (_, body) = call(M::GET, &letters_url, TOKEN_A, None).await;
        (body["items"].as_array().map_or(0, Vec::len) == 2).then_some(())
    })
    .await;

    let d0 = hookline_events::delivery_id(&ids[0], &sub);
    let attempts = hookline_cli(&stack, &["deliveries", "attempts", &d0]);
    let lines: Vec<&str> = attempts.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "the test schedule's three attempts:\n{attempts}"
    );
    assert!(lines.iter().all(|l| l.contains("503")), "{attempts}");
    assert!(lines[0].starts_with("#1"), "oldest first:\n{attempts}");

    receiver.answer(200);
    let before = receiver.received().len();
    let run = hookline_cli(&stack, &["recover", &sub, "--since", &since]);
    assert!(run.contains("\"state\": \"completed\""), "{run}");
    assert!(run.contains("\"selected\": 2"), "{run}");
    let got = receiver.wait_for_delivered(2, 60).await;
    let again: Vec<&str> = got[before..]
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(
        again,
        [
            d0.as_str(),
            hookline_events::delivery_id(&ids[1], &sub).as_str()
        ],
        "each failed delivery once more, in key order"
    );
    stack.stop().await;
}

/// The index keeps its checkpoint: reopened on the same folder it reads nothing again, and
/// goes on with what arrives afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_index_resumes_without_reading_again() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 503).await;
    let (sub, _) = stack
        .fynapse_subscription("ops-resume", &receiver.url, json!(["ACCOUNT.*"]))
        .await;
    let publish = |n: u32| {
        let stack = &stack;
        async move {
            let id = uuid::Uuid::new_v4().to_string();
            stack
                .publish_json(&stack.config.topic_events, "acc-1", &account_event(&id, n))
                .await;
        }
    };
    for n in 0..3 {
        publish(n).await;
    }
    let letters_url = format!(
        "{}/api/v1/event-deliveries/dead-letters?subscriptionId={sub}",
        stack.dead_letters
    );
    eventually(60, "three dead letters", || async {
        let (_, body) = call(M::GET, &letters_url, TOKEN_A, None).await;
        (body["items"].as_array().map_or(0, Vec::len) == 3).then_some(())
    })
    .await;

    // An index of its own (the stack's service holds the other folder).
    let mut config = stack.config.clone();
    config.ops_index_dir = format!("{}-resume", stack.config.ops_index_dir);
    let first = hookline_ops_index::Index::open(&config).expect("open the index");
    first
        .wait_caught_up(hookline_events::time_fmt::now_ms())
        .await;
    // Three jobs, nine attempts (the test schedule's three each), three dead letters.
    assert!(first.state().folded >= 15, "{:?}", first.state().folded);
    first.stop();
    drop(first);

    let second = eventually(30, "the index reopened", || {
        let config = config.clone();
        async move { hookline_ops_index::Index::open(&config).ok() }
    })
    .await;
    second
        .wait_caught_up(hookline_events::time_fmt::now_ms())
        .await;
    assert_eq!(
        second.state().folded,
        0,
        "a restart resumes from its checkpoint"
    );
    publish(3).await;
    eventually(60, "the new records folded", || async {
        (second.state().folded > 0).then_some(())
    })
    .await;
    second.stop();
    drop(second);
    let _ = std::fs::remove_dir_all(&config.ops_index_dir);
    stack.stop().await;
}

/// Every job on the deliveries topic.
fn jobs_on(stack: &Stack) -> Vec<DeliveryJob> {
    stack
        .read_to_end(&stack.config.topic_deliveries)
        .iter()
        .map(|v| DeliveryJob::decode(v.as_slice()).expect("a job"))
        .collect()
}
