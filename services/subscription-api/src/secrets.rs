//! Fynapse secrets under `/api/v1/event-deliveries/secrets`: create, list, get, rotate, delete.
//! A Synctera webhook's own secret is not one of them: it is neither listed nor reachable
//! here, only under `/v2/webhooks/{id}/secret` ([`dialect_of`]).
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
use hookline_proto::v1::{Dialect, Secret, SecretVersion};
use hookline_runtime::{ApiError, JsonBody, OptionalJsonBody};
use hookline_signing::{Scheme, WebhookSecret};
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
    /// How the secret signs (a Hookline extension); default `hmac-sha256`.
    pub signing: Option<Signing>,
}

/// How a secret signs: `hmac-sha256` (a `whsec_` value, Standard Webhooks `v1`
/// signatures) or `ed25519` (a `whsk_` value, `v1a` signatures that receivers verify with the
/// `whpk_` public key in `publicKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum Signing {
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl Signing {
    pub fn scheme(self) -> Scheme {
        match self {
            Signing::HmacSha256 => Scheme::HmacSha256,
            Signing::Ed25519 => Scheme::Ed25519,
        }
    }

    /// How `secret` signs now: as its newest version does.
    pub fn of(secret: &Secret) -> Self {
        match secret.versions.first() {
            Some(v) if !v.public_key.is_empty() => Signing::Ed25519,
            _ => Signing::HmacSha256,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.scheme().as_str()
    }
}

/// A rotation: the new value signs at once, the older ones until the overlap ends.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The scheme of the new value (a Hookline extension); default: the current one. A
    /// rotation from one scheme to the other signs with both during the overlap
    /// (`v1,… v1a,…`).
    pub signing: Option<Signing>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionOut {
    /// An ed25519 version's `whpk_` public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    pub created_at: String,
    /// Set once a newer version replaced this one: it signs until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretOut {
    pub name: String,
    /// The `whsec_` (or `whsk_`) value: only in the response of the create or rotation that
    /// made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// How the newest version signs.
    pub signing: Signing,
    /// The newest version's `whpk_` public key, when it is ed25519.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
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
            signing: Signing::of(s),
            public_key: public_key(s),
            created_at: rfc3339_millis(s.created_at_ms),
            updated_at: rfc3339_millis(s.updated_at_ms),
            versions: s
                .versions
                .iter()
                .filter(|v| v.expires_at_ms.is_none_or(|t| t > now))
                .map(|v| VersionOut {
                    public_key: Some(v.public_key.clone()).filter(|k| !k.is_empty()),
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

/// The newest version's `whpk_` public key, when it is ed25519.
pub fn public_key(secret: &Secret) -> Option<String> {
    secret
        .versions
        .first()
        .map(|v| v.public_key.clone())
        .filter(|k| !k.is_empty())
}

fn seal(
    store: &Store,
    tenant: &str,
    name: &str,
    now: i64,
    value: WebhookSecret,
) -> Result<(SecretVersion, String), ApiError> {
    let version = store
        .secret_box
        .seal(tenant, name, &value, now)
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok((version, value.expose()))
}

/// The dialect whose routes own `secret`: Synctera for a webhook's own secret (marked so, or
/// named by a Synctera webhook, as records written before the mark are), Svix for an
/// endpoint's, else Fynapse.
pub fn dialect_of(store: &Store, secret: &Secret) -> Dialect {
    if secret.dialect() == Dialect::Svix {
        return Dialect::Svix;
    }
    if secret.dialect() == Dialect::Synctera
        || store.subscriptions.read(|t| {
            t.values().any(|s| {
                s.tenant == secret.tenant
                    && s.dialect() == Dialect::Synctera
                    && s.secret_ref == secret.name
            })
        })
    {
        Dialect::Synctera
    } else {
        Dialect::Fynapse
    }
}

/// Fynapse secret `name` of `tenant`, if there is one.
pub fn fynapse_secret(store: &Store, tenant: &str, name: &str) -> Option<Secret> {
    store
        .secrets
        .get(&hookline_state::secret_key(tenant, name))
        .filter(|s| dialect_of(store, s) == Dialect::Fynapse)
}

/// Writes a new secret with a fresh value, without claiming the name (for names nobody
/// else can choose). Returns the record and the plaintext value.
pub async fn write_new(
    store: &Store,
    tenant: &str,
    name: &str,
    dialect: Dialect,
    signing: Signing,
) -> Result<(Secret, String), ApiError> {
    let value = WebhookSecret::generate_for(signing.scheme());
    write_value(store, tenant, name, dialect, value).await
}

/// [`write_new`] with a value the client chose (a Svix endpoint's `secret`).
pub async fn write_value(
    store: &Store,
    tenant: &str,
    name: &str,
    dialect: Dialect,
    value: WebhookSecret,
) -> Result<(Secret, String), ApiError> {
    let now = now_ms();
    let (version, value) = seal(store, tenant, name, now, value)?;
    let secret = Secret {
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        versions: vec![version],
        created_at_ms: now,
        updated_at_ms: now,
        dialect: dialect as i32,
    };
    store.put_secret(&secret).await?;
    tracing::info!(tenant, name, "secret created");
    Ok((secret, value))
}

/// Gives `secret` a new value of `signing` (`None`: its current scheme) that signs from now
/// on; the older versions still sign until `overlap` from now (zero: they stop at once).
/// Returns the stored record and the new value. The caller holds `write_lock` and has
/// synced the secrets view.
pub async fn rotate_value(
    store: &Store,
    secret: Secret,
    overlap: std::time::Duration,
    signing: Option<Signing>,
) -> Result<(Secret, String), ApiError> {
    let signing = signing.unwrap_or_else(|| Signing::of(&secret));
    let value = WebhookSecret::generate_for(signing.scheme());
    rotate_to(store, secret, overlap, value).await
}

/// [`rotate_value`] to a value the client chose (a Svix rotation's `key`).
pub async fn rotate_to(
    store: &Store,
    mut secret: Secret,
    overlap: std::time::Duration,
    value: WebhookSecret,
) -> Result<(Secret, String), ApiError> {
    let now = now_ms();
    let until = now + overlap.as_millis() as i64;
    let (version, value) = seal(store, &secret.tenant, &secret.name, now, value)?;
    let mut versions = vec![version];
    for mut old in secret.versions.drain(..) {
        if old.expires_at_ms.is_some_and(|t| t <= now) || until <= now {
            continue;
        }
        old.expires_at_ms = Some(old.expires_at_ms.map_or(until, |t| t.min(until)));
        versions.push(old);
    }
    secret.versions = versions;
    secret.updated_at_ms = now;
    store.put_secret(&secret).await?;
    tracing::info!(tenant = %secret.tenant, name = %secret.name, "secret rotated");
    Ok((secret, value))
}

/// Creates secret `name` of `tenant` under a name claim; 409 naming `field` when it exists.
pub async fn create_named(
    store: &Store,
    tenant: &str,
    name: &str,
    field: &str,
    signing: Signing,
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
    match write_new(store, tenant, name, Dialect::Fynapse, signing).await {
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
    let signing = body.signing.unwrap_or(Signing::HmacSha256);
    let (secret, value) =
        create_named(&state.store, &who.tenant, &body.name, "name", signing).await?;
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
    all.retain(|(_, s)| dialect_of(&state.store, s) == Dialect::Fynapse);
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
    fynapse_secret(&state.store, &who.tenant, &name)
        .map(|s| Json(SecretOut::of(&s, None)))
        .ok_or_else(|| ApiError::not_found("secret"))
}

#[utoipa::path(post, path = "/api/v1/event-deliveries/secrets/{name}/rotate", tag = "fynapse",
    params(("name" = String, Path)), request_body = Option<RotateSecret>,
    responses((status = 200, description = "The new value, shown only here; older versions sign until `expiresAt`", body = SecretOut),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn rotate(
    State(state): State<AppState>,
    who: Principal,
    PathParam(name): PathParam,
    OptionalJsonBody(body): OptionalJsonBody<RotateSecret>,
) -> Result<Json<SecretOut>, ApiError> {
    who.require(Role::Editor)?;
    let store = &state.store;
    let _one_at_a_time = store.write_lock.lock().await;
    store.secrets.sync().await;
    let secret =
        fynapse_secret(store, &who.tenant, &name).ok_or_else(|| ApiError::not_found("secret"))?;
    let signing = body.and_then(|b| b.signing);
    let (secret, value) = rotate_value(store, secret, store.rotation_overlap, signing).await?;
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
    if fynapse_secret(store, &who.tenant, &name).is_none() {
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
