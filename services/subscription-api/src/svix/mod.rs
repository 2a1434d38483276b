//! The Svix-compatible face: the official Svix SDKs, pointed at Hookline, work unchanged.
//!
//! A third mapping over the one subscription core (the paths, names and shapes of the Svix
//! open-source server's OpenAPI document, `/api/v1/app…`, `/api/v1/event-type…`,
//! `/api/v1/health`):
//!
//! - `apps`: an application is a tenant's record on the compacted `applications` topic (id
//!   `app_…`, `uid`, `name`, `throttleRate`, `metadata`); its endpoints are subscriptions
//!   whose `application` is its id.
//! - `endpoints`: an endpoint is a subscription of the `Svix` dialect (`ep_…`), through the
//!   same `subscriptions` service as the other dialects: validation, secrets, headers, rate
//!   limit, writes.
//! - `event_types`: an event type is a catalog entry (`catalog`).
//! - `messages`: `POST …/msg` publishes an event naming the application to the events topic
//!   and answers once Kafka acknowledged it; list and get read the `messages` topic.
//! - `attempts`: attempts, a message's state per endpoint, recover and resend, from the
//!   operations API (asked with the caller's token); send-example.
//! - Here: ids, pagination (`iterator`, `prevIterator`, `done`), the error shape, the routes
//!   and the document (`GET /api/v1/openapi.json`). Every answer of these routes that is
//!   an error is rewritten by [`svix_errors`] into Svix's shapes: `{"code", "detail"}`, and a
//!   refused field as a 422 `HTTPValidationError` (`{"detail": [{"loc", "msg", "type"}]}`).
//!   Operations of the Svix document this face does not serve yet answer 501 in that shape.
//! - `refused`: operations Hookline cannot honestly do (logout of a configured token,
//!   deleting content from Kafka's log) answer a 409 saying why.

mod apps;
mod attempts;
mod doc;
mod endpoints;
mod event_types;
mod messages;
mod refused;
mod schemas;

use axum::Json;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use hookline_events::time_fmt::now_ms;
use hookline_runtime::ApiError;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

pub use attempts::Operations;
pub use doc::SvixDoc;
pub use messages::Messages;
pub use schemas::Validators;

use crate::AppState;
use crate::routes::Route;

/// A fresh id: `prefix` and 22 base62 characters of the time in milliseconds (48 bits) and
/// 80 random bits, so ids of one prefix sort in creation order.
pub fn new_id(prefix: &str) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let random = uuid::Uuid::new_v4().as_u128() & ((1u128 << 80) - 1);
    let mut n = ((now_ms().max(0) as u128) << 80) | random;
    let mut out = [b'0'; 22];
    for d in out.iter_mut().rev() {
        *d = DIGITS[(n % 62) as usize];
        n /= 62;
    }
    let mut id = String::with_capacity(prefix.len() + 22);
    id.push_str(prefix);
    id.push_str(std::str::from_utf8(&out).expect("ascii"));
    id
}

/// Longest Svix `uid`, `eventId` or path id (letters, digits, `-`, `_`, `.`).
pub const ID_MAX: usize = 256;
/// What a Svix `uid`, `eventId`, channel or path id may hold.
pub const ID_PATTERN: &str = r"^[a-zA-Z0-9\-_.]+$";

/// A `uid`-like value: 1-256 of letters, digits, `-`, `_`, `.`; 422 naming `field`.
pub fn check_id(field: &str, v: &str) -> Result<(), ApiError> {
    crate::input::check_ident(field, v, ID_MAX)
}

/// A list request: `limit`, `iterator` (a previous page's `iterator`, or its
/// `prevIterator` to go back), `order`, and the operation's own parameters (unknown ones are
/// ignored, as Svix ignores them).
pub struct ListQuery {
    pub limit: usize,
    pub iterator: Option<String>,
    pub descending: Option<bool>,
    pub params: Vec<(String, String)>,
}

pub const LIMIT_DEFAULT: usize = 50;
pub const LIMIT_MAX: usize = 250;

impl ListQuery {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut q = ListQuery {
            limit: LIMIT_DEFAULT,
            iterator: None,
            descending: None,
            params: Vec::new(),
        };
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "limit" => {
                    q.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=LIMIT_MAX).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid("limit", format!("`limit` must be 1-{LIMIT_MAX}"))
                        })?;
                }
                "iterator" if !v.is_empty() => q.iterator = Some(v.into_owned()),
                "order" => {
                    q.descending = Some(match v.as_ref() {
                        "ascending" => false,
                        "descending" => true,
                        _ => {
                            return Err(ApiError::invalid(
                                "order",
                                "`order` must be `ascending` or `descending`",
                            ));
                        }
                    })
                }
                _ => q.params.push((k.into_owned(), v.into_owned())),
            }
        }
        Ok(q)
    }

    /// The operation's parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter (`true`/`false`), `default` when absent.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.param(name) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(_) => Err(ApiError::invalid(
                name,
                format!("`{name}` must be `true` or `false`"),
            )),
        }
    }
}

