//! Deliveries end to end: the seed's envelope, independent signature checks, retries with a
//! stable Idempotency-Key, and dead letters.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use hookline_proto::Message as _;
use hookline_proto::v1::{Attempt, AttemptOutcome};
use serde_json::json;
use sha2::Sha256;

use crate::support::receiver::{Received, Receiver};
use crate::support::{Stack, TENANT_A, TENANT_B, TOKEN_A, TOKEN_B};

/// Checks a delivery with the `standardwebhooks` crate (stock verifier, its own HMAC) and
/// with a direct HMAC-SHA256 computation; neither shares code with Hookline's signer.
fn assert_verifies(r: &Received, secret: &str) {
    standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .verify(&r.body, &r.headers)
        .expect("the stock Standard Webhooks verifier accepts the delivery");

    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.",
            r.header("webhook-id"),
            r.header("webhook-timestamp")
        )
        .as_bytes(),
    );
    mac.update(&r.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert!(
        r.header("webhook-signature")
            .split(' ')
            .any(|s| s == expected),
        "signature {} lacks {expected}",
        r.header("webhook-signature")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn balance_extract_arrives_in_the_seed_envelope_signed() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 200).await;
    let (_sub, secret) = stack
        .fynapse_subscription(
            "Balance Webhook",
            &receiver.url,
            json!(["balance.extracted"]),
        )
        .await;

    let rows = [
        json!({"node": "Node1", "account": "222", "productName": "", "transactionCurrency": "GBP", "balance": 1.0}),
        json!({"node": "Node1", "account": "223", "productName": "Loan", "transactionCurrency": "EUR", "balance": "98765432109876543210.123456789"}),
        json!({"node": "Node2", "account": "224", "productName": "", "transactionCurrency": "GBP", "balance": "5"}),
    ];
    let balances = stack.config.topic_balances.clone();
    for (i, row) in rows.iter().enumerate() {
        stack.publish_json(&balances, &format!("row{i}"), row).await;
    }
    let (status, body) = stack
        .call(
            reqwest::Method::POST,
            &format!("{}/api/v1/extracts", stack.extracts),
            TOKEN_A,
            Some(json!({"name": "test", "target": "Webhook", "dataSource": "Balances", "query": {"nodes": ["Node1"]}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, run) = stack
        .call(
            reqwest::Method::POST,
            &format!("{}/api/v1/extracts/test/runs?wait=true", stack.extracts),
            TOKEN_A,
            None,
        )
        .await;
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["status"], "SUCCEEDED");
    assert_eq!(run["rowsEmitted"], 2, "only Node1's rows: {run}");

    let got = receiver.wait_for(2, 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 2, "exactly one delivery per row");
    let mut accounts = Vec::new();
    for r in &got {
        assert_verifies(r, &secret);
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("idempotency-key"), r.header("webhook-id"));
        assert!(!r.header("traceparent").is_empty());
        let v = r.json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 5, "{v}");
        for k in [
            "event_id",
            "event_type",
            "metadata",
            "event_timestamp",
            "data",
        ] {
            assert!(keys.contains(&k), "{k} missing in {v}");
        }
        assert_eq!(v["event_type"], "balance.extracted");
        assert_eq!(v["metadata"]["eventType"], "balance.extracted");
        assert_eq!(v["metadata"]["extractConfigurationName"], "test");
        assert_eq!(v["metadata"]["startedOn"], run["startedOn"]);
        let started = v["metadata"]["startedOn"].as_str().unwrap();
        assert_eq!(
            started.len(),
            "2026-04-14T09:54:43.674940Z".len(),
            "{started}"
        );
        let ts = v["event_timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-04-14T09:54:45.040Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
        uuid::Uuid::parse_str(v["event_id"].as_str().unwrap()).expect("event_id is a UUID");
        assert_eq!(v["data"]["node"], "Node1");
        accounts.push(v["data"]["account"].as_str().unwrap().to_owned());
        let raw = std::str::from_utf8(&r.body).unwrap();
        match v["data"]["account"].as_str().unwrap() {
            "222" => assert!(
                raw.contains(r#""balance":1.0,"#),
                "balance kept exact: {raw}"
            ),
            "223" => assert!(
                raw.contains(r#""balance":98765432109876543210.123456789,"#),
                "{raw}"
            ),
            other => panic!("unexpected account {other}"),
        }
    }
    accounts.sort();
    assert_eq!(accounts, ["222", "223"]);
    stack.stop().await;
}

fn account_event(id: &str) -> serde_json::Value {
    json!({"id": id, "type": "ACCOUNT.CREATED", "time": "2026-04-14T09:54:45.040Z", "tenant": TENANT_A,
           "metadata": {"source": "test"}, "data": {"id": "acc-1", "status": "ACTIVE"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_carry_the_same_idempotency_key() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[500, 500], 200).await;
    let (sub, secret) = stack
        .fynapse_subscription("flaky", &receiver.url, json!(["ACCOUNT.CREATED"]))
        .await;
    let events = stack.config.topic_events.clone();
    stack
        .publish_json(
            &events,
            "acc-1",
            &account_event("7d0e7f0a-4b8e-4a43-9d3a-0b7c2a1e5f01"),
        )
        .await;

    let got = receiver.wait_for(3, 60).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.received().len(),
        3,
        "delivered on the third attempt, then no more"
    );
    let key = got[0].header("idempotency-key").to_owned();
    assert!(!key.is_empty());
    for r in &got {
        assert_eq!(r.header("idempotency-key"), key);
        assert_eq!(r.header("webhook-id"), key);
        assert_verifies(r, &secret);
        assert_eq!(r.json()["event_id"], "7d0e7f0a-4b8e-4a43-9d3a-0b7c2a1e5f01");
    }
    assert_eq!(
        key,
        hookline_events::delivery_id("7d0e7f0a-4b8e-4a43-9d3a-0b7c2a1e5f01", &sub)
    );

    let attempts_topic = stack.config.topic_attempts.clone();
    let records = stack.read_topic(&attempts_topic, |v| v.len() >= 3).await;
    let attempts: Vec<Attempt> = records
        .iter()
        .map(|b| Attempt::decode(b.as_slice()).unwrap())
        .collect();
    let statuses: Vec<(u32, u32, i32)> = attempts
        .iter()
        .map(|a| (a.attempt, a.status_code, a.outcome))
        .collect();
    assert_eq!(
        statuses,
        [
            (1, 500, AttemptOutcome::Retryable as i32),
            (2, 500, AttemptOutcome::Retryable as i32),
            (3, 200, AttemptOutcome::Succeeded as i32)
        ]
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.delivery_id == key && a.subscription_id == sub)
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhausted_jobs_land_in_dead_letters() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 503).await;
    let (sub, _) = stack
        .fynapse_subscription("always-down", &receiver.url, json!([]))
        .await;
    let events = stack.config.topic_events.clone();
    let event_id = "2b5c4e7e-0f5e-4c55-8a0e-9f1f3c2d4b11";
    stack
        .publish_json(&events, "acc-9", &account_event(event_id))
        .await;

    let url = format!(
        "{}/api/v1/event-deliveries/dead-letters?subscriptionId={sub}",
        stack.dead_letters
    );
    let letters = crate::support::eventually(60, "a dead letter", || {
        let (stack, url) = (&stack, url.clone());
        async move {
            let (status, body) = stack.call(reqwest::Method::GET, &url, TOKEN_A, None).await;
            assert_eq!(status, 200, "{body}");
            (body["items"].as_array().is_some_and(|a| !a.is_empty()))
                .then_some(body["items"].clone())
        }
    })
    .await;
    let letter = &letters[0];
    assert_eq!(letters.as_array().unwrap().len(), 1, "{letters}");
    assert_eq!(letter["eventId"], event_id);
    assert_eq!(
        letter["deliveryId"],
        hookline_events::delivery_id(event_id, &sub)
    );
    assert_eq!(letter["tenant"], TENANT_A);
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["lastStatus"], 503);
    assert_eq!(letter["reason"], "retries exhausted");
    assert_eq!(
        receiver.received().len(),
        3,
        "three attempts as the schedule says"
    );

    // Another tenant sees none of it.
    let (status, body) = stack.call(reqwest::Method::GET, &url, TOKEN_B, None).await;
    assert_eq!((status, body), (200, json!({"items": []})));
    let _ = TENANT_B;
    stack.stop().await;
}

/// The Standard Webhooks specification's published test vector, signed by Hookline and by the
/// stock library.
#[test]
fn standard_webhooks_test_vector() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    let ours = hookline_signing::WebhookSecret::parse(SECRET).unwrap();
    assert_eq!(hookline_signing::sign(&[ours], ID, TS, BODY), EXPECTED);
    let stock = standardwebhooks::Webhook::new(SECRET).unwrap();
    assert_eq!(stock.sign(ID, TS, BODY).unwrap(), EXPECTED);
}
