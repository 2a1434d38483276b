//! Svix applications under `/api/v1/app`: a tenant's record on the compacted `applications`
//! topic, keyed by its id (`app_…`). A path's `{app_id}` is the id or the `uid`; a `uid` is
//! unique per tenant, decided by a claim on the claims topic as names are. Deleting an
//! application deletes its endpoints first.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_proto::v1::{Application, Dialect};
use hookline_runtime::{ApiError, JsonBody, JsonPath};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ListQuery, ListResponse, check_id, new_id, page};
use crate::AppState;
use crate::claims::{self, Kind};
use crate::input::{Int, METADATA_MAX, check_name, present};

/// Highest `throttleRate` (Svix's is a `uint16`).
pub const THROTTLE_MAX: u32 = 65_535;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationIn {
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    /// The tenant's own identifier, unique per tenant; usable in paths instead of the id.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[a-zA-Z0-9\-_.]+$")]
    pub uid: Option<String>,
    /// Messages per second to the application's endpoints (`rateLimit` in older SDKs).
    /// Stored and shown; not enforced yet (an endpoint's own `throttleRate` is).
    #[serde(alias = "rateLimit")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 65535)]
    pub throttle_rate: Option<Int>,
    #[schema(value_type = Option<HashMap<String, String>>)]
    pub metadata: Option<HashMap<String, String>>,
}

/// Only the fields present change; `null` clears `uid` and `throttleRate`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationPatch {
    #[schema(min_length = 1, max_length = 255)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 256)]
    pub uid: Option<Option<String>>,
    #[serde(default, alias = "rateLimit", deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 65535)]
    pub throttle_rate: Option<Option<Int>>,
    #[schema(value_type = Option<HashMap<String, String>>)]
    pub metadata: Option<HashMap<String, String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationOut {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_rate: Option<u32>,
    /// `throttleRate` under its older name, for older SDKs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    pub metadata: BTreeMap<String, String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl ApplicationOut {
    pub fn of(a: &Application) -> Self {
        Self {
            id: a.id.clone(),
            uid: a.uid.clone(),
            name: a.name.clone(),
            throttle_rate: a.throttle_rate,
            rate_limit: a.throttle_rate,
            metadata: a.metadata.clone().into_iter().collect(),
            created_at: rfc3339_millis(a.created_at_ms),
            updated_at: rfc3339_millis(a.updated_at_ms),
        }
    }
}

/// The application `id_or_uid` of `who`'s tenant (an admin's: any tenant's, by id); 404.
pub fn find(state: &AppState, who: &Principal, id_or_uid: &str) -> Result<Application, ApiError> {
    state
        .store
        .applications
        .read(|t| {
            t.get(id_or_uid)
                .filter(|a| who.can_see(&a.tenant))
                .or_else(|| {
                    t.values()
                        .find(|a| a.tenant == who.tenant && a.uid.as_deref() == Some(id_or_uid))
                })
                .cloned()
        })
        .ok_or_else(|| ApiError::not_found("application"))
}

fn by_uid(state: &AppState, tenant: &str, uid: &str) -> Option<Application> {
    state.store.applications.read(|t| {
        t.values()
            .find(|a| a.tenant == tenant && a.uid.as_deref() == Some(uid))
            .cloned()
    })
}

fn throttle(v: Option<Int>) -> Result<Option<u32>, ApiError> {
    match v {
        Some(Int(n)) if !(1..=THROTTLE_MAX).contains(&n) => Err(ApiError::invalid(
            "throttleRate",
            format!("`throttleRate` must be 1-{THROTTLE_MAX}, got {n}"),
        )),
        v => Ok(v.map(|n| n.0)),
    }
}

fn validate(a: &Application) -> Result<(), ApiError> {
    check_name("name", &a.name)?;
    if let Some(uid) = &a.uid {
        check_id("uid", uid)?;
    }
    let metadata = serde_json::to_string(&a.metadata).unwrap_or_default();
    if metadata.chars().count() > METADATA_MAX {
        return Err(ApiError::invalid(
            "metadata",
            format!("`metadata` must be at most {METADATA_MAX} characters as JSON"),
        ));
    }
    Ok(())
}

