//! `/readyz` follows the brokers after start: with the single broker SIGKILLed every service
//! answers 503 with a JSON body saying the brokers are unreachable, and 200 again once the
//! broker is back; `/healthz` answers 200 at once throughout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::kafka::Kafka;
use crate::support::process::services;
use crate::support::{Run, SERIAL};

/// How long a service may take to notice the outage, and to notice the broker is back
/// (statistics arrive every 5 s; the broker itself takes a few seconds to serve).
const NOTICE_SECS: u64 = 60;

fn quick_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client")
}

/// `/healthz` of every service answers 200 within the client's 2 s.
async fn assert_alive(client: &reqwest::Client, all: &[(&str, SocketAddr)]) {
    for (name, addr) in all {
        let r = client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name} /healthz did not answer in time: {e}"));
        assert_eq!(r.status(), 200, "{name} /healthz");
    }
}

/// `/readyz` of `addr`: status and JSON body.
async fn readyz(client: &reqwest::Client, addr: SocketAddr) -> (u16, serde_json::Value) {
    match client.get(format!("http://{addr}/readyz")).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(serde_json::Value::Null))
        }
        Err(e) => panic!("/readyz on {addr} did not answer: {e}"),
    }
}

/// Waits until every service's `/readyz` answers `want`, checking `/healthz` on the way;
/// returns the last bodies.
async fn wait_readyz(
    client: &reqwest::Client,
    all: &[(&str, SocketAddr)],
    want: u16,
    run: &mut Run,
    kafka: &Kafka,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(NOTICE_SECS);
    loop {
        assert_alive(client, all).await;
        let mut bodies = Vec::new();
        let mut pending = Vec::new();
        for (name, addr) in all {
            let (status, body) = readyz(client, *addr).await;
            if status != want {
                pending.push(format!("{name}: {status} {body}"));
            }
            bodies.push(body);
        }
        if pending.is_empty() {
            return bodies;
        }
        let exited = run.services.exited();
        assert!(exited.is_empty(), "{exited:?} exited");
        assert!(
            Instant::now() < deadline,
            "/readyz not {want} within {NOTICE_SECS} s: {pending:?}\n{}\n{}",
            run.services.log_tails(30),
            kafka.log_tail(1, 30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_the_brokers() {
    let _serial = SERIAL.lock().await;
    let kafka = Kafka::start(1).await;
    let mut run = Run::start(&kafka, 1, 1).await;
    let all = services(&run.config);
    let client = quick_client();
    wait_readyz(&client, &all, 200, &mut run, &kafka).await;

    kafka.kill_node(1).await;
    let killed = Instant::now();
    let bodies = wait_readyz(&client, &all, 503, &mut run, &kafka).await;
    eprintln!(
        "every service not ready {:.1?} after the kill",
        killed.elapsed()
    );
    for body in &bodies {
        assert_eq!(body["code"], "not_ready", "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("brokers"), "the body says why: {body}");
    }

    kafka.start_node(1).await;
    let back = Instant::now();
    wait_readyz(&client, &all, 200, &mut run, &kafka).await;
    eprintln!(
        "every service ready {:.1?} after the broker returned",
        back.elapsed()
    );
    let exited = run.services.exited();
    assert!(exited.is_empty(), "{exited:?} exited");
}