/// One page of a Svix list.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T: ToSchema> {
    pub data: Vec<T>,
    /// `true` on the last page.
    pub done: bool,
    /// Pass as `iterator` for the next page.
    pub iterator: Option<String>,
    /// Pass as `iterator` for the previous page.
    pub prev_iterator: Option<String>,
}

/// One page of `items` (sorted ascending by their unique keys), in `descending` order or
/// not, after the query's iterator (or, for an iterator `-key`, just before `key`).
pub fn page<T: ToSchema>(
    mut items: Vec<(String, T)>,
    q: &ListQuery,
    descending: bool,
) -> ListResponse<T> {
    if descending {
        items.reverse();
    }
    let after = |k: &str, x: &str| if descending { k < x } else { k > x };
    let (mut chosen, done) = match q.iterator.as_deref() {
        Some(prev) if prev.starts_with('-') => {
            let x = &prev[1..];
            let before: Vec<(String, T)> = items
                .into_iter()
                .take_while(|(k, _)| !after(k, x) && k != x)
                .collect();
            let skip = before.len().saturating_sub(q.limit);
            (before.into_iter().skip(skip).collect::<Vec<_>>(), false)
        }
        Some(x) => {
            let rest: Vec<(String, T)> = items.into_iter().filter(|(k, _)| after(k, x)).collect();
            let done = rest.len() <= q.limit;
            (rest, done)
        }
        None => {
            let done = items.len() <= q.limit;
            (items, done)
        }
    };
    chosen.truncate(q.limit);
    let iterator = chosen.last().map(|(k, _)| k.clone());
    let prev_iterator = chosen.first().map(|(k, _)| format!("-{k}"));
    ListResponse {
        data: chosen.into_iter().map(|(_, v)| v).collect(),
        done,
        iterator,
        prev_iterator,
    }
}

/// Svix's error body.
#[derive(Serialize, ToSchema)]
pub struct HttpErrorOut {
    pub code: String,
    pub detail: String,
}

/// Svix's 422 body: one item per refused value.
#[derive(Serialize, ToSchema)]
#[schema(as = HTTPValidationError)]
pub struct HttpValidationError {
    pub detail: Vec<ValidationErrorItem>,
}

#[derive(Serialize, ToSchema)]
pub struct ValidationErrorItem {
    /// Where: `["body", "url"]`, `["query", "limit"]`, `["path"]`.
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Query parameters of this face (a refusal naming one is located in the query).
const QUERY_PARAMS: [&str; 11] = [
    "include_archived",
    "channel",
    "limit",
    "iterator",
    "order",
    "get_if_exists",
    "with_content",
    "event_types",
    "before",
    "after",
    "expunge",
];

/// Where a refused `field` is, as Svix's `loc` says it.
fn location(field: &str) -> Vec<String> {
    if field == "path" {
        return vec!["path".into()];
    }
    if QUERY_PARAMS.contains(&field) {
        return vec!["query".into(), field.into()];
    }
    std::iter::once("body".to_owned())
        .chain(field.split('.').map(str::to_owned))
        .collect()
}

/// Rewrites an error answer of these routes (Hookline's `{code, message, field}`, from a
/// handler or an extractor) into Svix's shape; a refused field is a 422.
pub async fn svix_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let retry_after = response.headers().get("retry-after").cloned();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let code = v["code"].as_str().unwrap_or("error");
    let message = v["message"]
        .as_str()
        .or(v["detail"].as_str())
        .or(status.canonical_reason())
        .unwrap_or("error");
    let mut out = match (status, code, v["field"].as_str()) {
        (StatusCode::BAD_REQUEST, "invalid_field", field) => {
            let loc = field.map_or_else(|| vec!["body".to_owned()], location);
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"detail": [{"loc": loc, "msg": message, "type": "value_error"}]})),
            )
                .into_response()
        }
        _ => (status, Json(json!({"code": code, "detail": message}))).into_response(),
    };
    if let Some(v) = retry_after {
        out.headers_mut().insert("retry-after", v);
    }
    out
}

