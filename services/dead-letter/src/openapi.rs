//! The OpenAPI 3.1 document of the operations API, served at `/openapi.json`. Written out by
//! hand from the same limits the handlers check (`query.rs`, `replay.rs`); the unit test
//! checks that every routed operation is documented and the other way round.

use serde_json::{Value, json};

use crate::query::{DEFAULT_LIMIT, MAX_ID, MAX_LIMIT};

pub const DELIVERIES: &str = "/api/v1/event-deliveries/deliveries";
pub const DELIVERY: &str = "/api/v1/event-deliveries/deliveries/{deliveryId}";
pub const DELIVERY_ATTEMPTS: &str = "/api/v1/event-deliveries/deliveries/{deliveryId}/attempts";
pub const DELIVERY_REPLAY: &str = "/api/v1/event-deliveries/deliveries/{deliveryId}/replay";
pub const ATTEMPTS: &str = "/api/v1/event-deliveries/attempts";
pub const DEAD_LETTERS: &str = "/api/v1/event-deliveries/dead-letters";
pub const DEAD_LETTER: &str = "/api/v1/event-deliveries/dead-letters/{deliveryId}";
pub const REPLAYS: &str = "/api/v1/event-deliveries/replays";
pub const REPLAY: &str = "/api/v1/event-deliveries/replays/{replayId}";
pub const QUARANTINE: &str = "/admin/v1/quarantine";
pub const QUARANTINE_REPUBLISH: &str = "/admin/v1/quarantine/{id}/republish";

/// Every documented (method, path), as routed by `lib.rs`.
pub const OPERATIONS: [(&str, &str); 12] = [
    ("get", DELIVERIES),
    ("get", DELIVERY),
    ("get", DELIVERY_ATTEMPTS),
    ("post", DELIVERY_REPLAY),
    ("get", ATTEMPTS),
    ("get", DEAD_LETTERS),
    ("get", DEAD_LETTER),
    ("post", REPLAYS),
    ("get", REPLAY),
    ("get", QUARANTINE),
    ("post", QUARANTINE_REPUBLISH),
    ("get", "/openapi.json"),
];

fn id_param(name: &str, what: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": what,
           "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID}})
}

fn query(name: &str, what: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": what, "schema": schema})
}

fn text() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_ID})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn page_params() -> Vec<Value> {
    vec![
        query(
            "limit",
            "page size",
            json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
        ),
        query(
            "cursor",
            "`nextCursor` of the previous page",
            json!({"type": "string", "pattern": crate::query::CURSOR_PATTERN}),
        ),
    ]
}

fn window_params() -> Vec<Value> {
    vec![
        query("since", "from this time (inclusive)", time()),
        query(
            "until",
            "before this time (exclusive); one not later than `since` selects nothing",
            time(),
        ),
    ]
}

