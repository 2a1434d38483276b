//! Synctera webhooks under `/v2/webhooks`: create, list, get, update (PATCH), delete, with
//! the seed's snake_case fields. Each webhook gets its own signing secret, whose value is
//! returned in the create response's `secret`; `GET /v2/webhooks/{id}/secret` shows its
//! versions and `PUT` rotates it (the new value shown once, in that response). The secret
//! belongs to the webhook alone: the Fynapse secrets routes neither list nor reach it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::{now_ms, rfc3339_seconds};
use hookline_proto::v1::{Dialect, Subscription};
use hookline_runtime::{ApiError, JsonBody};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::controls::{controls_out, rate_limit_shape, with_controls};
use crate::input::{ErrorBody, PathParam, check_tenant, present};
use crate::secrets::{self, Signing};
use crate::store::Store;
use crate::subscriptions::{self, Face, NewSecret};

with_controls!(create WebhookRateLimit,
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Catalog event types or `PREFIX.*` wildcards (e.g. `ACCOUNT.*`); at most 100. Empty:
    /// the webhook receives nothing until events are added.
    #[schema(max_items = 100)]
    pub enabled_events: Vec<String>,
    pub is_enabled: bool,
    #[schema(min_length = 1, max_length = 1000, format = Uri)]
    pub url: String,
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    /// Echoed in every `WebhookRequest`.
    #[schema(max_length = 1024)]
    pub metadata: Option<String>,
    /// Must be the caller's tenant unless the caller is an admin. Default: the caller's.
    #[schema(min_length = 1, max_length = 255, example = "abcdef_ghijkl")]
    pub tenant: Option<String>,
});

rate_limit_shape!(WebhookRateLimit, "per_second", "per_minute");
controls_out!(WebhookControls, WebhookRateLimit, "snake_case");

with_controls!(patch WebhookRateLimit,
/// Only the fields present change; `null` clears `description`, `metadata`, `rate_limit`
/// or `max_in_flight`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWebhook {
    #[schema(max_items = 100)]
    pub enabled_events: Option<Vec<String>>,
    pub is_enabled: Option<bool>,
    #[schema(min_length = 1, max_length = 1000, format = Uri)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 1024)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 1024)]
    pub metadata: Option<Option<String>>,
    /// May only repeat the webhook's tenant (another one: 409).
    pub tenant: Option<String>,
});

