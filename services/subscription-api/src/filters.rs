//! Payload filters in the API, for every dialect: the field `filter` (a JSON object, `null`
//! to clear) stored as canonical JSON text, its check (a 400 naming the path of the
//! offending part, `filter.data.amount.$gt`), its schema in the OpenAPI document, and
//! `POST …/{id}/filter-test`, which says whether a sample event matches and where it did not.
//! The language itself is `hookline_routing::filter`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use hookline_auth::Principal;
use hookline_proto::v1::Subscription;
use hookline_routing::filter::{self, Filter, MAX_BYTES, MAX_DEPTH, MAX_IN, MAX_REGEX_LEN};
use hookline_routing::{Mismatch, Subject};
use hookline_runtime::{ApiError, JsonBody};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::AppState;
use crate::input::{ErrorBody, PathParam, check_tenant};
use crate::subscriptions::{self, Face};
use crate::{fynapse, synctera};

/// What both dialects call the field.
pub const FIELD: &str = "filter";

/// The stored text of a filter given in a body (`None`: absent or `null`).
pub fn text(value: Option<Value>) -> Option<String> {
    value.map(|v| filter::canonical(&v))
}

/// The filter of a response body.
pub fn out(sub: &Subscription) -> Option<Value> {
    sub.filter
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
}

fn compile(text: &str) -> Result<Filter, ApiError> {
    Filter::parse(text, FIELD).map_err(|e| {
        let message = format!("`{}`: {}", e.path, e.message);
        if e.regex_refused {
            // A regex may be valid by the document's `format: regex` (ECMA-262) and still
            // not be one the linear-time engine takes: refused as a conflict, like other
            // requests valid by the document that the server cannot honour.
            ApiError::conflict(e.path.clone(), message)
        } else {
            ApiError::invalid(e.path.clone(), message)
        }
    })
}

/// Checks a subscription's filter (part of `subscriptions::validate`).
pub fn check(text: Option<&str>) -> Result<(), ApiError> {
    text.map_or(Ok(()), |t| compile(t).map(drop))
}

/// A sample event to test a filter with.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleEvent {
    /// The event type.
    #[schema(min_length = 1, max_length = 255)]
    pub r#type: String,
    /// Default: the subscription's tenant.
    #[schema(min_length = 1, max_length = 255)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    /// The event's `data`, any JSON (absent or `null`: `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    pub data: Option<Value>,
}

/// `event`, and optionally a `filter` to test instead of the subscription's own.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterTest {
    pub event: SampleEvent,
    /// A filter to test instead of the stored one (same language and limits).
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
}

/// Whether the sample matches, and if not, where the filter failed.
#[derive(Serialize, ToSchema)]
pub struct FilterTestResult {
    pub matches: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<MismatchOut>,
}

#[derive(Serialize, ToSchema)]
pub struct MismatchOut {
    /// The failing part's path in the filter: `data.amount.$gte`, `$or`, `$and.1.type`.
    pub path: String,
    pub reason: String,
}

