//! The route table and the OpenAPI document.
//!
//! [`table`] lists every route once, as (method, path, handler); [`router`] is built from it,
//! and [`ApiDoc`] documents the same handlers. The tests check both directions: every route
//! of the table is documented, and every documented operation is routed (here against the
//! table, and in the end-to-end suite against the live server).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::extract::{DefaultBodyLimit, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::input::{self, ErrorBody};
use crate::{AppState, catalog, filters, fynapse, secrets, synctera};

/// One route: the method and path (OpenAPI path syntax, which axum shares) and its handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub(crate) handler: MethodRouter<AppState>,
}

pub(crate) fn route<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("the table uses routable methods");
    Route {
        method,
        path,
        handler: axum::routing::on(filter, handler),
    }
}

/// Every route the API serves.
pub fn table() -> Vec<Route> {
    const SECRET: &str = "/api/v1/event-deliveries/secrets/{name}";
    const SUBS: &str = "/api/v1/event-deliveries/subscriptions";
    const SUB: &str = "/api/v1/event-deliveries/subscriptions/{id}";
    const HOOKS: &str = "/v2/webhooks";
    const HOOK: &str = "/v2/webhooks/{id}";
    const HOOK_SECRET: &str = "/v2/webhooks/{id}/secret";
    const TYPES: &str = "/admin/v1/event-types";
    const FILTER_TEST_SUB: &str = "/api/v1/event-deliveries/subscriptions/{id}/filter-test";
    const FILTER_TEST_HOOK: &str = "/v2/webhooks/{id}/filter-test";
    use Method as M;
    vec![
        route(M::GET, "/healthz", healthz),
        route(M::GET, "/readyz", readyz),
        route(M::GET, "/openapi.json", openapi_json),
        route(M::GET, "/metrics", metrics),
        route(M::POST, secrets::BASE, secrets::create),
        route(M::GET, secrets::BASE, secrets::list),
        route(M::GET, SECRET, secrets::get),
        route(M::DELETE, SECRET, secrets::delete),
        route(
            M::POST,
            "/api/v1/event-deliveries/secrets/{name}/rotate",
            secrets::rotate,
        ),
        route(M::POST, SUBS, fynapse::create),
        route(M::GET, SUBS, fynapse::list),
        route(M::GET, SUB, fynapse::get),
        route(M::PUT, SUB, fynapse::replace),
        route(M::PATCH, SUB, fynapse::patch),
        route(M::DELETE, SUB, fynapse::delete),
        route(
            M::POST,
            "/api/v1/event-deliveries/subscriptions/{id}/test",
            fynapse::send_example,
        ),
        route(M::POST, FILTER_TEST_SUB, filters::fynapse_test),
        route(M::POST, HOOKS, synctera::create),
        route(M::GET, HOOKS, synctera::list),
        route(M::GET, HOOK, synctera::get),
        route(M::PATCH, HOOK, synctera::patch),
        route(M::DELETE, HOOK, synctera::delete),
        route(M::POST, "/v2/webhooks/{id}/test", synctera::send_example),
        route(M::POST, FILTER_TEST_HOOK, filters::synctera_test),
        route(M::GET, HOOK_SECRET, synctera::get_secret),
        route(M::PUT, HOOK_SECRET, synctera::rotate_secret),
        route(M::POST, TYPES, catalog::register),
        route(M::GET, TYPES, catalog::list),
    ]
}

/// The HTTP service: the table's routes, JSON 404/405 answers, and the body size limit.
pub fn router(state: AppState, body_limit: usize) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for r in table() {
        let merged = match by_path.remove(r.path) {
            Some(m) => m.merge(r.handler),
            None => r.handler,
        };
        by_path.insert(r.path, merged);
    }
    let mut app = Router::new();
    for (path, methods) in by_path {
        app = app.route(path, methods);
    }
    let app = app
        .with_state(state.clone())
        .merge(crate::svix::router(state));
    hookline_runtime::json_fallbacks(app).layer(DefaultBodyLimit::max(body_limit))
}

/// The body of `/healthz` and `/readyz` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    pub status: String,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process runs", body = Status)))]
async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Views caught up; ready for traffic", body = Status),
        (status = 503, description = "Still reading its topics, or the brokers are away", body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    hookline_runtime::readyz_answer(&state.health)
}

