//! The router's transactional producer: `transactional.id` `{group_prefix}.router.{instance}`,
//! one transaction per batch holding its delivery jobs, its quarantine records and the
//! consumed offsets.
//!
//! librdkafka's transaction calls block, so they run on the blocking pool. Failures are
//! classified as librdkafka documents them: retriable (call again), abortable (abort, then
//! rewind the consumer) or fatal (the producer is unusable, e.g. fenced by a newer instance
//! with the same id: make a new one, whose `init_transactions` fences in turn).

use std::time::Duration;

use hookline_config::Config;
use hookline_kafka::rdkafka::TopicPartitionList;
use hookline_kafka::rdkafka::consumer::ConsumerGroupMetadata;
use hookline_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use hookline_kafka::rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use hookline_runtime::CancellationToken;

use crate::route::Outgoing;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer than its own timeout a transaction call may take before it is given up.
const CALL_GRACE: Duration = Duration::from_secs(10);

/// What to do after a failed transaction step.
#[derive(Debug)]
pub enum Failure {
    /// Abort the transaction and rewind; the producer stays usable.
    Abort(String),
    /// The producer is unusable (a fatal state): replace it, then rewind.
    Fatal(String),
    /// A newer process with this instance's transactional id fenced this one. It owns the
    /// work now; replacing the producer would fence it back, and two instances with one name
    /// would take turns for ever. This instance stops.
    Fenced(String),
}

impl Failure {
    fn from_kafka(e: &KafkaError) -> Self {
        // A call given up (see `blocking`): the producer may be stuck in it.
        if matches!(e, KafkaError::Canceled) {
            return Failure::Fatal(e.to_string());
        }
        let code = match e {
            KafkaError::Transaction(t) => Some(t.code()),
            _ => e.rdkafka_error_code(),
        };
        if matches!(
            code,
            Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
        ) {
            return Failure::Fenced(e.to_string());
        }
        let fatal = match e {
            KafkaError::Transaction(t) => t.is_fatal(),
            _ => code == Some(RDKafkaErrorCode::Fatal),
        };
        if fatal {
            Failure::Fatal(e.to_string())
        } else {
            Failure::Abort(e.to_string())
        }
    }
}

fn retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_retriable())
}

/// The stable transactional id of this router instance.
pub fn transactional_id(config: &Config, instance: &str) -> String {
    let prefix = hookline_kafka::acl::txn_prefix(config, hookline_kafka::acl::TXN_ROUTER);
    format!("{prefix}{instance}")
}

/// This instance's name: the configured one, else the host name, else the process id.
pub fn instance_name(config: &Config) -> String {
    if !config.router_instance.is_empty() {
        return config.router_instance.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pid{}", std::process::id()))
}

/// Runs a blocking transaction call on the blocking pool. librdkafka bounds each call by its
/// timeout, but a call waiting on a coordinator that died with its broker has been seen not
/// to return at all (`send_offsets_to_transaction` after the group coordinator's broker was
/// killed): past [`CALL_TIMEOUT`] and [`CALL_GRACE`] the call is given up as
/// [`KafkaError::Canceled`], which makes the producer be replaced (its `init_transactions`
/// fences the stuck one and aborts its transaction).
async fn blocking<T: Send + 'static>(
    call: &'static str,
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    match tokio::time::timeout(CALL_TIMEOUT + CALL_GRACE, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => {
            tracing::error!(error = %e, call, "transaction call did not finish");
            Err(KafkaError::Canceled)
        }
        Err(_) => {
            tracing::warn!(
                call,
                secs = (CALL_TIMEOUT + CALL_GRACE).as_secs(),
                "transaction call did not return in time; replacing the producer"
            );
            Err(KafkaError::Canceled)
        }
    }
}

pub struct TxnProducer {
    producer: hookline_kafka::Producer,
}

