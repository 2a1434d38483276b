//! The extract producer's OpenAPI document, with the checks its handlers make (lengths,
//! patterns, enums, required fields), so a request valid by the document is accepted.

use serde_json::{Value, json};

use crate::api::{CRON_PATTERN, CURSOR_MAX, DESCRIPTION_MAX, LIMIT_DEFAULT, LIMIT_MAX, NAME_MAX};
use crate::query::{DECIMAL_PATTERN, FIELDS};

const NAME_PATTERN: &str = "^[^/]*$";
/// A runs list cursor: lowercase hex (`hookline_runtime::cursor`).
const CURSOR_PATTERN: &str = "^([0-9a-f]{2})*$";

fn err(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema":
        {"$ref": "#/components/schemas/ErrorBody"}}}})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema":
        {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string",
        "minLength": 1, "maxLength": NAME_MAX, "pattern": NAME_PATTERN}})
}

fn run_param() -> Value {
    json!({"name": "runId", "in": "path", "required": true, "schema": {"type": "string",
        "minLength": 1, "pattern": NAME_PATTERN}})
}

fn op(id: &str, summary: &str, params: Value, responses: &[(&str, Value)]) -> Value {
    let mut r = serde_json::Map::new();
    for (code, v) in responses {
        r.insert((*code).to_owned(), v.clone());
    }
    r.insert("401".into(), err("No or unknown token"));
    json!({"operationId": id, "summary": summary, "tags": ["extracts"], "parameters": params,
        "responses": r})
}

fn schemas() -> Value {
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let decimal = json!({"type": ["string", "null"], "pattern": DECIMAL_PATTERN,
        "description": "Exact decimal text, e.g. \"-12.50\"; absent or null: unbounded"});
    let query = json!({"type": "object", "additionalProperties": false,
        "description": "The Balance Query: filters (empty lists match every value; balance \
            bounds inclusive) and the fields of `data` (default: all five, in this order).",
        "properties": {
            "nodes": strings, "accounts": strings, "productNames": strings,
            "transactionCurrencies": strings,
            "balanceMin": decimal, "balanceMax": decimal,
            "fields": {"type": "array", "items": {"type": "string", "enum": FIELDS}}}});
    let mut timezones: Vec<Value> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|t| json!(t.name()))
        .collect();
    timezones.push(Value::Null);
    let schedule = json!({"type": "object", "additionalProperties": false, "required": ["cron"],
        "properties": {
            "cron": {"type": "string", "pattern": *CRON_PATTERN, "description":
                "minute hour day-of-month month day-of-week (seconds first when six fields); \
                 each `*`, `*/step` or a list of numbers"},
            "timeZone": {"type": ["string", "null"], "enum": timezones,
                "description": "IANA time zone of the cron expression; absent or null: UTC"}}});
    let nullable = |s: &str| json!({"oneOf": [{"type": "null"}, schema_ref(s)]});
    let description = json!({"type": ["string", "null"], "maxLength": DESCRIPTION_MAX});
    let fields = |with_name: bool, required: bool| {
        let mut props = json!({
            "target": {"type": "string", "enum": ["Webhook"]},
            "dataSource": {"type": "string", "enum": ["Balances"]},
            "description": description,
            "query": nullable("BalanceQuery"),
            "schedule": nullable("Schedule"),
            "active": {"type": ["boolean", "null"],
                "description": "Runs on schedule only while true (default false)"}});
        if with_name {
            props["name"] = json!({"type": "string", "minLength": 1, "maxLength": NAME_MAX,
                "pattern": NAME_PATTERN});
        }
        let mut s = json!({"type": "object", "additionalProperties": false,
            "properties": props});
        if required {
            s["required"] = if with_name {
                json!(["name", "target", "dataSource"])
            } else {
                json!(["target", "dataSource"])
            };
        }
        s
    };
    let mut replace = fields(false, true);
    replace["description"] = json!("The whole configuration; the name is the path's.");
    let mut extract = fields(true, true);
    extract["properties"]["createdAt"] = json!({"type": "string", "format": "date-time"});
    extract["properties"]["updatedAt"] = json!({"type": "string", "format": "date-time"});
    extract["properties"]["nextRunAt"] = json!({"type": ["string", "null"],
        "format": "date-time", "description": "Next scheduled run while active"});
    extract["properties"]["query"] = schema_ref("BalanceQuery");
    extract["required"] = json!([
        "name",
        "target",
        "dataSource",
        "query",
        "active",
        "createdAt",
        "updatedAt"
    ]);
    let mut patch = fields(false, false);
    patch["properties"]["target"] = json!({"type": ["string", "null"], "enum": ["Webhook", null]});
    patch["properties"]["dataSource"] =
        json!({"type": ["string", "null"], "enum": ["Balances", null]});
    let opt_text = json!({"type": ["string", "null"]});
    let run = json!({"type": "object", "required": ["runId", "extractName", "status",
        "trigger", "startedOn", "rowsEmitted", "rowsSkipped"],
        "properties": {
            "runId": {"type": "string"}, "extractName": {"type": "string"},
            "status": {"type": "string",
                "enum": ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]},
            "trigger": {"type": "string", "enum": ["manual", "schedule"]},
            "scheduledFor": opt_text, "startedOn": {"type": "string"},
            "finishedOn": opt_text,
            "rowsEmitted": {"type": "integer", "minimum": 0},
            "rowsSkipped": {"type": "integer", "minimum": 0,
                "description": "Selected rows whose balance is not a decimal"},
            "error": opt_text}});
    json!({"BalanceQuery": query, "Schedule": schedule, "CreateExtract": fields(true, true),
        "ReplaceExtract": replace, "PatchExtract": patch, "Extract": extract,
        "Run": run})
}