/// Every check an [`ApplicationIn`] gets, before anything is looked up.
pub fn check_in(body: &ApplicationIn) -> Result<(), ApiError> {
    throttle(body.throttle_rate)?;
    validate(&Application {
        uid: body.uid.clone(),
        name: body.name.clone(),
        metadata: body.metadata.clone().unwrap_or_default(),
        ..Application::default()
    })
}

/// Creates the application `body` of `who`'s tenant (a `uid` taken: 409). Also used by a
/// message create that names an application that does not exist yet.
pub async fn create_app(
    state: &AppState,
    who: &Principal,
    body: ApplicationIn,
) -> Result<Application, ApiError> {
    who.require(Role::Editor)?;
    let now = now_ms();
    let app = Application {
        id: new_id("app_"),
        tenant: who.tenant.clone(),
        uid: body.uid,
        name: body.name,
        throttle_rate: throttle(body.throttle_rate)?,
        metadata: body.metadata.unwrap_or_default(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    validate(&app)?;
    let store = &state.store;
    store.sync().await;
    let held = match &app.uid {
        Some(uid) => {
            if by_uid(state, &app.tenant, uid).is_some() {
                return Err(uid_taken(uid));
            }
            Some(claims::claim(store, Kind::Application, &app.tenant, uid, &app.id, "uid").await?)
        }
        None => None,
    };
    if let Err(e) = store.put_application(&app).await {
        if let Some(h) = held {
            claims::abandon(store, h).await;
        }
        return Err(e);
    }
    tracing::info!(tenant = %app.tenant, id = %app.id, "application created");
    Ok(app)
}

fn uid_taken(uid: &str) -> ApiError {
    ApiError::conflict(
        "uid",
        format!("an application with uid {uid:?} already exists"),
    )
}

#[utoipa::path(post, path = "/api/v1/app", tag = "svix-application",
    params(("get_if_exists" = Option<bool>, Query,
        description = "Answer with the application of this `uid` when it exists (200)")),
    request_body = ApplicationIn,
    responses((status = 201, body = ApplicationOut), (status = 200, body = ApplicationOut),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 409, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody<ApplicationIn>,
) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query.as_deref())?;
    // The body is checked even when an existing application is the answer.
    check_in(&body)?;
    if q.flag("get_if_exists", false)?
        && let Some(uid) = &body.uid
    {
        state.store.sync().await;
        if let Some(app) = by_uid(&state, &who.tenant, uid) {
            return Ok((StatusCode::OK, Json(ApplicationOut::of(&app))).into_response());
        }
    }
    let app = create_app(&state, &who, body).await?;
    Ok((StatusCode::CREATED, Json(ApplicationOut::of(&app))).into_response())
}