#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Metrics in the Prometheus text format",
        content_type = "text/plain", body = String),
        (status = 404, description = "Metrics are turned off", body = ErrorBody)))]
async fn metrics() -> axum::response::Response {
    hookline_runtime::metrics_text().await
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1), its event-type enums \
        from the catalog as it is now", body = Object)))]
async fn openapi_json(State(state): State<AppState>) -> Json<serde_json::Value> {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    let base = DOC.get_or_init(constrained);
    state.store.event_types.sync().await;
    Json(with_catalog(base.clone(), &crate::catalog::catalog(&state)))
}

/// The constraints the server checks that utoipa's attributes cannot spell, put into the
/// document so that a request valid by it is accepted and one that is not is refused.
pub fn constrained() -> serde_json::Value {
    use serde_json::json;
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    let schemas = &mut doc["components"]["schemas"];
    let name = json!({"pattern": input::NAME_PATTERN});
    let url = json!({"pattern": input::URL_PATTERN});
    for (schema, field, extra) in [
        ("CreateSecret", "name", &name),
        ("CreateSubscription", "name", &name),
        ("CreateSubscription", "secretRef", &name),
        ("CreateSubscription", "endpointUrl", &url),
        ("PatchSubscription", "name", &name),
        ("PatchSubscription", "secretRef", &name),
        ("PatchSubscription", "endpointUrl", &url),
        ("CreateWebhook", "url", &url),
        ("PatchWebhook", "url", &url),
        (
            "CreateWebhook",
            "tenant",
            &json!({"pattern": input::TENANT_PATTERN}),
        ),
        (
            "PatchWebhook",
            "tenant",
            &json!({"pattern": input::TENANT_PATTERN}),
        ),
        (
            "RegisterEventType",
            "name",
            &json!({"pattern": input::EVENT_TYPE_PATTERN}),
        ),
        (
            "SampleEvent",
            "type",
            &json!({"pattern": input::EVENT_TYPE_PATTERN}),
        ),
        (
            "SampleEvent",
            "tenant",
            &json!({"pattern": input::TENANT_PATTERN}),
        ),
    ] {
        let property = &mut schemas[schema]["properties"][field];
        assert!(property.is_object(), "{schema}.{field} is documented");
        for (k, v) in extra.as_object().expect("object") {
            property[k] = v.clone();
        }
    }
    // Payload filters: the language's grammar, as strict as the server's check.
    for (name, schema) in filters::components() {
        schemas[name] = schema;
    }
    for schema in [
        "CreateSubscription",
        "PatchSubscription",
        "SubscriptionControls",
        "CreateWebhook",
        "PatchWebhook",
        "WebhookControls",
        "FilterTest",
    ] {
        assert!(
            schemas[schema]["properties"]["filter"].is_object(),
            "{schema}.filter"
        );
        schemas[schema]["properties"]["filter"] = filters::property();
    }
    // PATCH may leave them out but not clear them.
    for field in ["name", "endpointUrl"] {
        schemas["PatchSubscription"]["properties"][field]["type"] = "string".into();
    }
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for op in item.as_object_mut().expect("path item").values_mut() {
            let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else {
                continue;
            };
            for p in params {
                let schema = match p["name"].as_str() {
                    Some("cursor" | "page_token") => json!({"type": "string",
                        "pattern": input::CURSOR_PATTERN, "maxLength": input::CURSOR_MAX}),
                    Some("id") => json!({"type": "string", "format": "uuid"}),
                    Some("name") => json!({"type": "string", "minLength": 1,
                        "maxLength": input::NAME_MAX, "pattern": input::NAME_PATTERN}),
                    _ => continue,
                };
                p["schema"] = schema;
            }
        }
    }
    doc
}

