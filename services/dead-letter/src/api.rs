//! The read routes: one delivery, its attempts, attempts by subscription or event, dead
//! letters. Every index read runs on the blocking pool (it may touch the disk).

use axum::Json;
use axum::extract::{RawQuery, State};
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_ops_index::{Page, Scope, Summary, Window};
use hookline_proto::v1::{Attempt, AttemptOutcome, DeadLetter, Header};
use hookline_runtime::{ApiError, JsonPath};
use serde::Serialize;

use crate::AppState;
use crate::query::{MAX_ID, Params, encode_cursor, path_id};

/// Runs an index read on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, hookline_ops_index::IndexError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "operations index read");
            Err(ApiError::unavailable(
                "the operations index could not be read",
            ))
        }
        Err(_) => Err(ApiError::unavailable(
            "the operations index read was interrupted",
        )),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryOut {
    delivery_id: String,
    tenant: String,
    subscription_id: String,
    event_id: String,
    event_type: String,
    state: &'static str,
    attempts: u32,
    last_status: Option<u32>,
    last_error_class: Option<String>,
    last_attempt_at: Option<String>,
    next_attempt_at: Option<String>,
    created_at: String,
    dead_lettered_at: Option<String>,
    replay_id: Option<String>,
}

fn some_time(ms: i64) -> Option<String> {
    (ms > 0).then(|| rfc3339_millis(ms))
}

fn some_text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

pub fn delivery_out(id: &str, s: &Summary, in_memory_max_ms: i64) -> DeliveryOut {
    let state = s.state(now_ms(), in_memory_max_ms);
    let next = matches!(
        state,
        hookline_ops_index::State::Retrying
            | hookline_ops_index::State::Parked
            | hookline_ops_index::State::Delivering
    );
    DeliveryOut {
        delivery_id: id.to_owned(),
        tenant: s.tenant.clone(),
        subscription_id: s.subscription_id.clone(),
        event_id: s.event_id.clone(),
        event_type: s.event_type.clone(),
        state: state.as_str(),
        attempts: s.attempts,
        last_status: (s.last_status != 0).then_some(s.last_status),
        last_error_class: some_text(&s.last_error_class),
        last_attempt_at: some_time(s.last_attempt_ms),
        next_attempt_at: if next {
            some_time(s.next_attempt_at_ms)
        } else {
            None
        },
        created_at: rfc3339_millis(s.created_ms),
        dead_lettered_at: some_time(s.dead_lettered_ms),
        replay_id: some_text(&s.replay_id),
    }
}

