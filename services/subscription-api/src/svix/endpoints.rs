//! Svix endpoints under `/api/v1/app/{app_id}/endpoint`: subscriptions of the `Svix` dialect
//! whose `application` is the app's id, written through the one subscription service (its
//! validation, own secret, custom headers and rate limit). A path's `{endpoint_id}` is the
//! id (`ep_…`) or the `uid`, unique within the application (claimed as names are).
//!
//! `eventTypes` (`filterTypes` in older SDKs; null: every type) are catalog types;
//! `throttleRate` (`rateLimit`) is the subscription's per-second rate limit; `disabled` its
//! `enabled` turned round; `metadata` is kept as JSON text. The secret is the endpoint's own
//! `whsec_` secret, read back by `GET …/secret` as Svix does. Custom headers are sealed like
//! every subscription's and never shown again: `GET …/headers` names them all `sensitive`.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_proto::v1::{Application, Dialect, RateLimit, Subscription};
use hookline_runtime::{ApiError, JsonBody, JsonPath, OptionalJsonBody};
use hookline_signing::WebhookSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ListQuery, ListResponse, apps, check_id, new_id, page};
use crate::AppState;
use crate::claims::{self, Kind};
use crate::controls::{Controls, PER_SECOND_MAX};
use crate::input::{Int, present};
use crate::subscriptions::{self, Face, HEADER_MASK, HeadersIn, NewSecret};

/// How the Svix face names the model's fields.
pub const FACE: Face = Face {
    dialect: Dialect::Svix,
    what: "endpoint",
    name: "uid",
    endpoint_url: "url",
    secret_ref: "secret",
    event_types: "eventTypes",
    description: "description",
    metadata: "metadata",
    headers: "headers",
    signing: "signing",
    rate_limit: "throttleRate",
    per_second: "throttleRate",
    per_minute: "throttleRate",
    max_in_flight: "maxInFlight",
    all_types: true,
    unique_names: false,
    own_secret: true,
};

/// An endpoint as created (`POST`) or replaced (`PUT`, where `secret` is ignored).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointIn {
    #[schema(min_length = 1, max_length = 1000, format = Uri)]
    pub url: String,
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    /// Deliveries started per second (`rateLimit` in older SDKs), 1-10,000.
    #[serde(alias = "rateLimit")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub throttle_rate: Option<Int>,
    #[schema(min_length = 1, max_length = 256, pattern = r"^[a-zA-Z0-9\-_.]+$")]
    pub uid: Option<String>,
    pub disabled: Option<bool>,
    /// Catalog event types (`filterTypes` in older SDKs); absent or null: every type.
    #[serde(alias = "filterTypes")]
    #[schema(max_items = 100)]
    pub event_types: Option<Vec<String>>,
    /// Not supported yet: a non-empty list is refused (422).
    pub channels: Option<Vec<String>>,
    /// `whsec_` + base64 of 24-64 bytes (the prefix may be left out); absent: generated.
    pub secret: Option<String>,
    #[schema(value_type = Option<HashMap<String, String>>)]
    pub metadata: Option<HashMap<String, String>>,
    /// Custom headers sent with every delivery (sealed; never shown again).
    #[schema(value_type = Option<HashMap<String, String>>)]
    pub headers: Option<HashMap<String, String>>,
    /// Hookline extension: deliveries also carry the Standard Webhooks headers
    /// (`webhook-id`, `webhook-timestamp`, `webhook-signature`, the same values as the
    /// `svix-*` set), for receivers that verify with a Standard Webhooks library.
    pub webhook_headers: Option<bool>,
}

