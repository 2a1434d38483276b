//! Kafka plumbing shared by every service.
//!
//! - [`client_config`]: the one place every Kafka client of every service, the CLI, the bench
//!   and the tests gets its settings from: bootstrap servers, the security settings (TLS,
//!   SASL, secrets read from files or the environment) and the operator's extra properties.
//! - [`process_producer`], [`group_consumer`]: librdkafka settings in one
//!   place (idempotent producer, manual offsets, auto-commit off); [`group_consumer_config`]
//!   and [`transactional_producer`] for consume-transform-produce in Kafka transactions.
//! - [`process_producer`]: the one non-transactional producer of a process, shared by every
//!   service in it; [`send_within`]: a write that must be answered in time.
//! - [`ensure_topics`]: creates missing topics with their cleanup policies.
//! - [`view::TopicView`]: an in-memory table rebuilt from a topic, with freshness tracking.
//! - [`keyed_protobuf_view`]: a view of a compacted topic of protobuf values;
//!   [`publish_event`]: an event to the events topic as protobuf.
//! - [`acl`]: one principal per service and the one table of their ACLs, rendered for the
//!   local broker, Strimzi `KafkaUser` resources and the README.
//! - [`lag`]: consumer lag per group and topic, from librdkafka's statistics, as a metric.
//! - [`offsets::OffsetTracker`]: which offsets may be committed while work finishes out of order.
#![forbid(unsafe_code)]

pub mod acl;
pub mod context;
mod keyed;
pub mod lag;
pub mod offsets;
pub mod view;

use std::time::Duration;

use hookline_config::Config;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;

pub use context::{KafkaContext, brokers_reachable, connection_refused, not_authorized};
pub use keyed::{keyed_protobuf_view, publish_event};
pub use rdkafka;

/// The producer type of every service.
pub type Producer = FutureProducer<KafkaContext>;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("configuration: {0}")]
    Config(#[from] hookline_config::ConfigError),
    #[error("creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("topics not visible in metadata after creation: {0}")]
    TopicsNotVisible(String),
    #[error("starting a thread: {0}")]
    Thread(String),
}

/// Base settings every client gets: bootstrap servers, how it connects (the typed security
/// keys: protocol, SASL mechanism and credentials, CA and client certificate; secrets read
/// now from their files or variables, so a rotated Secret reaches the next client made)
/// plus the operator's extra properties. Every `ClientConfig` of the workspace starts here.
/// The result holds credentials: never log it.
pub fn client_config(config: &Config) -> Result<ClientConfig, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka_bootstrap);
    c.set(
        "client.id",
        format!("{}-{}", config.group_prefix, std::process::id()),
    );
    for (k, v) in config.kafka_security()?.client_properties() {
        c.set(k, v);
    }
    for (k, v) in config.kafka_extra_properties()? {
        c.set(k, v);
    }
    Ok(c)
}

/// An idempotent producer that waits for every in-sync replica and waits out outages (its
/// records never time out: a caller that must answer in time bounds its own wait with
/// [`send_within`]). It reports statistics, from which readiness learns that the brokers are
/// back after an outage. Services take the process's one producer from [`process_producer`].
pub fn producer(config: &Config) -> Result<Producer, KafkaError> {
    let mut c = client_config(config)?;
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "0")
        .set(
            "statistics.interval.ms",
            context::STATS_INTERVAL_MS.to_string(),
        );
    Ok(c.create_with_context(KafkaContext)?)
}

/// Producers of this process, by the settings that make them differ (bootstrap servers, the
/// security settings and the operator's extra properties); held weakly, so the last service to drop one closes it.
static PROCESS_PRODUCERS: std::sync::Mutex<Vec<(String, std::sync::Weak<Producer>)>> =
    std::sync::Mutex::new(Vec::new());

/// The process's producer for `config`'s cluster: every service of the process (all five in
/// `hookline all`) writes through the same one, made on first use.
pub fn process_producer(config: &Config) -> Result<std::sync::Arc<Producer>, KafkaError> {
    // The security settings' `Debug` shows no secret: settings that differ only in a
    // password share a producer.
    let key = format!(
        "{}|{:?}|{:?}",
        config.kafka_bootstrap,
        config.kafka_security()?,
        config.kafka_extra_properties()?
    );
    let mut producers = PROCESS_PRODUCERS.lock().unwrap_or_else(|p| p.into_inner());
    producers.retain(|(_, p)| p.strong_count() > 0);
    if let Some(p) = producers
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, p)| p.upgrade())
    {
        return Ok(p);
    }
    let p = std::sync::Arc::new(producer(config)?);
    producers.push((key, std::sync::Arc::downgrade(&p)));
    Ok(p)
}

