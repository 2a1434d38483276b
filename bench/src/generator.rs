//! The open-loop load generator: produces JSON events to the events topic at a target rate
//! whatever happens downstream. Every millisecond it sends what the schedule says is due,
//! without awaiting earlier sends; acknowledgements are collected on the side.
//!
//! Each event's `data` carries the run name, its ordering key `k`, the key's sequence
//! number `seq` (0, 1, 2, ... per key) and the send time `t` (microseconds since the epoch,
//! also in the `bench-sent-us` header), padded so the record is about `event_bytes` long.
//! Each key keeps one event type, so every subscription that selects a key's type receives
//! all of its events, in sequence.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::receiver::now_us;

/// One ordering key and the event type all its events have.
#[derive(Clone, Debug)]
pub struct KeySpec {
    pub key: String,
    pub event_type: String,
}

pub struct Load<'a> {
    pub run: &'a str,
    pub tenant: &'a str,
    /// Events per second.
    pub rate: f64,
    pub duration: Duration,
    pub keys: &'a [KeySpec],
    pub event_bytes: usize,
}

#[derive(Debug, Default)]
pub struct Sent {
    /// Acknowledged events per event type.
    pub acked: HashMap<String, u64>,
    pub failed: u64,
    /// Times librdkafka's queue was full and the generator had to wait (it fell behind).
    pub queue_full: u64,
    /// When the first event was sent (µs since the epoch) and how long sending took.
    pub started_us: u64,
    pub sending: Duration,
}

impl Sent {
    pub fn acked_total(&self) -> u64 {
        self.acked.values().sum()
    }
}

/// The bench's Kafka client settings for the broker at `bootstrap`: Hookline's
/// [`hookline_kafka::client_config`], plaintext unless the environment carries the security
/// keys (`KAFKA_SECURITY=sasl_ssl make bench` sets them, as for the services).
pub fn client_config(bootstrap: &str) -> anyhow::Result<rdkafka::ClientConfig> {
    let env = |key: &str| std::env::var(key).unwrap_or_default();
    let mut config = hookline_config::Config {
        kafka_bootstrap: bootstrap.to_owned(),
        ..Default::default()
    };
    if !env("HOOKLINE_KAFKA_SECURITY_PROTOCOL").is_empty() {
        config.kafka_security_protocol = env("HOOKLINE_KAFKA_SECURITY_PROTOCOL");
        config.kafka_sasl_mechanism = env("HOOKLINE_KAFKA_SASL_MECHANISM");
        config.kafka_sasl_username = env("HOOKLINE_KAFKA_SASL_USERNAME");
        config.kafka_sasl_password_file = env("HOOKLINE_KAFKA_SASL_PASSWORD_FILE");
        config.kafka_ssl_ca_file = env("HOOKLINE_KAFKA_SSL_CA_FILE");
    }
    Ok(hookline_kafka::client_config(&config)?)
}

pub fn producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    Ok(client_config(bootstrap)?
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .create()?)
}

fn event_json(load: &Load<'_>, spec: &KeySpec, seq: u64, sent_us: u64) -> String {
    let head = format!(
        r#"{{"type":"{}","tenant":"{}","data":{{"run":"{}","k":"{}","seq":{seq},"t":{sent_us},"pad":""#,
        spec.event_type, load.tenant, load.run, spec.key
    );
    const PAD: &str = match std::str::from_utf8(&[b'x'; 4096]) {
        Ok(s) => s,
        Err(_) => "",
    };
    let pad = load
        .event_bytes
        .saturating_sub(head.len() + 3)
        .min(PAD.len());
    let mut s = head;
    s.reserve(pad + 3);
    s.push_str(&PAD[..pad]);
    s.push_str("\"}}");
    s
}

/// Produces `load` and waits for every acknowledgement.
pub async fn run(producer: &FutureProducer, topic: &str, load: Load<'_>) -> Sent {
    let mut sent = Sent {
        started_us: now_us(),
        ..Sent::default()
    };
    let mut seqs = vec![0u64; load.keys.len()];
    let mut acks = FuturesUnordered::new();
    let started = Instant::now();
    // Every millisecond at load; at low rates less often (send times are taken when sent).
    let period_ms = (1000.0 / load.rate.max(1.0)).clamp(1.0, 50.0) as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(period_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let total = (load.rate * load.duration.as_secs_f64()).round() as u64;
    let mut produced = 0u64;
    while produced < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * load.rate) as u64).min(total);
        while produced < due {
            let i = (produced % load.keys.len() as u64) as usize;
            let spec = &load.keys[i];
            let t = now_us();
            let payload = event_json(&load, spec, seqs[i], t);
            let stamp = t.to_string();
            let headers = OwnedHeaders::new().insert(Header {
                key: "bench-sent-us",
                value: Some(&stamp),
            });
            let record = FutureRecord::to(topic)
                .key(&spec.key)
                .payload(&payload)
                .headers(headers);
            match producer.send_result(record) {
                Ok(ack) => {
                    let ty = spec.event_type.clone();
                    acks.push(ack.map(move |r| (ty, matches!(r, Ok(Ok(_))))));
                    seqs[i] += 1;
                    produced += 1;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    sent.queue_full += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(_) => {
                    sent.failed += 1;
                    seqs[i] += 1;
                    produced += 1;
                }
            }
        }
        while let Some(Some((ty, ok))) = acks.next().now_or_never() {
            tally(&mut sent, ty, ok);
        }
    }
    sent.sending = started.elapsed();
    while let Some((ty, ok)) = acks.next().await {
        tally(&mut sent, ty, ok);
    }
    sent
}

fn tally(sent: &mut Sent, event_type: String, ok: bool) {
    if ok {
        *sent.acked.entry(event_type).or_default() += 1;
    } else {
        sent.failed += 1;
    }
}

/// `n` keys named `{prefix}{i}`, key `i` of type `types[i % types.len()]`.
pub fn keys(prefix: &str, n: usize, types: &[String]) -> Vec<KeySpec> {
    (0..n)
        .map(|i| KeySpec {
            key: format!("{prefix}{i}"),
            event_type: types[i % types.len()].clone(),
        })
        .collect()
}
