//! Replays: the routes that start a run (one delivery, or a subscription's deliveries by
//! filter) and the driver that enqueues its jobs.
//!
//! A run is a record on the compacted `replays` topic (keyed by replay id). The driver of a
//! run is a transactional producer with id `{group_prefix}.replay.{replay id}`: each batch of
//! replayed jobs (a subscription's deliveries in the order of the log: by their events'
//! positions, so per key in the order the events were published) goes to `deliveries` in one
//! transaction together with the run record carrying the new cursor and counts.
//! `init_transactions` fences an earlier driver of the same run (this process before a
//! SIGKILL, or another replica) and aborts its open transaction, and the driver resumes from
//! the last committed record: each selected delivery is enqueued exactly once per run.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hookline_auth::{Principal, Role};
use hookline_config::Config;
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_kafka::acl;
use hookline_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use hookline_kafka::rdkafka::message::{Message as _, OwnedHeaders};
use hookline_kafka::rdkafka::producer::{FutureRecord, Producer as _};
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};
use hookline_kafka::view::TopicView;
use hookline_ops_index::{State as DeliveryState, Store, Summary};
use hookline_proto::Message as _;
use hookline_proto::v1::{DeliveryJob, ReplayRun, ReplayState};
use hookline_runtime::{ApiError, CancellationToken, JsonBody, JsonPath};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::blocking;
use crate::query::{MAX_ID, parse_time, path_id};

/// Deliveries handled per transaction.
const BATCH: usize = 200;
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Namespace of replay ids derived from an Idempotency-Key.
const REPLAY_NS: uuid::Uuid = uuid::Uuid::from_u128(0x6c1e_7a0e_4f0b_4c55_9a1d_2b3c_4d5e_6f70);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    replay_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkRequest {
    subscription_id: String,
    since: String,
    until: Option<String>,
    outcome: Option<String>,
    event_types: Option<Vec<String>>,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            "Idempotency-Key",
            "`Idempotency-Key` must be 1-255 printable ASCII characters",
        )
    };
    let text = v.to_str().map_err(|_| bad())?;
    if text.is_empty() || text.len() > MAX_ID || !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

/// 409 unless the subscription exists and is enabled; 404 if the caller may not see it.
fn check_subscription(state: &AppState, who: &Principal, id: &str) -> Result<String, ApiError> {
    let sub = state.subscriptions.get(id);
    match sub {
        Some(s) if !who.can_see(&s.tenant) => Err(ApiError::not_found("subscription")),
        Some(s) if !s.enabled => Err(ApiError::conflict(
            "subscriptionId",
            format!("subscription {id} is disabled: enable it before replaying to it"),
        )),
        Some(s) => Ok(s.tenant),
        None => Err(ApiError::conflict(
            "subscriptionId",
            format!("subscription {id} no longer exists: nothing can be delivered to it"),
        )),
    }
}

pub async fn replay_one(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(id): JsonPath<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    who.require(Role::Editor)?;
    path_id("deliveryId", &id)?;
    let key = idempotency_key(&headers)?;
    let summary = crate::api::visible_delivery(&state, &who, &id).await?;
    if !summary.has_job && summary.dead_lettered_ms == 0 {
        return Err(ApiError::not_found("delivery job"));
    }
    state.subscriptions.sync().await;
    check_subscription(&state, &who, &summary.subscription_id)?;
    let run = ReplayRun {
        tenant: summary.tenant.clone(),
        delivery_id: id,
        subscription_id: summary.subscription_id.clone(),
        selected: 1,
        ..Default::default()
    };
    start(&state, run, key).await
}

pub async fn replay_bulk(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    JsonBody(req): JsonBody<BulkRequest>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    who.require(Role::Editor)?;
    let key = idempotency_key(&headers)?;
    path_id("subscriptionId", &req.subscription_id)?;
    let since_ms = parse_time(&req.since)
        .ok_or_else(|| ApiError::invalid("since", "`since` must be an RFC 3339 date-time"))?;
    let until_ms =
        match &req.until {
            None => None,
            Some(u) => Some(parse_time(u).ok_or_else(|| {
                ApiError::invalid("until", "`until` must be an RFC 3339 date-time")
            })?),
        };
    // One not later than `since` selects nothing (a run with nothing to do).
    let until_ms = until_ms.map(|u| u.max(since_ms));
    let outcome = match req.outcome.as_deref() {
        None => String::new(),
        Some(o @ ("failed" | "succeeded")) => o.to_owned(),
        Some(_) => {
            return Err(ApiError::invalid(
                "outcome",
                "`outcome` must be one of succeeded, failed",
            ));
        }
    };
    let event_types = req.event_types.unwrap_or_default();
    if event_types.len() > 100 {
        return Err(ApiError::invalid("eventTypes", "at most 100 event types"));
    }
    if event_types
        .iter()
        .any(|t| t.is_empty() || t.chars().count() > MAX_ID)
    {
        return Err(ApiError::invalid(
            "eventTypes",
            "each event type must be 1-255 characters",
        ));
    }
    state.subscriptions.sync().await;
    let tenant = check_subscription(&state, &who, &req.subscription_id)?;
    let run = ReplayRun {
        tenant,
        subscription_id: req.subscription_id,
        since_ms,
        until_ms: until_ms.unwrap_or_else(now_ms),
        outcome,
        event_types,
        ..Default::default()
    };
    start(&state, run, key).await
}

