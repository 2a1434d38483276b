//! The Svix face's OpenAPI document (`GET /api/v1/openapi.json`), from the same handlers the
//! route table serves; the tests check both directions.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{apps, attempts, endpoints, event_types, messages, refused};

struct HttpBearer;

impl utoipa::Modify for HttpBearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "HTTPBearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hookline: the Svix-compatible API",
        description = "The operations of the Svix open-source server's API that Hookline \
            serves, with Svix's paths, names, ids (`app_`, `ep_`, `msg_`), pagination \
            (`iterator`, `prevIterator`, `done`) and errors (`{code, detail}`; a refused \
            value: 422 `HTTPValidationError`), so the official Svix SDKs work unchanged. \
            Every call but health and this document carries `Authorization: Bearer <token>` \
            (a Hookline token: its tenant owns the applications). An application is a \
            tenant's; an endpoint is a subscription; an event type is a catalog entry \
            (written by admin tokens only). Where Hookline's limits differ from Svix's, the \
            schema says Hookline's and its description says so. Logout and deleting a \
            message's or an attempt's content answer 409 with the reason (Hookline's tokens are \
            not sessions; Kafka's log is append-only). The Svix operations not listed here \
            answer 501 `{\"code\": \"not_implemented\"}`."
    ),
    paths(
        super::health, super::ping, super::openapi_json, refused::logout,
        apps::create, apps::list, apps::get, apps::update, apps::patch, apps::delete,
        endpoints::create, endpoints::list, endpoints::get, endpoints::update,
        endpoints::patch, endpoints::delete, endpoints::get_secret, endpoints::rotate_secret,
        endpoints::get_headers, endpoints::update_headers, endpoints::patch_headers,
        messages::create, messages::list, messages::get, refused::expunge_content,
        refused::expunge_attempt_content,
        attempts::list_by_endpoint, attempts::list_by_msg, attempts::get,
        attempts::list_destinations, attempts::list_attempted_messages, attempts::resend,
        attempts::recover,
        attempts::send_example,
        event_types::create, event_types::list, event_types::get, event_types::update,
        event_types::patch, event_types::delete,
    ),
    modifiers(&HttpBearer),
    security(("HTTPBearer" = [])),
)]
pub struct SvixDoc;

/// An endpoint secret or a rotation's `key` as `WebhookSecret::parse` takes it: `whsec_`
/// (optional) and canonical padded base64 of 24-64 bytes (Svix: 32-100 base64 characters).
pub const SECRET_PATTERN: &str = "^(whsec_)?(([A-Za-z0-9+/]{4}){8,20}\
    ([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?\
    |([A-Za-z0-9+/]{4}){21}([A-Za-z0-9+/][AQgw]==)?)$";

/// Where Hookline's checks differ from Svix's document, or are more than utoipa's attributes
/// spell: (schema, property, what to set on it, why).
fn constraints() -> Vec<(&'static str, &'static str, serde_json::Value, &'static str)> {
    use crate::input::{EVENT_TYPE_PATTERN, NAME_MAX, NAME_PATTERN, URL_MAX, URL_PATTERN};
    use serde_json::json;
    let name = json!({"minLength": 1, "maxLength": NAME_MAX, "pattern": NAME_PATTERN});
    let name_why = "Hookline: 1-255 characters, no control characters (Svix: no limit).";
    let uid = json!({"minLength": 1, "maxLength": super::ID_MAX, "pattern": super::ID_PATTERN});
    let url = json!({"maxLength": URL_MAX, "pattern": URL_PATTERN});
    let url_why = "An absolute http or https URL with a host; Hookline: at most 1000 characters \
        (Svix: 65536).";
    let secret = json!({"pattern": SECRET_PATTERN});
    let secret_why = "`whsec_` (optional) and canonical padded base64 of 24-64 bytes (Svix: \
        32-100 base64 characters).";
    let channels = json!({"maxItems": 0});
    let channels_why = "Hookline: endpoint channels are not supported yet, a non-empty list \
        is refused.";
    let headers = serde_json::to_value(crate::subscriptions::headers_in_schema())
        .expect("a schema serialises");
    let headers_why = "Hookline: at most 20, names HTTP tokens other than the ones Hookline \
        sets itself, values visible ASCII (Svix: any strings).";
    let mut headers_set = headers.clone();
    headers_set["type"] = json!("object");
    let mut headers_patch = headers_set.clone();
    headers_patch["additionalProperties"]["type"] = json!(["string", "null"]);
    let event_type = json!({"minLength": 1, "maxLength": 255, "pattern": EVENT_TYPE_PATTERN});
    let event_type_why = "Hookline: dot-separated words of letters, digits, `_` or `-`, at most \
        255 characters (Svix: 256 of letters, digits, `-`, `_`, `.`).";
    let channel = json!({"items": {"type": "string", "minLength": 1,
        "maxLength": CHANNEL_MAX, "pattern": super::ID_PATTERN}});
    vec![
        ("ApplicationIn", "name", name.clone(), name_why),
        ("ApplicationPatch", "name", name, name_why),
        ("ApplicationPatch", "uid", uid.clone(), ""),
        ("EndpointPatch", "uid", uid, ""),
        ("EndpointIn", "url", url.clone(), url_why),
        ("EndpointPatch", "url", url, url_why),
        ("EndpointIn", "secret", secret.clone(), secret_why),
        ("EndpointSecretRotateIn", "key", secret, secret_why),
        ("EndpointIn", "channels", channels.clone(), channels_why),
        ("EndpointPatch", "channels", channels, channels_why),
        ("EndpointIn", "headers", headers, headers_why),
        ("EndpointHeadersIn", "headers", headers_set, headers_why),
        (
            "EndpointHeadersPatchIn",
            "headers",
            headers_patch,
            headers_why,
        ),
        ("MessageIn", "eventType", event_type.clone(), event_type_why),
        ("MessageIn", "channels", channel, ""),
        ("EventTypeIn", "name", event_type, event_type_why),
    ]
}