/// Writes `record` and waits for the broker's acknowledgement for at most `timeout` in all.
/// After a timeout the record may still be written later (the producer keeps retrying it),
/// as after any failed write whose outcome the broker did not confirm.
pub async fn send_within<K, P>(
    producer: &Producer,
    record: rdkafka::producer::FutureRecord<'_, K, P>,
    timeout: Duration,
) -> Result<rdkafka::producer::future_producer::Delivery, rdkafka::error::KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    match tokio::time::timeout(timeout, producer.send(record, timeout)).await {
        Ok(Ok(delivery)) => Ok(delivery),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(rdkafka::error::KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut,
        )),
    }
}

/// A consumer in group `{group_prefix}.{name}` with offsets managed by the caller:
/// auto-commit and auto-store are off, so an offset moves only once its work is durable.
pub fn group_consumer(
    config: &Config,
    name: &str,
) -> Result<StreamConsumer<KafkaContext>, KafkaError> {
    Ok(group_consumer_config(config, name)?.create_with_context(KafkaContext)?)
}

/// The settings of [`group_consumer`], for a caller that needs its own consumer context
/// (rebalance callbacks) or extra settings (static membership).
pub fn group_consumer_config(config: &Config, name: &str) -> Result<ClientConfig, KafkaError> {
    let mut c = client_config(config)?;
    let group = context::group_id(config, name);
    c.set("client.id", lag::client_id(&group))
        .set(
            "statistics.interval.ms",
            context::STATS_INTERVAL_MS.to_string(),
        )
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // Memory: librdkafka's default prefetch (100,000 messages, 64 MiB per partition) is
        // far more than a service holds. (`fetch.wait.max.ms` stays 500 ms: the broker
        // answers a waiting fetch as soon as records arrive; a reader of a topic written in
        // transactions, the worker's, sets a shorter wait of its own.)
        .set("queued.min.messages", "10000")
        .set("queued.max.messages.kbytes", "8192");
    Ok(c)
}

/// A transactional producer with id `transactional_id`, not yet initialised: the caller runs
/// `init_transactions`, which also fences any earlier producer with the same id and aborts
/// its open transaction. Messages time out well inside the transaction timeout, so a stuck
/// produce turns into an abortable error rather than an expired transaction.
pub fn transactional_producer(
    config: &Config,
    transactional_id: &str,
) -> Result<Producer, KafkaError> {
    Ok(transactional_config(config, transactional_id)?.create_with_context(KafkaContext)?)
}

/// The configuration of [`transactional_producer`], for a caller that tunes it further.
pub fn transactional_config(
    config: &Config,
    transactional_id: &str,
) -> Result<ClientConfig, KafkaError> {
    let mut c = client_config(config)?;
    c.set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set("transaction.timeout.ms", "30000")
        .set("message.timeout.ms", "20000");
    Ok(c)
}

/// Creates every topic of `config` that does not exist, with its cleanup policy, the
/// configured replication factor and `min.insync.replicas` (topics that exist are left as
/// they are).
pub async fn ensure_topics(config: &Config) -> Result<(), KafkaError> {
    let admin: AdminClient<KafkaContext> =
        client_config(config)?.create_with_context(KafkaContext)?;
    let min_insync = config.topic_min_insync_replicas.to_string();
    let messages_retention_ms = config
        .svix_message_retention()
        .map(|d| d.as_millis().to_string())
        .unwrap_or_else(|_| "604800000".to_owned());
    let topics: Vec<NewTopic<'_>> = config
        .topics()
        .iter()
        .map(|(name, compacted)| {
            let topic = NewTopic::new(
                name,
                config.topic_partitions,
                TopicReplication::Fixed(config.topic_replication),
            )
            .set("min.insync.replicas", &min_insync);
            // Svix messages are kept for a while, compacted so a key's latest record stays.
            if *name == config.topic_messages {
                topic
                    .set("cleanup.policy", "compact,delete")
                    .set("retention.ms", &messages_retention_ms)
            } else {
                topic.set(
                    "cleanup.policy",
                    if *compacted { "compact" } else { "delete" },
                )
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&topics, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::CreateTopic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The `Offset::End` (high) or `Offset::Beginning` (low) watermark of each of `partitions`
/// of `topic`, in one `ListOffsets` request per partition leader (`fetch_watermarks` makes two
/// round trips per partition). Any partition's error fails the whole query.
pub fn watermarks<C: rdkafka::consumer::ConsumerContext>(
    client: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
    which: rdkafka::Offset,
    timeout: Duration,
) -> Result<std::collections::HashMap<i32, i64>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::Consumer as _;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, which)?;
    }
    let answer = client.offsets_for_times(tpl, timeout)?;
    let mut out = std::collections::HashMap::with_capacity(partitions.len());
    for e in answer.elements() {
        e.error()?;
        match e.offset().to_raw() {
            Some(o) if o >= 0 => {
                out.insert(e.partition(), o);
            }
            _ => {
                return Err(rdkafka::error::KafkaError::OffsetFetch(
                    RDKafkaErrorCode::OffsetOutOfRange,
                ));
            }
        }
    }
    Ok(out)
}

/// The value of header `name` on a message, if present.
pub fn header<'a, M: Message>(msg: &'a M, name: &str) -> Option<&'a [u8]> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
}
