//! What became of messages, and sending them again, under the Svix face: attempts, a
//! message's state per endpoint, recover, resend and send-example.
//!
//! Attempts and delivery states live in the operations service's index, and recovers and
//! resends are its replay runs: this module asks the operations API (`operations_url`) with
//! the caller's own `Authorization` header, so that API's tenant checks apply unchanged, and
//! reshapes its answers into Svix's. An endpoint is a subscription and a message an event, so
//! a message's delivery to an endpoint is the delivery the router made for that pair
//! (`hookline_events::delivery_id`).
//!
//! - An attempt's id (`atmpt_…`) is derived from the attempt record (its delivery, replay
//!   run, number and start), so it is stable without being stored.
//! - `status` of an attempt: `0` (success) or `2` (fail); `triggerType` `1` (manual) for an
//!   attempt of a replay run (recover, resend), else `0`.
//! - A message's state per endpoint: `succeeded` → `0`, `dead_lettered` → `2`,
//!   `delivering` → `3`, any other (pending, retrying, parked) → `1`.
//! - Recover is a bulk replay of the endpoint's dead-lettered deliveries in the window, in
//!   the order of the log; resend replays one delivery. Both are runs the operations API
//!   records, so a repeated `idempotency-key` starts nothing new.

use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::{now_ms, parse_rfc3339, rfc3339_millis};
use hookline_proto::v1::{Event, Subscription};
use hookline_runtime::{ApiError, JsonBody, JsonPath};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use hookline_proto::v1::Application;

use super::apps;
use super::endpoints;
use super::messages::MessageOut;
use super::{ListQuery, ListResponse, new_id};
use crate::AppState;

/// The operations API's largest page.
const OPS_LIMIT: usize = 100;
/// Pages of a message's attempts read to find one attempt.
const GET_PAGES: usize = 20;
/// How long a call to the operations API may take.
const OPS_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `exampleIndex` of send-example.
const EXAMPLE_INDEX_MAX: usize = 1000;
/// Longest message id or `eventId` the operations API looks up.
const MSG_ID_MAX: usize = 255;
/// Namespace of attempt ids.
const ATTEMPT_NS: uuid::Uuid = uuid::Uuid::from_u128(0x2d7c_41a6_93e5_4f0e_8b1a_5c6d_7e8f_9012);

/// A client of the operations API.
#[derive(Clone)]
pub struct Operations {
    http: reqwest::Client,
    base: String,
}

impl Operations {
    pub fn new(config: &hookline_config::Config) -> Result<Self, hookline_runtime::Error> {
        let base = config
            .operations_url()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let http = reqwest::Client::builder()
            .timeout(OPS_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("HTTP client: {e}"))?;
        Ok(Self { http, base })
    }

    /// `GET path` as the caller; `None` for a 404.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        auth: &HeaderMap,
        path: &str,
    ) -> Result<Option<T>, ApiError> {
        let req = self.http.get(format!("{}{path}", self.base));
        match self.send(auth, req).await? {
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (_, body) => serde_json::from_slice(&body).map(Some).map_err(|e| {
                tracing::warn!(error = %e, path, "unexpected answer from the operations API");
                ApiError::unavailable("the operations API gave an unexpected answer")
            }),
        }
    }

    /// `POST path` with `body` (if any) as the caller, passing on its `idempotency-key`;
    /// `None` for a 404.
    async fn post(
        &self,
        auth: &HeaderMap,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>, ApiError> {
        let mut req = self.http.post(format!("{}{path}", self.base));
        if let Some(body) = &body {
            req = req.json(body);
        }
        if let Some(key) = auth.get("idempotency-key") {
            req = req.header("idempotency-key", key);
        }
        match self.send(auth, req).await? {
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (_, body) => Ok(Some(serde_json::from_slice(&body).unwrap_or(Value::Null))),
        }
    }

    /// Sends `req` with the caller's token; a 2xx or 404 answer's status and body, else the
    /// operations API's error as this API's.
    async fn send(
        &self,
        auth: &HeaderMap,
        mut req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        if let Some(token) = auth.get(header::AUTHORIZATION) {
            req = req.header(header::AUTHORIZATION, token);
        }
        let answer = req.send().await.map_err(|e| {
            tracing::warn!(error = %e, "operations API unreachable");
            ApiError::unavailable("the operations API cannot be reached; try again")
        })?;
        let status = StatusCode::from_u16(answer.status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = answer.bytes().await.map_err(|_| {
            ApiError::unavailable("the operations API's answer was cut off; try again")
        })?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok((status, body.to_vec()));
        }
        Err(ops_error(status, &body))
    }
}

