//! The Synctera event-type catalog: the seed's list, `balance.extracted`, and the types admins
//! registered (event-sourced on the compacted event-types topic).
//!
//! - [`check_enabled_events`]: every entry is a catalog type, or `PREFIX.*` where `PREFIX.`
//!   starts some catalog type.
//! - `POST /admin/v1/event-types` (admin) registers a type; `GET` lists the catalog.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hookline_auth::{Principal, Role};
use hookline_config::Config;
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_kafka::KafkaError;
use hookline_kafka::rdkafka::Message as _;
use hookline_kafka::view::{TopicView, Update};
use hookline_proto::Message as _;
use hookline_proto::v1::RegisteredEventType;
use hookline_runtime::{ApiError, JsonBody};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::input::{DESCRIPTION_MAX, ErrorBody, check_len};

/// The event types of the Synctera seed (`enabled_events`' options), plus `balance.extracted`.
pub const SEED_EVENT_TYPES: &[&str] = &[
    "ACCOUNT.CREATED",
    "ACCOUNT.UPDATED",
    "ADDRESS.CREATED",
    "ADDRESS.UPDATED",
    "ACH.INCOMING.FUTURE_DATED",
    "APPLICATION.CREATED",
    "APPLICATION.UPDATED",
    "BUSINESS.CREATED",
    "BUSINESS.UPDATED",
    "BUSINESS.VERIFICATION_OUTCOME.UPDATED",
    "CARD.CREATED",
    "CARD.DIGITALWALLETTOKEN.CREATED",
    "CARD.DIGITALWALLETTOKEN.UPDATED",
    "CARD.IMAGE.UPDATED",
    "CARD.THREE_DS.DECISION",
    "CARD.THREE_DS.AUTHENTICATION",
    "CARD.UPDATED",
    "CASE.CREATED",
    "CASE.UPDATED",
    "CASH_PICKUP.CREATED",
    "CASH_PICKUP.UPDATED",
    "CREDIT_SCORE.CREATED",
    "CUSTOMER.CREATED",
    "CUSTOMER.KYC_OUTCOME.UPDATED",
    "CUSTOMER.UPDATED",
    "DOCUMENT_VERIFICATION_SESSION.CREATED",
    "DOCUMENT_VERIFICATION_SESSION.UPDATED",
    "EXTERNAL_CARD_TRANSFER.CREATED",
    "EXTERNAL_CARD_TRANSFER.UPDATED",
    "EXTERNAL_CARD.CREATED",
    "EXTERNAL_CARD.DELETED",
    "EXTERNAL_CARD.UPDATED",
    "INTEREST.MONTHLY_PAYOUT",
    "INTERNAL_ACCOUNT.CREATED",
    "INTERNAL_ACCOUNT.UPDATED",
    "INTERNAL_TRANSFER.SUCCEEDED",
    "NOTE.CREATED",
    "NOTE.UPDATED",
    "PAYMENT_SCHEDULE.CREATED",
    "PAYMENT_SCHEDULE.PAYMENT.CREATED",
    "PAYMENT_SCHEDULE.UPDATED",
    "PERSON.CREATED",
    "PERSON.UPDATED",
    "PERSON.VERIFICATION_OUTCOME.UPDATED",
    "STATEMENT.CREATED",
    "TRANSACTION.PENDING.CREATED",
    "TRANSACTION.PENDING.UPDATED",
    "TRANSACTION.POSTED.CREATED",
    "TRANSACTION.POSTED.UPDATED",
    "SPEND_CONTROL.CREATED",
    "SPEND_CONTROL.UPDATED",
    "SPEND_CONTROL.VIOLATED",
    "EDD.CREATED",
    "EDD.DELETED",
    "CRR.CREATED",
    "DOCUMENT.CREATED",
    "DOCUMENT.UPDATED",
    "DOCUMENT.DELETED",
    "DOCUMENT.RETRIEVED",
    "RESOURCE_MAPPING.CREATED",
    "RESOURCE_MAPPING.UPDATED",
    "RESOURCE_MAPPING.DELETED",
    "balance.extracted",
];

