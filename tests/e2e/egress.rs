//! The egress guard end to end, with loopback addresses only: the stack allow-lists
//! 127.0.0.1 alone, so subscriptions to 127.0.0.2 and [::1] get attempts recorded as
//! `egress_denied` and their listeners never see a connection, while 127.0.0.1 is delivered to.

use std::collections::HashSet;
use std::io::ErrorKind;

use hookline_proto::Message as _;
use hookline_proto::v1::{Attempt, AttemptOutcome};
use serde_json::json;

use crate::support::receiver::Receiver;
use crate::support::{Stack, TENANT_A};

/// A listener that must never see a connection: non-blocking, checked with one `accept`
/// (the kernel queues a completed handshake before `accept`, so any connection shows).
fn untouched(addr: &str) -> Option<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).ok()?;
    listener.set_nonblocking(true).unwrap();
    Some(listener)
}

fn assert_untouched(listener: &std::net::TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!(
            "{} accepted a connection from {peer}",
            listener.local_addr().unwrap()
        ),
        Err(e) => panic!("accept: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_allow_listed_loopback_address_is_reached() {
    let stack = Stack::start(|_| {}).await;
    let allowed = Receiver::start(&[], 200).await;
    let v4 = untouched("127.0.0.2:0").expect("bind 127.0.0.2");
    // Without IPv6 loopback the [::1] subscription is still refused, before any connect.
    let v6 = untouched("[::1]:0");
    let v4_url = format!("http://{}/hook", v4.local_addr().unwrap());
    let v6_url = match &v6 {
        Some(l) => format!("http://{}/hook", l.local_addr().unwrap()),
        None => "http://[::1]:9/hook".to_owned(),
    };
    let (allowed_sub, _) = stack
        .fynapse_subscription("allowed", &allowed.url, json!(["ACCOUNT.*"]))
        .await;
    let (v4_sub, _) = stack
        .fynapse_subscription("loopback-2", &v4_url, json!(["ACCOUNT.*"]))
        .await;
    let (v6_sub, _) = stack
        .fynapse_subscription("loopback-v6", &v6_url, json!(["ACCOUNT.*"]))
        .await;

    let events = stack.config.topic_events.clone();
    let event = json!({"id": "5f1d2c3b-8e7a-4d6c-9b0a-1e2f3a4b5c6d", "type": "ACCOUNT.CREATED",
        "time": "2026-04-14T09:54:45.040Z", "tenant": TENANT_A, "data": {"id": "acc-1"}});
    stack.publish_json(&events, "acc-1", &event).await;
    allowed.wait_for_delivered(1, 60).await;

    let refused: HashSet<&str> = [v4_sub.as_str(), v6_sub.as_str()].into();
    // (subscription, error class) of every attempt read so far.
    let seen = |records: &[Vec<u8>]| -> HashSet<(String, String)> {
        records
            .iter()
            .filter_map(|b| Attempt::decode(b.as_slice()).ok())
            .map(|a| (a.subscription_id, a.error_class))
            .collect()
    };
    let mut expected: Vec<(String, String)> = refused
        .iter()
        .map(|s| (s.to_string(), "egress_denied".to_owned()))
        .collect();
    expected.push((allowed_sub.clone(), String::new()));
    let attempts_topic = stack.config.topic_attempts.clone();
    let records = stack
        .read_topic(&attempts_topic, |r| {
            let seen = seen(r);
            expected.iter().all(|e| seen.contains(e))
        })
        .await;
    let attempts: Vec<Attempt> = records
        .iter()
        .map(|b| Attempt::decode(b.as_slice()).unwrap())
        .collect();
    for sub in &refused {
        let denied: Vec<&Attempt> = attempts
            .iter()
            .filter(|a| a.subscription_id == *sub)
            .collect();
        assert!(!denied.is_empty(), "no attempt recorded for {sub}");
        for a in denied {
            assert_eq!(a.error_class, "egress_denied", "{a:?}");
            assert_eq!(a.status_code, 0);
            assert_eq!(
                a.outcome,
                AttemptOutcome::Failed as i32,
                "a refused address is final"
            );
            assert!(a.error.contains("is loopback"), "{}", a.error);
        }
    }
    assert!(
        attempts
            .iter()
            .any(|a| a.subscription_id == allowed_sub && a.error_class.is_empty()),
        "the allow-listed subscription's attempt is recorded as delivered"
    );
    assert_untouched(&v4);
    if let Some(l) = &v6 {
        assert_untouched(l);
    }
    stack.stop().await;
}