#[derive(Serialize)]
pub struct HeaderOut {
    name: String,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptOut {
    delivery_id: String,
    tenant: String,
    subscription_id: String,
    event_id: String,
    event_type: String,
    attempt: u32,
    started_at: String,
    duration_ms: u32,
    status: Option<u32>,
    outcome: &'static str,
    error_class: Option<String>,
    error: Option<String>,
    endpoint_url: String,
    request_headers: Vec<HeaderOut>,
    response_headers: Vec<HeaderOut>,
    response_body: String,
    next_attempt_at: Option<String>,
    replay_id: Option<String>,
}

fn headers(list: &[Header]) -> Vec<HeaderOut> {
    list.iter()
        .map(|h| HeaderOut {
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect()
}

pub fn attempt_out(a: &Attempt) -> AttemptOut {
    AttemptOut {
        delivery_id: a.delivery_id.clone(),
        tenant: a.tenant.clone(),
        subscription_id: a.subscription_id.clone(),
        event_id: a.event_id.clone(),
        event_type: a.event_type.clone(),
        attempt: a.attempt,
        started_at: rfc3339_millis(a.started_at_ms),
        duration_ms: a.duration_ms,
        status: (a.status_code != 0).then_some(a.status_code),
        outcome: match AttemptOutcome::try_from(a.outcome) {
            Ok(AttemptOutcome::Succeeded) => "succeeded",
            Ok(AttemptOutcome::Retryable) => "retryable",
            _ => "failed",
        },
        error_class: some_text(&a.error_class),
        error: some_text(&a.error),
        endpoint_url: a.endpoint_url.clone(),
        request_headers: headers(&a.request_headers),
        response_headers: headers(&a.response_headers),
        response_body: String::from_utf8_lossy(&a.response_body).into_owned(),
        next_attempt_at: some_time(a.next_attempt_at_ms),
        replay_id: some_text(&a.replay_id),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterOut {
    delivery_id: String,
    tenant: String,
    subscription_id: String,
    event_id: String,
    event_type: String,
    reason: String,
    attempts: u32,
    last_status: Option<u32>,
    last_error: Option<String>,
    dead_lettered_at: String,
    last_attempt: Option<AttemptOut>,
}

fn dead_letter_out(d: &DeadLetter) -> DeadLetterOut {
    let job = d.job.clone().unwrap_or_default();
    let event = job.event.clone().unwrap_or_default();
    DeadLetterOut {
        delivery_id: job.delivery_id,
        tenant: job.tenant,
        subscription_id: job.subscription_id,
        event_id: event.id,
        event_type: event.r#type,
        reason: d.reason.clone(),
        attempts: job.attempt,
        last_status: d
            .last_attempt
            .as_ref()
            .map(|a| a.status_code)
            .filter(|s| *s != 0),
        last_error: d.last_attempt.as_ref().and_then(|a| some_text(&a.error)),
        dead_lettered_at: rfc3339_millis(d.dead_lettered_at_ms),
        last_attempt: d.last_attempt.as_ref().map(attempt_out),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn list<T, U>(page: Page<T>, f: impl Fn(&T) -> U) -> List<U> {
    List {
        items: page.items.iter().map(f).collect(),
        next_cursor: page.next.as_ref().map(encode_cursor),
    }
}

/// The delivery's summary, if the caller may see it (else 404, as if it did not exist).
pub async fn visible_delivery(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<Summary, ApiError> {
    path_id("deliveryId", id)?;
    let store = state.index.store().clone();
    let key = id.to_owned();
    blocking(move || store.delivery(&key))
        .await?
        .filter(|s| who.can_see(&s.tenant))
        .ok_or_else(|| ApiError::not_found("delivery"))
}

pub async fn get_delivery(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(id): JsonPath<String>,
) -> Result<Json<DeliveryOut>, ApiError> {
    who.require(Role::Viewer)?;
    let s = visible_delivery(&state, &who, &id).await?;
    Ok(Json(delivery_out(&id, &s, state.in_memory_max_ms)))
}

pub async fn delivery_attempts(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(id): JsonPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<List<AttemptOut>>, ApiError> {
    who.require(Role::Viewer)?;
    let p = Params::parse(raw.as_deref(), &["limit", "cursor"])?;
    let window = Window {
        since_ms: None,
        until_ms: None,
        cursor: p.cursor()?,
        limit: p.limit()?,
        oldest_first: true,
    };
    visible_delivery(&state, &who, &id).await?;
    let store = state.index.store().clone();
    let page =
        blocking(move || store.attempts(&Scope::Delivery(id), &window, |a| who.can_see(&a.tenant)))
            .await?;
    Ok(Json(list(page, attempt_out)))
}

pub async fn deliveries(
    State(state): State<AppState>,
    who: Principal,
    RawQuery(raw): RawQuery,
) -> Result<Json<List<DeliveryOut>>, ApiError> {
    who.require(Role::Viewer)?;
    let p = Params::parse(
        raw.as_deref(),
        &[
            "subscriptionId",
            "state",
            "since",
            "until",
            "limit",
            "cursor",
        ],
    )?;
    let sub = p
        .text("subscriptionId", MAX_ID)?
        .ok_or_else(|| ApiError::invalid("subscriptionId", "`subscriptionId` is required"))?;
    let wanted = p.choice(
        "state",
        &[
            "pending",
            "delivering",
            "retrying",
            "parked",
            "succeeded",
            "dead_lettered",
        ],
    )?;
    let (since, until) = p.window()?;
    let limit = p.limit()?;
    let before = crate::query::delivery_cursor(p.get("cursor"))?;
    let store = state.index.store().clone();
    let page = blocking(move || {
        store.deliveries_newest_first(
            &sub,
            since.unwrap_or(0),
            until.unwrap_or(i64::MAX),
            before.as_deref(),
            limit,
        )
    })
    .await?;
    let items = page
        .items
        .iter()
        .filter(|(_, s)| who.can_see(&s.tenant))
        .map(|(id, s)| delivery_out(id, s, state.in_memory_max_ms))
        .filter(|d| wanted.is_none_or(|w| d.state == w))
        .collect();
    Ok(Json(List {
        items,
        next_cursor: page.next.map(|n| hookline_runtime::cursor::encode(&n)),
    }))
}

pub async fn attempts(
    State(state): State<AppState>,
    who: Principal,
    RawQuery(raw): RawQuery,
) -> Result<Json<List<AttemptOut>>, ApiError> {
    who.require(Role::Viewer)?;
    let p = Params::parse(
        raw.as_deref(),
        &[
            "subscriptionId",
            "eventId",
            "outcome",
            "since",
            "until",
            "limit",
            "cursor",
        ],
    )?;
    let sub = p.text("subscriptionId", MAX_ID)?;
    let event = p.text("eventId", MAX_ID)?;
    let outcome = p.choice("outcome", &["succeeded", "failed"])?;
    let window = p.newest_first()?;
    let scope = match (&sub, &event) {
        (Some(s), _) => Scope::Subscription(s.clone()),
        (None, Some(e)) => Scope::Event(e.clone()),
        (None, None) if who.role == Role::Admin => Scope::All,
        (None, None) => Scope::Tenant(who.tenant.clone()),
    };
    let store = state.index.store().clone();
    let page = blocking(move || {
        store.attempts(&scope, &window, |a| {
            let succeeded = a.outcome == AttemptOutcome::Succeeded as i32;
            who.can_see(&a.tenant)
                && event.as_ref().is_none_or(|e| *e == a.event_id)
                && match outcome {
                    Some("succeeded") => succeeded,
                    Some(_) => !succeeded,
                    None => true,
                }
        })
    })
    .await?;
    Ok(Json(list(page, attempt_out)))
}

pub async fn dead_letters(
    State(state): State<AppState>,
    who: Principal,
    RawQuery(raw): RawQuery,
) -> Result<Json<List<DeadLetterOut>>, ApiError> {
    who.require(Role::Viewer)?;
    let p = Params::parse(
        raw.as_deref(),
        &[
            "subscriptionId",
            "eventType",
            "reason",
            "since",
            "until",
            "limit",
            "cursor",
        ],
    )?;
    let sub = p.text("subscriptionId", MAX_ID)?;
    let event_type = p.text("eventType", MAX_ID)?;
    let reason = p.text("reason", 1024)?.map(|r| r.to_lowercase());
    let window = p.newest_first()?;
    let scope = match &sub {
        Some(s) => Scope::Subscription(s.clone()),
        None if who.role == Role::Admin => Scope::All,
        None => Scope::Tenant(who.tenant.clone()),
    };
    let store = state.index.store().clone();
    let page = blocking(move || {
        store.dead_letters(&scope, &window, |d| {
            let Some(job) = &d.job else { return false };
            who.can_see(&job.tenant)
                && event_type
                    .as_ref()
                    .is_none_or(|t| job.event.as_ref().is_some_and(|e| e.r#type == *t))
                && reason
                    .as_ref()
                    .is_none_or(|r| d.reason.to_lowercase().contains(r.as_str()))
        })
    })
    .await?;
    Ok(Json(list(page, dead_letter_out)))
}

/// The latest dead letter of a delivery the caller may see.
pub async fn latest_dead_letter(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<Option<DeadLetter>, ApiError> {
    let store = state.index.store().clone();
    let (id, who) = (id.to_owned(), who.clone());
    let window = Window {
        since_ms: None,
        until_ms: None,
        cursor: None,
        limit: 1,
        oldest_first: false,
    };
    let page = blocking(move || {
        store.dead_letters(&Scope::Delivery(id), &window, |d| {
            d.job.as_ref().is_some_and(|j| who.can_see(&j.tenant))
        })
    })
    .await?;
    Ok(page.items.into_iter().next())
}

pub async fn dead_letter(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(id): JsonPath<String>,
) -> Result<Json<DeadLetterOut>, ApiError> {
    who.require(Role::Viewer)?;
    path_id("deliveryId", &id)?;
    latest_dead_letter(&state, &who, &id)
        .await?
        .map(|d| Json(dead_letter_out(&d)))
        .ok_or_else(|| ApiError::not_found("dead letter"))
}
