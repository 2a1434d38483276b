//! "Send an example": a signed example event delivered to one subscription now, through the
//! pipeline (a job on `deliveries` that the worker owning the subscription attempts, signs,
//! records and retries like any other), answered with its first attempt.
//!
//! The job goes straight to `deliveries` (the router would route an event to every matching
//! subscription; an example is for one). Its ordering key is its own, so it waits behind no
//! key of the subscription; it does wait while the subscription is parked, and counts
//! towards its limits, as a real delivery would. The attempt is read back from `attempts`
//! by [`AttemptTail`]: one reader per process, from the topic's end at start, that decodes
//! only the records of subscriptions someone is waiting for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_config::Config;
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_kafka::rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use hookline_kafka::rdkafka::message::Message;
use hookline_kafka::rdkafka::producer::FutureRecord;
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
use hookline_kafka::{KafkaContext, KafkaError};
use hookline_proto::Message as _;
use hookline_proto::v1::{Attempt, AttemptOutcome, DeliveryJob, Event, Subscription};
use hookline_runtime::{ApiError, CancellationToken};
use tokio::sync::oneshot;

use crate::AppState;

/// How long a send waits for the reader to be positioned or the job to be acknowledged.
const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// Example sends waiting for their attempt at once, per process.
pub const WAITING_MAX: usize = 256;
/// How much of the receiver's response body the answer shows.
pub const BODY_SHOWN: usize = 1024;

type Waiters = Arc<Mutex<HashMap<String, (String, oneshot::Sender<Attempt>)>>>;

/// Reads `attempts` from its end and hands each awaited attempt to its waiter.
#[derive(Clone)]
pub struct AttemptTail {
    waiters: Waiters,
    /// Set once the reader is positioned: a job produced after that has its attempt read.
    ready: Arc<tokio::sync::Notify>,
    positioned: Arc<std::sync::atomic::AtomicBool>,
    /// How long a send waits for its first attempt (`example_wait`).
    wait: Duration,
}

/// What came of an example send.
pub struct Sent {
    pub delivery_id: String,
    pub event: Event,
    /// The first attempt, when it came within `example_wait`.
    pub attempt: Option<Attempt>,
}

impl AttemptTail {
    /// Starts the reader on a thread of its own until `shutdown`.
    pub fn start(config: &Config, shutdown: CancellationToken) -> Result<Self, KafkaError> {
        let mut c = hookline_kafka::client_config(config)?;
        c.set("group.id", format!("{}.examples", config.group_prefix))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100");
        let consumer: StreamConsumer<KafkaContext> = c.create_with_context(KafkaContext)?;
        let meta: BaseConsumer<KafkaContext> =
            hookline_kafka::client_config(config)?.create_with_context(KafkaContext)?;
        let tail = Self {
            waiters: Arc::default(),
            ready: Arc::default(),
            positioned: Arc::default(),
            wait: config.example_wait()?,
        };
        let topic = config.topic_attempts.clone();
        let reader = tail.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = reader.run(consumer, meta, topic) => {}
            }
        });
        Ok(tail)
    }

    async fn run(
        self,
        consumer: StreamConsumer<KafkaContext>,
        meta: BaseConsumer<KafkaContext>,
        topic: String,
    ) {
        // Positioned at each partition's end as of now, so nothing written after is missed.
        loop {
            let at = {
                let topic = topic.clone();
                let meta = &meta;
                tokio::task::block_in_place(move || ends(meta, &topic))
            };
            match at.and_then(|tpl| consumer.assign(&tpl).map_err(|e| e.to_string())) {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "example sends: positioning on the attempts topic");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        self.positioned
            .store(true, std::sync::atomic::Ordering::Release);
        self.ready.notify_waiters();
        loop {
            let msg = match consumer.recv().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "example sends: reading attempts");
                    continue;
                }
            };
            let key = msg.key().unwrap_or_default();
            let wanted = {
                let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
                waiters.values().any(|(sub, _)| sub.as_bytes() == key)
            };
            if !wanted {
                continue;
            }
            let Some(Ok(attempt)) = msg.payload().map(Attempt::decode) else {
                continue;
            };
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, tx)) = waiters.remove(&attempt.delivery_id) {
                let _ = tx.send(attempt);
            }
        }
    }

    /// Waits until the reader is positioned (at most a few seconds).
    async fn positioned(&self) -> bool {
        let notified = self.ready.notified();
        if self.positioned.load(std::sync::atomic::Ordering::Acquire) {
            return true;
        }
        tokio::time::timeout(QUEUE_WAIT, notified).await.is_ok()
    }
}

/// Every partition of `topic` at its high watermark.
fn ends(meta: &BaseConsumer<KafkaContext>, topic: &str) -> Result<TopicPartitionList, String> {
    let md = meta
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("{topic} has no partitions yet"));
    }
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (_, high) = meta
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))
            .map_err(|e| e.to_string())?;
    }
    Ok(tpl)
}

/// The example event of `event_type` for `sub`: Hookline's own id, the time now, and a
/// `data` that says what it is.
pub fn example_event(sub: &Subscription, event_type: &str) -> Event {
    let id = uuid::Uuid::new_v4().to_string();
    let mut metadata = HashMap::new();
    metadata.insert("hookline.example".to_owned(), "true".to_owned());
    Event {
        data_json: serde_json::json!({
            "example": true,
            "description": format!("An example {event_type} event sent by Hookline"),
        })
        .to_string(),
        id,
        r#type: event_type.to_owned(),
        time: rfc3339_millis(now_ms()),
        tenant: sub.tenant.clone(),
        metadata,
        changed_fields_json: String::new(),
        application: sub.application.clone(),
    }
}