#[derive(Serialize, ToSchema)]
pub struct WebhookOut {
    pub enabled_events: Vec<String>,
    pub is_enabled: bool,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[schema(format = Uuid)]
    pub id: String,
    /// When the webhook was created or last changed.
    #[schema(format = DateTime)]
    pub last_updated: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    pub tenant: String,
    #[serde(flatten)]
    pub controls: WebhookControls,
    /// The `whsec_` (or `whsk_`) signing secret: only in the create response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookOut {
    fn of(store: &Store, s: &Subscription, secret: Option<String>) -> Self {
        Self {
            enabled_events: s.event_types.clone(),
            is_enabled: s.enabled,
            url: s.endpoint_url.clone(),
            description: s.description.clone(),
            id: s.id.clone(),
            last_updated: rfc3339_seconds(s.updated_at_ms),
            metadata: s.metadata.clone(),
            tenant: s.tenant.clone(),
            controls: WebhookControls::of(store, s),
            secret,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookOut>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// How the Synctera dialect names the model's fields.
pub const FACE: Face = Face {
    dialect: Dialect::Synctera,
    what: "webhook",
    name: "id",
    endpoint_url: "url",
    secret_ref: "secret",
    event_types: "enabled_events",
    description: "description",
    metadata: "metadata",
    headers: "headers",
    signing: "signing",
    rate_limit: "rate_limit",
    per_second: "per_second",
    per_minute: "per_minute",
    max_in_flight: "max_in_flight",
    all_types: false,
    unique_names: false,
    own_secret: true,
};

/// The tenant a create acts on: the caller's, or any for an admin.
fn target_tenant(who: &Principal, tenant: Option<String>) -> Result<String, ApiError> {
    let Some(t) = tenant else {
        return Ok(who.tenant.clone());
    };
    check_tenant("tenant", &t)?;
    if t != who.tenant && who.require(Role::Admin).is_err() {
        return Err(ApiError {
            field: Some("tenant".into()),
            message: "`tenant` must be the caller's tenant".into(),
            ..ApiError::forbidden()
        });
    }
    Ok(t)
}

#[utoipa::path(post, path = "/v2/webhooks", tag = "synctera", request_body = CreateWebhook,
    responses((status = 201, description = "Created; `secret` is shown only here", body = WebhookOut),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(mut body): JsonBody<CreateWebhook>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Editor)?;
    let controls = body.controls(&FACE)?;
    let tenant = target_tenant(&who, body.tenant)?;
    let mut sub = subscriptions::draft(&FACE, &tenant);
    sub.endpoint_url = body.url;
    sub.event_types = body.enabled_events;
    sub.description = body.description;
    sub.enabled = body.is_enabled;
    sub.metadata = body.metadata;
    controls.apply(&state.store, &FACE, &mut sub)?;
    let (sub, created) =
        subscriptions::create(&state, &who, &FACE, sub, NewSecret::Own, body.signing).await?;
    let value = created.map(|(_, value)| value);
    Ok((
        StatusCode::CREATED,
        Json(WebhookOut::of(&state.store, &sub, value)),
    ))
}

subscriptions::face_handlers! {
    tag: "synctera",
    collection: "/v2/webhooks",
    item: "/v2/webhooks/{id}",
    test: "/v2/webhooks/{id}/test",
    out: WebhookOut,
    list: WebhookList { webhooks, next_page_token },
    cursor: "page_token",
    cursor_doc: "`next_page_token` of the previous page",
    list_doc: "Oldest first (creation time, then id); an admin sees every tenant's",
    all_tenants: true,
    deleted_doc: "Deleted, with its signing secret",
    example: WebhookSendExample, WebhookExampleOut, WebhookExampleAttempt, "snake_case", "event_type",
}

fn find(state: &AppState, who: &Principal, id: &str) -> Result<Subscription, ApiError> {
    subscriptions::find(&state.store, who, &FACE, id)
}

#[utoipa::path(patch, path = "/v2/webhooks/{id}", tag = "synctera", params(("id" = String, Path)),
    request_body = PatchWebhook,
    responses((status = 200, body = WebhookOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`tenant` is not the webhook's", body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam,
    JsonBody(mut body): JsonBody<PatchWebhook>,
) -> Result<Json<WebhookOut>, ApiError> {
    let controls = body.controls(&FACE)?;
    let sub = subscriptions::update(&state, &who, &FACE, &id, body.signing, |sub| {
        if body.tenant.as_ref().is_some_and(|t| *t != sub.tenant) {
            // Valid by the document, refused by the state: a conflict.
            return Err(ApiError::conflict(
                "tenant",
                "a webhook's tenant cannot change",
            ));
        }
        if let Some(v) = body.enabled_events {
            sub.event_types = v;
        }
        if let Some(v) = body.is_enabled {
            sub.enabled = v;
        }
        if let Some(v) = body.url {
            sub.endpoint_url = v;
        }
        if let Some(v) = body.description {
            sub.description = v;
        }
        if let Some(v) = body.metadata {
            sub.metadata = v;
        }
        controls.apply(&state.store, &FACE, sub)
    })
    .await?;
    Ok(Json(WebhookOut::of(&state.store, &sub, None)))
}

/// A webhook's signing secret: the versions that sign, and the value after a rotation.
#[derive(Serialize, ToSchema)]
pub struct WebhookSecretOut {
    #[schema(format = Uuid)]
    pub webhook_id: String,
    /// The new `whsec_` value: only in the response of the rotation that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// When the secret was created or last rotated.
    #[schema(format = DateTime)]
    pub last_updated: String,
    /// How the newest version signs.
    pub signing: Signing,
    /// The newest version's `whpk_` public key, when it is ed25519.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Versions that still sign, newest first (values never shown).
    pub versions: Vec<WebhookSecretVersion>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookSecretVersion {
    /// An ed25519 version's `whpk_` public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Set once a newer version replaced this one: it signs until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

impl WebhookSecretOut {
    fn of(webhook_id: &str, s: &hookline_proto::v1::Secret, value: Option<String>) -> Self {
        let now = now_ms();
        Self {
            webhook_id: webhook_id.to_owned(),
            secret: value,
            last_updated: rfc3339_seconds(s.updated_at_ms),
            signing: Signing::of(s),
            public_key: secrets::public_key(s),
            versions: s
                .versions
                .iter()
                .filter(|v| v.expires_at_ms.is_none_or(|t| t > now))
                .map(|v| WebhookSecretVersion {
                    public_key: Some(v.public_key.clone()).filter(|k| !k.is_empty()),
                    created_at: rfc3339_seconds(v.created_at_ms),
                    expires_at: v.expires_at_ms.map(rfc3339_seconds),
                })
                .collect(),
        }
    }
}

/// Rotation of a webhook's secret.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateWebhookSecret {
    /// `true` (default): the old value keeps signing, beside the new one, for the configured
    /// overlap (`secret_rotation_overlap`, 24 h), so receivers can switch without a gap.
    /// `false`: the old value stops signing at once (a leaked secret).
    pub is_rolling_secret: Option<bool>,
    /// The scheme of the new value (a Hookline extension); default: the current one. From
    /// one scheme to the other, both sign during the overlap (`v1,… v1a,…`).
    pub signing: Option<Signing>,
}

fn webhook_secret(
    state: &AppState,
    sub: &Subscription,
) -> Result<hookline_proto::v1::Secret, ApiError> {
    state
        .store
        .secrets
        .get(&hookline_state::secret_key(&sub.tenant, &sub.secret_ref))
        .ok_or_else(|| ApiError::not_found("webhook secret"))
}

#[utoipa::path(get, path = "/v2/webhooks/{id}/secret", tag = "synctera",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, description = "The webhook's signing secret, without its value", body = WebhookSecretOut),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_secret(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam,
) -> Result<Json<WebhookSecretOut>, ApiError> {
    let sub = find(&state, &who, &id)?;
    let secret = webhook_secret(&state, &sub)?;
    Ok(Json(WebhookSecretOut::of(&sub.id, &secret, None)))
}

#[utoipa::path(put, path = "/v2/webhooks/{id}/secret", tag = "synctera",
    params(("id" = String, Path, format = Uuid)), request_body = RotateWebhookSecret,
    responses((status = 200, description = "Rotated; the new value is shown only here", body = WebhookSecretOut),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<RotateWebhookSecret>,
) -> Result<Json<WebhookSecretOut>, ApiError> {
    let store = &state.store;
    let _change = store.change(&who).await?;
    let sub = find(&state, &who, &id)?;
    let secret = webhook_secret(&state, &sub)?;
    let overlap = if body.is_rolling_secret.unwrap_or(true) {
        store.rotation_overlap
    } else {
        std::time::Duration::ZERO
    };
    let (secret, value) = secrets::rotate_value(store, secret, overlap, body.signing).await?;
    Ok(Json(WebhookSecretOut::of(&sub.id, &secret, Some(value))))
}
