//! Fynapse secrets under `/api/v1/event-deliveries/secrets`: create, list, get, rotate, delete.
//!
//! A value (`whsec_` + base64 of 32 random bytes) is shown only in the response that created
//! it (create or rotate); on Kafka it exists only sealed. A rotation puts the new version
//! first and lets the older ones sign until now + `secret_rotation_overlap`.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_proto::v1::{Secret, SecretVersion};
use hookline_runtime::{ApiError, JsonBody};
use hookline_signing::WebhookSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::claims::{self, Kind};
use crate::input::{ErrorBody, PathParam, check_name, page_request, paginate};
use crate::store::Store;

pub const BASE: &str = "/api/v1/event-deliveries/secrets";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    /// Unique per tenant.
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionOut {
    pub created_at: String,
    /// Set once a newer version replaced this one: it signs until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretOut {
    pub name: String,
    /// The `whsec_` value: only in the response of the create or rotation that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Versions that still sign, newest first (values never shown).
    pub versions: Vec<VersionOut>,
}

impl SecretOut {
    pub fn of(s: &Secret, value: Option<String>) -> Self {
        let now = now_ms();
        Self {
            name: s.name.clone(),
            value,
            created_at: rfc3339_millis(s.created_at_ms),
            updated_at: rfc3339_millis(s.updated_at_ms),
            versions: s
                .versions
                .iter()
                .filter(|v| v.expires_at_ms.is_none_or(|t| t > now))
                .map(|v| VersionOut {
                    created_at: rfc3339_millis(v.created_at_ms),
                    expires_at: v.expires_at_ms.map(rfc3339_millis),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretList {
    pub items: Vec<SecretOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn seal(
    store: &Store,
    tenant: &str,
    name: &str,
    now: i64,
) -> Result<(SecretVersion, String), ApiError> {
    let value = WebhookSecret::generate();
    let version = store
        .secret_box
        .seal(tenant, name, &value, now)
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok((version, value.expose()))
}

/// Writes a new secret with a fresh value, without claiming the name (for names nobody
/// else can choose). Returns the record and the plaintext value.
pub async fn write_new(
    store: &Store,
    tenant: &str,
    name: &str,
) -> Result<(Secret, String), ApiError> {
    let now = now_ms();
    let (version, value) = seal(store, tenant, name, now)?;
    let secret = Secret {
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        versions: vec![version],
        created_at_ms: now,
        updated_at_ms: now,
    };
    store.put_secret(&secret).await?;
    tracing::info!(tenant, name, "secret created");
    Ok((secret, value))
}

/// Creates secret `name` of `tenant` under a name claim; 409 naming `field` when it exists.
pub async fn create_named(
    store: &Store,
    tenant: &str,
    name: &str,
    field: &str,
) -> Result<(Secret, String), ApiError> {
    store.sync().await;
    let taken = || ApiError::conflict(field, format!("a secret named {name:?} already exists"));
    if store
        .secrets
        .get(&hookline_state::secret_key(tenant, name))
        .is_some()
    {
        return Err(taken());
    }
    let held = claims::claim(store, Kind::Secret, tenant, name, name, field).await?;
    match write_new(store, tenant, name).await {
        Ok(created) => Ok(created),
        Err(e) => {
            claims::abandon(store, held).await;
            Err(e)
        }
    }
}

#[utoipa::path(post, path = "/api/v1/event-deliveries/secrets", tag = "fynapse",
    request_body = CreateSecret,
    responses((status = 201, description = "Created; `value` is shown only here", body = SecretOut),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<CreateSecret>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Editor)?;
    check_name("name", &body.name)?;
    let (secret, value) = create_named(&state.store, &who.tenant, &body.name, "name").await?;
    Ok((
        StatusCode::CREATED,
        Json(SecretOut::of(&secret, Some(value))),
    ))
}

#[utoipa::path(get, path = "/api/v1/event-deliveries/secrets", tag = "fynapse",
    params(("limit" = Option<u32>, Query, description = "Page size, 1-100 (default 50)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page")),
    responses((status = 200, description = "Secrets by name, without values", body = SecretList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    RawQuery(query): RawQuery,
) -> Result<Json<SecretList>, ApiError> {
    let page = page_request(query.as_deref(), "cursor")?;
    let mut all: Vec<(String, Secret)> = state.store.secrets.read(|t| {
        t.values()
            .filter(|s| s.tenant == who.tenant)
            .map(|s| (s.name.clone(), s.clone()))
            .collect()
    });
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let (items, next_cursor) = paginate(all, &page);
    Ok(Json(SecretList {
        items: items.iter().map(|s| SecretOut::of(s, None)).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/v1/event-deliveries/secrets/{name}", tag = "fynapse",
    params(("name" = String, Path)),
    responses((status = 200, description = "The secret, without its value", body = SecretOut),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    PathParam(name): PathParam,
) -> Result<Json<SecretOut>, ApiError> {
    state
        .store
        .secrets
        .get(&hookline_state::secret_key(&who.tenant, &name))
        .map(|s| Json(SecretOut::of(&s, None)))
        .ok_or_else(|| ApiError::not_found("secret"))
}

#[utoipa::path(post, path = "/api/v1/event-deliveries/secrets/{name}/rotate", tag = "fynapse",
    params(("name" = String, Path)),
    responses((status = 200, description = "The new value, shown only here; older versions sign until `expiresAt`", body = SecretOut),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn rotate(
    State(state): State<AppState>,
    who: Principal,
    PathParam(name): PathParam,
) -> Result<Json<SecretOut>, ApiError> {
    who.require(Role::Editor)?;
    let store = &state.store;
    let _one_at_a_time = store.write_lock.lock().await;
    store.secrets.sync().await;
    let key = hookline_state::secret_key(&who.tenant, &name);
    let mut secret = store
        .secrets
        .get(&key)
        .ok_or_else(|| ApiError::not_found("secret"))?;
    let now = now_ms();
    let until = now + store.rotation_overlap.as_millis() as i64;
    let (version, value) = seal(store, &who.tenant, &name, now)?;
    let mut versions = vec![version];
    for mut old in secret.versions.drain(..) {
        if old.expires_at_ms.is_some_and(|t| t <= now) {
            continue;
        }
        old.expires_at_ms = Some(old.expires_at_ms.map_or(until, |t| t.min(until)));
        versions.push(old);
    }
    secret.versions = versions;
    secret.updated_at_ms = now;
    store.put_secret(&secret).await?;
    tracing::info!(tenant = %who.tenant, name, "secret rotated");
    Ok(Json(SecretOut::of(&secret, Some(value))))
}

#[utoipa::path(delete, path = "/api/v1/event-deliveries/secrets/{name}", tag = "fynapse",
    params(("name" = String, Path)),
    responses((status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A subscription still refers to the secret", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    PathParam(name): PathParam,
) -> Result<StatusCode, ApiError> {
    let store = &state.store;
    let _change = store.change(&who).await?;
    if store
        .secrets
        .get(&hookline_state::secret_key(&who.tenant, &name))
        .is_none()
    {
        return Err(ApiError::not_found("secret"));
    }
    let user = store.subscriptions.read(|t| {
        t.values()
            .find(|s| s.tenant == who.tenant && s.secret_ref == name)
            .map(|s| s.id.clone())
    });
    if let Some(id) = user {
        return Err(ApiError::conflict(
            "name",
            format!("subscription {id} still signs with secret {name:?}"),
        ));
    }
    claims::release(store, Kind::Secret, &who.tenant, &name).await?;
    store.delete_secret(&who.tenant, &name).await?;
    tracing::info!(tenant = %who.tenant, name, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}
