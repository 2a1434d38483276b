//! "Send an example": a signed example event delivered to one subscription now, through the
//! pipeline (a job on `deliveries` that the worker owning the subscription attempts, signs,
//! records and retries like any other), answered with its first attempt.
//!
//! The job goes straight to `deliveries` (the router would route an event to every matching
//! subscription; an example is for one). Its ordering key is its own, so it waits behind no
//! key of the subscription; it does wait while the subscription is parked, and counts
//! towards its limits, as a real delivery would. The attempt is read back from `attempts`
//! by [`AttemptTail`]: one reader per process that reads only while a send waits (from the
//! topic's end as of the first such send) and decodes only the records of subscriptions
//! someone is waiting for.

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

/// Reads `attempts` while an example send waits, and hands each awaited attempt to its
/// waiter. With nobody waiting it reads nothing: the topic carries every attempt of every
/// subscription, and fetching it only to throw it away cost the API process CPU in
/// proportion to the whole pipeline's load.
#[derive(Clone)]
pub struct AttemptTail {
    waiters: Waiters,
    /// Asks the reader to read from the topic's end as of now (if it is not reading
    /// already); answered once it is, so a job produced after that has its attempt read.
    start_reading: tokio::sync::mpsc::Sender<oneshot::Sender<()>>,
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

/// How often an idle check runs while reading: reading stops once nobody waits.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl AttemptTail {
    /// Starts the reader on a task of its own until `shutdown`.
    pub fn start(config: &Config, shutdown: CancellationToken) -> Result<Self, KafkaError> {
        let mut c = hookline_kafka::client_config(config)?;
        c.set(
            "group.id",
            hookline_kafka::acl::group(config, hookline_kafka::acl::GROUP_EXAMPLES),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
        let consumer: StreamConsumer<KafkaContext> = c.create_with_context(KafkaContext)?;
        let meta: BaseConsumer<KafkaContext> =
            hookline_kafka::client_config(config)?.create_with_context(KafkaContext)?;
        let (start_reading, requests) = tokio::sync::mpsc::channel(WAITING_MAX);
        let tail = Self {
            waiters: Arc::default(),
            start_reading,
            wait: config.example_wait()?,
        };
        let reader = Reader {
            waiters: tail.waiters.clone(),
            consumer,
            meta,
            topic: config.topic_attempts.clone(),
            reading: false,
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = reader.run(requests) => {}
            }
        });
        Ok(tail)
    }

    /// Has the reader read from the topic's end as of now on (at most a few seconds).
    async fn reading(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.start_reading.try_send(tx).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(QUEUE_WAIT, rx).await, Ok(Ok(())))
    }
}

/// The task that owns the consumer of `attempts`.
struct Reader {
    waiters: Waiters,
    consumer: StreamConsumer<KafkaContext>,
    meta: BaseConsumer<KafkaContext>,
    topic: String,
    reading: bool,
}

impl Reader {
    async fn run(mut self, mut requests: tokio::sync::mpsc::Receiver<oneshot::Sender<()>>) {
        let mut idle_check = tokio::time::interval(IDLE_CHECK);
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(reply) = request else { return };
                    // Requests are taken in order, after any idle check: a send registers
                    // its waiter before asking, so reading never stops under it.
                    if self.reading || self.position().await {
                        let _ = reply.send(());
                    }
                }
                _ = idle_check.tick(), if self.reading => {
                    if self.lock().is_empty() {
                        let _ = self.consumer.unassign();
                        self.reading = false;
                    }
                }
                msg = self.consumer.recv(), if self.reading => match msg {
                    Ok(m) => self.hand_over(&m),
                    Err(e) => tracing::debug!(error = %e, "example sends: reading attempts"),
                },
            }
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (String, oneshot::Sender<Attempt>)>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads every partition from its end as of now; `false` when the topic cannot be
    /// positioned on now (the send answers 503).
    async fn position(&mut self) -> bool {
        let at = {
            let (meta, topic) = (&self.meta, self.topic.as_str());
            tokio::task::block_in_place(move || ends(meta, topic))
        };
        match at.and_then(|tpl| self.consumer.assign(&tpl).map_err(|e| e.to_string())) {
            Ok(()) => {
                self.reading = true;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "example sends: positioning on the attempts topic");
                false
            }
        }
    }

    fn hand_over(&self, msg: &impl Message) {
        let key = msg.key().unwrap_or_default();
        let mut waiters = self.lock();
        if !waiters.values().any(|(sub, _)| sub.as_bytes() == key) {
            return;
        }
        let Some(Ok(attempt)) = msg.payload().map(Attempt::decode) else {
            return;
        };
        if let Some((_, tx)) = waiters.remove(&attempt.delivery_id) {
            let _ = tx.send(attempt);
        }
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
    if !tail.reading().await {
        tail.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&delivery_id);
        return Err(ApiError::unavailable(
            "cannot read the attempts topic yet; try again",
        ));
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
    let sent =
        crate::subscriptions::send_example(state, who, face, id, event_type, field, example_event)
            .await?;
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
