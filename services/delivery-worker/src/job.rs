//! One delivery job, from its first attempt to delivered, dead-lettered, or handed back.

use std::sync::Mutex;
use std::time::Duration;

use hookline_config::Config;
use hookline_events::Event;
use hookline_events::operational;
use hookline_events::time_fmt::now_ms;
use hookline_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use hookline_kafka::rdkafka::message::OwnedHeaders;
use hookline_kafka::rdkafka::producer::FutureRecord;
use hookline_kafka::view::TopicView;
use hookline_proto::Message as _;
use hookline_proto::v1::{
    Attempt, AttemptOutcome, DeadLetter, DeliveryJob, Dialect, ParkedState, Subscription,
    SubscriptionCommand,
};
use hookline_runtime::CancellationToken;
use hookline_state::{SecretBox, SecretView, SubscriptionView};
use hookline_telemetry::metrics::{kv, metrics};
use hookline_telemetry::trace::{self, Context as TraceContext, Traced};
use tracing::Instrument as _;

use crate::failing::Failing;
use crate::http::{AttemptResult, Outgoing, Sender};
use crate::limits::Holds;
use crate::retry::{Schedule, Verdict, classify};

/// How a job left the delivery task.
#[derive(Debug)]
pub enum Outcome {
    /// Delivered, or its dead letter is durable: the offset may be committed.
    Completed,
    /// Its next attempt is further away than a retry waits in memory: the job (attempt count
    /// and `due_at_ms` updated) is to be parked in the retry lane.
    Park(Box<DeliveryJob>),
    /// Shutdown came first: the job stays uncommitted and will be redelivered.
    HandedBack,
}

pub struct Context {
    pub subscriptions: SubscriptionView,
    /// Holds asked for by endpoints (`Retry-After` on a 429 or 503): the dispatcher starts
    /// no job of a held subscription before its hold ends.
    pub holds: Holds,
    parked: TopicView<ParkedState>,
    failing: Mutex<Failing>,
    pub secrets: SecretView,
    secret_box: SecretBox,
    sender: Sender,
    producer: std::sync::Arc<hookline_kafka::Producer>,
    schedule: Schedule,
    in_memory_max: Duration,
    topic_attempts: String,
    topic_dead_letters: String,
    topic_subscription_commands: String,
    topic_events: String,
    auto_disable_after: Option<Duration>,
    shutdown: CancellationToken,
}

const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a record waits before it is offered again to a full producer queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(20);

impl Context {
    /// `producer`: the process's one producer.
    pub fn start(
        config: &Config,
        parked: TopicView<ParkedState>,
        producer: std::sync::Arc<hookline_kafka::Producer>,
        shutdown: CancellationToken,
    ) -> Result<Self, crate::Error> {
        let auto_disable_after = config.auto_disable_after()?;
        Ok(Self {
            subscriptions: hookline_state::subscriptions(config)?,
            holds: Holds::default(),
            parked,
            failing: Mutex::new(Failing::new(auto_disable_after)),
            secrets: hookline_state::secrets(config)?,
            secret_box: SecretBox::from_config(config)?,
            sender: Sender::new(config)?,
            // Attempt records and dead letters wait out a broker outage instead of timing out.
            producer,
            schedule: Schedule {
                delays: config.retry_delays()?,
                jitter: config.retry_jitter,
            },
            in_memory_max: config.retry_in_memory_max()?,
            topic_attempts: config.topic_attempts.clone(),
            topic_dead_letters: config.topic_dead_letters.clone(),
            topic_subscription_commands: config.topic_subscription_commands.clone(),
            topic_events: config.topic_events.clone(),
            auto_disable_after,
            shutdown,
        })
    }

    pub fn stop(&self) {
        self.subscriptions.stop();
        self.secrets.stop();
    }

    async fn sleep(&self, d: Duration) -> bool {
        self.shutdown
            .run_until_cancelled(tokio::time::sleep(d))
            .await
            .is_some()
    }

    /// Sleeps `d` unless `stop` (the job's partition revoked, or shutdown) comes first.
    async fn wait(stop: &CancellationToken, d: Duration) -> bool {
        stop.run_until_cancelled(tokio::time::sleep(d))
            .await
            .is_some()
    }

    /// The job's subscription; re-reads the topic once before deciding it is gone, since the
    /// router may have seen it before this worker's view did.
    async fn subscription(&self, id: &str) -> Option<Subscription> {
        if let Some(s) = self.subscriptions.get(id) {
            return Some(s);
        }
        self.subscriptions.sync().await;
        self.subscriptions.get(id)
    }