/// Longest channel of a message, as Svix's.
pub const CHANNEL_MAX: usize = 128;

/// The document as served: the handlers' annotations, Hookline's [`constraints`], what
/// every operation of the face may answer whatever its own (a malformed body: 400; a body
/// over `api_body_limit`: 413; a refused value: 422), the closed sets of its query
/// parameters and the patterns of its path parameters. [`with_catalog`] adds the catalog.
pub fn document() -> serde_json::Value {
    use serde_json::json;
    let mut doc = serde_json::to_value(SvixDoc::openapi()).expect("the document serialises");
    let schemas = &mut doc["components"]["schemas"];
    for (schema, field, extra, why) in constraints() {
        let property = &mut schemas[schema]["properties"][field];
        assert!(property.is_object(), "{schema}.{field} is documented");
        for (k, v) in extra.as_object().expect("object") {
            property[k] = v.clone();
        }
        if !why.is_empty() {
            let text = match property["description"].as_str() {
                Some(d) => format!("{d} {why}"),
                None => why.to_owned(),
            };
            property["description"] = text.into();
        }
    }
    let error = json!({"description": "", "content": {"application/json": {"schema":
        {"$ref": "#/components/schemas/HttpErrorOut"}}}});
    let invalid = json!({"description": "Validation Error", "content": {"application/json":
        {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}});
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for op in item.as_object_mut().expect("path item").values_mut() {
            let has_body = op.get("requestBody").is_some();
            let has_params = op.get("parameters").is_some();
            let responses = op["responses"].as_object_mut().expect("responses");
            if has_body {
                responses.entry("400").or_insert(error.clone());
                responses.entry("413").or_insert(error.clone());
            }
            if has_body || has_params {
                responses.entry("422").or_insert(invalid.clone());
            }
            let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else {
                continue;
            };
            for p in params {
                let schema = match p["name"].as_str() {
                    Some("order") => json!({"type": "string", "enum": ["ascending", "descending"]}),
                    Some("limit") => json!({"type": "integer", "minimum": 1,
                        "maximum": super::LIMIT_MAX}),
                    Some("app_id" | "endpoint_id" | "msg_id" | "attempt_id") => {
                        json!({"type": "string", "minLength": 1, "maxLength": super::ID_MAX,
                            "pattern": super::ID_PATTERN})
                    }
                    Some("event_type_name") => json!({"type": "string", "minLength": 1,
                        "maxLength": 255, "pattern": crate::input::EVENT_TYPE_PATTERN}),
                    Some("status") => json!({"type": "integer", "enum": [0, 1, 2, 3]}),
                    Some("status_code_class") => json!({"type": "integer",
                        "enum": [0, 100, 200, 300, 400, 500]}),
                    _ => continue,
                };
                p["schema"] = schema;
            }
        }
    }
    doc
}

/// `doc` with an endpoint's `eventTypes` items as the enum of what the catalog `types`
/// accepts now (each type, `PREFIX.*`, `*`), as the server checks them.
pub fn with_catalog(mut doc: serde_json::Value, types: &[String]) -> serde_json::Value {
    let schemas = &mut doc["components"]["schemas"];
    for schema in ["EndpointIn", "EndpointPatch"] {
        schemas[schema]["properties"]["eventTypes"]["items"] = serde_json::json!({
            "type": "string", "enum": crate::catalog::patterns(types, true)});
    }
    doc
}

