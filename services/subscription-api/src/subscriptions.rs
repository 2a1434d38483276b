//! The subscription service every dialect shares: validation, name claims, the signing
//! secret, writes, listing and lookup. A dialect (`fynapse`, `synctera`) only maps its
//! request and response shapes onto [`Subscription`] and names its fields through a
//! [`Face`]; every rule about what a subscription may be lives here once.

use std::collections::BTreeMap;

use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::now_ms;
use hookline_proto::v1::{Dialect, Event, Secret, Subscription};
use hookline_runtime::ApiError;

use crate::AppState;
use crate::catalog::check_event_types;
use crate::claims::{self, Kind};
use crate::input::{
    DESCRIPTION_MAX, METADATA_MAX, PageRequest, check_len, check_name, check_url, created_key,
    paginate,
};
use crate::secrets::{self, Signing};
use crate::store::Store;

/// What a dialect calls the fields of the model (used in every refusal), and how it treats
/// names and secrets.
pub struct Face {
    pub dialect: Dialect,
    /// What a 404 calls one of its subscriptions.
    pub what: &'static str,
    pub name: &'static str,
    pub endpoint_url: &'static str,
    pub secret_ref: &'static str,
    pub event_types: &'static str,
    pub description: &'static str,
    pub metadata: &'static str,
    pub headers: &'static str,
    pub signing: &'static str,
    /// The delivery controls (`controls`): the rate limit and its two keys, the in-flight
    /// limit.
    pub rate_limit: &'static str,
    pub per_second: &'static str,
    pub per_minute: &'static str,
    pub max_in_flight: &'static str,
    /// `*` allowed among the event types.
    pub all_types: bool,
    /// Names are chosen by the tenant and unique per tenant (claimed); otherwise the name is
    /// the id.
    pub unique_names: bool,
    /// Each subscription has a secret of its own, created and deleted with it; otherwise it
    /// refers to a named secret of the tenant's.
    pub own_secret: bool,
}

/// The signing secret of a subscription being created.
pub enum NewSecret {
    /// A named secret of the tenant's, which must exist.
    Existing(String),
    /// A new named secret (claimed like any secret name), created with the subscription.
    Named(String),
    /// The subscription's own secret (named after its id, so nobody else can pick it).
    Own,
    /// Its own secret with a value the client chose (a Svix endpoint's `secret`).
    OwnValue(hookline_signing::WebhookSecret),
}

/// Checks every field of `sub` against the limits, naming the field as `face` calls it.
/// The caller has synced the event-type view.
pub fn validate(state: &AppState, face: &Face, sub: &Subscription) -> Result<(), ApiError> {
    if face.unique_names {
        check_name(face.name, &sub.name)?;
        check_name(face.secret_ref, &sub.secret_ref)?;
    }
    check_url(face.endpoint_url, &sub.endpoint_url)?;
    check_event_types(state, face.event_types, &sub.event_types, face.all_types)?;
    check_len(
        face.description,
        sub.description.as_deref(),
        DESCRIPTION_MAX,
    )?;
    check_len(face.metadata, sub.metadata.as_deref(), METADATA_MAX)?;
    crate::controls::check(face, sub)?;
    crate::filters::check(sub.filter.as_deref())
}

/// A new subscription of `tenant` in `face`'s dialect, with a fresh id, enabled, version 1;
/// the dialect then fills in its fields.
pub fn draft(face: &Face, tenant: &str) -> Subscription {
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    Subscription {
        name: id.clone(),
        secret_ref: format!("webhook-{id}"),
        id,
        tenant: tenant.to_owned(),
        dialect: face.dialect as i32,
        enabled: true,
        created_at_ms: now,
        updated_at_ms: now,
        version: 1,
        ..Subscription::default()
    }
}