/// Only the fields present change; `null` clears `uid`, `throttleRate`, `eventTypes` (every
/// type) and `description`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPatch {
    #[schema(min_length = 1, max_length = 1000, format = Uri)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 1024)]
    pub description: Option<Option<String>>,
    #[serde(default, alias = "rateLimit", deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub throttle_rate: Option<Option<Int>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 256)]
    pub uid: Option<Option<String>>,
    pub disabled: Option<bool>,
    #[serde(default, alias = "filterTypes", deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, max_items = 100)]
    pub event_types: Option<Option<Vec<String>>>,
    pub channels: Option<Vec<String>>,
    #[schema(value_type = Option<HashMap<String, String>>)]
    pub metadata: Option<HashMap<String, String>>,
    /// Hookline extension: deliveries also carry the Standard Webhooks headers
    /// (`webhook-id`, `webhook-timestamp`, `webhook-signature`, the same values as the
    /// `svix-*` set), for receivers that verify with a Standard Webhooks library.
    pub webhook_headers: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointOut {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub url: String,
    pub description: String,
    /// Absent: every type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    /// `eventTypes` under its older name, for older SDKs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_types: Option<Vec<String>>,
    pub disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_rate: Option<u32>,
    /// `throttleRate` under its older name, for older SDKs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    pub metadata: BTreeMap<String, String>,
    /// Always 1 (older SDKs require it).
    pub version: u32,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Hookline extension: whether deliveries also carry the `webhook-*` headers.
    pub webhook_headers: bool,
}

impl EndpointOut {
    pub fn of(s: &Subscription) -> Self {
        let types = Some(s.event_types.clone()).filter(|t| !t.is_empty());
        let rate = s
            .rate_limit
            .as_ref()
            .map(|r| r.per_second)
            .filter(|n| *n > 0);
        Self {
            id: s.id.clone(),
            uid: s.uid.clone(),
            url: s.endpoint_url.clone(),
            description: s.description.clone().unwrap_or_default(),
            filter_types: types.clone(),
            event_types: types,
            disabled: !s.enabled,
            throttle_rate: rate,
            rate_limit: rate,
            metadata: s
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_default(),
            version: 1,
            created_at: rfc3339_millis(s.created_at_ms),
            updated_at: rfc3339_millis(s.updated_at_ms),
            webhook_headers: s.webhook_headers,
        }
    }
}

/// The endpoint `id_or_uid` of `app`, if `who` may see it; else a 404.
pub fn find(
    state: &AppState,
    who: &Principal,
    app: &Application,
    id_or_uid: &str,
) -> Result<Subscription, ApiError> {
    state
        .store
        .subscriptions
        .read(|t| {
            let of_app = |s: &&Subscription| {
                s.dialect() == Dialect::Svix
                    && s.application.as_deref() == Some(app.id.as_str())
                    && who.can_see(&s.tenant)
            };
            t.get(id_or_uid)
                .filter(of_app)
                .or_else(|| {
                    t.values()
                        .filter(of_app)
                        .find(|s| s.uid.as_deref() == Some(id_or_uid))
                })
                .cloned()
        })
        .ok_or_else(|| ApiError::not_found("endpoint"))
}

fn app_and_endpoint(
    state: &AppState,
    who: &Principal,
    (app_id, endpoint_id): &(String, String),
) -> Result<(Application, Subscription), ApiError> {
    let app = apps::find(state, who, app_id)?;
    let sub = find(state, who, &app, endpoint_id)?;
    Ok((app, sub))
}

fn rate(v: Option<Int>) -> Result<Option<RateLimit>, ApiError> {
    match v {
        None => Ok(None),
        Some(Int(n)) if !(1..=PER_SECOND_MAX).contains(&n) => Err(ApiError::invalid(
            "throttleRate",
            format!("`throttleRate` must be 1-{PER_SECOND_MAX}, got {n}"),
        )),
        Some(Int(n)) => Ok(Some(RateLimit {
            per_second: n,
            per_minute: 0,
        })),
    }
}

fn no_channels(channels: &Option<Vec<String>>) -> Result<(), ApiError> {
    match channels {
        Some(c) if !c.is_empty() => Err(ApiError::invalid(
            "channels",
            "endpoint `channels` are not supported yet: leave them out",
        )),
        _ => Ok(()),
    }
}

fn metadata_text(m: Option<HashMap<String, String>>) -> Option<String> {
    m.filter(|m| !m.is_empty()).map(|m| {
        let sorted: BTreeMap<String, String> = m.into_iter().collect();
        serde_json::to_string(&sorted).expect("a map of strings serialises")
    })
}