/// The operations API's error answer as this API's (its code kept where this API has it).
fn ops_error(status: StatusCode, body: &[u8]) -> ApiError {
    #[derive(Deserialize)]
    struct Err {
        code: String,
        message: String,
        field: Option<String>,
    }
    let Ok(e) = serde_json::from_slice::<Err>(body) else {
        return ApiError::unavailable(format!("the operations API answered {status}"));
    };
    if status.is_server_error() {
        return ApiError::unavailable(e.message);
    }
    let code = match e.code.as_str() {
        "invalid_field" => "invalid_field",
        "conflict" => "conflict",
        "forbidden" => "forbidden",
        "unauthorized" => "unauthorized",
        "not_found" => "not_found",
        _ => "operations_error",
    };
    // The operations API's names of this face's parameters.
    let field = e.field.map(|f| {
        match f.as_str() {
            "cursor" => "iterator",
            "since" => "after",
            "until" => "before",
            "outcome" | "state" => "status",
            "subscriptionId" => "endpoint_id",
            "eventId" => "msg_id",
            _ => return f,
        }
        .to_owned()
    });
    ApiError {
        status,
        code,
        message: e.message,
        field,
    }
}

/// An attempt as the operations API answers it (the fields used here).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpsAttempt {
    delivery_id: String,
    subscription_id: String,
    event_id: String,
    event_type: String,
    attempt: u32,
    started_at: String,
    duration_ms: u32,
    status: Option<u32>,
    outcome: String,
    endpoint_url: String,
    response_body: String,
    replay_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpsList<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

/// A delivery as the operations API answers it (the fields used here).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpsDelivery {
    event_id: String,
    event_type: String,
    state: String,
    next_attempt_at: Option<String>,
    created_at: String,
}

/// Svix's `MessageStatus` of a `status` query parameter as the operations API's states.
fn states_of(status: Option<&str>) -> Result<&'static [&'static str], ApiError> {
    Ok(match status {
        None => &[],
        Some("0") => &["succeeded"],
        Some("1") => &["pending", "retrying", "parked"],
        Some("2") => &["dead_lettered"],
        Some("3") => &["delivering"],
        Some(_) => return Err(ApiError::invalid("status", "`status` must be 0, 1, 2 or 3")),
    })
}

