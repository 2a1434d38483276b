//! Svix event types under `/api/v1/event-type`: the catalog (`catalog`), one for every
//! tenant. Reading is for every token; creating, replacing, patching and deleting are for
//! admins, as registering a type is (the catalog is the platform's, not a tenant's). `PATCH`
//! changes only the fields given. `DELETE` archives a type (subscriptions that select it keep
//! it; new ones cannot choose it), or removes it with `expunge=true`. The built-in types (the
//! seeds' and `hookline.*`) cannot change.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_proto::v1::RegisteredEventType;
use hookline_runtime::{ApiError, JsonBody, JsonPath};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{ListQuery, ListResponse, page};
use crate::AppState;
use crate::catalog;
use crate::input::{DESCRIPTION_MAX, check_len, present};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeIn {
    /// Dot-separated words of letters, digits, `_` or `-`.
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    #[schema(max_length = 1024)]
    pub description: String,
    pub archived: Option<bool>,
    pub deprecated: Option<bool>,
    /// JSON schemas by version (stored and shown; messages are not checked against them yet).
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<BTreeMap<String, Value>>,
    pub feature_flag: Option<String>,
}

/// A replacement (`PUT`): as [`EventTypeIn`] without the name (the path's).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeUpdate {
    #[schema(max_length = 1024)]
    pub description: String,
    pub archived: Option<bool>,
    pub deprecated: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<BTreeMap<String, Value>>,
    pub feature_flag: Option<String>,
}

