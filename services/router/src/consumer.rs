//! The router's consumer of `events`: group `{group_prefix}.router`, read_committed, manual
//! offsets (the transaction commits them), static membership under the instance's name so a
//! restarted router takes its partitions back at once, an eager assignor (see `create`), and
//! a rebalance watch.
//!
//! Rebalance callbacks run only inside `recv`. The router calls `recv` only while it gathers
//! a batch, never while a transaction is open, so a revocation can only land between two
//! transactions: the batch loop then drops what it gathered and rewinds (see `batch.rs`) by
//! replacing the consumer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hookline_config::Config;
use hookline_kafka::rdkafka::config::RDKafkaLogLevel;
use hookline_kafka::rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use hookline_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use hookline_kafka::rdkafka::{ClientContext, TopicPartitionList};

/// The consumer group's name (`{group_prefix}.router`).
pub const GROUP: &str = hookline_kafka::acl::GROUP_ROUTER;

/// Counts revocations (and rebalance errors, which may have lost partitions).
#[derive(Default)]
pub struct RouterContext {
    revocations: AtomicU64,
    /// The group id, for readiness (see `hookline_kafka::context::assigned`).
    group: String,
}

impl ClientContext for RouterContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        hookline_kafka::KafkaContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        hookline_kafka::KafkaContext.error(error, reason);
    }

    fn stats(&self, statistics: hookline_kafka::rdkafka::Statistics) {
        hookline_kafka::KafkaContext.stats(statistics);
    }
}

impl ConsumerContext for RouterContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                hookline_kafka::context::note_assigned(&self.group);
                tracing::info!(partitions = ?partitions(tpl), "router assigned partitions")
            }
            Rebalance::Revoke(tpl) => {
                self.revocations.fetch_add(1, Ordering::SeqCst);
                tracing::info!(partitions = ?partitions(tpl), "router partitions revoked");
            }
            Rebalance::Error(e) => {
                self.revocations.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(error = %e, "router rebalance error");
            }
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

pub type EventConsumer = StreamConsumer<RouterContext>;

/// Whether the consumer can no longer be used: librdkafka raises a fatal error when a newer
/// static member with the same `group.instance.id` fenced this one.
pub fn is_fatal(e: &KafkaError) -> bool {
    matches!(e, KafkaError::MessageConsumptionFatal(_))
        || matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Fatal | RDKafkaErrorCode::FencedInstanceId)
        )
}

/// Revocations seen so far; compare two readings to learn whether one happened in between.
pub fn revocations(consumer: &EventConsumer) -> u64 {
    consumer.context().revocations.load(Ordering::SeqCst)
}

/// Creates the consumer and subscribes it to `events`.
pub fn start(
    config: &Config,
    instance_id: &str,
) -> Result<Arc<EventConsumer>, hookline_kafka::KafkaError> {
    let consumer = create(config, instance_id)?;
    subscribe(&consumer, config)?;
    Ok(consumer)
}

/// Creates the consumer, not yet subscribed (it joins the group when subscribed).
pub fn create(
    config: &Config,
    instance_id: &str,
) -> Result<Arc<EventConsumer>, hookline_kafka::KafkaError> {
    let mut c = hookline_kafka::group_consumer_config(config, GROUP)?;
    // An eager assignor: every rebalance hands out every partition in one round. With the
    // cooperative one, a partition moving between routers is withheld in a first round and
    // handed out in a second that the revoking member starts by joining again; a router
    // that replaces its consumer (a rewind) or restarts in that window comes back as the
    // same static member, which joins without a rebalance, and the withheld partition was
    // routed by nobody until the next rebalance.
    c.set("partition.assignment.strategy", "roundrobin")
        .set("group.instance.id", instance_id)
        .set("client.id", member_client_id(config, instance_id));
    let consumer: EventConsumer = c.create_with_context(RouterContext {
        group: hookline_kafka::context::group_id(config, GROUP),
        ..RouterContext::default()
    })?;
    Ok(Arc::new(consumer))
}

pub fn subscribe(
    consumer: &EventConsumer,
    config: &Config,
) -> Result<(), hookline_kafka::KafkaError> {
    Ok(consumer.subscribe(&[&config.topic_events])?)
}

/// The `client.id` of this process's consumer: `{group}@{instance}:{nonce}`, the nonce made
/// once per process. The group's member list shows it, so a fenced router can tell another
/// process under its name (a member with its instance and another nonce) from the
/// coordinator's own fencing. (The statistics still name the group before the `@`.)
fn member_client_id(config: &Config, instance_id: &str) -> String {
    static NONCE: OnceLock<String> = OnceLock::new();
    let nonce = NONCE.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
    format!(
        "{}@{instance_id}:{nonce}",
        hookline_kafka::context::group_id(config, GROUP)
    )
}

/// Whether another process is a member of the router group under `instance_id`: `None` when
/// the group could not be described.
pub async fn other_process_named(
    consumer: &Arc<EventConsumer>,
    config: &Config,
    instance_id: &str,
) -> Option<bool> {
    let ours = member_client_id(config, instance_id);
    let prefix = ours.rsplit_once(':').map(|(p, _)| format!("{p}:"))?;
    let group = hookline_kafka::context::group_id(config, GROUP);
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || {
        let list = consumer
            .fetch_group_list(Some(&group), Duration::from_secs(5))
            .map_err(|e| tracing::debug!(error = %e, "describing the router group"))
            .ok()?;
        Some(list.groups().iter().any(|g| {
            g.members()
                .iter()
                .any(|m| m.client_id().starts_with(&prefix) && m.client_id() != ours)
        }))
    })
    .await
    .ok()
    .flatten()
}