/// Svix's `MessageStatus`: 0 success, 1 pending, 2 fail, 3 sending.
fn delivery_status(state: &str) -> (u8, &'static str) {
    match state {
        "succeeded" => (0, "success"),
        "dead_lettered" => (2, "fail"),
        "delivering" => (3, "sending"),
        _ => (1, "pending"),
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageAttemptOut {
    /// `atmpt_…`, stable for the attempt.
    pub id: String,
    pub msg_id: String,
    pub endpoint_id: String,
    pub url: String,
    /// The response body as received (the first `response_body_limit` bytes).
    pub response: String,
    /// 0 when no response came.
    pub response_status_code: u32,
    pub response_duration_ms: u32,
    /// 0 success, 2 fail (an attempt is recorded once it ended).
    #[schema(value_type = u8, minimum = 0, maximum = 3)]
    pub status: u8,
    /// `success` or `fail`.
    pub status_text: &'static str,
    /// 0 scheduled, 1 manual (a recover or resend).
    #[schema(value_type = u8, minimum = 0, maximum = 1)]
    pub trigger_type: u8,
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// The event type, a Hookline extension.
    pub event_type: String,
}

fn attempt_id(a: &OpsAttempt) -> String {
    let name = format!(
        "{}/{}/{}/{}",
        a.delivery_id,
        a.replay_id.as_deref().unwrap_or_default(),
        a.attempt,
        a.started_at
    );
    format!(
        "atmpt_{}",
        uuid::Uuid::new_v5(&ATTEMPT_NS, name.as_bytes()).simple()
    )
}

impl MessageAttemptOut {
    fn of(a: OpsAttempt) -> Self {
        let ok = a.outcome == "succeeded";
        Self {
            id: attempt_id(&a),
            trigger_type: u8::from(a.replay_id.is_some()),
            msg_id: a.event_id,
            endpoint_id: a.subscription_id,
            url: a.endpoint_url,
            response: a.response_body,
            response_status_code: a.status.unwrap_or(0),
            response_duration_ms: a.duration_ms,
            status: if ok { 0 } else { 2 },
            status_text: if ok { "success" } else { "fail" },
            timestamp: a.started_at,
            event_type: a.event_type,
        }
    }
}

/// `before`/`after` of a list query as the operations API's `until`/`since`.
fn window(
    q: &ListQuery,
    out: &mut url::form_urlencoded::Serializer<String>,
) -> Result<(), ApiError> {
    for (name, theirs) in [("before", "until"), ("after", "since")] {
        if let Some(t) = q.param(name) {
            let ms = parse_rfc3339(t)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .ok_or_else(|| {
                    ApiError::invalid(name, format!("`{name}` must be an RFC 3339 time"))
                })?;
            out.append_pair(theirs, &rfc3339_millis(ms));
        }
    }
    Ok(())
}

/// The filters of an attempt list the operations API does not apply itself.
struct AttemptFilter {
    status_class: Option<u32>,
    types: Option<Vec<String>>,
}

impl AttemptFilter {
    fn keeps(&self, a: &OpsAttempt) -> bool {
        let class_ok = self.status_class.is_none_or(|c| {
            let code = a.status.unwrap_or(0);
            if c == 0 {
                code == 0
            } else {
                code / 100 * 100 == c
            }
        });
        class_ok
            && self
                .types
                .as_ref()
                .is_none_or(|t| t.contains(&a.event_type))
    }
}

/// The query of an attempt list in the operations API's terms, and what is left to filter.
fn attempt_query(q: &ListQuery, scope: (&str, &str)) -> Result<(String, AttemptFilter), ApiError> {
    if q.param("channel").is_some() {
        return Err(ApiError::invalid(
            "channel",
            "channels are not supported: Hookline's endpoints take no channels",
        ));
    }
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    out.append_pair(scope.0, scope.1);
    out.append_pair("limit", &q.limit.min(OPS_LIMIT).to_string());
    if let Some(it) = &q.iterator {
        out.append_pair("cursor", it);
    }
    match q.param("status") {
        None => {}
        Some("0") => {
            out.append_pair("outcome", "succeeded");
        }
        Some("2") => {
            out.append_pair("outcome", "failed");
        }
        // An attempt is recorded once it ended: none is pending or sending; Hookline
        // cancels none (4, newer SDKs).
        Some("1" | "3" | "4") => {
            out.append_pair("outcome", "none");
        }
        Some(_) => return Err(ApiError::invalid("status", "`status` must be 0, 1, 2 or 3")),
    }
    window(q, &mut out)?;
    let status_class = match q.param("status_code_class") {
        None => None,
        Some(c) => Some(
            c.parse::<u32>()
                .ok()
                .filter(|c| [0, 100, 200, 300, 400, 500].contains(c))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "status_code_class",
                        "`status_code_class` must be 0, 100, 200, 300, 400 or 500",
                    )
                })?,
        ),
    };
    let types = q.param("event_types").map(|t| {
        t.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    });
    Ok((
        out.finish(),
        AttemptFilter {
            status_class,
            types,
        },
    ))
}

/// One page of attempts from the operations API, kept by `keep`.
async fn attempt_page(
    state: &AppState,
    auth: &HeaderMap,
    query: &str,
    keep: impl Fn(&OpsAttempt) -> bool,
) -> Result<ListResponse<MessageAttemptOut>, ApiError> {
    // `outcome=none` stands for a status no attempt has.
    if query.contains("outcome=none") {
        return Ok(ListResponse {
            data: Vec::new(),
            done: true,
            iterator: None,
            prev_iterator: None,
        });
    }
    let path = format!("/api/v1/event-deliveries/attempts?{query}");
    let list: OpsList<OpsAttempt> = state.operations.get(auth, &path).await?.unwrap_or(OpsList {
        items: Vec::new(),
        next_cursor: None,
    });
    Ok(ListResponse {
        data: list
            .items
            .into_iter()
            .filter(|a| keep(a))
            .map(MessageAttemptOut::of)
            .collect(),
        done: list.next_cursor.is_none(),
        iterator: list.next_cursor,
        prev_iterator: None,
    })
}

/// The message a path's `msg_id` names in `app` (its id, or an `eventId` of a recent
/// message): the id its attempts and deliveries carry.
fn message_id(state: &AppState, app: &Application, msg_id: &str) -> Result<String, ApiError> {
    super::check_id("path", msg_id)?;
    if msg_id.len() > MSG_ID_MAX {
        return Err(ApiError::not_found("message"));
    }
    Ok(state
        .messages
        .find(&app.tenant, &app.id, msg_id)
        .map_or_else(|| msg_id.to_owned(), |m| m.id))
}

/// The endpoints of `app`, by id.
fn endpoints_of(state: &AppState, who: &Principal, app: &Application) -> Vec<Subscription> {
    state.store.subscriptions.read(|t| {
        let mut v: Vec<Subscription> = t
            .values()
            .filter(|s| s.application.as_deref() == Some(app.id.as_str()) && who.can_see(&s.tenant))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    })
}