/// Records a new run (or finds the one this Idempotency-Key started) and wakes the driver.
async fn start(
    state: &AppState,
    mut run: ReplayRun,
    key: Option<String>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let replay_id = match &key {
        Some(k) => uuid::Uuid::new_v5(&REPLAY_NS, format!("{}\n{k}", run.tenant).as_bytes()),
        None => uuid::Uuid::new_v4(),
    }
    .to_string();
    // One creation at a time in this process, so a request sent twice starts one run.
    let _one = state.create.lock().await;
    state.replays.sync().await;
    if state.replays.get(&replay_id).is_some() {
        return Ok((StatusCode::ACCEPTED, Json(Started { replay_id })));
    }
    if run.delivery_id.is_empty() {
        let (store, probe) = (state.index.store().clone(), run.clone());
        run.selected = blocking(move || count_selected(&store, &probe)).await?;
    }
    run.replay_id.clone_from(&replay_id);
    run.idempotency_key = key.unwrap_or_default();
    run.state = ReplayState::Running as i32;
    run.created_at_ms = now_ms();
    let payload = run.encode_to_vec();
    let record = FutureRecord::to(&state.topic_replays)
        .key(&replay_id)
        .payload(&payload);
    let acked = hookline_kafka::send_within(&state.producer, record, Duration::from_secs(15))
        .await
        .map_err(|e| ApiError::unavailable(format!("could not record the replay: {e}")))?;
    state
        .replays
        .wait_for_offset(acked.partition, acked.offset)
        .await;
    state.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(Started { replay_id })))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOut {
    replay_id: String,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_id: Option<String>,
    subscription_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
    event_types: Vec<String>,
    selected: u64,
    enqueued: u64,
    unavailable: u64,
    delivered: u64,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
}

pub async fn get_run(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(id): JsonPath<String>,
) -> Result<Json<RunOut>, ApiError> {
    who.require(Role::Viewer)?;
    path_id("replayId", &id)?;
    let run = state
        .replays
        .get(&id)
        .filter(|r| who.can_see(&r.tenant))
        .ok_or_else(|| ApiError::not_found("replay"))?;
    let store = state.index.store().clone();
    let rid = id.clone();
    let delivered = blocking(move || store.replay_delivered(&rid)).await?;
    let bulk = run.delivery_id.is_empty();
    Ok(Json(RunOut {
        replay_id: id,
        state: if run.state == ReplayState::Completed as i32 {
            "completed"
        } else {
            "running"
        },
        delivery_id: (!bulk).then(|| run.delivery_id.clone()),
        subscription_id: run.subscription_id.clone(),
        since: bulk.then(|| rfc3339_millis(run.since_ms)),
        until: bulk.then(|| rfc3339_millis(run.until_ms)),
        outcome: (!run.outcome.is_empty()).then(|| run.outcome.clone()),
        event_types: run.event_types.clone(),
        selected: run.selected,
        enqueued: run.enqueued,
        unavailable: run.unavailable,
        delivered,
        created_at: rfc3339_millis(run.created_at_ms),
        finished_at: (run.finished_at_ms > 0).then(|| rfc3339_millis(run.finished_at_ms)),
    }))
}

/// Whether a delivery is selected by a bulk run: its outcome (`failed`: dead-lettered;
/// `succeeded`; none: either, deliveries still under way are left to the worker) and its type.
fn selects(run: &ReplayRun, s: &Summary, now: i64) -> bool {
    let state = s.state(now, i64::MAX);
    let outcome = match run.outcome.as_str() {
        "failed" => state == DeliveryState::DeadLettered,
        "succeeded" => state == DeliveryState::Succeeded,
        _ => matches!(
            state,
            DeliveryState::DeadLettered | DeliveryState::Succeeded
        ),
    };
    outcome
        && s.tenant == run.tenant
        && (run.event_types.is_empty() || run.event_types.contains(&s.event_type))
}

