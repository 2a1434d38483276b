//! Security suite: Hookline against a Kafka whose client listener speaks SASL_SSL with ACLs
//! enforced (`scripts/kafka.sh start --security sasl_ssl`: a CA and broker certificate made at
//! its first start, a SCRAM user per principal made when its storage is formatted, `admin`
//! the only super user), each service connecting as its own principal (`hookline-{service}`)
//! with exactly the ACLs of the table (`hookline_kafka::acl`, applied for the test's own topic
//! names). `hookline all` runs as a process with its log in a file, a real HTTP receiver gets
//! the deliveries, and the stock Standard Webhooks verifier checks them.
//!
//! 1. The pipeline with a principal per service: topics created as `cli`, an event and
//!    balance rows published as the outside `producer` (events by Python confluent-kafka, a
//!    client that is not Hookline's code, over SCRAM-SHA-512, PLAIN and SCRAM-SHA-256),
//!    routing, signed delivery, the
//!    attempts query, a replay and an extract run.
//! 2. Least privilege (`least_privilege.rs`): the worker's principal cannot write the
//!    subscriptions topic, the producer's cannot read deliveries, and a subscription API
//!    started with the worker's credentials is not ready and says which topic it may not read.
//! 3. Refusals (`refusals.rs`): an untrusted CA and a wrong password: the process stays up,
//!    every `/readyz` answers 503 with a one-line reason, one ERROR line in the log, no secret
//!    shown; once the broker's side is fixed the services become ready and deliver, without a
//!    restart.
//!
//! `cargo build --workspace --locked && cargo test -p hookline-tests --test security`

#[path = "../shared/binaries.rs"]
mod binaries;
mod least_privilege;
mod refusals;
mod support;

use std::time::{Duration, Instant};