async fn test(
    state: &AppState,
    who: &Principal,
    face: &Face,
    id: &str,
    body: FilterTest,
) -> Result<Json<FilterTestResult>, ApiError> {
    let sub = subscriptions::find(&state.store, who, face, id)?;
    let event = body.event;
    hookline_events::validate_event_type(&event.r#type)
        .map_err(|e| ApiError::invalid("event.type", format!("`event.type`: {e}")))?;
    if let Some(t) = &event.tenant {
        check_tenant("event.tenant", t)?;
    }
    let text = match body.filter {
        Some(v) => Some(filter::canonical(&v)),
        None => sub.filter.clone(),
    };
    let Some(text) = text else {
        // No filter: every event of the subscription's types.
        return Ok(Json(FilterTestResult {
            matches: true,
            mismatch: None,
        }));
    };
    let compiled = compile(&text)?;
    let metadata = event.metadata.unwrap_or_default();
    let data = event.data.unwrap_or_else(|| json!({}));
    let subject = Subject {
        r#type: &event.r#type,
        tenant: event.tenant.as_deref().unwrap_or(&sub.tenant),
        metadata: &metadata,
        data: Some(&data),
    };
    let mismatch = compiled
        .explain(&subject)
        .map(|Mismatch { path, reason }| MismatchOut { path, reason });
    Ok(Json(FilterTestResult {
        matches: mismatch.is_none(),
        mismatch,
    }))
}

#[utoipa::path(post, path = "/api/v1/event-deliveries/subscriptions/{id}/filter-test",
    tag = "fynapse", params(("id" = String, Path)), request_body = FilterTest,
    responses((status = 200, description = "Whether the sample event matches the filter \
        (the subscription's, or the body's `filter`), and where it did not", body = FilterTestResult),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A `$regex` the engine cannot take", body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn fynapse_test(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<FilterTest>,
) -> Result<Json<FilterTestResult>, ApiError> {
    test(&state, &who, &fynapse::FACE, &id, body).await
}

#[utoipa::path(post, path = "/v2/webhooks/{id}/filter-test", tag = "synctera",
    params(("id" = String, Path)), request_body = FilterTest,
    responses((status = 200, description = "Whether the sample event matches the filter \
        (the webhook's, or the body's `filter`), and where it did not", body = FilterTestResult),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A `$regex` the engine cannot take", body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn synctera_test(
    State(state): State<AppState>,
    who: Principal,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<FilterTest>,
) -> Result<Json<FilterTestResult>, ApiError> {
    test(&state, &who, &synctera::FACE, &id, body).await
}

/// The description of the filter schema in the document.
pub fn description() -> String {
    format!(
        "A payload filter (a Hookline extension): only events that match it are delivered. \
         Keys are field paths (`type`, `tenant`, `metadata.<key>`, `data.<path>` with dotted \
         steps and array elements by index, `data.items.0.sku`; a path does not fan out over \
         arrays) or `$and`/`$or` (non-empty arrays of filters) and `$not` (a filter); several \
         keys must all hold. A field's value is a scalar (equality) or an object of operators: \
         `$eq $neq $gt $gte $lt $lte $in $nin $exists $startsWith $endsWith $regex $not`. \
         Numbers compare by value, strings lexicographically; a value of another type never \
         matches (but `$neq`/`$nin` hold for it); a missing field matches only \
         `$exists: false`. Limits: {MAX_BYTES} bytes of canonical JSON, {MAX_DEPTH} levels of \
         nesting, {MAX_IN} values per `$in`/`$nin`, 8 regexes of at most {MAX_REGEX_LEN} \
         characters (Rust `regex` syntax: linear time, no look-around or back-references). \
         `null` clears it. Stored and returned with its keys sorted."
    )
}

/// The components of the filter schema: `Filter` (recursive through `$and`, `$or`, `$not`),
/// `FilterCondition` and `FilterOperators`, as strict as the server's check.
pub fn components() -> Vec<(&'static str, Value)> {
    let scalar = json!({"type": ["string", "number", "boolean", "null"]});
    let bound = json!({"type": ["string", "number"]});
    let list = json!({"type": "array", "maxItems": MAX_IN, "items": scalar});
    let filter = json!({"$ref": "#/components/schemas/Filter"});
    let filters = json!({"type": "array", "minItems": 1, "items": filter});
    vec![
        (
            "Filter",
            json!({
                "type": "object",
                "description": description(),
                "properties": {"$and": filters, "$or": filters, "$not": filter},
                "patternProperties": {
                    "^(type|tenant|data|metadata\\.[\\s\\S]+|data(\\.[^.]+)+)$":
                        {"$ref": "#/components/schemas/FilterCondition"}
                },
                "additionalProperties": false,
            }),
        ),
        (
            "FilterCondition",
            json!({"anyOf": [scalar, {"$ref": "#/components/schemas/FilterOperators"}]}),
        ),
        (
            "FilterOperators",
            json!({
                "type": "object",
                "minProperties": 1,
                "additionalProperties": false,
                "properties": {
                    "$eq": scalar, "$neq": scalar,
                    "$gt": bound, "$gte": bound, "$lt": bound, "$lte": bound,
                    "$in": list, "$nin": list,
                    "$exists": {"type": "boolean"},
                    "$startsWith": {"type": "string"}, "$endsWith": {"type": "string"},
                    "$regex": {"type": "string", "format": "regex", "maxLength": MAX_REGEX_LEN},
                    "$not": {"$ref": "#/components/schemas/FilterCondition"},
                },
            }),
        ),
    ]
}

/// The schema of a `filter` property: a filter, or `null`.
pub fn property() -> Value {
    json!({
        "description": description(),
        "anyOf": [{"$ref": "#/components/schemas/Filter"}, {"type": "null"}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_path_under_filter() {
        let e = check(Some(
            &text(Some(json!({"data.amount": {"$gt": []}}))).unwrap(),
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("filter.data.amount.$gt"));
        assert!(
            e.message.starts_with("`filter.data.amount.$gt`: "),
            "{}",
            e.message
        );
        let e = check(Some("5")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("filter"));
        assert!(check(None).is_ok());
        assert!(check(Some(r#"{"type":"a"}"#)).is_ok());
    }
}
