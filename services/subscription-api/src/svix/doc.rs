//! The Svix face's OpenAPI document (`GET /api/v1/openapi.json`), from the same handlers the
//! route table serves; the tests check both directions.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{apps, attempts, endpoints, event_types, messages};

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
            (written by admin tokens only). The Svix operations not listed here answer 501 \
            `{\"code\": \"not_implemented\"}`."
    ),
    paths(
        super::health, super::openapi_json,
        apps::create, apps::list, apps::get, apps::update, apps::patch, apps::delete,
        endpoints::create, endpoints::list, endpoints::get, endpoints::update,
        endpoints::patch, endpoints::delete, endpoints::get_secret, endpoints::rotate_secret,
        endpoints::get_headers, endpoints::update_headers, endpoints::patch_headers,
        messages::create, messages::list, messages::get,
        attempts::list_by_endpoint, attempts::list_by_msg, attempts::get,
        attempts::list_destinations, attempts::resend, attempts::recover,
        attempts::send_example,
        event_types::create, event_types::list, event_types::get, event_types::update,
        event_types::delete,
    ),
    modifiers(&HttpBearer),
    security(("HTTPBearer" = [])),
)]
pub struct SvixDoc;

/// The document as served: the handlers' annotations, plus what every operation of the face
/// may answer whatever its own (a malformed body: 400; a body over `api_body_limit`: 413; a
/// refused value: 422) and the closed sets of its query parameters.
pub fn document() -> serde_json::Value {
    use serde_json::json;
    let mut doc = serde_json::to_value(SvixDoc::openapi()).expect("the document serialises");
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
    }
}
