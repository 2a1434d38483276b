//! Checking what clients send: field limits, path parameters, list queries and cursors.
//!
//! Every refusal is an [`ApiError`] naming the offending field; nothing here panics on input.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use hookline_runtime::ApiError;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

pub const NAME_MAX: usize = 255;
/// What `check_name` accepts besides the length: no control characters (Unicode `Cc`).
pub const NAME_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F]*$";
/// The scheme `check_url` accepts (any case, as URLs are read).
pub const URL_PATTERN: &str = "^[Hh][Tt][Tt][Pp][Ss]?://";
/// What `hookline_events::validate_event_type` accepts.
pub const EVENT_TYPE_PATTERN: &str = "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$";
/// What `check_tenant` accepts.
pub const TENANT_PATTERN: &str = "^[A-Za-z0-9_.-]+$";
pub const URL_MAX: usize = 1000;
pub const DESCRIPTION_MAX: usize = 1024;
pub const METADATA_MAX: usize = 1024;
pub const EVENT_TYPES_MAX: usize = 100;
pub const TENANT_MAX: usize = 255;
pub const LIMIT_DEFAULT: usize = 50;
pub const LIMIT_MAX: usize = 100;

/// The error body of every refusal (documentation of `hookline_runtime::ApiError`).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable reason, e.g. `invalid_field`, `malformed_json`, `conflict`.
    pub code: String,
    pub message: String,
    /// The offending field, when there is one.
    pub field: Option<String>,
}

pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    if !(1..=NAME_MAX).contains(&n) {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be 1-{NAME_MAX} characters, got {n}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must not contain control characters"),
        ));
    }
    Ok(())
}

/// An absolute http(s) URL with a host, at most 1000 characters.
pub fn check_url(field: &str, text: &str) -> Result<(), ApiError> {
    let n = text.chars().count();
    if !(1..=URL_MAX).contains(&n) {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be 1-{URL_MAX} characters, got {n}"),
        ));
    }
    let url = url::Url::parse(text)
        .map_err(|e| ApiError::invalid(field, format!("`{field}` is not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be an http or https URL with a host"),
        ));
    }
    Ok(())
}

/// At most `max` characters.
pub fn check_len(field: &str, text: Option<&str>, max: usize) -> Result<(), ApiError> {
    let n = text.map_or(0, |t| t.chars().count());
    if n > max {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be at most {max} characters, got {n}"),
        ));
    }
    Ok(())
}

/// An identifier: 1-`max` ASCII letters, digits, `_`, `-` or `.` (a tenant id, a Svix `uid`,
/// `eventId` or channel); a refusal names `field`.
pub fn check_ident(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let ok = (1..=max).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("`{field}` must be 1-{max} letters, digits, `_`, `-` or `.`"),
        ))
    }
}

/// A tenant id: 1-255 of letters, digits, `_`, `-`, `.`.
pub fn check_tenant(field: &str, tenant: &str) -> Result<(), ApiError> {
    check_ident(field, tenant, TENANT_MAX)
}

/// Syntax of event-type patterns: exact types, `PREFIX.*`, or `*`; at most 100 of them.
pub fn check_event_type_syntax(field: &str, types: &[String]) -> Result<(), ApiError> {
    if types.len() > EVENT_TYPES_MAX {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` may hold at most {EVENT_TYPES_MAX} entries"),
        ));
    }
    for t in types {
        if t == "*" {
            continue;
        }
        let base = t.strip_suffix(".*").unwrap_or(t);
        hookline_events::validate_event_type(base).map_err(|_| {
            ApiError::invalid(field, format!("{t:?} is not an event type or pattern"))
        })?;
    }
    Ok(())
}

/// A JSON integer that may also be written with a zero fraction (`5.0`), as JSON Schema's
/// `integer` allows; anything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Int(pub u32);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        n.as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
                    .map(|f| f as u64)
            })
            .and_then(|v| u32::try_from(v).ok())
            .map(Int)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a whole number, got {n}")))
    }
}

/// Deserialises a present field as `Some(value)` (`Some(None)` for `null`), so that with
/// `#[serde(default)]` an absent field stays `None`: PATCH tells "clear" from "keep".
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A single path parameter whose rejection is a JSON [`ApiError`].
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| PathParam(p))
            .map_err(|e| ApiError::invalid("path", e.body_text()))
    }
}

/// One page request: how many items, and the cursor of the last item already seen.
#[derive(Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub after: Option<Vec<u8>>,
}