/// `doc` with the event-type lists' items as enums of what the catalog `types` accepts now.
fn with_catalog(mut doc: serde_json::Value, types: &[String]) -> serde_json::Value {
    let schemas = &mut doc["components"]["schemas"];
    for (schema, field, all) in [
        ("CreateSubscription", "eventTypes", true),
        ("PatchSubscription", "eventTypes", true),
        ("CreateWebhook", "enabled_events", false),
        ("PatchWebhook", "enabled_events", false),
    ] {
        schemas[schema]["properties"][field]["items"] =
            serde_json::json!({"type": "string", "enum": crate::catalog::patterns(types, all)});
    }
    doc
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hookline subscription API",
        description = "Fynapse event deliveries (`/api/v1/event-deliveries`), Synctera webhooks \
            (`/v2/webhooks`) and the event-type catalog (`/admin/v1/event-types`). Every call \
            but health and this document carries `Authorization: Bearer <token>`; a token maps \
            to a tenant and a role (viewer reads, editor also writes, admin also acts on every \
            tenant and registers event types). Errors are JSON `{code, message, field}`: 400 \
            for malformed JSON, wrong types, unknown fields and values past their limits; 401 \
            for a missing or unknown token; 403 for a too weak role; 404 for what does not \
            exist or belongs to another tenant; 409 for a taken name or a secret still in use; \
            413 for a body over the configured `api_body_limit` (default 65536 bytes). Lists \
            are paginated: `limit` (1-100, default 50) and an opaque cursor from the previous \
            page (`cursor`/`nextCursor` in the Fynapse dialect, `page_token`/`next_page_token` \
            in the Synctera one), in a stable order."
    ),
    paths(
        healthz, readyz, metrics, openapi_json,
        secrets::create, secrets::list, secrets::get, secrets::delete, secrets::rotate,
        fynapse::create, fynapse::list, fynapse::get, fynapse::replace, fynapse::patch,
        fynapse::delete, fynapse::send_example,
        synctera::create, synctera::list, synctera::get, synctera::patch, synctera::delete,
        synctera::get_secret, synctera::rotate_secret, synctera::send_example,
        filters::fynapse_test, filters::synctera_test,
        catalog::register, catalog::list,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// (method, path) of every documented operation.
pub fn documented() -> Vec<(Method, String)> {
    operations(&ApiDoc::openapi())
}

/// (method, path) of every operation of `doc`.
pub fn operations(doc: &utoipa::openapi::OpenApi) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::PATCH, &item.patch),
            (Method::DELETE, &item.delete),
            (Method::HEAD, &item.head),
            (Method::OPTIONS, &item.options),
            (Method::TRACE, &item.trace),
        ];
        for (m, op) in ops {
            if op.is_some() {
                out.push((m, path.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_documented_operation_is_routed() {
        let documented = documented();
        let routed: Vec<(Method, String)> = table()
            .into_iter()
            .map(|r| (r.method, r.path.to_owned()))
            .collect();
        for r in &routed {
            assert!(
                documented.contains(r),
                "route {r:?} is not in the OpenAPI document"
            );
        }
        for d in &documented {
            assert!(
                routed.contains(d),
                "documented operation {d:?} is not routed"
            );
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_limits() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["CreateSubscription"]["properties"]["name"]["maxLength"],
            255
        );
        assert_eq!(
            schemas["CreateWebhook"]["properties"]["url"]["maxLength"],
            1000
        );
        assert_eq!(
            schemas["CreateWebhook"]["properties"]["metadata"]["maxLength"],
            1024
        );
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }

    #[test]
    fn the_served_document_spells_the_checks_the_server_makes() {
        let types = vec!["ACCOUNT.CREATED".to_owned()];
        let doc = with_catalog(constrained(), &types);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["CreateSubscription"]["properties"]["name"]["pattern"],
            input::NAME_PATTERN
        );
        assert_eq!(
            schemas["CreateWebhook"]["properties"]["enabled_events"]["items"]["enum"],
            serde_json::json!(["ACCOUNT.CREATED", "ACCOUNT.*"])
        );
        assert_eq!(
            schemas["PatchSubscription"]["properties"]["eventTypes"]["items"]["enum"],
            serde_json::json!(["*", "ACCOUNT.CREATED", "ACCOUNT.*"])
        );
        let list = &doc["paths"]["/api/v1/event-deliveries/subscriptions"]["get"];
        let cursor = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "cursor")
            .unwrap();
        assert_eq!(cursor["schema"]["pattern"], input::CURSOR_PATTERN);
    }
}
