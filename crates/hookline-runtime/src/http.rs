//! What every HTTP service shares: JSON answers for what no handler takes (unknown routes,
//! wrong methods, bad query strings and path parameters), the health routes and the OpenAPI
//! document each service serves at `/openapi.json`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, ObjectBuilder, OpenApi, RefOr, ResponseBuilder, Schema,
    SecurityRequirement, Type,
};

use crate::{ApiError, Health};

/// Adds JSON 404 and 405 answers (the latter with `Allow`, as axum sets it) to `router`.
pub fn json_fallbacks<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn unknown_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_route", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// A query string parsed into `T`, refused as a JSON [`ApiError`] naming the parameter.
pub struct JsonQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for JsonQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(JsonQuery(v)),
            Err(e) => {
                let text = e.body_text();
                let field = query_field(&text).unwrap_or_else(|| "query".to_owned());
                Err(ApiError::invalid(field, text))
            }
        }
    }
}

/// serde_urlencoded's messages name the parameter in backquotes (`unknown field `x``,
/// `missing field `x``) or after `field` ("invalid digit ... for key `limit`").
fn query_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// Path parameters parsed into `T`, refused as a JSON [`ApiError`] (field `path`).
pub struct JsonPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for JsonPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| JsonPath(v))
            .map_err(|e| ApiError::invalid("path", e.body_text()))
    }
}

/// Records the duration of one request under its route template (never the raw path, so
/// ids in paths make no new series), method and status.
pub(crate) async fn record_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use hookline_telemetry::metrics::{kv, metrics};
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "_OTHER",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let mut attributes = vec![
        kv("http.request.method", method),
        kv(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        ),
    ];
    if let Some(route) = route {
        attributes.push(kv("http.route", route));
    }
    metrics()
        .server_duration
        .record(started.elapsed().as_secs_f64(), &attributes);
    response
}

/// `/metrics`: the process's metrics as Prometheus text; 404 when metrics are off.
pub async fn metrics_text() -> axum::response::Response {
    match hookline_telemetry::metrics::render() {
        Some(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics_off",
            "metrics are turned off (telemetry_enabled = false)",
        )
        .into_response(),
    }
}

/// `/healthz` (200 `{"status":"ok"}` while the process runs; it never asks Kafka),
/// `/readyz` (200 `{"status":"ready"}` once ready, else 503 with an error body), `/metrics`
/// (Prometheus text) and `/openapi.json` (`doc`, with these routes added by
/// [`with_health_paths`]).
pub fn health_routes(health: Health, doc: OpenApi) -> Router {
    let doc = Arc::new(with_health_paths(doc));
    Router::new()
        .route("/metrics", get(metrics_text))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let answer = readyz_answer(&health);
                async move { answer }
            }),
        )
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
}

/// The `/readyz` answer: 200 `{"status":"ready"}`, or 503 with an error body (code
/// `not_ready`) whose message says what keeps the service from being ready.
pub fn readyz_answer(health: &Health) -> axum::response::Response {
    match health.why_not_ready() {
        None => Json(serde_json::json!({"status": "ready"})).into_response(),
        Some(why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("not ready: {why}"),
        )
        .into_response(),
    }
}

/// A service's document: `title` and `description`, the bearer scheme, the error body and
/// the health routes; the caller adds its own paths.
pub fn base_document(title: &str, description: &str) -> OpenApi {
    let mut doc = OpenApi::new(
        utoipa::openapi::InfoBuilder::new()
            .title(title)
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(description))
            .build(),
        utoipa::openapi::Paths::new(),
    );
    add_common_components(&mut doc);
    doc
}

/// The bearer scheme (required by default) and the `ErrorBody` schema.
pub fn add_common_components(doc: &mut OpenApi) {
    let components = doc
        .components
        .get_or_insert_with(|| ComponentsBuilder::new().build());
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components
        .schemas
        .insert("ErrorBody".to_owned(), RefOr::T(error_schema()));
    doc.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn error_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("The body of every error answer."))
            .property(
                "code",
                string().description(Some(
                    "Machine-readable reason, e.g. `invalid_field`, `malformed_json`, `conflict`.",
                )),
            )
            .required("code")
            .property("message", string())
            .required("message")
            .property(
                "field",
                string().description(Some("The offending field, when there is one.")),
            )
            .build(),
    )
}

/// A JSON response whose body is `schema`.
pub fn json_response(
    description: &str,
    schema: impl Into<RefOr<Schema>>,
) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(schema)).build(),
            )
            .build(),
    )
}

/// A JSON error response (the `ErrorBody` schema).
pub fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    json_response(
        description,
        utoipa::openapi::Ref::from_schema_name("ErrorBody"),
    )
}

/// Adds `/healthz`, `/readyz` and `/openapi.json` (no token) to `doc`.
pub fn with_health_paths(mut doc: OpenApi) -> OpenApi {
    let status = |value: &str| {
        Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("status", string().enum_values(Some([value])))
                .required("status")
                .build(),
        )
    };
    let op = |id: &str, summary: &str| {
        OperationBuilder::new()
            .operation_id(Some(id))
            .summary(Some(summary))
            .tag("operations")
            .securities(Some([SecurityRequirement::default()]))
    };
    let paths = &mut doc.paths.paths;
    paths.insert(
        "/healthz".to_owned(),
        PathItem::new(
            HttpMethod::Get,
            op("healthz", "The process runs")
                .response("200", json_response("Alive", status("ok")))
                .build(),
        ),
    );
    paths.insert(
        "/readyz".to_owned(),
        PathItem::new(
            HttpMethod::Get,
            op("readyz", "Ready for traffic")
                .response(
                    "200",
                    json_response("Views caught up; brokers reachable", status("ready")),
                )
                .response(
                    "503",
                    error_response("Still reading its topics, or the brokers are away"),
                )
                .build(),
        ),
    );
    paths.insert(
        "/metrics".to_owned(),
        PathItem::new(
            HttpMethod::Get,
            op("metrics", "Metrics in the Prometheus text format")
                .response(
                    "200",
                    RefOr::T(
                        ResponseBuilder::new()
                            .description("Prometheus text exposition format 0.0.4")
                            .content(
                                "text/plain",
                                ContentBuilder::new()
                                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                                    .build(),
                            )
                            .build(),
                    ),
                )
                .response("404", error_response("Metrics are turned off"))
                .build(),
        ),
    );
    paths.insert(
        "/openapi.json".to_owned(),
        PathItem::new(
            HttpMethod::Get,
            op("openapi", "This document (OpenAPI 3.1)")
                .response(
                    "200",
                    json_response(
                        "The document",
                        ObjectBuilder::new().schema_type(Type::Object),
                    ),
                )
                .build(),
        ),
    );
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_errors_name_the_parameter() {
        assert_eq!(
            query_field("unknown field `colour`, expected `limit`").as_deref(),
            Some("colour")
        );
        assert_eq!(query_field("no field here"), None);
    }

    #[test]
    fn the_health_document_is_openapi_3_1() {
        let doc = with_health_paths(base_document("t", "d"));
        let v = serde_json::to_value(&doc).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3.1"));
        assert!(v["paths"]["/readyz"]["get"]["responses"]["503"].is_object());
        assert_eq!(
            v["paths"]["/healthz"]["get"]["security"],
            serde_json::json!([{}])
        );
        assert!(v["components"]["schemas"]["ErrorBody"].is_object());
    }
}