fn paths() -> Value {
    let extract = schema_ref("Extract");
    let run = schema_ref("Run");
    let both = json!([name_param(), run_param()]);
    let wait = json!({"name": "wait", "in": "query", "required": false,
        "schema": {"type": "boolean"}, "description": "Answer when the run has finished (201)"});
    let limit = json!({"name": "limit", "in": "query", "required": false,
        "description": format!("Page size, 1-{LIMIT_MAX} (default {LIMIT_DEFAULT})"),
        "schema": {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX}});
    let cursor = json!({"name": "cursor", "in": "query", "required": false,
        "description": "`nextCursor` of the previous page",
        "schema": {"type": "string", "pattern": CURSOR_PATTERN, "maxLength": CURSOR_MAX}});
    let mut p = json!({
        "/api/v1/extracts": {
            "post": op("createExtract", "Configure an extract", json!([]), &[
                ("201", ok("Created", extract.clone())), ("400", err("Invalid body")),
                ("403", err("Role too weak")), ("409", err("The name is taken")),
                ("413", err("Body too large")), ("503", err("Kafka unavailable"))]),
            "get": op("listExtracts", "Every extract of the tenant, by name", json!([]), &[
                ("200", ok("By name", json!({"type": "array", "items": extract})))]),
        },
        "/api/v1/extracts/{name}": {
            "get": op("getExtract", "One extract", json!([name_param()]), &[
                ("200", ok("The extract", extract.clone())), ("400", err("Bad name")),
                ("404", err("No such extract"))]),
            "put": op("replaceExtract", "Replace an extract's configuration",
                json!([name_param()]), &[
                ("200", ok("Replaced", extract.clone())), ("400", err("Invalid body")),
                ("403", err("Role too weak")), ("404", err("No such extract")),
                ("413", err("Body too large")), ("503", err("Kafka unavailable"))]),
            "patch": op("patchExtract", "Change some fields (null clears)",
                json!([name_param()]), &[
                ("200", ok("Changed", extract.clone())), ("400", err("Invalid body")),
                ("403", err("Role too weak")), ("404", err("No such extract")),
                ("413", err("Body too large")), ("503", err("Kafka unavailable"))]),
            "delete": op("deleteExtract", "Delete an extract", json!([name_param()]), &[
                ("204", json!({"description": "Deleted"})), ("400", err("Bad name")),
                ("403", err("Role too weak")), ("404", err("No such extract")),
                ("503", err("Kafka unavailable"))]),
        },
        "/api/v1/extracts/{name}/runs": {
            "post": op("runExtract", "Run now", json!([name_param(), wait]), &[
                ("201", ok("Run finished", run.clone())),
                ("202", ok("Run started", run.clone())), ("400", err("Bad input")),
                ("403", err("Role too weak")), ("404", err("No such extract")),
                ("503", err("Kafka unavailable"))]),
            "get": op("listRuns", "Runs, newest first, a page at a time",
                json!([name_param(), limit, cursor]), &[
                ("200", ok("Newest first (start time, then run id)", json!({"type": "object",
                    "required": ["items"], "properties": {
                        "items": {"type": "array", "items": run},
                        "nextCursor": {"type": "string", "pattern": CURSOR_PATTERN,
                            "description": "`cursor` of the next page; absent on the last"}}}))),
                ("400", err("Bad name, limit or cursor")), ("404", err("No such extract"))]),
        },
        "/api/v1/extracts/{name}/runs/{runId}": {
            "get": op("getRun", "One run", both.clone(), &[
                ("200", ok("The run", run.clone())), ("400", err("Bad input")),
                ("404", err("No such extract or run"))]),
        },
        "/api/v1/extracts/{name}/runs/{runId}/cancel": {
            "post": op("cancelRun", "Cancel a queued or running run", both, &[
                ("202", ok("Cancellation requested", run)), ("400", err("Bad input")),
                ("403", err("Role too weak")), ("404", err("No such extract or run")),
                ("409", err("The run is over")), ("503", err("Kafka unavailable"))]),
        },
    });
    p["/api/v1/extracts"]["post"]["requestBody"] = body("CreateExtract");
    p["/api/v1/extracts/{name}"]["put"]["requestBody"] = body("ReplaceExtract");
    p["/api/v1/extracts/{name}"]["patch"]["requestBody"] = body("PatchExtract");
    p
}

