//! Least privilege: a principal can do only what the table grants it, and a service started
//! with another service's credentials says what it may not do.

use std::time::Duration;

use hookline_config::Config;
use hookline_kafka::acl::Principal;
use hookline_kafka::rdkafka::consumer::{BaseConsumer, Consumer as _};
use hookline_kafka::rdkafka::error::RDKafkaErrorCode;
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use crate::support::{Hookline, SecuredKafka, client, get, wait_for};

pub async fn holds(kafka: &SecuredKafka, config: &Config) {
    let worker = config
        .for_service(Principal::DeliveryWorker.name())
        .unwrap();
    let producer = config.for_service(Principal::Producer.name()).unwrap();

    // The worker's principal reads subscriptions but may not write them.
    let p: FutureProducer = hookline_kafka::client_config(&worker)
        .unwrap()
        .set("acks", "all")
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap();
    let (e, _) = p
        .send(
            FutureRecord::to(&config.topic_subscriptions)
                .key("sub-x")
                .payload("forged"),
            Duration::from_secs(30),
        )
        .await
        .expect_err("the worker's principal writes the subscriptions topic");
    assert_eq!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "{e}"
    );

    // The outside producer's principal may not read deliveries (nor describe them).
    let c: BaseConsumer = hookline_kafka::client_config(&producer)
        .unwrap()
        .create()
        .unwrap();
    let topic = config.topic_deliveries.clone();
    let error = tokio::task::spawn_blocking(move || {
        let m = c
            .fetch_metadata(Some(&topic), Duration::from_secs(30))
            .expect("metadata");
        m.topics()[0].error().map(RDKafkaErrorCode::from)
    })
    .await
    .unwrap();
    assert_eq!(error, Some(RDKafkaErrorCode::TopicAuthorizationFailed));

    // The subscription API started with the worker's credentials: up, not ready, and
    // /readyz and one ERROR line say which topic it may not read, as which user.
    let as_worker = Config {
        kafka_sasl_username: worker.kafka_sasl_username.clone(),
        kafka_sasl_password_file: worker.kafka_sasl_password_file.clone(),
        ..config.clone()
    };
    let api = Hookline::start_binary(
        "hookline-subscription-api",
        &[],
        &as_worker,
        kafka.dir().join("api-as-worker.log"),
    );
    let url = format!("http://{}/readyz", config.api_listen);
    let http = client();
    let message = wait_for(
        60,
        "the API's /readyz naming a topic it may not read",
        || {
            api.assert_running();
            let (http, url) = (&http, &url);
            async move {
                let (status, body) = get(http, url).await;
                let v: Value = serde_json::from_str(&body).ok()?;
                let m = v["message"].as_str()?.to_owned();
                (status == 503 && m.contains("not authorized")).then_some(m)
            }
        },
        || api.log_text(),
    )
    .await;
    // Whichever the API's views the worker may not read (by the table) is denied first.
    let readable = |principal, topic: &str| {
        hookline_kafka::acl::grants(config, principal)
            .iter()
            .any(|g| {
                g.resource == hookline_kafka::acl::ResourceType::Topic
                    && g.name == topic
                    && g.operations.contains(&hookline_kafka::acl::Operation::Read)
            })
    };
    let denied_topics: Vec<&str> = config
        .topics()
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| readable(Principal::SubscriptionApi, t))
        .filter(|t| !readable(Principal::DeliveryWorker, t))
        .collect();
    assert!(
        !denied_topics.is_empty(),
        "the table lets the worker read every API topic"
    );
    assert!(
        denied_topics.iter().any(|t| message
            == format!(
                "not ready: kafka: not authorized to read topic {t} (as user hookline-delivery-worker)"
            )),
        "{message}"
    );
    let log = api.log_text();
    let errors = crate::error_lines(&log);
    assert!(
        errors
            .iter()
            .any(|l| l.contains(message.trim_start_matches("not ready: "))),
        "an ERROR line with {message:?}: {errors:#?}"
    );
    let password = kafka.password("hookline-delivery-worker");
    assert!(!log.contains(&password), "a password in the log");
    assert!(!message.contains(&password));
}