/// (method, path) of every documented operation.
#[cfg(test)]
pub fn documented() -> Vec<(axum::http::Method, String)> {
    crate::routes::operations(&SvixDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_documented_operation_is_routed() {
        let documented = documented();
        let routed: Vec<(axum::http::Method, String)> = super::super::table()
            .into_iter()
            .map(|r| (r.method, r.path.to_owned()))
            .collect();
        for r in &routed {
            assert!(documented.contains(r), "route {r:?} is not documented");
        }
        for d in &documented {
            assert!(routed.contains(d), "documented {d:?} is not routed");
        }
        for (m, p) in super::super::NOT_YET {
            assert!(
                !routed.iter().any(|(rm, rp)| rm.as_str() == m && rp == p),
                "{m} {p} is both served and not yet"
            );
        }
    }

    #[test]
    fn the_document_speaks_svix() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemas = &doc["components"]["schemas"];
        for (schema, field) in [
            ("ApplicationIn", "throttleRate"),
            ("EndpointIn", "eventTypes"),
            ("EndpointOut", "createdAt"),
            ("MessageIn", "eventId"),
            ("HTTPValidationError", "detail"),
            ("HttpErrorOut", "detail"),
        ] {
            assert!(
                schemas[schema]["properties"][field].is_object(),
                "{schema}.{field}: {}",
                schemas[schema]
            );
        }
        let create = &doc["paths"]["/api/v1/app/{app_id}/msg"]["post"];
        assert!(create["responses"]["202"].is_object(), "{create}");
        for status in ["400", "413", "422"] {
            assert!(
                create["responses"][status].is_object(),
                "{status}: {create}"
            );
        }
        let list = &doc["paths"]["/api/v1/app"]["get"];
        let order = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "order")
            .unwrap();
        assert_eq!(order["schema"]["enum"][1], "descending");
        let by_msg = &doc["paths"]["/api/v1/app/{app_id}/attempt/msg/{msg_id}"]["get"];
        let names: Vec<&str> = by_msg["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for name in [
            "app_id",
            "msg_id",
            "endpoint_id",
            "limit",
            "status",
            "with_content",
        ] {
            assert!(names.contains(&name), "{name}: {names:?}");
        }
        let status = by_msg["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "status")
            .unwrap();
        assert_eq!(status["in"], "query");
        assert_eq!(status["schema"]["enum"], serde_json::json!([0, 1, 2, 3]));
        // Hookline's own limits are spelled, and said.
        let name = &schemas["ApplicationIn"]["properties"]["name"];
        assert_eq!(name["pattern"], crate::input::NAME_PATTERN, "{name}");
        assert!(name["description"].as_str().unwrap().contains("Hookline"));
        let patch = &doc["paths"]["/api/v1/event-type/{event_type_name}"]["patch"];
        assert!(patch["responses"]["200"].is_object(), "{patch}");
        let app_id = &doc["paths"]["/api/v1/app/{app_id}"]["get"]["parameters"][0];
        assert_eq!(
            app_id["schema"]["pattern"],
            super::super::ID_PATTERN,
            "{app_id}"
        );
        let doc = with_catalog(doc, &["a.b".to_owned()]);
        assert_eq!(
            doc["components"]["schemas"]["EndpointIn"]["properties"]["eventTypes"]["items"]["enum"],
            serde_json::json!(["*", "a.b", "a.*"])
        );
    }

    #[test]
    fn the_secret_pattern_is_what_the_parser_takes() {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        let pattern = regex::Regex::new(SECRET_PATTERN).unwrap();
        let takes = |text: &str| {
            let full = if text.starts_with("whsec_") {
                text.to_owned()
            } else {
                format!("whsec_{text}")
            };
            hookline_signing::WebhookSecret::parse(&full).is_ok()
        };
        let mut samples: Vec<String> = Vec::new();
        for n in 20..=68 {
            for fill in [0u8, 0xFF, 0x5A] {
                let b64 = STANDARD.encode(vec![fill; n]);
                samples.push(b64.clone());
                samples.push(format!("whsec_{b64}"));
                samples.push(b64.trim_end_matches('=').to_owned());
                // Non-canonical trailing bits.
                if let Some(i) = b64.find('=') {
                    let mut bad = b64.clone().into_bytes();
                    bad[i - 1] = b'B';
                    samples.push(String::from_utf8(bad).unwrap());
                }
            }
        }
        samples.extend(["", "whsec_", "====", "whsec_whsec_AAAA"].map(String::from));
        for s in samples {
            assert_eq!(pattern.is_match(&s), takes(&s), "{s:?}");
        }
    }
}