    /// Whether a job due at `due_at_ms` is to wait in memory (else it is parked).
    pub fn waits_in_memory(&self, due_at_ms: i64) -> bool {
        due_at_ms - now_ms() <= self.in_memory_max.as_millis() as i64
    }

    /// Attempts `job` until it is delivered or dead-lettered, waiting in memory for retries
    /// due soon; a later retry hands the job back to be parked.
    /// The secret versions that sign for `sub`; like the subscription itself, the secret may
    /// be newer than this worker's view, so the topic is read once more before giving up.
    async fn signing_secrets(&self, sub: &Subscription) -> Vec<hookline_signing::WebhookSecret> {
        let key = hookline_state::secret_key(&sub.tenant, &sub.secret_ref);
        let open = |s: hookline_proto::v1::Secret| self.secret_box.signing_secrets(&s, now_ms());
        let found = self.secrets.get(&key).map(open).unwrap_or_default();
        if !found.is_empty() {
            return found;
        }
        self.secrets.sync().await;
        self.secrets.get(&key).map(open).unwrap_or_default()
    }

    /// `stop` ends waits between attempts (the job is handed back); an attempt under way
    /// is finished first.
    ///
    /// One `deliver` span per job taken up here, its parent the job's `traceparent` (the
    /// router's span, kept by the retry lane, dead letters and replays), with one child span
    /// per HTTP attempt whose context is the `traceparent` the receiver gets.
    pub async fn deliver(&self, job: DeliveryJob, stop: &CancellationToken) -> Outcome {
        let parent = trace::from_traceparent_or_new(&job.traceparent);
        let span = Traced::start(&parent, || {
            tracing::info_span!(
                "deliver",
                otel.kind = "consumer",
                hookline.service = "delivery-worker",
                messaging.system = "kafka",
                messaging.operation.type = "process",
                hookline.delivery.id = %job.delivery_id,
                hookline.subscription.id = %job.subscription_id,
                hookline.event.type = job.event.as_ref().map_or("", |e| e.r#type.as_str()),
                hookline.replay.id = %job.replay_id,
                hookline.outcome = tracing::field::Empty,
            )
        });
        let outcome = self
            .deliver_traced(job, stop, &span)
            .instrument(span.span().clone())
            .await;
        let label = match &outcome {
            Outcome::Completed => "completed",
            Outcome::Park(_) => "parked",
            Outcome::HandedBack => "handed_back",
        };
        span.span().record("hookline.outcome", label);
        outcome
    }

    async fn deliver_traced(
        &self,
        mut job: DeliveryJob,
        stop: &CancellationToken,
        span: &Traced,
    ) -> Outcome {
        let cx = span.context();
        let wait = job.due_at_ms - now_ms();
        if wait > 0 && !Self::wait(stop, Duration::from_millis(wait as u64)).await {
            return Outcome::HandedBack;
        }
        let event = job.event.clone().unwrap_or_default();
        loop {
            let Some(sub) = self.subscription(&job.subscription_id).await else {
                return self
                    .dead_letter(&job, None, "subscription no longer exists", cx)
                    .await;
            };
            if !sub.enabled {
                return self
                    .dead_letter(&job, None, "subscription is disabled", cx)
                    .await;
            }
            let secrets = self.signing_secrets(&sub).await;
            if secrets.is_empty() {
                return self
                    .dead_letter(&job, None, "subscription has no usable signing secret", cx)
                    .await;
            }
            let started_at_ms = now_ms();
            let attempt_span = span.child(|parent| attempt_span(parent, &sub, job.attempt + 1));
            let in_flight = InFlight::start();
            let result = self
                .sender
                .send(Outgoing {
                    url: &sub.endpoint_url,
                    delivery_id: &job.delivery_id,
                    body: hookline_events::payload::body(&event, &sub),
                    secrets: &secrets,
                    traceparent: &attempt_span.traceparent(),
                    headers: &self.secret_box.open_headers(&sub),
                    svix_id: (sub.dialect() == Dialect::Svix).then_some(event.id.as_str()),
                    both_header_sets: sub.webhook_headers,
                })
                .instrument(attempt_span.span().clone())
                .await;
            in_flight.end(&result);
            end_attempt_span(attempt_span, &result);
            job.attempt += 1;
            if let (Some(429 | 503), Some(asked)) = (result.status, result.retry_after) {
                // The endpoint asked the whole subscription to slow down (capped at
                // `retry::MAX_RETRY_AFTER` when read): none of its jobs starts before then.
                self.holds.hold(&sub.id, std::time::Instant::now() + asked);
            }
            // An address the egress guard refuses will be refused again: final.
            let verdict = if result.error_class == crate::http::EGRESS_DENIED {
                Verdict::Final
            } else {
                classify(result.status, result.retry_after)
            };
            let next = match verdict {
                Verdict::Retry { asked } => self.schedule.next_delay(job.attempt, asked),
                _ => None,
            };
            let outcome = match (verdict, next) {
                (Verdict::Delivered, _) => AttemptOutcome::Succeeded,
                (Verdict::Retry { .. }, Some(_)) => AttemptOutcome::Retryable,
                _ => AttemptOutcome::Failed,
            };
            let next_attempt_at_ms = match (outcome, next) {
                (AttemptOutcome::Retryable, Some(delay)) => now_ms() + delay.as_millis() as i64,
                _ => 0,
            };
            let mut attempt = attempt_record(&job, &sub, started_at_ms, &result, outcome);
            attempt.next_attempt_at_ms = next_attempt_at_ms;
            self.record_attempt(&job, &attempt).await;
            if self.failing_for_too_long(&sub, verdict == Verdict::Delivered) {
                let reason = format!(
                    "every attempt failed for {}",
                    humantime::format_duration(self.auto_disable_after.unwrap_or_default())
                );
                self.disable(&sub, &reason, cx).await;
            }
            if verdict == Verdict::Delivered {
                tracing::debug!(
                    delivery_id = %job.delivery_id, subscription_id = %job.subscription_id,
                    attempt = job.attempt, ms = result.duration.as_millis() as u64, "delivered"
                );
            } else {
                tracing::info!(
                    delivery_id = %job.delivery_id, subscription_id = %job.subscription_id,
                    attempt = job.attempt, status = ?result.status, error = %result.error,
                    ms = result.duration.as_millis() as u64, "attempt failed"
                );
            }
            match (verdict, next) {
                (Verdict::Delivered, _) if !job.replay_id.is_empty() => {
                    delivered(None);
                    return self.recovered(&job, cx).await;
                }
                (Verdict::Delivered, _) => {
                    delivered(Some(job.routed_at_ms));
                    return Outcome::Completed;
                }
                (Verdict::Retry { .. }, Some(delay)) => {
                    job.due_at_ms = now_ms() + delay.as_millis() as i64;
                    if delay > self.in_memory_max {
                        return Outcome::Park(Box::new(job));
                    }
                    if !Self::wait(stop, delay).await {
                        return Outcome::HandedBack;
                    }
                }
                (Verdict::Retry { .. }, None) => {
                    return self
                        .dead_letter(&job, Some(attempt), "retries exhausted", cx)
                        .await;
                }
                (Verdict::Gone, _) => {
                    self.disable(&sub, "endpoint answered 410 Gone", cx).await;
                    return self
                        .dead_letter(
                            &job,
                            Some(attempt),
                            "endpoint answered 410 Gone; subscription disabled",
                            cx,
                        )
                        .await;
                }
                (Verdict::Final, _) => {
                    return self
                        .dead_letter(&job, Some(attempt), "final failure: not retryable", cx)
                        .await;
                }
            }
        }
    }

    /// Writes the attempt record and waits for the broker's acknowledgement: the job's
    /// offset (or lane cursor) moves only behind a durable record, so a crash loses none. A
    /// full producer queue is waited out; the producer never times a record out, so an
    /// outage delays the acknowledgement. Shutdown does not cut this short (the attempt was
    /// made: handing the job back would repeat it): the revocation's grace time bounds the
    /// wait, after which the task is dropped and the job, not finished, goes to the next owner.
    async fn record_attempt(&self, job: &DeliveryJob, attempt: &Attempt) {
        let payload = attempt.encode_to_vec();
        loop {
            let record = FutureRecord::to(&self.topic_attempts)
                .key(&job.subscription_id)
                .payload(&payload);
            let ack = match self.producer.send_result(record) {
                Ok(ack) => ack,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                    continue;
                }
                Err((e, _)) => {
                    // Refused before it was queued (too large, ...): it would be refused again.
                    tracing::warn!(delivery_id = %job.delivery_id, error = %e, "attempt record refused");
                    return;
                }
            };
            if let Ok(Err((e, _))) = ack.await {
                tracing::warn!(delivery_id = %job.delivery_id, error = %e, "attempt record refused");
            }
            return;
        }
    }

