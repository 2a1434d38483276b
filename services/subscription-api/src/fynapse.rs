//! The Fynapse dialect under `/api/v1/event-deliveries`: secrets and subscriptions.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, response::IntoResponse};
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_proto::v1::{Dialect, Ordering, Secret, Subscription};
use hookline_runtime::{ApiError, JsonBody};
use hookline_signing::WebhookSecret;
use serde::{Deserialize, Serialize};

use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/event-deliveries/secrets",
            get(list_secrets).post(create_secret),
        )
        .route("/api/v1/event-deliveries/secrets/{name}", get(get_secret))
        .route(
            "/api/v1/event-deliveries/subscriptions",
            get(list_subscriptions).post(create_subscription),
        )
        .route(
            "/api/v1/event-deliveries/subscriptions/{id}",
            get(get_subscription),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSecret {
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretOut {
    name: String,
    /// The `whsec_` value: present only in the response that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    created_at: String,
    updated_at: String,
}

impl SecretOut {
    fn of(s: &Secret, value: Option<String>) -> Self {
        Self {
            name: s.name.clone(),
            value,
            created_at: rfc3339_millis(s.created_at_ms),
            updated_at: rfc3339_millis(s.updated_at_ms),
        }
    }
}

pub(crate) fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    if !(1..=255).contains(&n) {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be 1-255 characters, got {n}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must not contain control characters"),
        ));
    }
    Ok(())
}

/// Creates a secret record for `name`; returns it and its plaintext value.
async fn new_secret(
    state: &AppState,
    tenant: &str,
    name: &str,
) -> Result<(Secret, String), ApiError> {
    let store = &state.store;
    store.secrets.sync().await;
    if store
        .secrets
        .get(&hookline_state::secret_key(tenant, name))
        .is_some()
    {
        return Err(ApiError::conflict(
            "name",
            format!("a secret named {name:?} already exists"),
        ));
    }
    let value = WebhookSecret::generate();
    let now = now_ms();
    let version = store
        .secret_box
        .seal(tenant, name, &value, now)
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let secret = Secret {
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        versions: vec![version],
        created_at_ms: now,
        updated_at_ms: now,
    };
    store.put_secret(&secret).await?;
    Ok((secret, value.expose()))
}

async fn create_secret(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<CreateSecret>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Editor)?;
    check_name("name", &body.name)?;
    let (secret, value) = new_secret(&state, &who.tenant, &body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(SecretOut::of(&secret, Some(value))),
    ))
}