fn count_selected(store: &Store, run: &ReplayRun) -> Result<u64, hookline_ops_index::IndexError> {
    let (mut after, mut n, now) = (Vec::new(), 0u64, now_ms());
    loop {
        let page = store.deliveries_of(
            &run.subscription_id,
            run.since_ms,
            run.until_ms,
            &after,
            1000,
        )?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        after.clone_from(&last.0);
        n += page.iter().filter(|(_, _, s)| selects(run, s, now)).count() as u64;
    }
}

/// Drives every running run, one at a time, woken by a new run or every few seconds.
pub async fn drive_all(state: AppState, config: Arc<Config>, shutdown: CancellationToken) {
    loop {
        let running: Vec<String> = state.replays.read(|t| {
            t.values()
                .filter(|r| r.state == ReplayState::Running as i32)
                .map(|r| r.replay_id.clone())
                .collect()
        });
        for id in running {
            if shutdown.is_cancelled() {
                return;
            }
            let (s, c, stop) = (state.clone(), config.clone(), shutdown.clone());
            let handle = tokio::runtime::Handle::current();
            let result = tokio::task::spawn_blocking(move || {
                Driver::new(&s, &c, &id, handle).and_then(|d| d.run(&stop))
            })
            .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "replay run paused; it resumes later"),
                Err(e) => tracing::warn!(error = %e, "replay driver"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

struct Driver {
    id: String,
    producer: hookline_kafka::Producer,
    jobs: BaseConsumer<hookline_kafka::KafkaContext>,
    replays: TopicView<ReplayRun>,
    store: Arc<Store>,
    topic_deliveries: String,
    topic_replays: String,
    rt: tokio::runtime::Handle,
}

fn kafka(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Driver {
    fn new(
        state: &AppState,
        config: &Config,
        id: &str,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, String> {
        let producer = hookline_kafka::transactional_producer(
            config,
            &format!("{}{id}", acl::txn_prefix(config, acl::TXN_REPLAY)),
        )
        .map_err(kafka)?;
        // Fences an earlier driver of this run and aborts its open transaction.
        producer.init_transactions(TXN_TIMEOUT).map_err(kafka)?;
        let mut c = hookline_kafka::client_config(config).map_err(kafka)?;
        c.set("group.id", acl::group(config, acl::GROUP_REPLAY_READER))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .set("queued.max.messages.kbytes", "2048");
        let jobs = c
            .create_with_context(hookline_kafka::KafkaContext)
            .map_err(kafka)?;
        Ok(Self {
            id: id.to_owned(),
            producer,
            jobs,
            replays: state.replays.clone(),
            store: state.index.store().clone(),
            topic_deliveries: config.topic_deliveries.clone(),
            topic_replays: state.topic_replays.clone(),
            rt,
        })
    }

    /// The run as last committed (after `init_transactions` nothing of a predecessor is open).
    fn committed(&self) -> Option<ReplayRun> {
        self.rt.block_on(self.replays.sync());
        self.replays.get(&self.id)
    }

    fn run(self, stop: &CancellationToken) -> Result<(), String> {
        let mut run = self.committed().ok_or("replay run not found")?;
        let mut failures = 0;
        while run.state == ReplayState::Running as i32 {
            if stop.is_cancelled() {
                return Ok(());
            }
            let next = self.step(&run)?;
            match self.commit(&next.0, &next.1) {
                Ok(()) => {
                    run = next.1;
                    failures = 0;
                }
                Err(e) => {
                    let _ = self.producer.abort_transaction(TXN_TIMEOUT);
                    failures += 1;
                    // A fenced or broken producer: a new driver (a new producer) takes over.
                    if failures >= 3 {
                        return Err(e);
                    }
                    tracing::warn!(replay_id = %self.id, error = %e, "replay batch aborted; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    run = self.committed().ok_or("replay run not found")?;
                }
            }
        }
        tracing::info!(replay_id = %self.id, enqueued = run.enqueued, "replay run completed");
        Ok(())
    }

    /// The next batch of jobs and the run record that goes with them.
    fn step(&self, run: &ReplayRun) -> Result<(Vec<DeliveryJob>, ReplayRun), String> {
        let mut next = run.clone();
        let mut jobs = Vec::new();
        let now = now_ms();
        let (chosen, done): (Vec<(String, Summary)>, bool) = if !run.delivery_id.is_empty() {
            next.cursor = vec![1];
            if run.cursor.is_empty() {
                let s = self.store.delivery(&run.delivery_id).map_err(kafka)?;
                (vec![(run.delivery_id.clone(), s.unwrap_or_default())], true)
            } else {
                (Vec::new(), true)
            }
        } else if run.cursor.is_empty() || Store::is_log_cursor(&run.cursor) {
            // In the order of the log: per key, the order the events were first delivered in.
            let page = self
                .store
                .deliveries_in_log_order(
                    &run.subscription_id,
                    run.since_ms,
                    run.until_ms,
                    &run.cursor,
                    BATCH,
                )
                .map_err(kafka)?;
            let done = page.next.is_none();
            if let Some(cursor) = page.next {
                next.cursor = cursor;
            }
            (page.items, done)
        } else {
            // A run begun by an earlier version, in creation order: it ends in that order, so
            // its cursor still says what was enqueued.
            let page = self
                .store
                .deliveries_of(
                    &run.subscription_id,
                    run.since_ms,
                    run.until_ms,
                    &run.cursor,
                    BATCH,
                )
                .map_err(kafka)?;
            if let Some((key, ..)) = page.last() {
                next.cursor.clone_from(key);
            }
            let done = page.len() < BATCH;
            (page.into_iter().map(|(_, id, s)| (id, s)).collect(), done)
        };
        for (id, s) in &chosen {
            if !run.delivery_id.is_empty() || selects(run, s, now) {
                match self.job_of(id, s)? {
                    Some(mut job) => {
                        job.attempt = 0;
                        job.due_at_ms = 0;
                        job.replay_id.clone_from(&run.replay_id);
                        jobs.push(job);
                        next.enqueued += 1;
                    }
                    None => next.unavailable += 1,
                }
            }
        }
        if done {
            next.state = ReplayState::Completed as i32;
            next.finished_at_ms = now_ms();
        }
        Ok((jobs, next))
    }

    /// The delivery's job: from its latest dead letter, else read back from `deliveries`.
    fn job_of(&self, id: &str, s: &Summary) -> Result<Option<DeliveryJob>, String> {
        let window = hookline_ops_index::Window {
            since_ms: None,
            until_ms: None,
            cursor: None,
            limit: 1,
            oldest_first: false,
        };
        let letter = self
            .store
            .dead_letters(
                &hookline_ops_index::Scope::Delivery(id.to_owned()),
                &window,
                |_| true,
            )
            .map_err(kafka)?
            .items
            .into_iter()
            .next();
        if let Some(job) = letter.and_then(|d| d.job) {
            return Ok(Some(job));
        }
        if !s.has_job {
            return Ok(None);
        }
        self.read_job(s.job_partition, s.job_offset)
    }

    fn read_job(&self, partition: i32, offset: i64) -> Result<Option<DeliveryJob>, String> {
        let (low, high) = self
            .jobs
            .fetch_watermarks(&self.topic_deliveries, partition, Duration::from_secs(10))
            .map_err(kafka)?;
        if offset < low || offset >= high {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic_deliveries, partition, Offset::Offset(offset))
            .map_err(kafka)?;
        self.jobs.assign(&tpl).map_err(kafka)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match self.jobs.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.partition() == partition && m.offset() == offset => {
                    return Ok(m.payload().and_then(|p| DeliveryJob::decode(p).ok()));
                }
                Some(Ok(m)) if m.partition() == partition && m.offset() > offset => {
                    return Ok(None);
                }
                _ => {}
            }
        }
        Err(format!("reading the job at {partition}/{offset} timed out"))
    }

    /// Produces `jobs` and the run record in one transaction.
    fn commit(&self, jobs: &[DeliveryJob], run: &ReplayRun) -> Result<(), String> {
        self.producer.begin_transaction().map_err(kafka)?;
        let mut acks = Vec::with_capacity(jobs.len() + 1);
        for job in jobs {
            let payload = job.encode_to_vec();
            // Keyed like the router's jobs: same partition, so per-key order with new ones.
            // The job keeps its `traceparent`: the replay's attempts join the event's trace.
            let headers = hookline_telemetry::trace::inject_kafka(
                &hookline_telemetry::trace::from_traceparent(&job.traceparent),
                OwnedHeaders::new(),
            );
            let record = FutureRecord::to(&self.topic_deliveries)
                .key(&job.subscription_id)
                .headers(headers)
                .payload(&payload);
            acks.push(
                self.producer
                    .send_result(record)
                    .map_err(|(e, _)| kafka(e))?,
            );
        }
        let payload = run.encode_to_vec();
        let record = FutureRecord::to(&self.topic_replays)
            .key(&run.replay_id)
            .payload(&payload);
        acks.push(
            self.producer
                .send_result(record)
                .map_err(|(e, _)| kafka(e))?,
        );
        for ack in self.rt.block_on(futures::future::join_all(acks)) {
            match ack {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(kafka(e)),
                Err(_) => return Err("produce canceled".into()),
            }
        }
        self.producer
            .commit_transaction(TXN_TIMEOUT)
            .map_err(kafka)?;
        Ok(())
    }
}
