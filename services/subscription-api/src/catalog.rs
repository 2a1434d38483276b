//! The one event-type catalog of every dialect: the Synctera seed's list, `balance.extracted`
//! (the Fynapse seed), Hookline's operational `hookline.*` types, and the types admins
//! registered (event-sourced on the compacted event-types topic; the Svix face's event types
//! are these, and its `DELETE` archives one: no new subscription can choose it).
//!
//! - [`check_event_types`]: every entry is a catalog type, or `PREFIX.*` where `PREFIX.`
//!   starts some catalog type (or `*` where the dialect allows it); an unknown one is a 400
//!   naming it.
//! - [`patterns`]: every value the check accepts, for the OpenAPI document's enums.
//! - `POST /admin/v1/event-types` (admin) registers a type; `GET` lists the catalog.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hookline_auth::{Principal, Role};
use hookline_config::Config;
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_kafka::KafkaError;
use hookline_kafka::view::TopicView;
use hookline_proto::v1::RegisteredEventType;
use hookline_runtime::{ApiError, JsonBody};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::input::{DESCRIPTION_MAX, ErrorBody, check_len};

/// The event types of the seeds: Synctera's (`enabled_events`' options) and Fynapse's
/// `balance.extracted`.
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

/// The operational events Hookline publishes to the events topic itself.
pub const OPERATIONAL_EVENT_TYPES: &[&str] = &hookline_events::operational::TYPES;

/// The built-in catalog: the seeds' types, then the operational ones.
pub fn built_in() -> impl Iterator<Item = &'static str> {
    SEED_EVENT_TYPES
        .iter()
        .chain(OPERATIONAL_EVENT_TYPES)
        .copied()
}

pub fn view(config: &Config) -> Result<TopicView<RegisteredEventType>, KafkaError> {
    hookline_kafka::keyed_protobuf_view(config, &config.topic_event_types, |_| {})
}

/// Whether some catalog type (built-in, or registered and not archived) `matches`.
pub fn in_catalog(state: &AppState, matches: impl Fn(&str) -> bool) -> bool {
    built_in().any(&matches)
        || state
            .store
            .event_types
            .read(|t| t.values().any(|e| !e.archived && matches(&e.name)))
}

/// Every catalog type, built-in first, then the registered ones (not archived) by name.
pub fn catalog(state: &AppState) -> Vec<String> {
    let mut registered: Vec<String> = state.store.event_types.read(|t| {
        t.values()
            .filter(|e| !e.archived)
            .map(|e| e.name.clone())
            .collect()
    });
    registered.sort();
    built_in().map(str::to_owned).chain(registered).collect()
}

/// Every value an event-type list accepts given `types`: each type, each `PREFIX.*` whose
/// `PREFIX.` starts one, and `*` when `all` is allowed.
pub fn patterns(types: &[String], all: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if all {
        out.push("*".to_owned());
    }
    let mut prefixes = std::collections::BTreeSet::new();
    for t in types {
        out.push(t.clone());
        let mut at = 0;
        while let Some(dot) = t[at..].find('.') {
            prefixes.insert(format!("{}.*", &t[..at + dot]));
            at += dot + 1;
        }
    }
    out.extend(prefixes);
    out
}

/// An event-type list of either dialect: at most 100 entries, each a catalog type or a
/// `PREFIX.*` pattern matching some catalog type, or `*` when `all` is allowed. Errors name
/// the field and the offending value.
pub fn check_event_types(
    state: &AppState,
    field: &str,
    events: &[String],
    all: bool,
) -> Result<(), ApiError> {
    crate::input::check_event_type_syntax(field, events)?;
    for e in events {
        let known = if e == "*" {
            all
        } else if e.ends_with(".*") {
            in_catalog(state, |t| hookline_routing::pattern_matches(e, t))
        } else {
            in_catalog(state, |t| t == e)
        };
        if !known {
            return Err(ApiError::invalid(
                field,
                format!(
                    "{e:?} is not a known event type or a pattern matching one (see GET /admin/v1/event-types)"
                ),
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
    /// True for the seeds' and the operational types; false for types an admin registered.
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
    let now = now_ms();
    let t = RegisteredEventType {
        name: body.name,
        description: body.description,
        registered_at_ms: now,
        updated_at_ms: now,
        ..RegisteredEventType::default()
    };
    state.store.put_event_type(&t).await?;
    tracing::info!(event_type = %t.name, "event type registered");
    Ok((StatusCode::CREATED, Json(EventTypeOut::of(&t))))
}

#[utoipa::path(get, path = "/admin/v1/event-types", tag = "admin",
    responses((status = 200, body = EventTypeList), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, _who: Principal) -> Json<EventTypeList> {
    let mut items: Vec<EventTypeOut> = built_in()
        .map(|t| EventTypeOut {
            name: t.to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_cover_every_prefix_once() {
        let types = vec![
            "CARD.THREE_DS.DECISION".to_owned(),
            "CARD.CREATED".to_owned(),
        ];
        assert_eq!(
            patterns(&types, true),
            [
                "*",
                "CARD.THREE_DS.DECISION",
                "CARD.CREATED",
                "CARD.*",
                "CARD.THREE_DS.*"
            ]
        );
        assert!(!patterns(&types, false).contains(&"*".to_owned()));
        for p in patterns(&types, false) {
            let base = p.strip_suffix(".*").unwrap_or(&p);
            assert!(hookline_events::validate_event_type(base).is_ok(), "{p}");
        }
    }

    #[test]
    fn the_catalog_holds_both_seeds_and_the_operational_types() {
        let all: Vec<&str> = built_in().collect();
        for t in [
            "ACCOUNT.CREATED",
            "RESOURCE_MAPPING.DELETED",
            "balance.extracted",
        ] {
            assert!(all.contains(&t), "{t}");
        }
        assert!(all.contains(&"hookline.subscription.disabled"));
        assert_eq!(all.len(), SEED_EVENT_TYPES.len() + 3);
    }
}