const LIST_PARAMS: &str = "Newest first. `iterator` is the previous page's; the operations \
    API pages at most 100 attempts, so a page may hold fewer than `limit`, and filters \
    applied here (`status_code_class`, `event_types`, the application) may make it shorter; \
    follow `iterator` until `done`.";

/// The query of an attempt list (for the document; [`ListQuery`] reads it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AttemptListQuery {
    #[param(minimum = 1, maximum = 250)]
    limit: Option<u32>,
    /// The previous page's `iterator` (empty: the first page).
    #[param(pattern = r"^([0-9a-f]{40})?$")]
    iterator: Option<String>,
    #[param(minimum = 0, maximum = 3)]
    status: Option<u8>,
    status_code_class: Option<u16>,
    /// Comma-separated.
    event_types: Option<String>,
    #[param(format = DateTime)]
    before: Option<String>,
    #[param(format = DateTime)]
    after: Option<String>,
    with_content: Option<bool>,
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}",
    tag = "svix-message-attempt",
    params(("app_id" = String, Path, description = "Id or uid"),
        ("endpoint_id" = String, Path, description = "Id or uid"), AttemptListQuery),
    responses((status = 200, description = LIST_PARAMS, body = ListResponse<MessageAttemptOut>),
        (status = 401, body = super::HttpErrorOut), (status = 404, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError),
        (status = 503, body = super::HttpErrorOut)))]
pub async fn list_by_endpoint(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((app_id, endpoint_id)): JsonPath<(String, String)>,
    RawQuery(query): RawQuery,
    auth: HeaderMap,
) -> Result<Json<ListResponse<MessageAttemptOut>>, ApiError> {
    let q = ListQuery::parse(query.as_deref())?;
    let with_content = q.flag("with_content", true)?;
    let app = apps::find(&state, &who, &app_id)?;
    let ep = endpoints::find(&state, &who, &app, &endpoint_id)?;
    let (ops_query, filter) = attempt_query(&q, ("subscriptionId", &ep.id))?;
    let mut page = attempt_page(&state, &auth, &ops_query, |a| filter.keeps(a)).await?;
    strip(&mut page.data, with_content);
    Ok(Json(page))
}

fn strip(data: &mut [MessageAttemptOut], with_content: bool) {
    if !with_content {
        for a in data {
            a.response.clear();
        }
    }
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}/attempt/msg/{msg_id}",
    tag = "svix-message-attempt",
    params(("app_id" = String, Path, description = "Id or uid"),
        ("msg_id" = String, Path), ("endpoint_id" = Option<String>, Query), AttemptListQuery),
    responses((status = 200, description = LIST_PARAMS, body = ListResponse<MessageAttemptOut>),
        (status = 401, body = super::HttpErrorOut), (status = 404, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError),
        (status = 503, body = super::HttpErrorOut)))]