/// Validates and stores the new subscription `sub` (from [`draft`]) with its secret. Returns
/// the secret with its value when one was created. Nothing stays behind when it fails.
pub async fn create(
    state: &AppState,
    who: &Principal,
    face: &Face,
    mut sub: Subscription,
    secret: NewSecret,
    signing: Option<Signing>,
) -> Result<(Subscription, Option<(Secret, String)>), ApiError> {
    who.require(Role::Editor)?;
    let store = &state.store;
    if let NewSecret::Existing(name) | NewSecret::Named(name) = &secret {
        sub.secret_ref = name.clone();
    }
    store.event_types.sync().await;
    validate(state, face, &sub)?;
    store.sync().await;
    let held = if face.unique_names {
        if name_taken(store, face, &sub, "") {
            return Err(taken(face, &sub.name));
        }
        if let NewSecret::Existing(name) = &secret {
            secret_exists(store, face, &sub.tenant, name)?;
            check_signing(store, face, &sub, signing)?;
        }
        Some(
            claims::claim(
                store,
                Kind::Subscription,
                &sub.tenant,
                &sub.name,
                &sub.id,
                face.name,
            )
            .await?,
        )
    } else {
        None
    };
    let abandon = |held: Option<claims::Held>| async move {
        if let Some(h) = held {
            claims::abandon(store, h).await;
        }
    };
    let scheme = signing.unwrap_or(Signing::HmacSha256);
    let created = match secret {
        NewSecret::Existing(_) => Ok(None),
        NewSecret::Named(name) => {
            secrets::create_named(store, &sub.tenant, &name, face.secret_ref, scheme)
                .await
                .map(Some)
        }
        NewSecret::Own => {
            secrets::write_new(store, &sub.tenant, &sub.secret_ref, face.dialect, scheme)
                .await
                .map(Some)
        }
        NewSecret::OwnValue(value) => {
            secrets::write_value(store, &sub.tenant, &sub.secret_ref, face.dialect, value)
                .await
                .map(Some)
        }
    };
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            abandon(held).await;
            return Err(e);
        }
    };
    sub.updated_at_ms = now_ms();
    if let Err(e) = store.put_subscription(&sub).await {
        if created.is_some() {
            if !face.own_secret {
                let _ = claims::release(store, Kind::Secret, &sub.tenant, &sub.secret_ref).await;
            }
            let _ = store.delete_secret(&sub.tenant, &sub.secret_ref).await;
        }
        abandon(held).await;
        return Err(e);
    }
    tracing::info!(tenant = %sub.tenant, id = %sub.id, dialect = face.what, "subscription created");
    Ok((sub, created))
}

/// The subscriptions of `face`'s dialect that `who` may list (its tenant's; every tenant's
/// for an admin when `all_tenants`), oldest first, one page.
pub fn list(
    state: &AppState,
    who: &Principal,
    face: &Face,
    all_tenants: bool,
    page: &PageRequest,
) -> (Vec<Subscription>, Option<String>) {
    let mut subs: Vec<(String, Subscription)> = state.store.subscriptions.read(|t| {
        t.values()
            .filter(|s| {
                s.dialect() == face.dialect
                    && if all_tenants {
                        who.can_see(&s.tenant)
                    } else {
                        s.tenant == who.tenant
                    }
            })
            .map(|s| (created_key(s.created_at_ms, &s.id), s.clone()))
            .collect()
    });
    subs.sort_by(|a, b| a.0.cmp(&b.0));
    paginate(subs, page)
}

/// Subscription `id` of `face`'s dialect, if `who` may see it; else a 404.
pub fn find(
    store: &Store,
    who: &Principal,
    face: &Face,
    id: &str,
) -> Result<Subscription, ApiError> {
    store.subscription_of(who, id, face.dialect, face.what)
}