    /// Writes the dead letter, and after an attempt (not for a subscription gone or
    /// disabled) `hookline.delivery.exhausted`; retries until both are durable or shutdown
    /// hands the job back.
    async fn dead_letter(
        &self,
        job: &DeliveryJob,
        last: Option<Attempt>,
        reason: &str,
        cx: &TraceContext,
    ) -> Outcome {
        let at_ms = now_ms();
        let event = last.as_ref().and_then(|a| {
            operational::exhausted(&operational::Exhausted {
                job,
                reason,
                last_status: a.status_code,
                at_ms,
            })
        });
        let letter = DeadLetter {
            job: Some(job.clone()),
            last_attempt: last,
            reason: reason.to_owned(),
            dead_lettered_at_ms: at_ms,
        };
        let payload = letter.encode_to_vec();
        loop {
            let record = FutureRecord::to(&self.topic_dead_letters)
                .key(&job.subscription_id)
                .payload(&payload);
            let (written, published) = tokio::join!(
                self.producer.send(record, PRODUCE_TIMEOUT),
                self.publish(&job.subscription_id, event.as_ref(), cx)
            );
            match written.map_err(|(e, _)| e).and(published) {
                Ok(_) => {
                    metrics()
                        .deliveries
                        .add(1, &[kv("outcome", "dead_lettered")]);
                    tracing::warn!(delivery_id = %job.delivery_id, reason, "dead-lettered");
                    return Outcome::Completed;
                }
                Err(e) => {
                    tracing::error!(delivery_id = %job.delivery_id, error = %e, "dead letter not written; retrying");
                    if !self.sleep(Duration::from_secs(1)).await {
                        return Outcome::HandedBack;
                    }
                }
            }
        }
    }