pub async fn list_by_msg(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((app_id, msg_id)): JsonPath<(String, String)>,
    RawQuery(query): RawQuery,
    auth: HeaderMap,
) -> Result<Json<ListResponse<MessageAttemptOut>>, ApiError> {
    let q = ListQuery::parse(query.as_deref())?;
    let with_content = q.flag("with_content", true)?;
    let app = apps::find(&state, &who, &app_id)?;
    let msg_id = message_id(&state, &app, &msg_id)?;
    let only = match q.param("endpoint_id") {
        Some(ep) => Some(endpoints::find(&state, &who, &app, ep)?.id),
        None => None,
    };
    let eps: Vec<String> = endpoints_of(&state, &who, &app)
        .into_iter()
        .map(|s| s.id)
        .collect();
    let (ops_query, filter) = attempt_query(&q, ("eventId", &msg_id))?;
    let mut page = attempt_page(&state, &auth, &ops_query, |a| {
        filter.keeps(a)
            && eps.contains(&a.subscription_id)
            && only.as_ref().is_none_or(|o| *o == a.subscription_id)
    })
    .await?;
    strip(&mut page.data, with_content);
    Ok(Json(page))
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}",
    tag = "svix-message-attempt",
    params(("app_id" = String, Path, description = "Id or uid"), ("msg_id" = String, Path),
        ("attempt_id" = String, Path)),
    responses((status = 200, body = MessageAttemptOut),
        (status = 401, body = super::HttpErrorOut), (status = 404, body = super::HttpErrorOut),
        (status = 503, body = super::HttpErrorOut)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((app_id, msg_id, wanted)): JsonPath<(String, String, String)>,
    auth: HeaderMap,
) -> Result<Json<MessageAttemptOut>, ApiError> {
    let app = apps::find(&state, &who, &app_id)?;
    let msg_id = message_id(&state, &app, &msg_id)?;
    let eps: Vec<String> = endpoints_of(&state, &who, &app)
        .into_iter()
        .map(|s| s.id)
        .collect();
    let mut cursor: Option<String> = None;
    for _ in 0..GET_PAGES {
        let path = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query
                .append_pair("eventId", &msg_id)
                .append_pair("limit", &OPS_LIMIT.to_string());
            if let Some(c) = &cursor {
                query.append_pair("cursor", c);
            }
            format!("/api/v1/event-deliveries/attempts?{}", query.finish())
        };
        let Some(list) = state
            .operations
            .get::<OpsList<OpsAttempt>>(&auth, &path)
            .await?
        else {
            break;
        };
        if let Some(a) = list
            .items
            .into_iter()
            .find(|a| eps.contains(&a.subscription_id) && attempt_id(a) == wanted)
        {
            return Ok(Json(MessageAttemptOut::of(a)));
        }
        match list.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Err(ApiError::not_found("attempt"))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageEndpointOut {
    #[serde(flatten)]
    pub endpoint: endpoints::EndpointOut,
    /// The message's state at this endpoint: 0 success, 1 pending, 2 fail, 3 sending.
    #[schema(value_type = u8, minimum = 0, maximum = 3)]
    pub status: u8,
    pub status_text: &'static str,
    #[schema(format = DateTime)]
    pub next_attempt: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}/msg/{msg_id}/endpoint",
    tag = "svix-message-attempt",
    params(("app_id" = String, Path, description = "Id or uid"), ("msg_id" = String, Path),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 250),
        ("iterator" = Option<String>, Query)),
    responses((status = 200, description = "The endpoints the message was routed to, by \
        endpoint id, with its state at each", body = ListResponse<MessageEndpointOut>),
        (status = 401, body = super::HttpErrorOut), (status = 404, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError),
        (status = 503, body = super::HttpErrorOut)))]
pub async fn list_destinations(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((app_id, msg_id)): JsonPath<(String, String)>,
    RawQuery(query): RawQuery,
    auth: HeaderMap,
) -> Result<Json<ListResponse<MessageEndpointOut>>, ApiError> {
    let q = ListQuery::parse(query.as_deref())?;
    let app = apps::find(&state, &who, &app_id)?;
    let msg_id = message_id(&state, &app, &msg_id)?;
    let eps = endpoints_of(&state, &who, &app);
    let mut data = Vec::new();
    let mut last = None;
    let mut done = true;
    for ep in eps
        .into_iter()
        .filter(|e| q.iterator.as_ref().is_none_or(|it| e.id > *it))
    {
        if data.len() == q.limit {
            done = false;
            break;
        }
        let path = format!(
            "/api/v1/event-deliveries/deliveries/{}",
            hookline_events::delivery_id(&msg_id, &ep.id)
        );
        last = Some(ep.id.clone());
        if let Some(d) = state.operations.get::<OpsDelivery>(&auth, &path).await? {
            let (status, status_text) = delivery_status(&d.state);
            data.push(MessageEndpointOut {
                endpoint: endpoints::EndpointOut::of(&ep),
                status,
                status_text,
                next_attempt: d.next_attempt_at,
            });
        }
    }
    Ok(Json(ListResponse {
        data,
        done,
        iterator: if done { None } else { last },
        prev_iterator: None,
    }))
}

/// A message as attempted at one endpoint.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMessageOut {
    #[serde(flatten)]
    pub message: MessageOut,
    /// The message's state at this endpoint: 0 success, 1 pending, 2 fail, 3 sending.
    #[schema(value_type = u8, minimum = 0, maximum = 3)]
    pub status: u8,
    pub status_text: &'static str,
    #[schema(format = DateTime)]
    pub next_attempt: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/msg",
    tag = "svix-message-attempt",
    params(("app_id" = String, Path, description = "Id or uid"),
        ("endpoint_id" = String, Path, description = "Id or uid"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 250),
        ("iterator" = Option<String>, Query, pattern = r"^(([0-9a-f]{2}){9,263})?$"),
        ("status" = Option<u8>, Query, minimum = 0, maximum = 3),
        ("event_types" = Option<String>, Query, description = "Comma-separated"),
        ("before" = Option<String>, Query, format = DateTime),
        ("after" = Option<String>, Query, format = DateTime),
        ("with_content" = Option<bool>, Query)),
    responses((status = 200, description = "The messages routed to the endpoint, newest \
        first, with their state there; a page holds at most 100 and filters may make it \
        shorter (follow `iterator` until `done`); `payload` is `{}` for a message older than \
        the application's 1,000 most recent", body = ListResponse<EndpointMessageOut>),
        (status = 401, body = super::HttpErrorOut), (status = 404, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError),
        (status = 503, body = super::HttpErrorOut)))]