/// Claims `uid` within `app` for endpoint `id` (409 when taken).
async fn claim_uid(
    state: &AppState,
    app: &Application,
    uid: &str,
    id: &str,
) -> Result<claims::Held, ApiError> {
    check_id("uid", uid)?;
    let taken = state.store.subscriptions.read(|t| {
        t.values().any(|s| {
            s.application.as_deref() == Some(app.id.as_str())
                && s.uid.as_deref() == Some(uid)
                && s.id != id
        })
    });
    if taken {
        return Err(ApiError::conflict(
            "uid",
            format!("an endpoint with uid {uid:?} already exists"),
        ));
    }
    let name = format!("{}/{uid}", app.id);
    claims::claim(&state.store, Kind::Endpoint, &app.tenant, &name, id, "uid").await
}

async fn release_uid(state: &AppState, sub: &Subscription) -> Result<(), ApiError> {
    match (&sub.uid, &sub.application) {
        (Some(uid), Some(app)) => {
            let name = format!("{app}/{uid}");
            claims::release(&state.store, Kind::Endpoint, &sub.tenant, &name).await
        }
        _ => Ok(()),
    }
}

async fn create_endpoint(
    state: &AppState,
    who: &Principal,
    app: &Application,
    body: EndpointIn,
) -> Result<Subscription, ApiError> {
    who.require(Role::Editor)?;
    no_channels(&body.channels)?;
    let controls = Controls {
        headers: body.headers.map(|h| Some(h.into_iter().collect())),
        rate_limit: Some(rate(body.throttle_rate)?),
        max_in_flight: None,
        filter: None,
    };
    let secret = match body.secret {
        None => NewSecret::Own,
        Some(text) => {
            let text = if text.starts_with("whsec_") {
                text
            } else {
                format!("whsec_{text}")
            };
            let value = WebhookSecret::parse(&text)
                .map_err(|e| ApiError::invalid("secret", format!("`secret` is not usable: {e}")))?;
            NewSecret::OwnValue(value)
        }
    };
    let mut sub = subscriptions::draft(&FACE, &app.tenant);
    sub.id = new_id("ep_");
    sub.name = sub.id.clone();
    sub.secret_ref = format!("webhook-{}", sub.id);
    sub.application = Some(app.id.clone());
    sub.endpoint_url = body.url;
    sub.description = body.description;
    sub.enabled = !body.disabled.unwrap_or(false);
    sub.event_types = body.event_types.unwrap_or_default();
    sub.metadata = metadata_text(body.metadata);
    sub.uid = body.uid;
    sub.webhook_headers = body.webhook_headers.unwrap_or(false);
    controls.apply(&state.store, &FACE, &mut sub)?;
    state.store.sync().await;
    let held = match sub.uid.clone() {
        Some(uid) => Some(claim_uid(state, app, &uid, &sub.id).await?),
        None => None,
    };
    match subscriptions::create(state, who, &FACE, sub, secret, None).await {
        Ok((sub, _)) => Ok(sub),
        Err(e) => {
            if let Some(h) = held {
                claims::abandon(&state.store, h).await;
            }
            Err(e)
        }
    }
}

