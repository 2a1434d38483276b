//! Security suite: Hookline against a Kafka whose client listener speaks SASL_SSL with ACLs
//! enforced (`scripts/kafka.sh start --security sasl_ssl`: a CA and broker certificate made at
//! its first start, SCRAM users made when its storage is formatted, `hookline` with interim
//! broad ACLs, `admin` the only super user). `hookline all` runs as a process with its log in
//! a file, a real HTTP receiver gets the deliveries, and the stock Standard Webhooks verifier
//! checks them.
//!
//! 1. The pipeline over SASL_SSL with SCRAM-SHA-512: an event published over the secured
//!    listener reaches the receiver, signed.
//! 2. A wrong password: the process stays up, every `/readyz` answers 503 with a one-line
//!    reason, one ERROR line in the log however often the clients retry, no secret in the
//!    log, `/readyz` or `/metrics`; once the broker takes the password (`kafka.sh
//!    scram-user`) the services become ready and deliver, without a restart.
//!
//! `cargo build --workspace --locked && cargo test -p hookline-tests --test security`

#[path = "../shared/binaries.rs"]
mod binaries;
mod support;

use std::time::Duration;

use hookline_config::Config;
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use support::{
    Hookline, Receiver, SecuredKafka, TENANT, TOKEN, client, get, health_addrs, wait_for,
};

const REFUSED: &str = "kafka: authentication failed (SASL)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_pipeline_then_a_wrong_password_recovers() {
    let kafka = SecuredKafka::start().await;
    let started = std::time::Instant::now();
    pipeline_over_sasl_ssl(&kafka).await;
    eprintln!(
        "security: pipeline over SASL_SSL in {:?}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    wrong_password_then_fixed(&kafka).await;
    eprintln!(
        "security: wrong password, then fixed, in {:?}",
        started.elapsed()
    );
}

async fn pipeline_over_sasl_ssl(kafka: &SecuredKafka) {
    let config = support::config(kafka, "hookline", &kafka.password_file("hookline"));
    hookline_kafka::ensure_topics(&config)
        .await
        .expect("user hookline creates the topics over SASL_SSL");
    let receiver = Receiver::start().await;
    let hookline = Hookline::start(&config, kafka.dir().join("pipeline.log"));
    wait_ready(&config, &hookline, kafka).await;
    deliver_one(&config, &config, &receiver, &hookline, kafka, "acc-1").await;
    let errors = error_lines(&hookline.log_text());
    assert!(errors.is_empty(), "ERROR lines: {errors:#?}");
}

async fn wrong_password_then_fixed(kafka: &SecuredKafka) {
    let wrong_file = kafka.dir().join("wrong.password");
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(&wrong_file, format!("{wrong}\n")).unwrap();
    let config = support::config(kafka, "hookline", &wrong_file);
    // The test's own client is the broker's admin, which the fix leaves alone.
    let admin = Config {
        kafka_sasl_username: "admin".into(),
        kafka_sasl_password_file: kafka.password_file("admin").to_string_lossy().into(),
        ..config.clone()
    };
    hookline_kafka::ensure_topics(&admin)
        .await
        .expect("admin creates the topics");
    let refusals_before = refusals_in_broker_log(kafka);
    let hookline = Hookline::start(&config, kafka.dir().join("wrong-password.log"));
    let http = client();

    // Every service answers 503 with the reason, in one line.
    for (name, addr) in health_addrs(&config) {
        let url = format!("http://{addr}/readyz");
        let body: Value = wait_for(
            60,
            &format!("{name} /readyz 503 saying {REFUSED:?}"),
            || async {
                let (status, body) = get(&http, &url).await;
                (status == 503 && body.contains(REFUSED))
                    .then(|| serde_json::from_str(&body).expect("JSON body"))
            },
            || hookline.log_text(),
        )
        .await;
        let message = body["message"].as_str().expect("message");
        assert!(!message.contains('\n'), "{name}: {message:?}");
        assert_eq!(message, format!("not ready: {REFUSED}"), "{name}");
    }
    // The clients keep retrying (the broker logs each refusal) while the log holds one
    // ERROR line about it.
    wait_for(
        60,
        "the broker refusing the clients' retries",
        || async { (refusals_in_broker_log(kafka) >= refusals_before + 8).then_some(()) },
        || kafka.log_tail(30),
    )
    .await;
    hookline.assert_running();
    let log = hookline.log_text();
    let errors = error_lines(&log);
    assert_eq!(errors.len(), 1, "one ERROR line: {errors:#?}");
    assert!(errors[0].contains(REFUSED), "{}", errors[0]);
    let secrets = [
        wrong.clone(),
        kafka.password("hookline"),
        kafka.password("admin"),
    ];
    let mut shown = vec![("log".to_owned(), log)];
    for (name, addr) in health_addrs(&config) {
        for path in ["readyz", "metrics"] {
            let (_, body) = get(&http, &format!("http://{addr}/{path}")).await;
            shown.push((format!("{name} /{path}"), body));
        }
    }
    for (what, text) in &shown {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a password in {what}");
        }
    }

    // The broker's side is fixed: the password the service has becomes hookline's.
    kafka.scram_user("hookline", &wrong_file).await;
    wait_ready(&config, &hookline, kafka).await;
    let receiver = Receiver::start().await;
    deliver_one(&config, &admin, &receiver, &hookline, kafka, "acc-2").await;
    let log = hookline.log_text();
    let errors = error_lines(&log);
    assert_eq!(errors.len(), 1, "still one ERROR line: {errors:#?}");
    assert!(
        log.contains("accept this client's connection again"),
        "the recovery is logged"
    );
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a password in the log");
    }
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

/// Subscribes `receiver` through the API, publishes one event as `publisher` (a
/// configuration naming the user to publish as) and checks that it arrives, signed.
async fn deliver_one(
    config: &Config,
    publisher: &Config,
    receiver: &Receiver,
    hookline: &Hookline,
    kafka: &SecuredKafka,
    account: &str,
) {
    let http = client();
    let created: Value = http
        .post(format!(
            "http://{}/api/v1/event-deliveries/subscriptions",
            config.api_listen
        ))
        .bearer_auth(TOKEN)
        .json(
            &json!({"name": format!("sec-{account}"), "endpointUrl": receiver.url,
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
    let producer: FutureProducer = hookline_kafka::client_config(publisher)
        .expect("client settings")
        .set("acks", "all")
        .create()
        .expect("producer");
    let event = json!({"type": "ACCOUNT.CREATED", "time": "2026-04-14T09:54:45.040Z",
        "tenant": TENANT, "data": {"id": account}});
    let payload = event.to_string();
    producer
        .send(
            FutureRecord::to(&config.topic_events)
                .key(account)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .expect("publish over SASL_SSL");
    let got = wait_for(
        60,
        &format!("the delivery of {account}"),
        || {
            hookline.assert_running();
            let received = receiver.received();
            async move { received.into_iter().next() }
        },
        || format!("{}\n{}", hookline.log_text(), kafka.log_tail(20)),
    )
    .await;
    standardwebhooks::Webhook::new(&secret)
        .expect("secret")
        .verify(&got.body, &got.headers)
        .expect("the stock Standard Webhooks verifier accepts the delivery");
    let body: Value = serde_json::from_slice(&got.body).expect("JSON body");
    assert!(body.to_string().contains(account), "{body}");
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

/// How many refused authentications the broker has logged.
fn refusals_in_broker_log(kafka: &SecuredKafka) -> usize {
    let log = std::fs::read_to_string(kafka.dir().join("kafka.log")).unwrap_or_default();
    log.matches("Failed authentication with").count()
}