pub async fn list_attempted_messages(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((app_id, endpoint_id)): JsonPath<(String, String)>,
    RawQuery(query): RawQuery,
    auth: HeaderMap,
) -> Result<Json<ListResponse<EndpointMessageOut>>, ApiError> {
    let q = ListQuery::parse(query.as_deref())?;
    let with_content = q.flag("with_content", true)?;
    if q.param("channel").is_some() {
        return Err(ApiError::invalid(
            "channel",
            "channels are not supported: Hookline's endpoints take no channels",
        ));
    }
    if q.param("status") == Some("4") {
        // Canceled (newer SDKs): Hookline cancels no message.
        return Ok(Json(ListResponse {
            data: Vec::new(),
            done: true,
            iterator: None,
            prev_iterator: None,
        }));
    }
    let states = states_of(q.param("status"))?;
    let types: Option<Vec<&str>> = q
        .param("event_types")
        .map(|t| t.split(',').filter(|s| !s.is_empty()).collect());
    let app = apps::find(&state, &who, &app_id)?;
    let ep = endpoints::find(&state, &who, &app, &endpoint_id)?;
    let path = {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        out.append_pair("subscriptionId", &ep.id);
        out.append_pair("limit", &q.limit.min(OPS_LIMIT).to_string());
        if let Some(it) = &q.iterator {
            out.append_pair("cursor", it);
        }
        if let [one] = states {
            out.append_pair("state", one);
        }
        window(&q, &mut out)?;
        format!("/api/v1/event-deliveries/deliveries?{}", out.finish())
    };
    let list: OpsList<OpsDelivery> = state
        .operations
        .get(&auth, &path)
        .await?
        .unwrap_or(OpsList {
            items: Vec::new(),
            next_cursor: None,
        });
    state.messages.view().sync().await;
    let data = list
        .items
        .into_iter()
        .filter(|d| states.is_empty() || states.contains(&d.state.as_str()))
        .filter(|d| {
            types
                .as_ref()
                .is_none_or(|t| t.contains(&d.event_type.as_str()))
        })
        .map(|d| {
            let (status, status_text) = delivery_status(&d.state);
            let message = match state.messages.find(&app.tenant, &app.id, &d.event_id) {
                Some(m) => MessageOut::of(&m, with_content),
                None => MessageOut {
                    id: d.event_id,
                    event_type: d.event_type,
                    event_id: None,
                    payload: RawValue::from_string("{}".into()).expect("JSON"),
                    channels: None,
                    timestamp: d.created_at,
                },
            };
            EndpointMessageOut {
                message,
                status,
                status_text,
                next_attempt: d.next_attempt_at,
            }
        })
        .collect();
    Ok(Json(ListResponse {
        data,
        done: list.next_cursor.is_none(),
        iterator: list.next_cursor,
        prev_iterator: None,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverIn {
    #[schema(format = DateTime, pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")]
    pub since: String,
    #[schema(format = DateTime, pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")]
    pub until: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverOut {
    /// The replay run's id (`GET /api/v1/event-deliveries/replays/{id}` on the operations
    /// API shows its progress).
    pub id: String,
    /// `running`.
    pub status: &'static str,
    /// `endpoint.recover`.
    pub task: &'static str,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[utoipa::path(post, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/recover",
    tag = "svix-endpoint", request_body = RecoverIn,
    params(("app_id" = String, Path, description = "Id or uid"),
        ("endpoint_id" = String, Path, description = "Id or uid"),
        ("idempotency-key" = Option<String>, Header, pattern = r"^[ -~]{1,255}$")),
    responses((status = 202, description = "A replay run of the endpoint's dead-lettered \
        messages in [since, until), in the order of the log", body = RecoverOut),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut), (status = 409, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError),
        (status = 503, body = super::HttpErrorOut)))]
pub async fn recover(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((app_id, endpoint_id)): JsonPath<(String, String)>,
    auth: HeaderMap,
    JsonBody(body): JsonBody<RecoverIn>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Editor)?;
    let app = apps::find(&state, &who, &app_id)?;
    let ep = endpoints::find(&state, &who, &app, &endpoint_id)?;
    for (name, t) in [("since", Some(&body.since)), ("until", body.until.as_ref())] {
        if t.is_some_and(|t| parse_rfc3339(t).is_none()) {
            return Err(ApiError::invalid(
                name,
                format!("`{name}` must be an RFC 3339 time"),
            ));
        }
    }
    let mut run = serde_json::json!({
        "subscriptionId": ep.id,
        "since": body.since,
        "outcome": "failed",
    });
    if let Some(until) = &body.until {
        run["until"] = Value::String(until.clone());
    }
    let started = state
        .operations
        .post(&auth, "/api/v1/event-deliveries/replays", Some(run))
        .await?
        .ok_or_else(|| ApiError::not_found("endpoint"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RecoverOut {
            id: started["replayId"].as_str().unwrap_or_default().to_owned(),
            status: "running",
            task: "endpoint.recover",
            updated_at: rfc3339_millis(now_ms()),
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend",
    tag = "svix-message-attempt",
    params(("app_id" = String, Path, description = "Id or uid"), ("msg_id" = String, Path),
        ("endpoint_id" = String, Path, description = "Id or uid"),
        ("idempotency-key" = Option<String>, Header, pattern = r"^[ -~]{1,255}$")),
    responses((status = 202, description = "The message's delivery to the endpoint is \
        queued again, behind the key's earlier jobs", body = Object),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut),
        (status = 503, body = super::HttpErrorOut)))]
pub async fn resend(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((app_id, msg_id, endpoint_id)): JsonPath<(String, String, String)>,
    auth: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Editor)?;
    let app = apps::find(&state, &who, &app_id)?;
    let msg_id = message_id(&state, &app, &msg_id)?;
    let ep = endpoints::find(&state, &who, &app, &endpoint_id)?;
    let path = format!(
        "/api/v1/event-deliveries/deliveries/{}/replay",
        hookline_events::delivery_id(&msg_id, &ep.id)
    );
    // A delivery the operations API does not know answers 404 there.
    state
        .operations
        .post(&auth, &path, None)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventExampleIn {
    #[schema(min_length = 1, max_length = 256)]
    pub event_type: String,
    /// Which of the schema's `examples` to send (default: the first).
    #[schema(minimum = 0)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 1000)]
    pub example_index: Option<crate::input::Int>,
    /// A payload to send instead of the schema's example.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Map<String, Value>>,
}

/// The example payload of `event_type`: its newest schema's `examples[index]`, else a
/// payload that says what it is.
fn example_payload(state: &AppState, event_type: &str, index: usize) -> String {
    let schemas = super::event_types::schemas_of(state, event_type);
    let example = schemas.and_then(|s| {
        s.as_object()?
            .iter()
            .max_by_key(|(version, _)| version.parse::<u64>().unwrap_or(0))
            .and_then(|(_, schema)| schema.get("examples")?.get(index).cloned())
            .filter(Value::is_object)
    });
    example
        .unwrap_or_else(|| {
            serde_json::json!({
                "example": true,
                "description": format!("An example {event_type} event sent by Hookline"),
            })
        })
        .to_string()
}

#[utoipa::path(post, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/send-example",
    tag = "svix-endpoint", request_body = EventExampleIn,
    params(("app_id" = String, Path, description = "Id or uid"),
        ("endpoint_id" = String, Path, description = "Id or uid"),
        ("idempotency-key" = Option<String>, Header, pattern = r"^[ -~]{1,255}$")),
    responses((status = 200, description = "The example message, sent to this endpoint only \
        (its payload: the first of the event type's newest schema's `examples`, else one that \
        says it is an example); its attempts are listed as any message's", body = MessageOut),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut), (status = 409, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError),
        (status = 503, body = super::HttpErrorOut)))]