/// Applies `change` to subscription `id`, validates and stores the result (re-claiming the
/// name if it changed). `change` may refuse with an error; then nothing changes.
pub async fn update(
    state: &AppState,
    who: &Principal,
    face: &Face,
    id: &str,
    signing: Option<Signing>,
    change: impl FnOnce(&mut Subscription) -> Result<(), ApiError>,
) -> Result<Subscription, ApiError> {
    let store = &state.store;
    let _change = store.change(who).await?;
    let old = find(store, who, face, id)?;
    let mut sub = old.clone();
    change(&mut sub)?;
    store.event_types.sync().await;
    validate(state, face, &sub)?;
    if face.unique_names && sub.secret_ref != old.secret_ref {
        secret_exists(store, face, &sub.tenant, &sub.secret_ref)?;
    }
    check_signing(store, face, &sub, signing)?;
    if face.unique_names && sub.name != old.name {
        if name_taken(store, face, &sub, id) {
            return Err(taken(face, &sub.name));
        }
        claims::claim(
            store,
            Kind::Subscription,
            &sub.tenant,
            &sub.name,
            id,
            face.name,
        )
        .await?;
        // Released before the rename is written: the old name stays held by the record.
        claims::release(store, Kind::Subscription, &old.tenant, &old.name).await?;
    }
    sub.updated_at_ms = now_ms();
    sub.version += 1;
    store.put_subscription(&sub).await?;
    Ok(sub)
}

/// Deletes subscription `id`: its name claim first, then the record, then its own secret.
pub async fn delete(
    state: &AppState,
    who: &Principal,
    face: &Face,
    id: &str,
) -> Result<Subscription, ApiError> {
    let store = &state.store;
    let _change = store.change(who).await?;
    let sub = find(store, who, face, id)?;
    if face.unique_names {
        claims::release(store, Kind::Subscription, &sub.tenant, &sub.name).await?;
    }
    store.delete_subscription(id).await?;
    if face.own_secret {
        store.delete_secret(&sub.tenant, &sub.secret_ref).await?;
    }
    tracing::info!(tenant = %sub.tenant, id, dialect = face.what, "subscription deleted");
    Ok(sub)
}

/// How `sub` signs: as its secret's newest version does.
pub fn signing_of(store: &Store, sub: &Subscription) -> Signing {
    store
        .secrets
        .get(&hookline_state::secret_key(&sub.tenant, &sub.secret_ref))
        .map_or(Signing::HmacSha256, |s| Signing::of(&s))
}

/// A `signing` given on a write must be how the subscription's secret signs: the scheme
/// changes by rotating the secret (both keys sign during the overlap), never silently.
fn check_signing(
    store: &Store,
    face: &Face,
    sub: &Subscription,
    wanted: Option<Signing>,
) -> Result<(), ApiError> {
    let Some(wanted) = wanted else { return Ok(()) };
    let current = signing_of(store, sub);
    if wanted == current {
        return Ok(());
    }
    let how = if face.own_secret {
        "rotate its secret with that `signing`"
    } else {
        "name a secret that signs so, or rotate this one with that `signing`"
    };
    // Valid by the document, refused by the state: a conflict.
    Err(ApiError::conflict(
        face.signing,
        format!(
            "the secret signs with {}; to sign with {}, {how}",
            current.as_str(),
            wanted.as_str()
        ),
    ))
}

fn name_taken(store: &Store, face: &Face, sub: &Subscription, except_id: &str) -> bool {
    store.subscriptions.read(|t| {
        t.values().any(|s| {
            s.tenant == sub.tenant
                && s.dialect() == face.dialect
                && s.name == sub.name
                && s.id != except_id
        })
    })
}

fn taken(face: &Face, name: &str) -> ApiError {
    ApiError::conflict(
        face.name,
        format!("a {} named {name:?} already exists", face.what),
    )
}

fn secret_exists(store: &Store, face: &Face, tenant: &str, name: &str) -> Result<(), ApiError> {
    match secrets::fynapse_secret(store, tenant, name) {
        Some(_) => Ok(()),
        // Valid by the document, refused by the state: a conflict, as a taken name is.
        None => Err(ApiError::conflict(
            face.secret_ref,
            format!("no secret named {name:?}: create it first"),
        )),
    }
}

