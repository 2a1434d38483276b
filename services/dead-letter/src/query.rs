//! Query-string parsing: every parameter checked, unknown ones refused, each error naming
//! its parameter.

use hookline_events::time_fmt::parse_rfc3339;
use hookline_ops_index::Window;
use hookline_ops_index::keys::{PK_LEN, Pk};
use hookline_runtime::ApiError;

pub const MAX_ID: usize = 255;
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 100;

/// The parameters of a query string, checked against the names a route accepts.
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(ApiError::invalid(
                    k.as_ref(),
                    format!("unknown parameter `{k}`"),
                ));
            }
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(ApiError::invalid(
                    k.as_ref(),
                    format!("`{k}` given more than once"),
                ));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Self { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A string of 1 to `max` characters.
    pub fn text(&self, name: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.is_empty() || v.chars().count() > max => Err(ApiError::invalid(
                name,
                format!("`{name}` must be 1-{max} characters"),
            )),
            Some(v) => Ok(Some(v.to_owned())),
        }
    }

    /// One of `choices`.
    pub fn choice(
        &self,
        name: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => choices
                .iter()
                .find(|c| **c == v)
                .copied()
                .map(Some)
                .ok_or_else(|| {
                    ApiError::invalid(
                        name,
                        format!("`{name}` must be one of {}", choices.join(", ")),
                    )
                }),
        }
    }

    /// An RFC 3339 time, as epoch ms.
    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_time(v).map(Some).ok_or_else(|| {
                ApiError::invalid(name, format!("`{name}` must be an RFC 3339 date-time"))
            }),
        }
    }

    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid("limit", format!("`limit` must be 1-{MAX_LIMIT}"))
                }),
        }
    }

    pub fn cursor(&self) -> Result<Option<Pk>, ApiError> {
        match self.get("cursor") {
            None => Ok(None),
            Some(v) => decode_cursor(v).map(Some).ok_or_else(|| {
                ApiError::invalid("cursor", "`cursor` is not a cursor this API gave")
            }),
        }
    }

    /// `since` and `until`; an `until` not later than `since` is an empty window.
    pub fn window(&self) -> Result<(Option<i64>, Option<i64>), ApiError> {
        let (since, until) = (self.time("since")?, self.time("until")?);
        Ok((since, until.map(|u| since.map_or(u, |s| u.max(s)))))
    }

    /// The page a listing asks for, newest first: `since`, `until`, `cursor` and `limit`.
    pub fn newest_first(&self) -> Result<Window, ApiError> {
        let (since_ms, until_ms) = self.window()?;
        Ok(Window {
            since_ms,
            until_ms,
            cursor: self.cursor()?,
            limit: self.limit()?,
            oldest_first: false,
        })
    }
}

pub fn parse_time(text: &str) -> Option<i64> {
    let t = parse_rfc3339(text)?;
    // Nothing is older than 1970: an earlier time means "from the beginning".
    let ms = (t.unix_timestamp_nanos() / 1_000_000).clamp(0, i64::MAX as i128);
    Some(ms as i64)
}

pub fn encode_cursor(pk: &Pk) -> String {
    hookline_runtime::cursor::encode(pk)
}

/// The documented form of a cursor: the hex of a sort key.
pub const CURSOR_PATTERN: &str = "^[0-9a-f]{40}$";

/// A delivery list's cursor: the hex of a creation time (8 bytes) and a delivery id.
pub const DELIVERY_CURSOR_PATTERN: &str = "^([0-9a-f]{2}){9,263}$";

/// A delivery list's `cursor`, if given: the position it names.
pub fn delivery_cursor(text: Option<&str>) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    hookline_runtime::cursor::decode(text, 2 * (8 + MAX_ID))
        .filter(|b| b.len() > 8)
        .map(Some)
        .ok_or_else(|| ApiError::invalid("cursor", "`cursor` is not a cursor this API gave"))
}

fn decode_cursor(text: &str) -> Option<Pk> {
    let bytes = hookline_runtime::cursor::decode(text, 2 * PK_LEN)?;
    Pk::try_from(bytes.as_slice()).ok()
}

/// A path identifier of 1 to 255 characters.
pub fn path_id(name: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.chars().count() > MAX_ID {
        return Err(ApiError::invalid(
            name,
            format!("`{name}` must be 1-{MAX_ID} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_does_not_know_and_names_it() {
        let e = Params::parse(Some("limit=5&colour=red"), &["limit"])
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("colour"));
        let p = Params::parse(Some("limit=0"), &["limit"]).unwrap();
        assert_eq!(p.limit().unwrap_err().field.as_deref(), Some("limit"));
        let p = Params::parse(
            Some("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"),
            &["since", "until"],
        )
        .unwrap();
        let (since, until) = p.window().unwrap();
        assert_eq!(since, until, "an inverted window is empty");
        let p = Params::parse(Some("cursor=abc"), &["cursor"]).unwrap();
        assert_eq!(p.cursor().unwrap_err().field.as_deref(), Some("cursor"));
        let pk = hookline_ops_index::keys::pk(5, 1, 2);
        let p =
            Params::parse(Some(&format!("cursor={}", encode_cursor(&pk))), &["cursor"]).unwrap();
        assert_eq!(p.cursor().unwrap(), Some(pk));
        let p = Params::parse(Some("outcome=maybe"), &["outcome"]).unwrap();
        assert!(p.choice("outcome", &["succeeded", "failed"]).is_err());
    }
}