impl TxnProducer {
    /// Creates the producer and runs `init_transactions`, retrying until it succeeds (the
    /// broker may still be starting) or `shutdown`. `None` on shutdown.
    pub async fn start(
        config: &Config,
        transactional_id: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, hookline_kafka::KafkaError> {
        loop {
            // A batch's records are handed over all at once and the transaction waits for
            // them: lingering would only delay its first produce request (and the partitions'
            // registration with the transaction, which librdkafka schedules after the linger).
            let producer: hookline_kafka::Producer =
                hookline_kafka::transactional_config(config, transactional_id)?
                    .set("linger.ms", "0")
                    .create_with_context(hookline_kafka::KafkaContext)?;
            let p = producer.clone();
            match blocking("init_transactions", move || {
                p.init_transactions(CALL_TIMEOUT)
            })
            .await
            {
                Ok(()) => return Ok(Some(Self { producer })),
                Err(e) => {
                    tracing::warn!(error = %e, transactional_id, "init_transactions failed; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Begins a transaction and produces `records` in it, resolving once all are acknowledged.
    pub async fn produce(&self, records: Vec<Outgoing>) -> Result<(), Failure> {
        self.producer
            .begin_transaction()
            .map_err(|e| Failure::from_kafka(&e))?;
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(records.len());
        for r in &records {
            pending.push(self.send(r).await?);
        }
        for outcome in futures::future::join_all(pending).await {
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(Failure::from_kafka(&e)),
                Err(_) => return Err(Failure::Abort("delivery canceled".into())),
            }
        }
        Ok(())
    }

    async fn send(&self, r: &Outgoing) -> Result<DeliveryFuture, Failure> {
        loop {
            let mut record = FutureRecord::to(&r.topic).key(&r.key);
            if let Some(v) = &r.value {
                record = record.payload(v);
            }
            if let Some(h) = &r.headers {
                record = record.headers(h.clone());
            }
            match self.producer.send_result(record) {
                Ok(f) => return Ok(f),
                // The local queue is full: let the producer drain it, then try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err((e, _)) => return Err(Failure::from_kafka(&e)),
            }
        }
    }

    /// Adds the consumed `offsets` to the open transaction and commits it.
    pub async fn commit(
        &self,
        offsets: TopicPartitionList,
        group: ConsumerGroupMetadata,
    ) -> Result<(), Failure> {
        let p = self.producer.clone();
        let started = std::time::Instant::now();
        blocking("send_offsets_to_transaction", move || {
            p.send_offsets_to_transaction(&offsets, &group, CALL_TIMEOUT)
        })
        .await
        .map_err(|e| Failure::from_kafka(&e))?;
        crate::batch::phase_took("offsets", started);
        let started = std::time::Instant::now();
        let mut tries = 0;
        loop {
            let p = self.producer.clone();
            match blocking("commit_transaction", move || {
                p.commit_transaction(CALL_TIMEOUT)
            })
            .await
            {
                Ok(()) => {
                    crate::batch::phase_took("commit", started);
                    return Ok(());
                }
                // The outcome is not known yet: asking again returns it.
                Err(e) if retriable(&e) && tries < 10 => {
                    tries += 1;
                    tracing::warn!(error = %e, "commit_transaction retriable; calling again");
                }
                Err(e) => return Err(Failure::from_kafka(&e)),
            }
        }
    }

    /// Aborts the open transaction. An abort that fails leaves the producer unusable.
    pub async fn abort(&self) -> Result<(), Failure> {
        let p = self.producer.clone();
        blocking("abort_transaction", move || {
            p.abort_transaction(CALL_TIMEOUT)
        })
        .await
        .map_err(|e| match Failure::from_kafka(&e) {
            fenced @ Failure::Fenced(_) => fenced,
            _ => Failure::Fatal(format!("abort_transaction: {e}")),
        })
    }

    /// Why the producer was fenced, if it was: then a newer instance owns the work.
    pub fn fenced(&self) -> Option<String> {
        match self.producer.client().fatal_error() {
            Some((RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced, reason)) => {
                Some(reason)
            }
            _ => None,
        }
    }
}
