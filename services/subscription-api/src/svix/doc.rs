//! The Svix face's OpenAPI document (`GET /api/v1/openapi.json`), from the same handlers the
//! route table serves; the tests check both directions.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{apps, endpoints, event_types, messages};

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
        event_types::create, event_types::list, event_types::get, event_types::update,
        event_types::delete,
    ),
    modifiers(&HttpBearer),
    security(("HTTPBearer" = [])),
)]
pub struct SvixDoc;

/// The document as served.
pub fn document() -> serde_json::Value {
    serde_json::to_value(SvixDoc::openapi()).expect("the document serialises")
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
    }
}
