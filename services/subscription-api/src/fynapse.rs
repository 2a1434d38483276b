//! Fynapse subscriptions under `/api/v1/event-deliveries/subscriptions`: create, list, get,
//! replace (PUT), update (PATCH), delete. camelCase JSON as in the seed.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hookline_auth::Principal;
use hookline_events::time_fmt::rfc3339_millis;
use hookline_proto::v1::{Dialect, Ordering, Subscription};
use hookline_runtime::{ApiError, JsonBody};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::controls::{controls_out, rate_limit_shape, with_controls};
use crate::input::{ErrorBody, PathParam, present};
use crate::secrets::{SecretOut, Signing};
use crate::store::Store;
use crate::subscriptions::{self, Face, NewSecret};

with_controls!(create RateLimitBody,
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
});

rate_limit_shape!(RateLimitBody, "perSecond", "perMinute");
controls_out!(SubscriptionControls, RateLimitBody, "camelCase");

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

with_controls!(patch RateLimitBody,
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
});

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
    #[serde(flatten)]
    pub controls: SubscriptionControls,
    pub created_at: String,
    pub updated_at: String,
    /// The auto-created secret, with its value, in the create response when `secretRef`
    /// was omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretOut>,
}

impl SubscriptionOut {
    fn of(store: &Store, s: &Subscription, secret: Option<SecretOut>) -> Self {
        Self {
            id: s.id.clone(),
            name: s.name.clone(),
            endpoint_url: s.endpoint_url.clone(),
            secret_ref: s.secret_ref.clone(),
            event_types: s.event_types.clone(),
            description: s.description.clone(),
            ordering: OrderingMode::of(s.ordering()),
            controls: SubscriptionControls::of(store, s),
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

/// How the Fynapse dialect names the model's fields.
pub const FACE: Face = Face {
    dialect: Dialect::Fynapse,
    what: "subscription",
    name: "name",
    endpoint_url: "endpointUrl",
    secret_ref: "secretRef",
    event_types: "eventTypes",
    description: "description",
    metadata: "metadata",
    headers: "headers",
    signing: "signing",
    rate_limit: "rateLimit",
    per_second: "perSecond",
    per_minute: "perMinute",
    max_in_flight: "maxInFlight",
    all_types: true,
    unique_names: true,
    own_secret: false,
};

#[utoipa::path(post, path = "/api/v1/event-deliveries/subscriptions", tag = "fynapse",
    request_body = CreateSubscription,
    responses((status = 201, body = SubscriptionOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(mut body): JsonBody<CreateSubscription>,
) -> Result<impl IntoResponse, ApiError> {
    let controls = body.controls(&FACE)?;
    let mut sub = subscriptions::draft(&FACE, &who.tenant);
    sub.name = body.name;
    sub.endpoint_url = body.endpoint_url;
    sub.event_types = body.event_types.unwrap_or_default();
    sub.description = body.description;
    sub.ordering = body.ordering.unwrap_or(OrderingMode::Strict).proto();
    controls.apply(&state.store, &FACE, &mut sub)?;
    let secret = match body.secret_ref {
        Some(r) => NewSecret::Existing(r),
        None => NewSecret::Named(sub.name.clone()),
    };
    let (sub, created) =
        subscriptions::create(&state, &who, &FACE, sub, secret, body.signing).await?;
    let secret = created.map(|(s, value)| SecretOut::of(&s, Some(value)));
    Ok((
        StatusCode::CREATED,
        Json(SubscriptionOut::of(&state.store, &sub, secret)),
    ))
}

subscriptions::face_handlers! {
    tag: "fynapse",
    collection: "/api/v1/event-deliveries/subscriptions",
    item: "/api/v1/event-deliveries/subscriptions/{id}",
    test: "/api/v1/event-deliveries/subscriptions/{id}/test",
    out: SubscriptionOut,
    list: SubscriptionList { items, next_cursor },
    cursor: "cursor",
    cursor_doc: "`nextCursor` of the previous page",
    list_doc: "Oldest first (creation time, then id)",
    all_tenants: false,
    deleted_doc: "Deleted; its secret stays",
    example: SendExample, ExampleOut, ExampleAttempt, "camelCase", "eventType",
}

async fn update(
    state: &AppState,
    who: &Principal,
    id: &str,
    signing: Option<Signing>,
    change: impl FnOnce(&mut Subscription) -> Result<(), ApiError>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    let sub = subscriptions::update(state, who, &FACE, id, signing, change).await?;
    Ok(Json(SubscriptionOut::of(&state.store, &sub, None)))
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
    JsonBody(mut body): JsonBody<CreateSubscription>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    let controls = body.controls(&FACE)?.replacing();
    update(&state, &who, &id, body.signing, |s| {
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
        controls.apply(&state.store, &FACE, s)
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
    JsonBody(mut body): JsonBody<PatchSubscription>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    let controls = body.controls(&FACE)?;
    let name = required("name", body.name)?;
    let url = required("endpointUrl", body.endpoint_url)?;
    // `null` keeps the current secret, as leaving the field out does: a subscription always
    // has one.
    let secret_ref = body.secret_ref.flatten();
    update(&state, &who, &id, body.signing, |s| {
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
        controls.apply(&state.store, &FACE, s)
    })
    .await
}