    /// Publishes one of Hookline's own events (protobuf) to the events topic, keyed by
    /// `key`, in the delivery's trace (`cx`); `None` publishes nothing.
    async fn publish(
        &self,
        key: &str,
        event: Option<&Event>,
        cx: &TraceContext,
    ) -> Result<(), KafkaError> {
        let Some(event) = event else {
            return Ok(());
        };
        hookline_kafka::publish_event(
            &self.producer,
            &self.topic_events,
            key,
            event,
            cx,
            PRODUCE_TIMEOUT,
        )
        .await
    }

    /// A replayed delivery reached its endpoint: `hookline.delivery.recovered`, retried
    /// until durable (the job is over only then) or shutdown.
    async fn recovered(&self, job: &DeliveryJob, cx: &TraceContext) -> Outcome {
        let event = operational::delivery_recovered(job, &job.replay_id, now_ms());
        loop {
            match self.publish(&job.subscription_id, event.as_ref(), cx).await {
                Ok(()) => return Outcome::Completed,
                Err(e) => {
                    tracing::warn!(delivery_id = %job.delivery_id, error = %e, "recovered event not published; retrying");
                    if !self.sleep(Duration::from_secs(1)).await {
                        return Outcome::Completed;
                    }
                }
            }
        }
    }

    /// Counts the attempt's outcome for `sub`; true once it has failed for
    /// `auto_disable_after`.
    fn failing_for_too_long(&self, sub: &Subscription, delivered: bool) -> bool {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if delivered {
            failing.succeeded(&sub.id);
            return false;
        }
        // A subscription parked for its backlog (`THROTTLED`) was not failing then.
        let parked_at = self
            .parked
            .get(&sub.id)
            .filter(|p| p.reason != crate::park::THROTTLED)
            .map(|p| p.parked_at_ms);
        failing.failed(&sub.id, now_ms(), parked_at)
    }

    /// 410 Gone: asks the subscription API to disable the subscription, unless it changed
    /// since the version the attempt was made with. The API applies it through its own write
    /// path, on the state it holds then: the worker never writes a subscription, so it can
    /// revert no edit. The command waits out a broker outage.
    async fn disable(&self, attempted: &Subscription, reason: &str, cx: &TraceContext) {
        let command = SubscriptionCommand {
            subscription_id: attempted.id.clone(),
            disable: true,
            seen_version: attempted.version,
            reason: reason.to_owned(),
            at_ms: now_ms(),
        };
        let payload = command.encode_to_vec();
        // The API's span applying it, and the event it publishes, continue this trace.
        let headers = trace::inject_kafka(cx, OwnedHeaders::new());
        let record = FutureRecord::to(&self.topic_subscription_commands)
            .key(&attempted.id)
            .headers(headers)
            .payload(&payload);
        if let Err((e, _)) = self.producer.send(record, PRODUCE_TIMEOUT).await {
            tracing::error!(subscription_id = %attempted.id, error = %e, "could not ask to disable the subscription");
        }
    }
}