async fn list_secrets(State(state): State<AppState>, who: Principal) -> Json<Vec<SecretOut>> {
    let mut out: Vec<SecretOut> = state.store.secrets.read(|t| {
        t.values()
            .filter(|s| s.tenant == who.tenant)
            .map(|s| SecretOut::of(s, None))
            .collect()
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Json(out)
}

async fn get_secret(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<Json<SecretOut>, ApiError> {
    state
        .store
        .secrets
        .get(&hookline_state::secret_key(&who.tenant, &name))
        .map(|s| Json(SecretOut::of(&s, None)))
        .ok_or_else(|| ApiError::not_found("secret"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateSubscription {
    name: String,
    endpoint_url: String,
    secret_ref: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionOut {
    id: String,
    name: String,
    endpoint_url: String,
    secret_ref: String,
    event_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    created_at: String,
    updated_at: String,
    /// The auto-created secret, with its value, when the request named none.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<SecretOut>,
}

impl SubscriptionOut {
    fn of(s: &Subscription, secret: Option<SecretOut>) -> Self {
        Self {
            id: s.id.clone(),
            name: s.name.clone(),
            endpoint_url: s.endpoint_url.clone(),
            secret_ref: s.secret_ref.clone(),
            event_types: s.event_types.clone(),
            description: s.description.clone(),
            created_at: rfc3339_millis(s.created_at_ms),
            updated_at: rfc3339_millis(s.updated_at_ms),
            secret,
        }
    }
}

/// An absolute http(s) URL of at most 1000 characters.
pub(crate) fn check_url(field: &str, text: &str) -> Result<(), ApiError> {
    if text.is_empty() || text.len() > 1000 {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be 1-1000 characters"),
        ));
    }
    let url = url::Url::parse(text)
        .map_err(|e| ApiError::invalid(field, format!("`{field}` is not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be an http or https URL with a host"),
        ));
    }
    Ok(())
}

/// Event-type patterns: exact types, `PREFIX.*`, or `*`.
pub(crate) fn check_event_types(field: &str, types: &[String]) -> Result<(), ApiError> {
    for t in types {
        let base = if t == "*" {
            None
        } else {
            Some(t.strip_suffix(".*").unwrap_or(t))
        };
        if let Some(base) = base {
            hookline_events::validate_event_type(base).map_err(|_| {
                ApiError::invalid(field, format!("{t:?} is not an event type or pattern"))
            })?;
        }
    }
    Ok(())
}

async fn create_subscription(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<CreateSubscription>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Editor)?;
    check_name("name", &body.name)?;
    check_url("endpointUrl", &body.endpoint_url)?;
    let event_types = body.event_types.unwrap_or_default();
    check_event_types("eventTypes", &event_types)?;
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1024)
    {
        return Err(ApiError::invalid(
            "description",
            "`description` must be at most 1024 characters",
        ));
    }
    let store = &state.store;
    store.sync().await;
    let taken = store.subscriptions.read(|t| {
        t.values()
            .any(|s| s.tenant == who.tenant && s.name == body.name)
    });
    if taken {
        return Err(ApiError::conflict(
            "name",
            format!("a subscription named {:?} already exists", body.name),
        ));
    }
    let (secret_ref, created_secret) = match body.secret_ref {
        Some(name) => {
            check_name("secretRef", &name)?;
            if store
                .secrets
                .get(&hookline_state::secret_key(&who.tenant, &name))
                .is_none()
            {
                return Err(ApiError::invalid(
                    "secretRef",
                    format!("no secret named {name:?}"),
                ));
            }
            (name, None)
        }
        None => {
            let (secret, value) =
                new_secret(&state, &who.tenant, &body.name)
                    .await
                    .map_err(|e| {
                        if e.status == StatusCode::CONFLICT {
                            ApiError::conflict("secretRef", e.message)
                        } else {
                            e
                        }
                    })?;
            (
                secret.name.clone(),
                Some(SecretOut::of(&secret, Some(value))),
            )
        }
    };
    let now = now_ms();
    let sub = Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: who.tenant.clone(),
        dialect: Dialect::Fynapse as i32,
        name: body.name,
        endpoint_url: body.endpoint_url,
        secret_ref,
        event_types,
        description: body.description,
        enabled: true,
        metadata: None,
        ordering: Ordering::Strict as i32,
        created_at_ms: now,
        updated_at_ms: now,
        version: 1,
    };
    store.put_subscription(&sub).await?;
    Ok((
        StatusCode::CREATED,
        Json(SubscriptionOut::of(&sub, created_secret)),
    ))
}

async fn list_subscriptions(
    State(state): State<AppState>,
    who: Principal,
) -> Json<Vec<SubscriptionOut>> {
    let mut subs: Vec<Subscription> = state.store.subscriptions.read(|t| {
        t.values()
            .filter(|s| s.tenant == who.tenant && s.dialect() == Dialect::Fynapse)
            .cloned()
            .collect()
    });
    subs.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    Json(subs.iter().map(|s| SubscriptionOut::of(s, None)).collect())
}

async fn get_subscription(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    state
        .store
        .subscriptions
        .get(&id)
        .filter(|s| s.tenant == who.tenant && s.dialect() == Dialect::Fynapse)
        .map(|s| Json(SubscriptionOut::of(&s, None)))
        .ok_or_else(|| ApiError::not_found("subscription"))
}