use hookline_config::Config;
use hookline_kafka::acl::Principal;
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use support::{
    Hookline, Receiver, SecuredKafka, TENANT, TOKEN, client, get, health_addrs, wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_per_service_least_privilege_and_refusals() {
    let kafka = SecuredKafka::start().await;
    let secrets = kafka.dir().join("secrets");
    let pipeline = support::per_service_config(&kafka, &secrets);
    let denied = support::per_service_config(&kafka, &secrets);
    let untrusted = support::per_service_config(&kafka, &secrets);
    let wrong = support::per_service_config(&kafka, &kafka.dir().join("wrong"));
    kafka
        .apply_acls(&[&pipeline, &denied, &untrusted, &wrong])
        .await;
    for config in [&pipeline, &denied, &untrusted, &wrong] {
        let cli = Config {
            kafka_sasl_password_file: pipeline.kafka_sasl_password_file.clone(),
            ..config.clone()
        };
        hookline_kafka::ensure_topics(&cli.for_service(Principal::Cli.name()).unwrap())
            .await
            .expect("principal cli creates the topics over SASL_SSL");
    }
    let mut step = Instant::now();
    let mut took = |what: &str| {
        eprintln!("security: {what} in {:?}", step.elapsed());
        step = Instant::now();
    };
    pipeline_per_service(&kafka, &pipeline).await;
    took("the pipeline with a principal per service");
    least_privilege::holds(&kafka, &denied).await;
    took("least privilege");
    refusals::untrusted_ca_then_fixed(&kafka, &untrusted).await;
    took("an untrusted CA, then fixed");
    refusals::wrong_password_then_fixed(&kafka, &wrong).await;
    took("a wrong password, then fixed");
}

async fn pipeline_per_service(kafka: &SecuredKafka, config: &Config) {
    let receiver = Receiver::start().await;
    let hookline = Hookline::start(config, kafka.dir().join("pipeline.log"));
    wait_ready(config, &hookline, kafka).await;
    let producer = config.for_service(Principal::Producer.name()).unwrap();
    let (sub_id, secret) = subscribe(config, &receiver, "acc-1").await;
    // The event comes from an outside client (not Hookline's code) as the producer.
    publish_from_python(&producer, &config.topic_events, "acc-1", &event("acc-1"));
    let first = wait_delivered(&receiver, &hookline, kafka, 1).await;
    verify(&secret, &first[0], "acc-1");
    let delivery_id = first[0].headers["webhook-id"].to_str().unwrap().to_owned();
    let http = client();
    let ops = format!("http://{}", config.dead_letters_listen);

    // The attempts query (operations service, from its index of the attempts topic).
    let url = format!("{ops}/api/v1/event-deliveries/attempts?subscriptionId={sub_id}");
    wait_for(
        60,
        "the attempt in the operations index",
        || {
            let (http, url, delivery_id) = (&http, &url, &delivery_id);
            async move {
                let r = http.get(url).bearer_auth(TOKEN).send().await.ok()?;
                let body: Value = r.json().await.ok()?;
                let items = body["items"].as_array()?;
                items
                    .iter()
                    .any(|a| a["deliveryId"] == delivery_id.as_str())
                    .then_some(())
            }
        },
        || hookline.log_text(),
    )
    .await;

    // A replay: the same delivery id again.
    let replay = http
        .post(format!(
            "{ops}/api/v1/event-deliveries/deliveries/{delivery_id}/replay"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("replay");
    assert_eq!(replay.status().as_u16(), 202, "{:?}", replay.text().await);
    let again = wait_delivered(&receiver, &hookline, kafka, 2).await;
    assert_eq!(again[1].headers["webhook-id"], delivery_id.as_str());
    verify(&secret, &again[1], "acc-1");

    // The broker's other SASL mechanisms, from the outside client as the producer.
    for (mechanism, account) in [("PLAIN", "acc-plain"), ("SCRAM-SHA-256", "acc-sha256")] {
        let mut publisher = producer.clone();
        publisher.kafka_sasl_mechanism = mechanism.into();
        publish_from_python(&publisher, &config.topic_events, account, &event(account));
        let all = wait_for(
            60,
            &format!("the event published over SASL {mechanism}"),
            || {
                hookline.assert_running();
                let got = receiver.received();
                async move {
                    got.iter()
                        .any(|r| String::from_utf8_lossy(&r.body).contains(account))
                        .then_some(got)
                }
            },
            || hookline.log_text(),
        )
        .await;
        let got = all
            .iter()
            .find(|r| String::from_utf8_lossy(&r.body).contains(account))
            .unwrap();
        verify(&secret, got, account);
    }

    // An extract run: balance rows published as the producer, read by the extract-producer.
    let node = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let row = json!({"node": node, "account": "acc-9", "productName": "Savings",
        "transactionCurrency": "GBP", "balance": "12.50"});
    let key = format!("{node}/acc-9/Savings/GBP");
    publish(&producer, &config.topic_balances, &key, &row.to_string()).await;
    let extracts = format!("http://{}/api/v1/extracts", config.extracts_listen);
    let created = http
        .post(&extracts)
        .bearer_auth(TOKEN)
        .json(
            &json!({"name": "sec-extract", "target": "Webhook", "dataSource": "Balances",
            "query": {"nodes": [node]}}),
        )
        .send()
        .await
        .expect("create the extract");
    assert!(created.status().is_success(), "{:?}", created.text().await);
    // The row may reach the extract-producer's store after the run starts: run until it
    // emitted the row.
    wait_for(
        60,
        "an extract run that emits the balance row",
        || {
            let (http, extracts) = (&http, &extracts);
            async move {
                let run: Value = http
                    .post(format!("{extracts}/sec-extract/runs?wait=true"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (run["status"] == "SUCCEEDED" && run["rowsEmitted"].as_u64() >= Some(1))
                    .then_some(())
            }
        },
        || hookline.log_text(),
    )
    .await;
    let all = wait_for(
        60,
        "the balance.extracted delivery",
        || {
            hookline.assert_running();
            let got = receiver.received();
            async move {
                got.iter()
                    .any(|r| String::from_utf8_lossy(&r.body).contains("balance.extracted"))
                    .then_some(got)
            }
        },
        || hookline.log_text(),
    )
    .await;
    let extracted = all
        .iter()
        .find(|r| String::from_utf8_lossy(&r.body).contains("balance.extracted"))
        .unwrap();
    verify(&secret, extracted, &node);
    let errors = error_lines(&hookline.log_text());
    assert!(errors.is_empty(), "ERROR lines: {errors:#?}");
}

fn event(account: &str) -> String {
    json!({"type": "ACCOUNT.CREATED", "time": "2026-04-14T09:54:45.040Z",
        "tenant": TENANT, "data": {"id": account}})
    .to_string()
}

/// Waits until every service of `hookline` answers `/readyz` with 200.
async fn wait_ready(config: &Config, hookline: &Hookline, kafka: &SecuredKafka) {
    let http = client();
    for (name, addr) in health_addrs(config) {
        let url = format!("http://{addr}/readyz");
        wait_for(
            90,
            &format!("{name} ready"),
            || {
                hookline.assert_running();
                let (http, url) = (&http, &url);
                async move { (get(http, url).await.0 == 200).then_some(()) }
            },
            || format!("{}\n{}", hookline.log_text(), kafka.log_tail(20)),
        )
        .await;
    }
}

/// Subscribes `receiver` to every event type through the API: the subscription's id and
/// signing secret.
async fn subscribe(config: &Config, receiver: &Receiver, name: &str) -> (String, String) {
    let created: Value = client()
        .post(format!(
            "http://{}/api/v1/event-deliveries/subscriptions",
            config.api_listen
        ))
        .bearer_auth(TOKEN)
        .json(
            &json!({"name": format!("sec-{name}"), "endpointUrl": receiver.url,
            "eventTypes": null}),
        )
        .send()
        .await
        .expect("create the subscription")
        .json()
        .await
        .expect("JSON answer");
    let secret = created["secret"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("a secret in {created}"))
        .to_owned();
    let id = created["id"].as_str().expect("an id").to_owned();
    (id, secret)
}

/// Publishes one record as `publisher` (a configuration naming the user to publish as).
async fn publish(publisher: &Config, topic: &str, key: &str, payload: &str) {
    let producer: FutureProducer = hookline_kafka::client_config(publisher)
        .expect("client settings")
        .set("acks", "all")
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("publish to {topic} over SASL_SSL: {e}"));
}

/// Publishes one record as `publisher` with Python's confluent-kafka (scripts/test.sh
/// installs it): an outside producer with a client of its own.
fn publish_from_python(publisher: &Config, topic: &str, key: &str, payload: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/security/producer.py");
    let out = std::process::Command::new("python3")
        .args([
            script,
            &publisher.kafka_bootstrap,
            &publisher.kafka_ssl_ca_file,
            &publisher.kafka_sasl_mechanism,
            &publisher.kafka_sasl_username,
            &publisher.kafka_sasl_password_file,
            topic,
            key,
            payload,
        ])
        .output()
        .expect("run python3 (scripts/test.sh installs confluent-kafka)");
    assert!(
        out.status.success(),
        "the Python producer (user {}) failed:\n{}",
        publisher.kafka_sasl_username,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `receiver` has at least `n` requests; returns them all.
async fn wait_delivered(
    receiver: &Receiver,
    hookline: &Hookline,
    kafka: &SecuredKafka,
    n: usize,
) -> Vec<support::Received> {
    wait_for(
        60,
        &format!("{n} deliveries"),
        || {
            hookline.assert_running();
            let received = receiver.received();
            async move { (received.len() >= n).then_some(received) }
        },
        || format!("{}\n{}", hookline.log_text(), kafka.log_tail(20)),
    )
    .await
}

/// The stock Standard Webhooks verifier accepts `got`, whose body mentions `needle`.
fn verify(secret: &str, got: &support::Received, needle: &str) {
    standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .verify(&got.body, &got.headers)
        .expect("the stock Standard Webhooks verifier accepts the delivery");
    let body = String::from_utf8_lossy(&got.body);
    assert!(body.contains(needle), "{body}");
}

/// The lines of a JSON log at level ERROR.
fn error_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["level"] == "ERROR")
                || (!l.starts_with('{') && l.contains("ERROR"))
        })
        .map(str::to_owned)
        .collect()
}