#[utoipa::path(get, path = "/api/v1/app", tag = "svix-application",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 250),
        ("iterator" = Option<String>, Query), ("order" = Option<String>, Query)),
    responses((status = 200, body = ListResponse<ApplicationOut>),
        (status = 401, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse<ApplicationOut>>, ApiError> {
    let q = ListQuery::parse(query.as_deref())?;
    let mut apps: Vec<(String, ApplicationOut)> = state.store.applications.read(|t| {
        t.values()
            .filter(|a| a.tenant == who.tenant)
            .map(|a| (a.id.clone(), ApplicationOut::of(a)))
            .collect()
    });
    apps.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Json(page(apps, &q, q.descending.unwrap_or(false))))
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}", tag = "svix-application",
    params(("app_id" = String, Path, description = "Id or uid")),
    responses((status = 200, body = ApplicationOut), (status = 401, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(app_id): JsonPath<String>,
) -> Result<Json<ApplicationOut>, ApiError> {
    find(&state, &who, &app_id).map(|a| Json(ApplicationOut::of(&a)))
}

/// Writes `app` (changed from `old`), moving its uid claim when the uid changed.
async fn write_changed(
    state: &AppState,
    old: &Application,
    mut app: Application,
) -> Result<Application, ApiError> {
    validate(&app)?;
    let store = &state.store;
    if app.uid != old.uid {
        if let Some(uid) = &app.uid {
            if by_uid(state, &app.tenant, uid).is_some() {
                return Err(uid_taken(uid));
            }
            claims::claim(store, Kind::Application, &app.tenant, uid, &app.id, "uid").await?;
        }
        if let Some(uid) = &old.uid {
            claims::release(store, Kind::Application, &old.tenant, uid).await?;
        }
    }
    app.updated_at_ms = now_ms();
    store.put_application(&app).await?;
    Ok(app)
}

#[utoipa::path(put, path = "/api/v1/app/{app_id}", tag = "svix-application",
    params(("app_id" = String, Path, description = "Id or uid; created with this uid when absent")),
    request_body = ApplicationIn,
    responses((status = 200, body = ApplicationOut), (status = 201, body = ApplicationOut),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 409, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(app_id): JsonPath<String>,
    JsonBody(mut body): JsonBody<ApplicationIn>,
) -> Result<Response, ApiError> {
    let store = &state.store;
    let change = store.change(&who).await?;
    let Ok(old) = find(&state, &who, &app_id) else {
        drop(change);
        check_id("path", &app_id)?;
        body.uid.get_or_insert(app_id);
        let app = create_app(&state, &who, body).await?;
        return Ok((StatusCode::CREATED, Json(ApplicationOut::of(&app))).into_response());
    };
    let mut app = old.clone();
    app.name = body.name;
    app.uid = body.uid;
    app.throttle_rate = throttle(body.throttle_rate)?;
    app.metadata = body.metadata.unwrap_or_default();
    let app = write_changed(&state, &old, app).await?;
    Ok((StatusCode::OK, Json(ApplicationOut::of(&app))).into_response())
}

#[utoipa::path(patch, path = "/api/v1/app/{app_id}", tag = "svix-application",
    params(("app_id" = String, Path, description = "Id or uid")),
    request_body = ApplicationPatch,
    responses((status = 200, body = ApplicationOut), (status = 401, body = super::HttpErrorOut),
        (status = 403, body = super::HttpErrorOut), (status = 404, body = super::HttpErrorOut),
        (status = 409, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn patch(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(app_id): JsonPath<String>,
    JsonBody(body): JsonBody<ApplicationPatch>,
) -> Result<Json<ApplicationOut>, ApiError> {
    let _change = state.store.change(&who).await?;
    let old = find(&state, &who, &app_id)?;
    let mut app = old.clone();
    if let Some(v) = body.name {
        app.name = v;
    }
    if let Some(v) = body.uid {
        app.uid = v;
    }
    if let Some(v) = body.throttle_rate {
        app.throttle_rate = throttle(v)?;
    }
    if let Some(v) = body.metadata {
        app.metadata = v;
    }
    let app = write_changed(&state, &old, app).await?;
    Ok(Json(ApplicationOut::of(&app)))
}

#[utoipa::path(delete, path = "/api/v1/app/{app_id}", tag = "svix-application",
    params(("app_id" = String, Path, description = "Id or uid")),
    responses((status = 204, description = "Deleted, with its endpoints"),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(app_id): JsonPath<String>,
) -> Result<Response, ApiError> {
    who.require(Role::Editor)?;
    let store = &state.store;
    store.sync().await;
    let app = find(&state, &who, &app_id)?;
    // Its endpoints first: an endpoint never outlives its application.
    let endpoints: Vec<String> = store.subscriptions.read(|t| {
        t.values()
            .filter(|s| s.dialect() == Dialect::Svix && s.application.as_deref() == Some(&app.id))
            .map(|s| s.id.clone())
            .collect()
    });
    for id in endpoints {
        super::endpoints::remove(&state, &who, &id).await?;
    }
    let _change = store.change(&who).await?;
    if let Some(uid) = &app.uid {
        claims::release(store, Kind::Application, &app.tenant, uid).await?;
    }
    store.delete_application(&app.id).await?;
    tracing::info!(tenant = %app.tenant, id = %app.id, "application deleted");
    Ok(super::no_content())
}