#[utoipa::path(post, path = "/api/v1/app/{app_id}/endpoint", tag = "svix-endpoint",
    params(("app_id" = String, Path, description = "Id or uid")), request_body = EndpointIn,
    responses((status = 201, body = EndpointOut), (status = 401, body = super::HttpErrorOut),
        (status = 403, body = super::HttpErrorOut), (status = 404, body = super::HttpErrorOut),
        (status = 409, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(app_id): JsonPath<String>,
    JsonBody(body): JsonBody<EndpointIn>,
) -> Result<Response, ApiError> {
    let app = apps::find(&state, &who, &app_id)?;
    let sub = create_endpoint(&state, &who, &app, body).await?;
    Ok((StatusCode::CREATED, Json(EndpointOut::of(&sub))).into_response())
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint", tag = "svix-endpoint",
    params(("app_id" = String, Path, description = "Id or uid"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 250),
        ("iterator" = Option<String>, Query), ("order" = Option<String>, Query)),
    responses((status = 200, body = ListResponse<EndpointOut>),
        (status = 401, body = super::HttpErrorOut), (status = 404, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(app_id): JsonPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse<EndpointOut>>, ApiError> {
    let q = ListQuery::parse(query.as_deref())?;
    let app = apps::find(&state, &who, &app_id)?;
    let mut eps: Vec<(String, EndpointOut)> = state.store.subscriptions.read(|t| {
        t.values()
            .filter(|s| {
                s.dialect() == Dialect::Svix && s.application.as_deref() == Some(app.id.as_str())
            })
            .map(|s| (s.id.clone(), EndpointOut::of(s)))
            .collect()
    });
    eps.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Json(page(eps, &q, q.descending.unwrap_or(false))))
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}", tag = "svix-endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path, description = "Id or uid")),
    responses((status = 200, body = EndpointOut), (status = 401, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(ids): JsonPath<(String, String)>,
) -> Result<Json<EndpointOut>, ApiError> {
    let (_, sub) = app_and_endpoint(&state, &who, &ids)?;
    Ok(Json(EndpointOut::of(&sub)))
}

/// Changes endpoint `sub` by `change`, moving its uid claim when `uid` changes.
async fn change_endpoint(
    state: &AppState,
    who: &Principal,
    app: &Application,
    sub: &Subscription,
    uid: Option<Option<String>>,
    change: impl FnOnce(&mut Subscription) -> Result<(), ApiError>,
) -> Result<Subscription, ApiError> {
    who.require(Role::Editor)?;
    let new_uid = uid.clone().unwrap_or_else(|| sub.uid.clone());
    let moved = new_uid != sub.uid;
    if moved && let Some(u) = &new_uid {
        claim_uid(state, app, u, &sub.id).await?;
    }
    let updated = subscriptions::update(state, who, &FACE, &sub.id, None, |s| {
        s.uid = new_uid.clone();
        change(s)
    })
    .await?;
    if moved {
        release_uid(state, sub).await?;
    }
    Ok(updated)
}

#[utoipa::path(put, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}", tag = "svix-endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path,
        description = "Id or uid; created with this uid when absent")),
    request_body = EndpointIn,
    responses((status = 200, body = EndpointOut), (status = 201, body = EndpointOut),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut), (status = 409, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(ids): JsonPath<(String, String)>,
    JsonBody(mut body): JsonBody<EndpointIn>,
) -> Result<Response, ApiError> {
    let app = apps::find(&state, &who, &ids.0)?;
    let Ok(sub) = find(&state, &who, &app, &ids.1) else {
        check_id("path", &ids.1)?;
        body.uid.get_or_insert(ids.1);
        body.secret = None;
        let sub = create_endpoint(&state, &who, &app, body).await?;
        return Ok((StatusCode::CREATED, Json(EndpointOut::of(&sub))).into_response());
    };
    no_channels(&body.channels)?;
    let controls = Controls {
        headers: body.headers.map(|h| Some(h.into_iter().collect())),
        rate_limit: Some(rate(body.throttle_rate)?),
        max_in_flight: None,
        filter: None,
    };
    let store = state.store.clone();
    let updated = change_endpoint(&state, &who, &app, &sub, Some(body.uid), |s| {
        s.endpoint_url = body.url;
        s.description = body.description;
        s.enabled = !body.disabled.unwrap_or(false);
        s.event_types = body.event_types.unwrap_or_default();
        s.metadata = metadata_text(body.metadata);
        s.webhook_headers = body.webhook_headers.unwrap_or(false);
        controls.apply(&store, &FACE, s)
    })
    .await?;
    Ok((StatusCode::OK, Json(EndpointOut::of(&updated))).into_response())
}

