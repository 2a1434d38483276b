//! Fynapse subscriptions under `/api/v1/event-deliveries/subscriptions`: create, list, get,
//! replace (PUT), update (PATCH), delete. camelCase JSON as in the seed.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_proto::v1::{Dialect, Ordering, Subscription};
use hookline_runtime::{ApiError, JsonBody};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::claims::{self, Kind};
use crate::input::{
    DESCRIPTION_MAX, ErrorBody, PathParam, check_len, check_name, check_url, created_key,
    page_request, paginate, present,
};
use crate::secrets::{self, SecretOut};
use crate::store::Store;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateSubscription {
    /// Unique per tenant.
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    /// Absolute http(s) URL.
    #[schema(min_length = 1, max_length = 1000, format = Uri)]
    pub endpoint_url: String,
    /// Name of the secret that signs deliveries. Omitted or `null` on create: a secret named
    /// after the subscription is created and returned (with its value) in `secret`. Omitted
    /// or `null` on PUT: the current secret stays (a subscription always has a secret).
    #[schema(min_length = 1, max_length = 255)]
    pub secret_ref: Option<String>,
    /// Catalog types (`GET /admin/v1/event-types`), `PREFIX.*` matching one, or `*`; null or
    /// empty = every type. At most 100.
    #[schema(max_items = 100)]
    pub event_types: Option<Vec<String>>,
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    /// `strict` (default on create): per ordering key, deliveries in event order, retries
    /// included. `none`: no order. Omitted on PUT: unchanged. (A Hookline extension.)
    pub ordering: Option<OrderingMode>,
}

/// Delivery order of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderingMode {
    Strict,
    None,
}

impl OrderingMode {
    fn of(o: Ordering) -> Self {
        match o {
            Ordering::Strict => OrderingMode::Strict,
            Ordering::None => OrderingMode::None,
        }
    }

    fn proto(self) -> i32 {
        match self {
            OrderingMode::Strict => Ordering::Strict as i32,
            OrderingMode::None => Ordering::None as i32,
        }
    }
}