/// Custom headers as a request gives them: name → value.
pub type HeadersIn = BTreeMap<String, String>;

/// What a response shows for every custom header value; given back on a write, it keeps the
/// header's current value (so a body read with GET can be written back as it is).
pub const HEADER_MASK: &str = "****";
pub const HEADERS_MAX: usize = 20;
pub const HEADER_VALUE_MAX: usize = 4096;

/// Header names a subscription may not set: what Hookline sends itself (the Standard
/// Webhooks and Svix sets, the idempotency key, the trace context), what HTTP/1.1 frames a
/// message with, and hop-by-hop headers.
pub fn reserved_header(name: &str) -> bool {
    name.starts_with("webhook-")
        || name.starts_with("svix-")
        || name.starts_with("proxy-")
        || matches!(
            name,
            "idempotency-key"
                | "content-type"
                | "content-length"
                | "content-encoding"
                | "host"
                | "traceparent"
                | "tracestate"
                | "user-agent"
                | "connection"
                | "keep-alive"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "expect"
        )
}

/// Sets `sub`'s custom headers to `given` (`None`: none), each value sealed. Names are
/// lowercased; a value equal to [`HEADER_MASK`] keeps that header's current value. Refusals
/// name the header (`headers.x-api-key`), never its value.
pub fn set_headers(
    store: &Store,
    face: &Face,
    sub: &mut Subscription,
    given: Option<HeadersIn>,
) -> Result<(), ApiError> {
    let given = given.unwrap_or_default();
    let field = face.headers;
    if given.len() > HEADERS_MAX {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` may hold at most {HEADERS_MAX} headers"),
        ));
    }
    let mut headers = Vec::with_capacity(given.len());
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in given {
        let lower = name.to_ascii_lowercase();
        let at = format!("{field}.{name}");
        if axum::http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(ApiError::invalid(
                &at,
                format!("{name:?} is not an HTTP header name"),
            ));
        }
        if reserved_header(&lower) {
            return Err(ApiError::invalid(
                &at,
                format!("{name:?} is set by Hookline itself and cannot be a custom header"),
            ));
        }
        if !seen.insert(lower.clone()) {
            return Err(ApiError::invalid(
                &at,
                format!("{name:?} is given twice (header names ignore case)"),
            ));
        }
        if value == HEADER_MASK {
            let current = sub.headers.iter().find(|h| h.name == lower).cloned();
            let Some(current) = current else {
                return Err(ApiError::invalid(
                    &at,
                    format!(
                        "`{HEADER_MASK}` keeps a header's current value, and {name:?} has none"
                    ),
                ));
            };
            headers.push(current);
            continue;
        }
        // Visible ASCII, spaces and tabs only, as documented (`HeaderValue` would also take
        // bytes above 0x7F).
        let visible = |b: u8| b == b'\t' || (0x20..=0x7E).contains(&b);
        if value.len() > HEADER_VALUE_MAX || !value.bytes().all(visible) {
            return Err(ApiError::invalid(
                &at,
                format!(
                    "the value of {name:?} must be at most {HEADER_VALUE_MAX} bytes of visible ASCII, spaces or tabs"
                ),
            ));
        }
        let sealed = store
            .secret_box
            .seal_header(&sub.tenant, &sub.id, &lower, &value)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        headers.push(sealed);
    }
    sub.headers = headers;
    Ok(())
}

/// What a custom header's name must be: an HTTP token.
pub const HEADER_NAME_PATTERN: &str = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// What a custom header's value must be: visible ASCII, spaces and tabs.
pub const HEADER_VALUE_PATTERN: &str = "^[\t\x20-\x7E]*$";
/// Names matching neither literal nor prefix of [`reserved_header`], as a pattern (any case).
const RESERVED: [&str; 15] = [
    "idempotency-key",
    "content-type",
    "content-length",
    "content-encoding",
    "host",
    "traceparent",
    "tracestate",
    "user-agent",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];
const RESERVED_PREFIXES: [&str; 3] = ["webhook-", "svix-", "proxy-"];

/// `[Hh][Oo][Ss][Tt]` for `host`: a pattern matching `word` in any case.
fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                regex_escape(c)
            }
        })
        .collect()
}

fn regex_escape(c: char) -> String {
    if "\\^$.|?*+()[]{}-".contains(c) {
        format!("\\{c}")
    } else {
        c.to_string()
    }
}

/// The documented schema of custom headers in a request: an object of at most
/// [`HEADERS_MAX`] values (or `null`), names HTTP tokens that are not reserved, values
/// visible ASCII.
pub fn headers_in_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::extensions::Extensions;
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    use utoipa::openapi::{RefOr, Schema};
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(HEADER_VALUE_MAX))
        .pattern(Some(HEADER_VALUE_PATTERN));
    let reserved = RESERVED
        .iter()
        .map(|w| format!("{}$", any_case(w)))
        .chain(RESERVED_PREFIXES.iter().map(|p| any_case(p)))
        .collect::<Vec<_>>()
        .join("|");
    let names = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(HEADER_NAME_PATTERN))
        .extensions(Some(Extensions::from_iter([(
            "not",
            serde_json::json!({"pattern": format!("^({reserved})")}),
        )])));
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Object,
            Type::Null,
        ]))
        .max_properties(Some(HEADERS_MAX))
        .property_names(Some(names))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
            value.build(),
        )))))
        .build()
}

/// The documented schema of custom headers in a response: names, each value `****`.
pub fn headers_out_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::AdditionalProperties;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{RefOr, Schema};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([HEADER_MASK]))
                .build(),
        )))))
        .build()
}

/// `sub`'s custom headers as a response shows them: every value masked.
pub fn masked_headers(sub: &Subscription) -> HeadersIn {
    sub.headers
        .iter()
        .map(|h| (h.name.clone(), HEADER_MASK.to_owned()))
        .collect()
}

/// Sends an example event to subscription `id` now, through the pipeline: `event_type` (a
/// catalog type the subscription receives; default: the first such type), answered with the
/// first attempt when it comes within `example_wait`.
pub async fn send_example(
    state: &AppState,
    who: &Principal,
    face: &Face,
    id: &str,
    event_type: Option<String>,
    field: &str,
    make_event: impl FnOnce(&Subscription, &str) -> Event,
) -> Result<crate::examples::Sent, ApiError> {
    who.require(Role::Editor)?;
    let sub = find(&state.store, who, face, id)?;
    if !sub.enabled {
        return Err(ApiError::conflict(
            field,
            format!("the {} is disabled: enable it first", face.what),
        ));
    }
    let receives = |t: &str| {
        (face.all_types && sub.event_types.is_empty())
            || sub
                .event_types
                .iter()
                .any(|p| p == "*" || p == t || hookline_routing::pattern_matches(p, t))
    };
    let event_type = match event_type {
        Some(t) => {
            // Valid by the document, refused by the state: conflicts.
            if !crate::catalog::catalog(state).contains(&t) {
                return Err(ApiError::conflict(
                    field,
                    format!("{t:?} is not a catalog event type (see GET /admin/v1/event-types)"),
                ));
            }
            if !receives(&t) {
                return Err(ApiError::conflict(
                    field,
                    format!("the {} does not receive {t:?}", face.what),
                ));
            }
            t
        }
        None => crate::catalog::catalog(state)
            .into_iter()
            .find(|t| receives(t))
            .ok_or_else(|| {
                ApiError::conflict(field, format!("the {} receives no event type", face.what))
            })?,
    };
    let event = make_event(&sub, &event_type);
    crate::examples::send(state, &sub, event).await
}

/// The handlers every dialect has in the same form (list, get, delete, send an example),
/// declared once: a dialect names its paths, its shapes and its words. Expanded in the
/// dialect's module, beside its `FACE`.
macro_rules! face_handlers {
    (
        tag: $tag:tt,
        collection: $collection:tt,
        item: $item:tt,
        test: $test:tt,
        out: $out:ident,
        list: $list:ident { $items:ident, $next:ident },
        cursor: $cursor:tt,
        cursor_doc: $cursor_doc:tt,
        list_doc: $list_doc:tt,
        all_tenants: $all:tt,
        deleted_doc: $deleted:tt,
        example: $send:ident, $ex_out:ident, $ex_attempt:ident, $case:tt, $field:tt,
    ) => {
        #[utoipa::path(get, path = $collection, tag = $tag,
            params(("limit" = Option<u32>, Query, description = "Page size, 1-100 (default 50)", minimum = 1, maximum = 100),
                ($cursor = Option<String>, Query, description = $cursor_doc)),
            responses((status = 200, description = $list_doc, body = $list),
                (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
        pub async fn list(
            axum::extract::State(state): axum::extract::State<AppState>,
            who: hookline_auth::Principal,
            axum::extract::RawQuery(query): axum::extract::RawQuery,
        ) -> Result<axum::Json<$list>, hookline_runtime::ApiError> {
            let page = crate::input::page_request(query.as_deref(), $cursor)?;
            let (items, $next) = crate::subscriptions::list(&state, &who, &FACE, $all, &page);
            Ok(axum::Json($list {
                $items: items
                    .iter()
                    .map(|s| $out::of(&state.store, s, None))
                    .collect(),
                $next,
            }))
        }

        #[utoipa::path(get, path = $item, tag = $tag, params(("id" = String, Path)),
            responses((status = 200, body = $out), (status = 401, body = ErrorBody),
                (status = 404, body = ErrorBody)))]
        pub async fn get(
            axum::extract::State(state): axum::extract::State<AppState>,
            who: hookline_auth::Principal,
            crate::input::PathParam(id): crate::input::PathParam,
        ) -> Result<axum::Json<$out>, hookline_runtime::ApiError> {
            crate::subscriptions::find(&state.store, &who, &FACE, &id)
                .map(|s| axum::Json($out::of(&state.store, &s, None)))
        }

        #[utoipa::path(delete, path = $item, tag = $tag, params(("id" = String, Path)),
            responses((status = 204, description = $deleted),
                (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
                (status = 404, body = ErrorBody)))]
        pub async fn delete(
            axum::extract::State(state): axum::extract::State<AppState>,
            who: hookline_auth::Principal,
            crate::input::PathParam(id): crate::input::PathParam,
        ) -> Result<axum::http::StatusCode, hookline_runtime::ApiError> {
            crate::subscriptions::delete(&state, &who, &FACE, &id).await?;
            Ok(axum::http::StatusCode::NO_CONTENT)
        }

        crate::examples::example_shapes!($send, $ex_out, $ex_attempt, $case);

        #[utoipa::path(post, path = $test, tag = $tag,
            params(("id" = String, Path)), request_body = Option<$send>,
            responses((status = 200, description = "Sent; the first attempt", body = $ex_out),
                (status = 202, description = "Queued; no attempt within 5 s", body = $ex_out),
                (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
                (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
                (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
                (status = 503, body = ErrorBody)))]
        pub async fn send_example(
            axum::extract::State(state): axum::extract::State<AppState>,
            who: hookline_auth::Principal,
            crate::input::PathParam(id): crate::input::PathParam,
            hookline_runtime::OptionalJsonBody(body): hookline_runtime::OptionalJsonBody<$send>,
        ) -> Result<(axum::http::StatusCode, axum::Json<$ex_out>), hookline_runtime::ApiError> {
            let event_type = body.and_then(|b| b.event_type);
            crate::examples::answer(&state, &who, &FACE, &id, event_type, $field).await
        }
    };
}
pub(crate) use face_handlers;