#[utoipa::path(patch, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}", tag = "svix-endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    request_body = EndpointPatch,
    responses((status = 200, body = EndpointOut), (status = 401, body = super::HttpErrorOut),
        (status = 403, body = super::HttpErrorOut), (status = 404, body = super::HttpErrorOut),
        (status = 409, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn patch(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(ids): JsonPath<(String, String)>,
    JsonBody(body): JsonBody<EndpointPatch>,
) -> Result<Json<EndpointOut>, ApiError> {
    let (app, sub) = app_and_endpoint(&state, &who, &ids)?;
    no_channels(&body.channels)?;
    let rate_limit = body.throttle_rate.map(rate).transpose()?;
    let updated = change_endpoint(&state, &who, &app, &sub, body.uid, |s| {
        if let Some(v) = body.url {
            s.endpoint_url = v;
        }
        if let Some(v) = body.description {
            s.description = v;
        }
        if let Some(v) = body.disabled {
            s.enabled = !v;
        }
        if let Some(v) = body.event_types {
            s.event_types = v.unwrap_or_default();
        }
        if let Some(v) = body.metadata {
            s.metadata = metadata_text(Some(v));
        }
        if let Some(v) = rate_limit {
            s.rate_limit = v;
        }
        if let Some(v) = body.webhook_headers {
            s.webhook_headers = v;
        }
        Ok(())
    })
    .await?;
    Ok(Json(EndpointOut::of(&updated)))
}

/// Deletes endpoint `id` with its secret and uid claim.
pub async fn remove(state: &AppState, who: &Principal, id: &str) -> Result<(), ApiError> {
    let sub = subscriptions::find(&state.store, who, &FACE, id)?;
    subscriptions::delete(state, who, &FACE, id).await?;
    release_uid(state, &sub).await
}

#[utoipa::path(delete, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}", tag = "svix-endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 204, description = "Deleted, with its secret"),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(ids): JsonPath<(String, String)>,
) -> Result<Response, ApiError> {
    who.require(Role::Editor)?;
    let (_, sub) = app_and_endpoint(&state, &who, &ids)?;
    remove(&state, &who, &sub.id).await?;
    Ok(super::no_content())
}

/// The endpoint's signing secret.
#[derive(Serialize, ToSchema)]
pub struct EndpointSecretOut {
    /// The `whsec_` value that signs now.
    pub key: String,
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret",
    tag = "svix-endpoint", params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 200, description = "The value that signs now (editors only)",
        body = EndpointSecretOut),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut)))]