#[utoipa::path(get, path = "/api/v1/health", tag = "svix-health", security(()),
    responses((status = 204, description = "Healthy")))]
pub async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// Svix's liveness probe: answers while the process serves requests, whatever Kafka's state.
#[utoipa::path(get, path = "/api/v1/health/ping", tag = "svix-health", security(()),
    responses((status = 204, description = "Serving")))]
pub async fn ping() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "svix-health", security(()),
    responses((status = 200, description = "This face's OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Json<Value> {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let base = DOC.get_or_init(doc::document);
    state.store.event_types.sync().await;
    Json(doc::with_catalog(
        base.clone(),
        &crate::catalog::catalog(&state),
    ))
}

/// Every route of this face, documented in [`SvixDoc`].
pub fn table() -> Vec<Route> {
    use crate::routes::route;
    use Method as M;
    const APPS: &str = "/api/v1/app";
    const APP: &str = "/api/v1/app/{app_id}";
    const EPS: &str = "/api/v1/app/{app_id}/endpoint";
    const EP: &str = "/api/v1/app/{app_id}/endpoint/{endpoint_id}";
    const HEADERS: &str = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers";
    const MSGS: &str = "/api/v1/app/{app_id}/msg";
    const TYPES: &str = "/api/v1/event-type";
    const TYPE: &str = "/api/v1/event-type/{event_type_name}";
    vec![
        route(M::GET, "/api/v1/health", health),
        route(M::GET, "/api/v1/health/ping", ping),
        route(M::GET, "/api/v1/openapi.json", openapi_json),
        route(M::GET, APPS, apps::list),
        route(M::POST, APPS, apps::create),
        route(M::GET, APP, apps::get),
        route(M::PUT, APP, apps::update),
        route(M::PATCH, APP, apps::patch),
        route(M::DELETE, APP, apps::delete),
        route(M::GET, EPS, endpoints::list),
        route(M::POST, EPS, endpoints::create),
        route(M::GET, EP, endpoints::get),
        route(M::PUT, EP, endpoints::update),
        route(M::PATCH, EP, endpoints::patch),
        route(M::DELETE, EP, endpoints::delete),
        route(
            M::GET,
            "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret",
            endpoints::get_secret,
        ),
        route(
            M::POST,
            "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
            endpoints::rotate_secret,
        ),
        route(M::GET, HEADERS, endpoints::get_headers),
        route(M::PUT, HEADERS, endpoints::update_headers),
        route(M::PATCH, HEADERS, endpoints::patch_headers),
        route(
            M::GET,
            "/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}",
            attempts::list_by_endpoint,
        ),
        route(
            M::GET,
            "/api/v1/app/{app_id}/attempt/msg/{msg_id}",
            attempts::list_by_msg,
        ),
        route(
            M::GET,
            "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}",
            attempts::get,
        ),
        route(
            M::GET,
            "/api/v1/app/{app_id}/msg/{msg_id}/endpoint",
            attempts::list_destinations,
        ),
        route(
            M::GET,
            "/api/v1/app/{app_id}/endpoint/{endpoint_id}/msg",
            attempts::list_attempted_messages,
        ),
        route(
            M::POST,
            "/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend",
            attempts::resend,
        ),
        route(
            M::POST,
            "/api/v1/app/{app_id}/endpoint/{endpoint_id}/recover",
            attempts::recover,
        ),
        route(
            M::POST,
            "/api/v1/app/{app_id}/endpoint/{endpoint_id}/send-example",
            attempts::send_example,
        ),
        route(M::GET, MSGS, messages::list),
        route(M::POST, MSGS, messages::create),
        route(M::GET, "/api/v1/app/{app_id}/msg/{msg_id}", messages::get),
        route(
            M::DELETE,
            "/api/v1/app/{app_id}/msg/{msg_id}/content",
            refused::expunge_content,
        ),
        route(
            M::DELETE,
            "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/content",
            refused::expunge_attempt_content,
        ),
        route(M::POST, "/api/v1/auth/logout", refused::logout),
        route(M::GET, TYPES, event_types::list),
        route(M::POST, TYPES, event_types::create),
        route(M::GET, TYPE, event_types::get),
        route(M::PUT, TYPE, event_types::update),
        route(M::PATCH, TYPE, event_types::patch),
        route(M::DELETE, TYPE, event_types::delete),
    ]
}

/// Operations of Svix's document this face does not serve yet: each answers 501 in Svix's
/// error shape, so an SDK call fails with a clear error (they are listed in the README).
pub const NOT_YET: [(&str, &str); 2] = [
    ("GET", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/stats"),
    ("POST", "/api/v1/auth/app-portal-access/{app_id}"),
];

async fn not_yet() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "Hookline's Svix-compatible API does not serve this operation yet (see the README, \
         \"Coming from Svix\")",
    )
}