/// A cursor: lowercase hex of the bytes of the last sort key seen (so every even-length
/// lowercase hex string up to [`CURSOR_MAX`] characters is one, as the document says).
pub const CURSOR_PATTERN: &str = "^([0-9a-f]{2})*$";
pub const CURSOR_MAX: usize = 2048;

fn encode_cursor(key: &str) -> String {
    hookline_runtime::cursor::encode(key.as_bytes())
}

fn decode_cursor(text: &str) -> Option<Vec<u8>> {
    hookline_runtime::cursor::decode(text, CURSOR_MAX)
}

/// Parses `limit` and the cursor parameter named `cursor_param`; any other parameter is
/// refused.
pub fn page_request(query: Option<&str>, cursor_param: &str) -> Result<PageRequest, ApiError> {
    let mut page = PageRequest {
        limit: LIMIT_DEFAULT,
        after: None,
    };
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "limit" {
            page.limit = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=LIMIT_MAX).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid("limit", format!("`limit` must be 1-{LIMIT_MAX}"))
                })?;
        } else if k == cursor_param {
            page.after = Some(decode_cursor(&v).ok_or_else(|| {
                ApiError::invalid(
                    cursor_param,
                    format!("`{cursor_param}` is not a cursor of a previous page"),
                )
            })?);
        } else {
            return Err(ApiError::invalid(
                k.as_ref(),
                format!("unknown query parameter `{k}`"),
            ));
        }
    }
    Ok(page)
}

/// One page of `items`, which are sorted by their (unique) sort keys: the items after
/// `page.after`, at most `page.limit`, and the cursor of the next page when there is one.
/// Cursors are opaque to clients (hex of the sort key), so the order stays stable while
/// items are added or removed between pages.
pub fn paginate<T>(items: Vec<(String, T)>, page: &PageRequest) -> (Vec<T>, Option<String>) {
    let mut rest = items
        .into_iter()
        .filter(|(k, _)| {
            page.after
                .as_ref()
                .is_none_or(|a| k.as_bytes() > a.as_slice())
        })
        .peekable();
    let mut out = Vec::new();
    let mut last = None;
    while out.len() < page.limit {
        let Some((k, v)) = rest.next() else { break };
        last = Some(k);
        out.push(v);
    }
    let next = if rest.peek().is_some() {
        last.map(|k| encode_cursor(&k))
    } else {
        None
    };
    (out, next)
}

/// Sort key of a subscription: creation time, then id.
pub fn created_key(created_at_ms: i64, id: &str) -> String {
    format!("{:020}/{id}", created_at_ms.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_every_item_once() {
        let items: Vec<(String, u32)> = (0..7).map(|i| (format!("k{i}"), i)).collect();
        let mut page = page_request(Some("limit=3"), "cursor").unwrap();
        let mut seen = Vec::new();
        loop {
            let (got, next) = paginate(items.clone(), &page);
            seen.extend(got);
            let Some(c) = next else { break };
            page = page_request(Some(&format!("limit=3&cursor={c}")), "cursor").unwrap();
        }
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        for (q, field) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=x", "limit"),
            ("cursor=%%%", "cursor"),
            ("cursor=abc", "cursor"),
            ("cursor=AB", "cursor"),
            ("colour=red", "colour"),
        ] {
            let e = page_request(Some(q), "cursor").unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{q}");
        }
        assert_eq!(
            page_request(Some("limit=100"), "cursor").unwrap().limit,
            100
        );
        assert_eq!(page_request(None, "cursor").unwrap().limit, LIMIT_DEFAULT);
    }

    #[test]
    fn limits_hold_at_the_boundary() {
        assert!(check_name("name", &"n".repeat(255)).is_ok());
        assert!(check_name("name", &"n".repeat(256)).is_err());
        assert!(check_name("name", "").is_err());
        let url = format!("https://e.com/{}", "p".repeat(1000 - 14));
        assert_eq!(url.len(), 1000);
        assert!(check_url("url", &url).is_ok());
        assert!(check_url("url", &format!("{url}p")).is_err());
        assert!(check_len("metadata", Some(&"m".repeat(1024)), 1024).is_ok());
        assert!(check_len("metadata", Some(&"m".repeat(1025)), 1024).is_err());
        assert!(check_tenant("tenant", "abcdef_ghijkl").is_ok());
        assert!(check_tenant("tenant", "a/b").is_err());
    }
}