/// A partial change (`PATCH`): only the fields present change; `null` clears `schemas` and
/// `featureFlag`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypePatch {
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    pub archived: Option<bool>,
    pub deprecated: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<Option<BTreeMap<String, Value>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub feature_flag: Option<Option<String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeOut {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_flag: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl EventTypeOut {
    fn of(t: &RegisteredEventType) -> Self {
        Self {
            name: t.name.clone(),
            description: t.description.clone().unwrap_or_default(),
            archived: t.archived,
            deprecated: t.deprecated,
            schemas: serde_json::from_str(&t.schemas_json).ok(),
            feature_flag: t.feature_flag.clone(),
            created_at: rfc3339_millis(t.registered_at_ms),
            updated_at: rfc3339_millis(t.updated_at_ms.max(t.registered_at_ms)),
        }
    }

    fn built_in(name: &str) -> Self {
        Self::of(&RegisteredEventType {
            name: name.to_owned(),
            description: Some("Built into Hookline".to_owned()),
            ..RegisteredEventType::default()
        })
    }
}

fn is_built_in(name: &str) -> bool {
    catalog::built_in().any(|t| t == name)
}

/// The schemas of the registered type `name` (version → JSON schema), if it has any.
pub fn schemas_of(state: &AppState, name: &str) -> Option<Value> {
    state.store.event_types.read(|t| {
        t.get(name)
            .and_then(|e| serde_json::from_str(&e.schemas_json).ok())
    })
}

/// Every type: built-in ones, then the registered ones (archived only when asked for).
fn all(state: &AppState, archived: bool) -> Vec<(String, EventTypeOut)> {
    let mut out: Vec<(String, EventTypeOut)> = catalog::built_in()
        .map(|t| (t.to_owned(), EventTypeOut::built_in(t)))
        .collect();
    state.store.event_types.read(|t| {
        out.extend(
            t.values()
                .filter(|e| archived || !e.archived)
                .map(|e| (e.name.clone(), EventTypeOut::of(e))),
        )
    });
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[utoipa::path(get, path = "/api/v1/event-type", tag = "svix-event-type",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 250),
        ("iterator" = Option<String>, Query), ("order" = Option<String>, Query),
        ("include_archived" = Option<bool>, Query)),
    responses((status = 200, body = ListResponse<EventTypeOut>),
        (status = 401, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn list(
    State(state): State<AppState>,
    _who: Principal,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse<EventTypeOut>>, ApiError> {
    let q = ListQuery::parse(query.as_deref())?;
    let archived = q.flag("include_archived", false)?;
    state.store.event_types.sync().await;
    Ok(Json(page(
        all(&state, archived),
        &q,
        q.descending.unwrap_or(false),
    )))
}

#[utoipa::path(get, path = "/api/v1/event-type/{event_type_name}", tag = "svix-event-type",
    params(("event_type_name" = String, Path)),
    responses((status = 200, body = EventTypeOut), (status = 401, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut)))]
pub async fn get(
    State(state): State<AppState>,
    _who: Principal,
    JsonPath(name): JsonPath<String>,
) -> Result<Json<EventTypeOut>, ApiError> {
    if is_built_in(&name) {
        return Ok(Json(EventTypeOut::built_in(&name)));
    }
    state
        .store
        .event_types
        .get(&name)
        .map(|t| Json(EventTypeOut::of(&t)))
        .ok_or_else(|| ApiError::not_found("event type"))
}

fn check(name: &str, description: &str) -> Result<(), ApiError> {
    hookline_events::validate_event_type(name).map_err(|_| {
        ApiError::invalid(
            "name",
            format!("{name:?} is not dot-separated words of letters, digits, `_` or `-`"),
        )
    })?;
    check_len("description", Some(description), DESCRIPTION_MAX)
}

/// Stores `body` as type `name` (a new registration, or over `old`).
async fn put(
    state: &AppState,
    name: String,
    old: Option<RegisteredEventType>,
    body: EventTypeUpdate,
) -> Result<RegisteredEventType, ApiError> {
    check(&name, &body.description)?;
    super::schemas::check(body.schemas.as_ref())?;
    let now = now_ms();
    let t = RegisteredEventType {
        name,
        description: Some(body.description),
        registered_at_ms: old.as_ref().map_or(now, |o| o.registered_at_ms),
        archived: body.archived.unwrap_or(false),
        deprecated: body.deprecated.unwrap_or(false),
        schemas_json: body
            .schemas
            .map(|s| serde_json::to_string(&s).expect("JSON values serialise"))
            .unwrap_or_default(),
        updated_at_ms: now,
        feature_flag: body.feature_flag,
    };
    state.store.put_event_type(&t).await?;
    tracing::info!(event_type = %t.name, "event type stored (Svix face)");
    Ok(t)
}

fn built_in_conflict(name: &str) -> ApiError {
    ApiError::conflict(
        "name",
        format!("{name:?} is built into Hookline and cannot change"),
    )
}

#[utoipa::path(post, path = "/api/v1/event-type", tag = "svix-event-type",
    request_body = EventTypeIn,
    responses((status = 201, body = EventTypeOut), (status = 401, body = super::HttpErrorOut),
        (status = 403, body = super::HttpErrorOut, description = "Not an admin token"),
        (status = 409, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<EventTypeIn>,
) -> Result<Response, ApiError> {
    who.require(Role::Admin)?;
    let _change = state.store.change(&who).await?;
    if is_built_in(&body.name) {
        return Err(built_in_conflict(&body.name));
    }
    let old = state.store.event_types.get(&body.name);
    // An archived type is brought back by creating it again, as Svix does.
    if old.as_ref().is_some_and(|o| !o.archived) {
        return Err(ApiError::conflict(
            "name",
            format!("event type {:?} already exists", body.name),
        ));
    }
    let update = EventTypeUpdate {
        description: body.description,
        archived: body.archived,
        deprecated: body.deprecated,
        schemas: body.schemas,
        feature_flag: body.feature_flag,
    };
    let t = put(&state, body.name, old, update).await?;
    Ok((StatusCode::CREATED, Json(EventTypeOut::of(&t))).into_response())
}

#[utoipa::path(put, path = "/api/v1/event-type/{event_type_name}", tag = "svix-event-type",
    params(("event_type_name" = String, Path)), request_body = EventTypeUpdate,
    responses((status = 200, body = EventTypeOut), (status = 201, body = EventTypeOut),
        (status = 401, body = super::HttpErrorOut),
        (status = 403, body = super::HttpErrorOut, description = "Not an admin token"),
        (status = 409, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(name): JsonPath<String>,
    JsonBody(body): JsonBody<EventTypeUpdate>,
) -> Result<Response, ApiError> {
    who.require(Role::Admin)?;
    let _change = state.store.change(&who).await?;
    if is_built_in(&name) {
        return Err(built_in_conflict(&name));
    }
    let old = state.store.event_types.get(&name);
    let status = if old.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let t = put(&state, name, old, body).await?;
    Ok((status, Json(EventTypeOut::of(&t))).into_response())
}

#[utoipa::path(patch, path = "/api/v1/event-type/{event_type_name}", tag = "svix-event-type",
    params(("event_type_name" = String, Path)), request_body = EventTypePatch,
    responses((status = 200, body = EventTypeOut), (status = 401, body = super::HttpErrorOut),
        (status = 403, body = super::HttpErrorOut, description = "Not an admin token"),
        (status = 404, body = super::HttpErrorOut), (status = 409, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn patch(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(name): JsonPath<String>,
    JsonBody(body): JsonBody<EventTypePatch>,
) -> Result<Json<EventTypeOut>, ApiError> {
    who.require(Role::Admin)?;
    let _change = state.store.change(&who).await?;
    if is_built_in(&name) {
        return Err(built_in_conflict(&name));
    }
    let old = state
        .store
        .event_types
        .get(&name)
        .ok_or_else(|| ApiError::not_found("event type"))?;
    let schemas = match body.schemas {
        Some(v) => v,
        None => serde_json::from_str(&old.schemas_json).ok(),
    };
    let update = EventTypeUpdate {
        description: body
            .description
            .unwrap_or_else(|| old.description.clone().unwrap_or_default()),
        archived: Some(body.archived.unwrap_or(old.archived)),
        deprecated: Some(body.deprecated.unwrap_or(old.deprecated)),
        schemas,
        feature_flag: body
            .feature_flag
            .unwrap_or_else(|| old.feature_flag.clone()),
    };
    let t = put(&state, name, Some(old), update).await?;
    Ok(Json(EventTypeOut::of(&t)))
}

#[utoipa::path(delete, path = "/api/v1/event-type/{event_type_name}", tag = "svix-event-type",
    params(("event_type_name" = String, Path),
        ("expunge" = Option<bool>, Query, description = "Remove it instead of archiving it")),
    responses((status = 204, description = "Archived (or removed)"),
        (status = 401, body = super::HttpErrorOut),
        (status = 403, body = super::HttpErrorOut, description = "Not an admin token"),
        (status = 404, body = super::HttpErrorOut), (status = 409, body = super::HttpErrorOut)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(name): JsonPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Role::Admin)?;
    let expunge = ListQuery::parse(query.as_deref())?.flag("expunge", false)?;
    let _change = state.store.change(&who).await?;
    if is_built_in(&name) {
        return Err(built_in_conflict(&name));
    }
    let Some(mut t) = state.store.event_types.get(&name) else {
        return Err(ApiError::not_found("event type"));
    };
    if expunge {
        state.store.delete_event_type(&name).await?;
    } else {
        t.archived = true;
        t.updated_at_ms = now_ms();
        state.store.put_event_type(&t).await?;
    }
    Ok(super::no_content())
}