/// The face's routes: the documented ones and the 501s, every error in Svix's shape.
pub fn router(state: AppState) -> axum::Router {
    let mut by_path: std::collections::BTreeMap<&str, axum::routing::MethodRouter<AppState>> =
        std::collections::BTreeMap::new();
    let documented = table().into_iter().map(|r| (r.path, r.handler));
    let missing = NOT_YET.iter().map(|(m, path)| {
        let method = Method::from_bytes(m.as_bytes()).expect("a method");
        let filter = MethodFilter::try_from(method).expect("routable");
        (*path, axum::routing::on(filter, not_yet))
    });
    for (path, handler) in documented.chain(missing) {
        let merged = match by_path.remove(path) {
            Some(m) => m.merge(handler),
            None => handler,
        };
        by_path.insert(path, merged);
    }
    let mut app = axum::Router::new();
    for (path, methods) in by_path {
        app = app.route(
            path,
            methods.fallback(|| async {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this route does not take that method",
                )
            }),
        );
    }
    app.layer(axum::middleware::map_response(svix_errors))
        .with_state(state)
}

/// An empty body answer with `status` (204s).
pub fn no_content() -> Response {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .expect("a response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_prefix_and_sort_in_creation_order() {
        let a = new_id("app_");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("app_");
        assert!(a.starts_with("app_") && a.len() == 26, "{a}");
        assert!(a < b, "{a} {b}");
        assert!(check_id("uid", &a).is_ok());
        assert!(check_id("uid", "a/b").is_err() && check_id("uid", "").is_err());
    }

    #[test]
    fn pages_walk_forwards_and_back() {
        let items = || -> Vec<(String, u32)> { (0..7).map(|i| (format!("k{i}"), i)).collect() };
        let q = |s: &str| ListQuery::parse(Some(s)).unwrap();
        let p = page(items(), &q("limit=3"), false);
        assert_eq!((p.data.clone(), p.done), (vec![0, 1, 2], false));
        let next = p.iterator.unwrap();
        let p = page(items(), &q(&format!("limit=3&iterator={next}")), false);
        assert_eq!(p.data, [3, 4, 5]);
        let back = p.prev_iterator.unwrap();
        let p2 = page(items(), &q(&format!("limit=3&iterator={back}")), false);
        assert_eq!(p2.data, [0, 1, 2]);
        let p = page(items(), &q("limit=3&iterator=k5"), false);
        assert_eq!((p.data, p.done), (vec![6], true));
        let p = page(items(), &q("limit=2"), true);
        assert_eq!(p.data, [6, 5]);
        let p = page(
            items(),
            &q(&format!("limit=2&iterator={}", p.iterator.unwrap())),
            true,
        );
        assert_eq!(p.data, [4, 3]);
        assert!(ListQuery::parse(Some("limit=0")).is_err());
        assert!(ListQuery::parse(Some("limit=251")).is_err());
        assert!(ListQuery::parse(Some("unknown=1")).is_ok());
    }

    #[tokio::test]
    async fn errors_take_svix_shapes() {
        async fn body(r: Response) -> (u16, Value) {
            let status = r.status().as_u16();
            let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            (status, serde_json::from_slice(&b).unwrap())
        }
        let invalid = ApiError::invalid("rateLimit.perSecond", "too high").into_response();
        let (status, v) = body(svix_errors(invalid).await).await;
        assert_eq!(status, 422);
        assert_eq!(
            v["detail"][0]["loc"],
            json!(["body", "rateLimit", "perSecond"])
        );
        assert_eq!(v["detail"][0]["msg"], "too high");
        let (status, v) =
            body(svix_errors(ApiError::invalid("limit", "x").into_response()).await).await;
        assert_eq!(
            (status, v["detail"][0]["loc"].clone()),
            (422, json!(["query", "limit"]))
        );
        let (status, v) =
            body(svix_errors(ApiError::not_found("application").into_response()).await).await;
        assert_eq!(status, 404);
        assert_eq!(
            v,
            json!({"code": "not_found", "detail": "application not found"})
        );
        let (status, v) = body(svix_errors(not_yet().await.into_response()).await).await;
        assert_eq!((status, v["code"].as_str()), (501, Some("not_implemented")));
    }
}