/// Only the fields present change; `null` clears `description`, resets `eventTypes` to
/// every type and keeps the current `secretRef` (as leaving it out does); `name` and
/// `endpointUrl` cannot be `null`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchSubscription {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1000, format = Uri)]
    pub endpoint_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255)]
    pub secret_ref: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, max_items = 100)]
    pub event_types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 1024)]
    pub description: Option<Option<String>>,
    pub ordering: Option<OrderingMode>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionOut {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub endpoint_url: String,
    pub secret_ref: String,
    /// Empty: every type.
    pub event_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub ordering: OrderingMode,
    pub created_at: String,
    pub updated_at: String,
    /// The auto-created secret, with its value, in the create response when `secretRef`
    /// was omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretOut>,
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
            ordering: OrderingMode::of(s.ordering()),
            created_at: rfc3339_millis(s.created_at_ms),
            updated_at: rfc3339_millis(s.updated_at_ms),
            secret,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionList {
    pub items: Vec<SubscriptionOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn check_fields(
    state: &AppState,
    name: &str,
    url: &str,
    secret_ref: Option<&str>,
    types: &[String],
    description: Option<&str>,
) -> Result<(), ApiError> {
    check_name("name", name)?;
    check_url("endpointUrl", url)?;
    if let Some(r) = secret_ref {
        check_name("secretRef", r)?;
    }
    crate::catalog::check_event_types(state, "eventTypes", types, true)?;
    check_len("description", description, DESCRIPTION_MAX)
}

fn name_taken(store: &Store, tenant: &str, name: &str, except_id: &str) -> bool {
    store.subscriptions.read(|t| {
        t.values().any(|s| {
            s.tenant == tenant
                && s.dialect() == Dialect::Fynapse
                && s.name == name
                && s.id != except_id
        })
    })
}

fn secret_exists(store: &Store, tenant: &str, name: &str) -> Result<(), ApiError> {
    match secrets::fynapse_secret(store, tenant, name) {
        Some(_) => Ok(()),
        // Valid by the document, refused by the state: a conflict, as a taken name is.
        None => Err(ApiError::conflict(
            "secretRef",
            format!("no secret named {name:?}: create it first"),
        )),
    }
}

fn taken(name: &str) -> ApiError {
    ApiError::conflict(
        "name",
        format!("a subscription named {name:?} already exists"),
    )
}

#[utoipa::path(post, path = "/api/v1/event-deliveries/subscriptions", tag = "fynapse",
    request_body = CreateSubscription,
    responses((status = 201, body = SubscriptionOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<CreateSubscription>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Editor)?;
    let event_types = body.event_types.unwrap_or_default();
    let (name, url) = (body.name, body.endpoint_url);
    state.store.event_types.sync().await;
    check_fields(
        &state,
        &name,
        &url,
        body.secret_ref.as_deref(),
        &event_types,
        body.description.as_deref(),
    )?;
    let store = &state.store;
    let tenant = who.tenant.as_str();
    store.sync().await;
    if name_taken(store, tenant, &name, "") {
        return Err(taken(&name));
    }
    if let Some(r) = &body.secret_ref {
        secret_exists(store, tenant, r)?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let held = claims::claim(store, Kind::Subscription, tenant, &name, &id, "name").await?;
    let (secret_ref, created) = match body.secret_ref {
        Some(r) => (r, None),
        None => match secrets::create_named(store, tenant, &name, "secretRef").await {
            Ok((secret, value)) => (name.clone(), Some(SecretOut::of(&secret, Some(value)))),
            Err(e) => {
                claims::abandon(store, held).await;
                return Err(e);
            }
        },
    };
    let now = now_ms();
    let sub = Subscription {
        id,
        tenant: tenant.to_owned(),
        dialect: Dialect::Fynapse as i32,
        name,
        endpoint_url: url,
        secret_ref,
        event_types,
        description: body.description,
        enabled: true,
        metadata: None,
        ordering: body.ordering.unwrap_or(OrderingMode::Strict).proto(),
        created_at_ms: now,
        updated_at_ms: now,
        version: 1,
    };
    if let Err(e) = store.put_subscription(&sub).await {
        if created.is_some() {
            let _ = claims::release(store, Kind::Secret, tenant, &sub.secret_ref).await;
            let _ = store.delete_secret(tenant, &sub.secret_ref).await;
        }
        claims::abandon(store, held).await;
        return Err(e);
    }
    tracing::info!(tenant, id = %sub.id, "subscription created");
    Ok((
        StatusCode::CREATED,
        Json(SubscriptionOut::of(&sub, created)),
    ))
}

#[utoipa::path(get, path = "/api/v1/event-deliveries/subscriptions", tag = "fynapse",
    params(("limit" = Option<u32>, Query, description = "Page size, 1-100 (default 50)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page")),
    responses((status = 200, description = "Oldest first (creation time, then id)", body = SubscriptionList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    RawQuery(query): RawQuery,
) -> Result<Json<SubscriptionList>, ApiError> {
    let page = page_request(query.as_deref(), "cursor")?;
    let mut subs: Vec<(String, Subscription)> = state.store.subscriptions.read(|t| {
        t.values()
            .filter(|s| s.tenant == who.tenant && s.dialect() == Dialect::Fynapse)
            .map(|s| (created_key(s.created_at_ms, &s.id), s.clone()))
            .collect()
    });
    subs.sort_by(|a, b| a.0.cmp(&b.0));
    let (items, next_cursor) = paginate(subs, &page);
    Ok(Json(SubscriptionList {
        items: items.iter().map(|s| SubscriptionOut::of(s, None)).collect(),
        next_cursor,
    }))
}

fn find(store: &Store, who: &Principal, id: &str) -> Result<Subscription, ApiError> {
    store.subscription_of(who, id, Dialect::Fynapse, "subscription")
}

#[utoipa::path(get, path = "/api/v1/event-deliveries/subscriptions/{id}", tag = "fynapse",
    params(("id" = String, Path)),
    responses((status = 200, body = SubscriptionOut), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam,
) -> Result<Json<SubscriptionOut>, ApiError> {
    find(&state.store, &who, &id).map(|s| Json(SubscriptionOut::of(&s, None)))
}

/// Applies `change` to subscription `id` and stores it, re-claiming the name if it changed.
async fn update(
    state: &AppState,
    who: &Principal,
    id: &str,
    change: impl FnOnce(&mut Subscription),
) -> Result<Json<SubscriptionOut>, ApiError> {
    let store = &state.store;
    let _change = store.change(who).await?;
    let old = find(store, who, id)?;
    let mut sub = old.clone();
    change(&mut sub);
    store.event_types.sync().await;
    check_fields(
        state,
        &sub.name,
        &sub.endpoint_url,
        Some(&sub.secret_ref),
        &sub.event_types,
        sub.description.as_deref(),
    )?;
    if sub.secret_ref != old.secret_ref {
        secret_exists(store, &sub.tenant, &sub.secret_ref)?;
    }
    if sub.name != old.name {
        if name_taken(store, &sub.tenant, &sub.name, id) {
            return Err(taken(&sub.name));
        }
        claims::claim(
            store,
            Kind::Subscription,
            &sub.tenant,
            &sub.name,
            id,
            "name",
        )
        .await?;
        // Released before the rename is written: the old name stays held by the record.
        claims::release(store, Kind::Subscription, &old.tenant, &old.name).await?;
    }
    sub.updated_at_ms = now_ms();
    sub.version += 1;
    store.put_subscription(&sub).await?;
    Ok(Json(SubscriptionOut::of(&sub, None)))
}

#[utoipa::path(put, path = "/api/v1/event-deliveries/subscriptions/{id}", tag = "fynapse",
    params(("id" = String, Path)), request_body = CreateSubscription,
    responses((status = 200, body = SubscriptionOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn replace(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<CreateSubscription>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    update(&state, &who, &id, |s| {
        s.name = body.name;
        s.endpoint_url = body.endpoint_url;
        if let Some(r) = body.secret_ref {
            s.secret_ref = r;
        }
        s.event_types = body.event_types.unwrap_or_default();
        s.description = body.description;
        if let Some(o) = body.ordering {
            s.ordering = o.proto();
        }
    })
    .await
}

fn required(field: &str, v: Option<Option<String>>) -> Result<Option<String>, ApiError> {
    match v {
        Some(None) => Err(ApiError::invalid(
            field,
            format!("`{field}` cannot be null"),
        )),
        Some(Some(v)) => Ok(Some(v)),
        None => Ok(None),
    }
}

#[utoipa::path(patch, path = "/api/v1/event-deliveries/subscriptions/{id}", tag = "fynapse",
    params(("id" = String, Path)), request_body = PatchSubscription,
    responses((status = 200, body = SubscriptionOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<PatchSubscription>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    let name = required("name", body.name)?;
    let url = required("endpointUrl", body.endpoint_url)?;
    // `null` keeps the current secret, as leaving the field out does: a subscription always
    // has one.
    let secret_ref = body.secret_ref.flatten();
    update(&state, &who, &id, |s| {
        if let Some(v) = name {
            s.name = v;
        }
        if let Some(v) = url {
            s.endpoint_url = v;
        }
        if let Some(v) = secret_ref {
            s.secret_ref = v;
        }
        if let Some(v) = body.event_types {
            s.event_types = v.unwrap_or_default();
        }
        if let Some(v) = body.description {
            s.description = v;
        }
        if let Some(o) = body.ordering {
            s.ordering = o.proto();
        }
    })
    .await
}

#[utoipa::path(delete, path = "/api/v1/event-deliveries/subscriptions/{id}", tag = "fynapse",
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; its secret stays"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    let store = &state.store;
    let _change = store.change(&who).await?;
    let sub = find(store, &who, &id)?;
    claims::release(store, Kind::Subscription, &sub.tenant, &sub.name).await?;
    store.delete_subscription(&id).await?;
    tracing::info!(tenant = %sub.tenant, id, "subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}