/// Sends an example `event` to `sub` through `deliveries` and waits for its first attempt.
pub async fn send(state: &AppState, sub: &Subscription, event: Event) -> Result<Sent, ApiError> {
    let tail = &state.examples;
    if !tail.positioned().await {
        return Err(ApiError::unavailable(
            "cannot read the attempts topic yet; try again",
        ));
    }
    let delivery_id = hookline_events::delivery_id(&event.id, &sub.id);
    let (tx, rx) = oneshot::channel();
    {
        let mut waiters = tail.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.len() >= WAITING_MAX {
            return Err(ApiError::unavailable(
                "too many example sends under way; try again",
            ));
        }
        waiters.insert(delivery_id.clone(), (sub.id.clone(), tx));
    }
    let job = DeliveryJob {
        delivery_id: delivery_id.clone(),
        subscription_id: sub.id.clone(),
        tenant: sub.tenant.clone(),
        event: Some(event.clone()),
        ordering_key: format!("example/{}", event.id).into_bytes(),
        routed_at_ms: now_ms(),
        ..Default::default()
    };
    let bytes = job.encode_to_vec();
    let record = FutureRecord::<str, [u8]>::to(&state.topic_deliveries)
        .key(&sub.id)
        .payload(&bytes);
    let sent = hookline_kafka::send_within(state.store.producer(), record, QUEUE_WAIT).await;
    if let Err(e) = sent {
        tail.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&delivery_id);
        tracing::warn!(error = %e, "example job not produced");
        return Err(ApiError::unavailable(
            "could not queue the example; nothing was sent",
        ));
    }
    let attempt = tokio::time::timeout(tail.wait, rx)
        .await
        .ok()
        .and_then(Result::ok);
    if attempt.is_none() {
        tail.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&delivery_id);
    }
    Ok(Sent {
        delivery_id,
        event,
        attempt,
    })
}

/// An attempt's outcome as the APIs name it.
pub fn outcome_name(a: &Attempt) -> &'static str {
    match a.outcome() {
        AttemptOutcome::Succeeded => "succeeded",
        AttemptOutcome::Retryable => "retryable",
        AttemptOutcome::Failed => "failed",
        AttemptOutcome::Unspecified => "unknown",
    }
}

/// The first [`BODY_SHOWN`] bytes of the response, as text.
pub fn body_shown(a: &Attempt) -> String {
    let end = a.response_body.len().min(BODY_SHOWN);
    String::from_utf8_lossy(&a.response_body[..end]).into_owned()
}

/// Sends the example a dialect's handler was asked for and shapes the answer: 200 with the
/// attempt, 202 when none came in time.
pub async fn answer<T: From<Sent>>(
    state: &AppState,
    who: &hookline_auth::Principal,
    face: &crate::subscriptions::Face,
    id: &str,
    event_type: Option<String>,
    field: &str,
) -> Result<(axum::http::StatusCode, axum::Json<T>), ApiError> {
    let sent = crate::subscriptions::send_example(state, who, face, id, event_type, field).await?;
    let status = if sent.attempt.is_some() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::ACCEPTED
    };
    Ok((status, axum::Json(T::from(sent))))
}

/// A dialect's shapes of "send an example": the request (`$req`), the answer (`$out`) and
/// its attempt (`$attempt`), their fields renamed by `$case` (`"camelCase"`,
/// `"snake_case"`).
macro_rules! example_shapes {
    ($req:ident, $out:ident, $attempt:ident, $case:tt) => {
        /// Which example to send.
        #[derive(serde::Deserialize, utoipa::ToSchema)]
        #[serde(deny_unknown_fields, rename_all = $case)]
        pub struct $req {
            /// A catalog type the subscription receives; default: the first such type.
            #[schema(min_length = 1, max_length = 255)]
            pub event_type: Option<String>,
        }

        /// An example send: the delivery, and its first attempt when it came in time.
        #[derive(serde::Serialize, utoipa::ToSchema)]
        #[serde(rename_all = $case)]
        pub struct $out {
            #[schema(format = Uuid)]
            pub delivery_id: String,
            pub event_id: String,
            pub event_type: String,
            /// Absent when no attempt came within 5 s (the subscription is parked, say);
            /// the delivery goes on and its attempts are in the operations API.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub attempt: Option<$attempt>,
        }

        /// The first attempt of an example.
        #[derive(serde::Serialize, utoipa::ToSchema)]
        #[serde(rename_all = $case)]
        pub struct $attempt {
            /// HTTP status; 0 when no response came.
            pub status: u32,
            /// `succeeded`, `retryable` (it will be retried as any delivery) or `failed`.
            pub outcome: String,
            pub duration_ms: u32,
            #[serde(skip_serializing_if = "String::is_empty")]
            pub error: String,
            /// The first 1,024 bytes of the response body.
            pub response_body: String,
        }

        impl From<$crate::examples::Sent> for $out {
            fn from(sent: $crate::examples::Sent) -> Self {
                let attempt = sent.attempt.as_ref().map(|a| $attempt {
                    status: a.status_code,
                    outcome: $crate::examples::outcome_name(a).to_owned(),
                    duration_ms: a.duration_ms,
                    error: a.error.clone(),
                    response_body: $crate::examples::body_shown(a),
                });
                Self {
                    delivery_id: sent.delivery_id,
                    event_id: sent.event.id,
                    event_type: sent.event.r#type,
                    attempt,
                }
            }
        }
    };
}
pub(crate) use example_shapes;