fn errors(codes: &[&str]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for c in codes {
        m.insert(
            (*c).to_owned(),
            json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    m
}

fn ok(status: &str, schema: &str, extra: &[&str]) -> Value {
    let mut m = errors(&["400", "401", "403", "503"]);
    for c in extra {
        m.extend(errors(&[c]));
    }
    m.insert(
        status.to_owned(),
        json!({"description": "ok", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}),
    );
    Value::Object(m)
}

fn idempotency() -> Value {
    json!({"name": "Idempotency-Key", "in": "header", "required": false,
           "description": "the same key (per tenant) returns the run it started instead of starting another",
           "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID, "pattern": "^[ -~]+$"}})
}

fn list_of(item: &str) -> Value {
    json!({"type": "object", "required": ["items"], "properties": {
        "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
        "nextCursor": {"type": "string", "description": "pass as `cursor` for the next page; absent on the last page"}}})
}

pub fn document() -> Value {
    let nullable_int = json!({"type": ["integer", "null"]});
    let nullable_text = json!({"type": ["string", "null"]});
    let nullable_time = json!({"type": ["string", "null"], "format": "date-time"});
    let header = json!({"type": "object", "required": ["name", "value"], "properties": {
        "name": {"type": "string"}, "value": {"type": "string"}}});
    let mut attempts_params = vec![
        query("subscriptionId", "attempts of this subscription", text()),
        query("eventId", "attempts of this event", text()),
        query(
            "outcome",
            "`failed`: every attempt that did not succeed",
            json!({"type": "string", "enum": ["succeeded", "failed"]}),
        ),
    ];
    attempts_params.extend(window_params());
    attempts_params.extend(page_params());
    let mut dead_params = vec![
        query(
            "subscriptionId",
            "dead letters of this subscription",
            text(),
        ),
        query("eventType", "of this event type", text()),
        query(
            "reason",
            "whose reason contains this text (any case)",
            json!({"type": "string", "minLength": 1, "maxLength": 1024}),
        ),
    ];
    dead_params.extend(window_params());
    dead_params.extend(page_params());
    let mut deliveries_params = vec![
        json!({"name": "subscriptionId", "in": "query", "required": true,
            "description": "deliveries of this subscription", "schema": text()}),
        query(
            "state",
            "in this state now",
            json!({"type": "string", "enum": ["pending", "delivering", "retrying", "parked", "succeeded", "dead_lettered"]}),
        ),
    ];
    deliveries_params.extend(window_params());
    deliveries_params.push(page_params()[0].clone());
    deliveries_params.push(query(
        "cursor",
        "`nextCursor` of the previous page",
        json!({"type": "string", "pattern": crate::query::DELIVERY_CURSOR_PATTERN}),
    ));
    let mut quarantine_params = window_params();
    quarantine_params.extend(page_params());
    let delivery_id = id_param(
        "deliveryId",
        "the delivery id (the `webhook-id` receivers get)",
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Hookline operations API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Deliveries, attempts, dead letters and replays. Tenant-scoped: viewers read, editors replay, admins see every tenant. Lists are newest first (a delivery's attempts oldest first) with `limit` and `cursor` → `nextCursor`."},
        "security": [{"bearer": []}],
        "paths": {
            DELIVERIES: {"get": {"operationId": "listDeliveries", "summary": "A subscription's deliveries by creation time, newest first, with their state (a `state` filter may make a page shorter than `limit`: follow `nextCursor`)",
                "parameters": deliveries_params, "responses": ok("200", "DeliveryList", &[])}},
            DELIVERY: {"get": {"operationId": "getDelivery", "summary": "One delivery: its state, attempt count, last status and next attempt time",
                "parameters": [delivery_id.clone()], "responses": ok("200", "Delivery", &["404"])}},
            DELIVERY_ATTEMPTS: {"get": {"operationId": "listDeliveryAttempts", "summary": "A delivery's attempts, in order",
                "parameters": [delivery_id.clone(), page_params()[0].clone(), page_params()[1].clone()], "responses": ok("200", "AttemptList", &["404"])}},
            DELIVERY_REPLAY: {"post": {"operationId": "replayDelivery", "summary": "Send one delivery again (same delivery id, fresh attempt budget)",
                "parameters": [delivery_id.clone(), idempotency()], "responses": ok("202", "ReplayStarted", &["404", "409"])}},
            ATTEMPTS: {"get": {"operationId": "listAttempts", "summary": "Attempts by subscription or event, newest first",
                "parameters": attempts_params, "responses": ok("200", "AttemptList", &[])}},
            DEAD_LETTERS: {"get": {"operationId": "listDeadLetters", "summary": "Dead letters with their last attempt, newest first",
                "parameters": dead_params, "responses": ok("200", "DeadLetterList", &[])}},
            DEAD_LETTER: {"get": {"operationId": "getDeadLetter", "summary": "A delivery's latest dead letter with its last attempt",
                "parameters": [delivery_id], "responses": ok("200", "DeadLetter", &["404"])}},
            REPLAYS: {"post": {"operationId": "startReplay", "summary": "Replay a subscription's deliveries by filter; `outcome: failed` recovers everything dead-lettered since `since`",
                "parameters": [idempotency()],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReplayRequest"}}}},
                "responses": ok("202", "ReplayStarted", &["404", "409", "413"])}},
            REPLAY: {"get": {"operationId": "getReplay", "summary": "A replay run: state, selected, enqueued, delivered so far",
                "parameters": [id_param("replayId", "the run's id")], "responses": ok("200", "Replay", &["404"])}},
            QUARANTINE: {"get": {"operationId": "listQuarantine", "summary": "Records the router could not decode, with the reason (admin)",
                "parameters": quarantine_params, "responses": ok("200", "QuarantineList", &[])}},
            QUARANTINE_REPUBLISH: {"post": {"operationId": "republishQuarantined", "summary": "Publish a quarantined record again, unchanged, to the topic it came from (admin)",
                "parameters": [json!({"name": "id", "in": "path", "required": true, "description": "the record's id from the list",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{27}$"}})],
                "responses": ok("202", "Republished", &["404"])}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "the document", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}},
                "DeliveryList": list_of("Delivery"),
                "Delivery": {"type": "object", "required": ["deliveryId", "tenant", "subscriptionId", "eventId", "eventType", "state", "attempts", "createdAt"], "properties": {
                    "deliveryId": {"type": "string"}, "tenant": {"type": "string"}, "subscriptionId": {"type": "string"},
                    "eventId": {"type": "string"}, "eventType": {"type": "string"},
                    "state": {"type": "string", "enum": ["pending", "delivering", "retrying", "parked", "succeeded", "dead_lettered"]},
                    "attempts": {"type": "integer", "minimum": 0}, "lastStatus": nullable_int.clone(), "lastErrorClass": nullable_text.clone(),
                    "lastAttemptAt": nullable_time.clone(), "nextAttemptAt": nullable_time.clone(),
                    "createdAt": time(), "deadLetteredAt": nullable_time.clone(), "replayId": nullable_text.clone()}},
                "Header": header,
                "Attempt": {"type": "object", "required": ["deliveryId", "tenant", "subscriptionId", "eventId", "eventType", "attempt", "startedAt", "durationMs", "outcome", "endpointUrl", "requestHeaders", "responseHeaders", "responseBody"], "properties": {
                    "deliveryId": {"type": "string"}, "tenant": {"type": "string"}, "subscriptionId": {"type": "string"},
                    "eventId": {"type": "string"}, "eventType": {"type": "string"}, "attempt": {"type": "integer", "minimum": 0},
                    "startedAt": time(), "durationMs": {"type": "integer", "minimum": 0}, "status": nullable_int,
                    "outcome": {"type": "string", "enum": ["succeeded", "retryable", "failed"]},
                    "errorClass": nullable_text.clone(), "error": nullable_text.clone(), "endpointUrl": {"type": "string"},
                    "requestHeaders": {"type": "array", "description": "as sent; `webhook-signature` values masked", "items": {"$ref": "#/components/schemas/Header"}},
                    "responseHeaders": {"type": "array", "items": {"$ref": "#/components/schemas/Header"}},
                    "responseBody": {"type": "string", "description": "capped"},
                    "nextAttemptAt": nullable_time.clone(), "replayId": nullable_text.clone()}},
                "AttemptList": list_of("Attempt"),
                "DeadLetter": {"type": "object", "required": ["deliveryId", "tenant", "subscriptionId", "eventId", "eventType", "reason", "attempts", "deadLetteredAt"], "properties": {
                    "deliveryId": {"type": "string"}, "tenant": {"type": "string"}, "subscriptionId": {"type": "string"},
                    "eventId": {"type": "string"}, "eventType": {"type": "string"}, "reason": {"type": "string"},
                    "attempts": {"type": "integer", "minimum": 0}, "lastStatus": {"type": ["integer", "null"]}, "lastError": nullable_text,
                    "deadLetteredAt": time(),
                    "lastAttempt": {"oneOf": [{"$ref": "#/components/schemas/Attempt"}, {"type": "null"}]}}},
                "DeadLetterList": list_of("DeadLetter"),
                "ReplayRequest": {"type": "object", "additionalProperties": false, "required": ["subscriptionId", "since"], "properties": {
                    "subscriptionId": text(), "since": time(), "until": {"type": ["string", "null"], "format": "date-time", "description": "later than `since`; default: now"},
                    "outcome": {"type": ["string", "null"], "enum": ["succeeded", "failed", null], "description": "`failed`: recover (dead-lettered deliveries only); absent: every finished delivery"},
                    "eventTypes": {"type": ["array", "null"], "maxItems": 100, "items": text()}}},
                "Quarantined": {"type": "object", "required": ["id", "reason", "quarantinedAt", "sourceTopic", "sourcePartition", "sourceOffset", "key", "valuePreview", "valueBytes"], "properties": {
                    "id": {"type": "string"}, "reason": {"type": "string"}, "quarantinedAt": time(),
                    "sourceTopic": {"type": "string"}, "sourcePartition": {"type": "integer"}, "sourceOffset": {"type": "integer"},
                    "key": {"type": "string"}, "contentType": {"type": ["string", "null"]},
                    "valuePreview": {"type": "string", "description": "the value's first 1,024 bytes"}, "valueBytes": {"type": "integer", "minimum": 0}}},
                "QuarantineList": list_of("Quarantined"),
                "Republished": {"type": "object", "required": ["topic", "partition", "offset"], "properties": {
                    "topic": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"}}},
                "ReplayStarted": {"type": "object", "required": ["replayId"], "properties": {"replayId": {"type": "string"}}},
                "Replay": {"type": "object", "required": ["replayId", "state", "subscriptionId", "eventTypes", "selected", "enqueued", "unavailable", "delivered", "createdAt"], "properties": {
                    "replayId": {"type": "string"}, "state": {"type": "string", "enum": ["running", "completed"]},
                    "deliveryId": {"type": "string"}, "subscriptionId": {"type": "string"},
                    "since": time(), "until": time(), "outcome": {"type": "string", "enum": ["succeeded", "failed"]},
                    "eventTypes": {"type": "array", "items": {"type": "string"}},
                    "selected": {"type": "integer", "minimum": 0}, "enqueued": {"type": "integer", "minimum": 0},
                    "unavailable": {"type": "integer", "minimum": 0, "description": "selected, but their job has left the deliveries topic"},
                    "delivered": {"type": "integer", "minimum": 0, "description": "enqueued deliveries that succeeded since"},
                    "createdAt": time(), "finishedAt": time()}}
            }
        }
    })
}

/// [`document`] as the runtime serves it (with the health routes added).
pub fn served_document() -> utoipa::openapi::OpenApi {
    serde_json::from_value(document()).expect("the operations document is valid OpenAPI")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_valid_openapi() {
        let served = serde_json::to_value(served_document()).unwrap();
        assert_eq!(
            served["paths"].as_object().unwrap().len(),
            document()["paths"].as_object().unwrap().len()
        );
        let replay = &served["components"]["schemas"]["ReplayRequest"];
        assert_eq!(replay["additionalProperties"], false, "{replay}");
        assert_eq!(
            replay["required"],
            serde_json::json!(["subscriptionId", "since"])
        );
    }

    #[test]
    fn documents_every_operation_and_only_those() {
        let doc = document();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(p, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(|m| (m.clone(), p.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        documented.sort();
        let mut routed: Vec<(String, String)> = OPERATIONS
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        routed.sort();
        assert_eq!(documented, routed);
    }
}
