//! Hookline's own events (`hookline.*`) on the events topic, delivered like any other type
//! to the subscriptions that name them: a dead-lettered delivery, a 410 that disables its
//! subscription, and a subscription disabled after failing for `auto_disable_after`.

use serde_json::{Value, json};

use crate::support::Stack;
use crate::support::receiver::{Received, Receiver};
use crate::worker::publish_seqs;

/// The Fynapse envelopes of `got` whose `event_type` is `kind`.
fn of_type(got: &[Received], kind: &str) -> Vec<Value> {
    got.iter()
        .map(Received::json)
        .filter(|b| b["event_type"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_and_disables_are_published_to_who_asks() {
    let stack = Stack::start(|_| {}).await;
    let refused = Receiver::start(&[], 400).await;
    let gone = Receiver::start(&[], 410).await;
    let everything = Receiver::start(&[], 200).await;
    let ops = Receiver::start(&[], 200).await;
    let (refused_sub, _) = stack
        .fynapse_subscription("refused", &refused.url, json!(["ACCOUNT.*"]))
        .await;
    let (gone_sub, _) = stack
        .fynapse_subscription("gone", &gone.url, json!(["ACCOUNT.*"]))
        .await;
    stack
        .fynapse_subscription("everything", &everything.url, Value::Null)
        .await;
    stack
        .fynapse_subscription("ops", &ops.url, json!(["hookline.*"]))
        .await;
    let ids = publish_seqs(&stack, 1, 0..1).await;

    // Two deliveries exhausted (400 is final, 410 too) and one subscription disabled.
    let got = ops.wait_for_delivered(3, 60).await;
    let exhausted = of_type(&got, "hookline.delivery.exhausted");
    let mut about: Vec<(String, u64)> = exhausted
        .iter()
        .map(|e| {
            assert_eq!(e["data"]["eventId"], ids[0].as_str());
            assert_eq!(e["data"]["eventType"], "ACCOUNT.UPDATED");
            assert_eq!(e["data"]["attempts"], 1);
            (
                e["data"]["deliveryId"].as_str().unwrap().to_owned(),
                e["data"]["lastStatus"].as_u64().unwrap(),
            )
        })
        .collect();
    about.sort();
    let mut expected = vec![
        (hookline_events::delivery_id(&ids[0], &refused_sub), 400),
        (hookline_events::delivery_id(&ids[0], &gone_sub), 410),
    ];
    expected.sort();
    assert_eq!(
        about, expected,
        "one exhausted event per dead letter: {got:?}"
    );
    let disabled = of_type(&got, "hookline.subscription.disabled");
    assert_eq!(disabled.len(), 1, "{got:?}");
    assert_eq!(disabled[0]["data"]["subscriptionId"], gone_sub.as_str());

    // A subscription to every type gets the domain event, and none of Hookline's own.
    everything.wait_for_delivered(1, 60).await;
    let seen: Vec<Value> = everything.received().iter().map(Received::json).collect();
    assert!(
        seen.iter().all(|b| b["event_type"] == "ACCOUNT.UPDATED"),
        "operational events are opt-in: {seen:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_failing_for_long_is_disabled() {
    let stack = Stack::start(|c| {
        c.auto_disable_after = "1s".into();
        c.retry_schedule = format!("0s{}", ",300ms".repeat(10));
    })
    .await;
    let failing = Receiver::start(&[], 503).await;
    let ops = Receiver::start(&[], 200).await;
    let (failing_sub, _) = stack
        .fynapse_subscription("failing", &failing.url, json!(["ACCOUNT.*"]))
        .await;
    stack
        .fynapse_subscription("ops", &ops.url, json!(["hookline.subscription.*"]))
        .await;
    publish_seqs(&stack, 1, 0..1).await;

    let got = ops.wait_for_delivered(1, 60).await;
    let disabled = of_type(&got, "hookline.subscription.disabled");
    assert_eq!(disabled.len(), 1, "{got:?}");
    assert_eq!(disabled[0]["data"]["subscriptionId"], failing_sub.as_str());
    assert_eq!(disabled[0]["data"]["reason"], "every attempt failed for 1s");
    // The first failure started the clock; it did not disable by itself.
    let attempts = failing.received().len();
    assert!(attempts >= 2, "{attempts} attempts before the disable");
    stack.stop().await;
}