pub async fn send_example(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((app_id, endpoint_id)): JsonPath<(String, String)>,
    JsonBody(body): JsonBody<EventExampleIn>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Editor)?;
    let app = apps::find(&state, &who, &app_id)?;
    let ep = endpoints::find(&state, &who, &app, &endpoint_id)?;
    let index = body.example_index.map_or(0, |i| i.0 as usize);
    if index > EXAMPLE_INDEX_MAX {
        return Err(ApiError::invalid(
            "exampleIndex",
            format!("`exampleIndex` must be 0-{EXAMPLE_INDEX_MAX}"),
        ));
    }
    let (event_type, payload) = (Some(body.event_type), body.payload);
    let make = |sub: &Subscription, event_type: &str| -> Event {
        let mut event = crate::examples::example_event(sub, event_type);
        event.id = new_id("msg_");
        event.data_json = match payload {
            Some(p) => Value::Object(p).to_string(),
            None => example_payload(&state, event_type, index),
        };
        event
    };
    let sent = crate::subscriptions::send_example(
        &state,
        &who,
        &endpoints::FACE,
        &ep.id,
        event_type,
        "eventType",
        make,
    )
    .await?;
    let payload = RawValue::from_string(sent.event.data_json.clone())
        .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("JSON"));
    Ok(Json(MessageOut {
        id: sent.event.id.clone(),
        event_type: sent.event.r#type.clone(),
        event_id: None,
        payload,
        channels: None,
        timestamp: sent.event.time.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(outcome: &str, status: Option<u32>, replay: Option<&str>) -> OpsAttempt {
        OpsAttempt {
            delivery_id: "d1".into(),
            subscription_id: "ep_1".into(),
            event_id: "msg_1".into(),
            event_type: "user.signup".into(),
            attempt: 0,
            started_at: "2026-12-07T10:00:00.000Z".into(),
            duration_ms: 12,
            status,
            outcome: outcome.into(),
            endpoint_url: "http://127.0.0.1:1/hook".into(),
            response_body: "ok".into(),
            replay_id: replay.map(str::to_owned),
        }
    }

    #[test]
    fn attempts_take_svix_shape_and_a_stable_id() {
        let a = MessageAttemptOut::of(attempt("succeeded", Some(200), None));
        assert_eq!((a.status, a.status_text, a.trigger_type), (0, "success", 0));
        assert_eq!(
            (a.msg_id.as_str(), a.endpoint_id.as_str()),
            ("msg_1", "ep_1")
        );
        assert!(a.id.starts_with("atmpt_") && a.id.len() == 38, "{}", a.id);
        assert_eq!(
            a.id,
            MessageAttemptOut::of(attempt("succeeded", Some(200), None)).id
        );
        let b = MessageAttemptOut::of(attempt("retryable", Some(503), Some("r1")));
        assert_eq!((b.status, b.status_text, b.trigger_type), (2, "fail", 1));
        assert_ne!(a.id, b.id, "another run's attempt has another id");
        let c = MessageAttemptOut::of(attempt("failed", None, None));
        assert_eq!(c.response_status_code, 0);
    }

    #[test]
    fn attempt_lists_map_their_filters() {
        let q = |s: &str| ListQuery::parse(Some(s)).unwrap();
        let (ops, f) = attempt_query(
            &q("limit=250&status=2&after=2026-12-07T10:00:00Z"),
            ("subscriptionId", "ep_1"),
        )
        .unwrap();
        assert_eq!(
            ops,
            "subscriptionId=ep_1&limit=100&outcome=failed&since=2026-12-07T10%3A00%3A00.000Z"
        );
        assert!(f.keeps(&attempt("failed", None, None)));
        let (_, f) = attempt_query(
            &q("status_code_class=500&event_types=a.b"),
            ("eventId", "m"),
        )
        .unwrap();
        assert!(
            !f.keeps(&attempt("retryable", Some(503), None)),
            "another type"
        );
        let (_, f) = attempt_query(&q("status_code_class=500"), ("eventId", "m")).unwrap();
        assert!(f.keeps(&attempt("retryable", Some(503), None)));
        assert!(!f.keeps(&attempt("succeeded", Some(200), None)));
        let (_, f) = attempt_query(&q("status_code_class=0"), ("eventId", "m")).unwrap();
        assert!(f.keeps(&attempt("failed", None, None)));
        assert!(attempt_query(&q("status=7"), ("eventId", "m")).is_err());
        assert!(attempt_query(&q("status_code_class=250"), ("eventId", "m")).is_err());
        assert!(attempt_query(&q("channel=x"), ("eventId", "m")).is_err());
        assert!(attempt_query(&q("before=yesterday"), ("eventId", "m")).is_err());
    }

    #[test]
    fn delivery_states_map_to_svix_statuses() {
        assert_eq!(delivery_status("succeeded"), (0, "success"));
        assert_eq!(delivery_status("dead_lettered"), (2, "fail"));
        assert_eq!(delivery_status("delivering"), (3, "sending"));
        for s in ["pending", "retrying", "parked"] {
            assert_eq!(delivery_status(s), (1, "pending"));
        }
    }

    #[test]
    fn operations_errors_keep_their_status_and_field() {
        let e = ops_error(
            StatusCode::BAD_REQUEST,
            br#"{"code":"invalid_field","message":"`since` must be","field":"since"}"#,
        );
        assert_eq!(
            (e.status, e.code, e.field.as_deref()),
            (StatusCode::BAD_REQUEST, "invalid_field", Some("after"))
        );
        let e = ops_error(StatusCode::INTERNAL_SERVER_ERROR, b"oops");
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