pub fn view(config: &Config) -> Result<TopicView<RegisteredEventType>, KafkaError> {
    TopicView::start(config, &config.topic_event_types, |msg| {
        let Some(key) = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return Update::Skip;
        };
        match msg.payload().map(RegisteredEventType::decode) {
            None => Update::Delete(key),
            Some(Ok(t)) => Update::Upsert(key, t),
            Some(Err(e)) => {
                tracing::warn!(offset = msg.offset(), error = %e, "undecodable event type skipped");
                Update::Skip
            }
        }
    })
}

fn in_catalog(state: &AppState, matches: impl Fn(&str) -> bool) -> bool {
    SEED_EVENT_TYPES.iter().any(|t| matches(t))
        || state
            .store
            .event_types
            .read(|t| t.keys().any(|k| matches(k)))
}

/// Synctera `enabled_events`: at least one entry, each a catalog type or a `PREFIX.*`
/// pattern matching some catalog type. Errors name the offending value.
pub fn check_enabled_events(
    state: &AppState,
    field: &str,
    events: &[String],
) -> Result<(), ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must name at least one event type"),
        ));
    }
    crate::input::check_event_type_syntax(field, events)?;
    for e in events {
        let known = if e.ends_with(".*") {
            in_catalog(state, |t| hookline_routing::pattern_matches(e, t))
        } else {
            in_catalog(state, |t| t == e)
        };
        if !known {
            return Err(ApiError::invalid(
                field,
                format!("{e:?} is not a known event type or a pattern matching one"),
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterEventType {
    /// Dot-separated words of letters, digits, `_` or `-`.
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    #[schema(max_length = 1024)]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeOut {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// True for the seed's types; false for types an admin registered.
    pub built_in: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<String>,
}

impl EventTypeOut {
    fn of(t: &RegisteredEventType) -> Self {
        Self {
            name: t.name.clone(),
            description: t.description.clone(),
            built_in: false,
            registered_at: Some(rfc3339_millis(t.registered_at_ms)),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EventTypeList {
    pub items: Vec<EventTypeOut>,
}

#[utoipa::path(post, path = "/admin/v1/event-types", tag = "admin",
    request_body = RegisterEventType,
    responses((status = 201, body = EventTypeOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<RegisterEventType>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Admin)?;
    hookline_events::validate_event_type(&body.name).map_err(|_| {
        ApiError::invalid(
            "name",
            format!(
                "{:?} is not dot-separated words of at most 255 characters",
                body.name
            ),
        )
    })?;
    check_len("description", body.description.as_deref(), DESCRIPTION_MAX)?;
    state.store.event_types.sync().await;
    if in_catalog(&state, |t| t == body.name) {
        return Err(ApiError::conflict(
            "name",
            format!("{:?} is already in the catalog", body.name),
        ));
    }
    let t = RegisteredEventType {
        name: body.name,
        description: body.description,
        registered_at_ms: now_ms(),
    };
    state.store.put_event_type(&t).await?;
    tracing::info!(event_type = %t.name, "event type registered");
    Ok((StatusCode::CREATED, Json(EventTypeOut::of(&t))))
}

#[utoipa::path(get, path = "/admin/v1/event-types", tag = "admin",
    responses((status = 200, body = EventTypeList), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, _who: Principal) -> Json<EventTypeList> {
    let mut items: Vec<EventTypeOut> = SEED_EVENT_TYPES
        .iter()
        .map(|t| EventTypeOut {
            name: (*t).to_owned(),
            description: None,
            built_in: true,
            registered_at: None,
        })
        .collect();
    let mut registered: Vec<EventTypeOut> = state
        .store
        .event_types
        .read(|t| t.values().map(EventTypeOut::of).collect());
    registered.sort_by(|a, b| a.name.cmp(&b.name));
    items.extend(registered);
    Json(EventTypeList { items })
}