pub async fn get_secret(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(ids): JsonPath<(String, String)>,
) -> Result<Json<EndpointSecretOut>, ApiError> {
    who.require(Role::Editor)?;
    let (_, sub) = app_and_endpoint(&state, &who, &ids)?;
    let store = &state.store;
    let key = store
        .secrets
        .get(&hookline_state::secret_key(&sub.tenant, &sub.secret_ref))
        .and_then(|s| {
            store
                .secret_box
                .signing_secrets(&s, now_ms())
                .into_iter()
                .next()
        })
        .ok_or_else(|| ApiError::not_found("endpoint secret"))?;
    Ok(Json(EndpointSecretOut { key: key.expose() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSecretRotateIn {
    /// The new value (`whsec_` + base64 of 24-64 bytes); absent: generated.
    pub key: Option<String>,
    /// How long the old value keeps signing, 0-604800 s (default: the configured
    /// `secret_rotation_overlap`, 24 h).
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 604800)]
    pub grace_period_seconds: Option<Int>,
}

#[utoipa::path(post, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
    tag = "svix-endpoint", params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    request_body = Option<EndpointSecretRotateIn>,
    responses((status = 200, description = "Rotated: the new value signs now, the old one \
        too until the grace period ends. (Svix's OSS document says 204 with no body; its \
        newest SDKs read the new key from a 200, older ones ignore it.)",
        body = EndpointSecretOut),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(ids): JsonPath<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<EndpointSecretRotateIn>,
) -> Result<Json<EndpointSecretOut>, ApiError> {
    let store = &state.store;
    let _change = store.change(&who).await?;
    let (_, sub) = app_and_endpoint(&state, &who, &ids)?;
    let (key, grace) = body.map_or((None, None), |b| (b.key, b.grace_period_seconds));
    let overlap = match grace {
        None => store.rotation_overlap,
        Some(Int(n)) if n <= 604_800 => std::time::Duration::from_secs(u64::from(n)),
        Some(Int(n)) => {
            return Err(ApiError::invalid(
                "gracePeriodSeconds",
                format!("`gracePeriodSeconds` must be 0-604800, got {n}"),
            ));
        }
    };
    let value = match key {
        None => WebhookSecret::generate(),
        Some(text) => {
            let text = if text.starts_with("whsec_") {
                text
            } else {
                format!("whsec_{text}")
            };
            WebhookSecret::parse(&text)
                .map_err(|e| ApiError::invalid("key", format!("`key` is not usable: {e}")))?
        }
    };
    let secret = store
        .secrets
        .get(&hookline_state::secret_key(&sub.tenant, &sub.secret_ref))
        .ok_or_else(|| ApiError::not_found("endpoint secret"))?;
    let (_, key) = crate::secrets::rotate_to(store, secret, overlap, value).await?;
    Ok(Json(EndpointSecretOut { key }))
}

/// An endpoint's custom headers: values are sealed and never shown, so every one is named
/// in `sensitive`.
#[derive(Serialize, ToSchema)]
pub struct EndpointHeadersOut {
    /// Always empty: no value is shown.
    pub headers: BTreeMap<String, String>,
    pub sensitive: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct EndpointHeadersIn {
    #[schema(value_type = HashMap<String, String>)]
    pub headers: HashMap<String, String>,
}

#[derive(Deserialize, ToSchema)]
pub struct EndpointHeadersPatchIn {
    /// `null` removes a header.
    #[schema(value_type = HashMap<String, Option<String>>)]
    pub headers: HashMap<String, Option<String>>,
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    tag = "svix-endpoint", params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 200, body = EndpointHeadersOut),
        (status = 401, body = super::HttpErrorOut), (status = 404, body = super::HttpErrorOut)))]
pub async fn get_headers(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(ids): JsonPath<(String, String)>,
) -> Result<Json<EndpointHeadersOut>, ApiError> {
    let (_, sub) = app_and_endpoint(&state, &who, &ids)?;
    Ok(Json(EndpointHeadersOut {
        headers: BTreeMap::new(),
        sensitive: sub.headers.iter().map(|h| h.name.clone()).collect(),
    }))
}

async fn set_headers(
    state: &AppState,
    who: &Principal,
    ids: &(String, String),
    headers: impl FnOnce(&Subscription) -> HeadersIn,
) -> Result<Response, ApiError> {
    let (app, sub) = app_and_endpoint(state, who, ids)?;
    let store = state.store.clone();
    change_endpoint(state, who, &app, &sub, None, |s| {
        let given = headers(s);
        subscriptions::set_headers(&store, &FACE, s, Some(given))
    })
    .await?;
    Ok(super::no_content())
}

#[utoipa::path(put, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    tag = "svix-endpoint", params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    request_body = EndpointHeadersIn,
    responses((status = 204, description = "Replaced"),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn update_headers(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(ids): JsonPath<(String, String)>,
    JsonBody(body): JsonBody<EndpointHeadersIn>,
) -> Result<Response, ApiError> {
    set_headers(&state, &who, &ids, |_| body.headers.into_iter().collect()).await
}

#[utoipa::path(patch, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    tag = "svix-endpoint", params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    request_body = EndpointHeadersPatchIn,
    responses((status = 204, description = "Changed"),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn patch_headers(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(ids): JsonPath<(String, String)>,
    JsonBody(body): JsonBody<EndpointHeadersPatchIn>,
) -> Result<Response, ApiError> {
    set_headers(&state, &who, &ids, |s| {
        // The current headers keep their values (`****`), then the patch applies.
        let mut merged: HeadersIn = s
            .headers
            .iter()
            .map(|h| (h.name.clone(), HEADER_MASK.to_owned()))
            .collect();
        for (name, value) in body.headers {
            let lower = name.to_ascii_lowercase();
            merged.remove(&lower);
            if let Some(v) = value {
                merged.insert(name, v);
            }
        }
        merged
    })
    .await
}