/// The served document: the routes above, the health routes, the bearer scheme.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    let base = hookline_runtime::base_document(
        "Hookline extract producer",
        "Balance extracts (`/api/v1/extracts`): configurations, schedules and runs. A run \
         emits one `balance.extracted` event per matching balance row. Every call but health \
         and this document carries `Authorization: Bearer <token>`; `extractions-editor`, \
         editor or admin configure and run, viewers read. Errors are JSON `{code, message, \
         field}`.",
    );
    let mut v = serde_json::to_value(&base).expect("the document serialises");
    v["paths"] = paths();
    let s = v["components"]["schemas"]
        .as_object_mut()
        .expect("components");
    if let Value::Object(mine) = schemas() {
        s.extend(mine);
    }
    serde_json::from_value(v).expect("the document deserialises")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_has_every_route() {
        let doc = serde_json::to_value(super::document()).unwrap();
        for p in [
            "/api/v1/extracts",
            "/api/v1/extracts/{name}",
            "/api/v1/extracts/{name}/runs",
            "/api/v1/extracts/{name}/runs/{runId}",
            "/api/v1/extracts/{name}/runs/{runId}/cancel",
        ] {
            assert!(doc["paths"][p].is_object(), "{p}");
        }
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    }

    #[test]
    fn cron_expressions_of_the_pattern_parse() {
        let re = regex::Regex::new(&super::CRON_PATTERN).unwrap();
        for c in [
            "* * * * *",
            "*/5 * * * *",
            "0 2 * * *",
            "30 0 2 1,15 */2 0,7",
            "59 23 31 12 7",
            "0 0 0 * * *",
        ] {
            assert!(re.is_match(c), "{c}");
            crate::schedule::Schedule::parse(c, "").unwrap_or_else(|e| panic!("{c}: {e:?}"));
        }
        for c in ["60 * * * *", "* * * *", "@daily", "*/0 * * * *"] {
            assert!(!re.is_match(c), "{c}");
        }
    }
}