/// The span of one HTTP attempt (HTTP client semantic conventions).
fn attempt_span(parent: &tracing::Span, sub: &Subscription, attempt: u32) -> tracing::Span {
    let url = reqwest::Url::parse(&sub.endpoint_url).ok();
    let host = url.as_ref().and_then(|u| u.host_str().map(str::to_owned));
    let port = url.as_ref().and_then(reqwest::Url::port_or_known_default);
    tracing::info_span!(
        parent: parent,
        "POST",
        otel.kind = "client",
        hookline.service = "delivery-worker",
        http.request.method = "POST",
        server.address = host.as_deref().unwrap_or(""),
        server.port = port.unwrap_or(0),
        http.request.resend_count = attempt.saturating_sub(1),
        hookline.attempt = attempt,
        http.response.status_code = tracing::field::Empty,
    )
}

/// Records the attempt's outcome on its span and ends it.
fn end_attempt_span(span: Traced, result: &AttemptResult) {
    if let Some(status) = result.status {
        span.span().record("http.response.status_code", status);
    }
    match (result.error_class, result.status) {
        ("", _) => {}
        ("status", Some(status)) => span.fail(&status.to_string()),
        (class, _) => span.fail(class),
    }
}

fn attempt_record(
    job: &DeliveryJob,
    sub: &Subscription,
    started_at_ms: i64,
    result: &AttemptResult,
    outcome: AttemptOutcome,
) -> Attempt {
    let event = job.event.as_ref();
    Attempt {
        delivery_id: job.delivery_id.clone(),
        subscription_id: job.subscription_id.clone(),
        tenant: job.tenant.clone(),
        event_id: event.map(|e| e.id.clone()).unwrap_or_default(),
        event_type: event.map(|e| e.r#type.clone()).unwrap_or_default(),
        attempt: job.attempt,
        started_at_ms,
        duration_ms: result.duration.as_millis().min(u32::MAX as u128) as u32,
        status_code: result.status.map(u32::from).unwrap_or(0),
        outcome: outcome as i32,
        error_class: result.error_class.to_owned(),
        error: result.error.clone(),
        response_body: result.body[..result.body.len().min(RECORDED_BODY)].to_vec(),
        endpoint_url: sub.endpoint_url.clone(),
        request_headers: headers(&result.request_headers),
        response_headers: headers(&result.response_headers),
        next_attempt_at_ms: 0,
        replay_id: job.replay_id.clone(),
    }
}

/// Longest response body kept in an attempt record (the operations index holds millions).
const RECORDED_BODY: usize = 8 * 1024;

fn headers(list: &[(String, String)]) -> Vec<hookline_proto::v1::Header> {
    list.iter()
        .map(|(name, value)| hookline_proto::v1::Header {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// An HTTP attempt under way, counted in `hookline_deliveries_in_flight` until it ends (also
/// when its task is dropped).
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics().in_flight.add(1, &[]);
        InFlight
    }

    /// Records the attempt's duration and status class.
    fn end(self, result: &crate::http::AttemptResult) {
        let m = metrics();
        let class = hookline_telemetry::metrics::status_class(result.status);
        m.attempts.add(1, &[kv("status_class", class)]);
        let mut attributes = vec![kv("http.request.method", "POST")];
        match result.status {
            Some(status) => attributes.push(kv("http.response.status_code", i64::from(status))),
            None => attributes.push(kv("error.type", result.error_class)),
        }
        m.attempt_duration
            .record(result.duration.as_secs_f64(), &attributes);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().in_flight.add(-1, &[]);
    }
}

/// A delivery reached its endpoint; `routed_at_ms` (none for a replay) starts its latency.
fn delivered(routed_at_ms: Option<i64>) {
    let m = metrics();
    m.deliveries.add(1, &[kv("outcome", "delivered")]);
    if let Some(routed) = routed_at_ms.filter(|&t| t > 0) {
        let seconds = (now_ms() - routed).max(0) as f64 / 1000.0;
        m.delivery_latency.record(seconds, &[]);
    }
}
