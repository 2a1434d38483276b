//! Decoding of `events` and `balances` records from any producer.

use std::collections::HashMap;

use hookline_proto::Message as _;
use hookline_proto::v1::{BalanceRow, Event};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::time_fmt;

pub const CONTENT_TYPE_HEADER: &str = "content-type";
pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";

/// Why a record could not be used; the reason travels with it to quarantine.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unsupported content-type {0:?}")]
    ContentType(String),
    #[error("empty record value")]
    Empty,
    #[error("invalid protobuf: {0}")]
    Protobuf(String),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
}

fn field(field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Field {
        field,
        reason: reason.into(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Encoding {
    Json,
    Protobuf,
}

fn encoding(content_type: Option<&[u8]>) -> Result<Encoding, DecodeError> {
    let Some(raw) = content_type else {
        return Ok(Encoding::Json);
    };
    let text = String::from_utf8_lossy(raw);
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" | CONTENT_TYPE_JSON => Ok(Encoding::Json),
        CONTENT_TYPE_PROTOBUF => Ok(Encoding::Protobuf),
        _ => Err(DecodeError::ContentType(text.into_owned())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    time: Option<String>,
    tenant: String,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
    data: Option<Box<RawValue>>,
    changed_fields: Option<Box<RawValue>>,
    application: Option<String>,
}

/// Where a record came from: used for derived ids and default times.
#[derive(Debug, Clone, Copy)]
pub struct RecordPosition<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
}

/// Decodes one `events` record, filling a derived id and the record time when absent.
pub fn decode_event(
    at: RecordPosition<'_>,
    content_type: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Event, DecodeError> {
    let value = value.filter(|v| !v.is_empty()).ok_or(DecodeError::Empty)?;
    let mut event = match encoding(content_type)? {
        Encoding::Protobuf => {
            Event::decode(value).map_err(|e| DecodeError::Protobuf(e.to_string()))?
        }
        Encoding::Json => {
            let j: JsonEvent =
                serde_json::from_slice(value).map_err(|e| DecodeError::Json(e.to_string()))?;
            Event {
                id: j.id.unwrap_or_default(),
                r#type: j.kind,
                time: j.time.unwrap_or_default(),
                tenant: j.tenant,
                metadata: j.metadata.unwrap_or_default(),
                data_json: j.data.map(|d| d.get().to_owned()).unwrap_or_default(),
                changed_fields_json: j
                    .changed_fields
                    .map(|d| d.get().to_owned())
                    .unwrap_or_default(),
                application: j.application,
            }
        }
    };
    if event.id.is_empty() {
        event.id = crate::derived_event_id(at.topic, at.partition, at.offset);
    }
    if event.id.len() > 255 {
        return Err(field("id", "longer than 255 characters"));
    }
    validate_event_type(&event.r#type)?;
    if event.tenant.is_empty() || event.tenant.len() > 255 {
        return Err(field("tenant", "must be 1-255 characters"));
    }
    if event
        .application
        .as_ref()
        .is_some_and(|a| a.is_empty() || a.len() > 255)
    {
        return Err(field("application", "must be 1-255 characters"));
    }
    if event.time.is_empty() {
        event.time = time_fmt::rfc3339_millis(at.timestamp_ms.unwrap_or_else(time_fmt::now_ms));
    } else if time_fmt::parse_rfc3339(&event.time).is_none() {
        return Err(field(
            "time",
            format!("{:?} is not an RFC 3339 time", event.time),
        ));
    }
    if event.data_json.is_empty() {
        event.data_json = "{}".into();
    } else if serde_json::from_str::<&RawValue>(&event.data_json).is_err() {
        return Err(field("data", "is not JSON"));
    }
    if !event.changed_fields_json.is_empty()
        && serde_json::from_str::<&RawValue>(&event.changed_fields_json).is_err()
    {
        return Err(field("changed_fields", "is not JSON"));
    }
    Ok(event)
}

/// An event type is 1-255 characters of dot-separated segments: letters, digits, `_`, `-`.
pub fn validate_event_type(kind: &str) -> Result<(), DecodeError> {
    if kind.is_empty() || kind.len() > 255 {
        return Err(field("type", "must be 1-255 characters"));
    }
    let ok = kind.split('.').all(|seg| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !ok {
        return Err(field(
            "type",
            format!("{kind:?} is not dot-separated words"),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JsonBalance {
    node: String,
    account: String,
    #[serde(default)]
    product_name: String,
    transaction_currency: String,
    balance: Box<RawValue>,
}

/// True for an exact decimal literal: `-?digits(.digits)?`.
pub fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(int) && frac.is_none_or(all_digits) && digits.len() <= 64
}

/// The compaction key of a balance row.
pub fn balance_key(row: &BalanceRow) -> String {
    format!(
        "{}/{}/{}/{}",
        row.node, row.account, row.product_name, row.transaction_currency
    )
}

/// Decodes one `balances` record. The balance keeps its exact decimal text whether the
/// producer sent a JSON number or a string.
pub fn decode_balance(
    content_type: Option<&[u8]>,
    value: &[u8],
) -> Result<BalanceRow, DecodeError> {
    if value.is_empty() {
        return Err(DecodeError::Empty);
    }
    let row = match encoding(content_type)? {
        Encoding::Protobuf => {
            BalanceRow::decode(value).map_err(|e| DecodeError::Protobuf(e.to_string()))?
        }
        Encoding::Json => {
            let j: JsonBalance =
                serde_json::from_slice(value).map_err(|e| DecodeError::Json(e.to_string()))?;
            let raw = j.balance.get();
            let balance = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                Some(inner) => inner.to_owned(),
                None => raw.to_owned(),
            };
            BalanceRow {
                node: j.node,
                account: j.account,
                product_name: j.product_name,
                transaction_currency: j.transaction_currency,
                balance,
            }
        }
    };
    if !is_decimal(&row.balance) {
        return Err(field(
            "balance",
            format!("{:?} is not an exact decimal", row.balance),
        ));
    }
    if row.node.is_empty() || row.account.is_empty() {
        return Err(field("node", "node and account must not be empty"));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: RecordPosition<'static> = RecordPosition {
        topic: "events",
        partition: 2,
        offset: 7,
        timestamp_ms: Some(0),
    };

    #[test]
    fn json_event_with_defaults() {
        let e = decode_event(
            AT,
            None,
            Some(br#"{"type":"ACCOUNT.CREATED","tenant":"t1","data":{"n":1.10}}"#),
        )
        .unwrap();
        assert_eq!(e.id, crate::derived_event_id("events", 2, 7));
        assert_eq!(e.time, "1970-01-01T00:00:00.000Z");
        assert_eq!(e.data_json, r#"{"n":1.10}"#);
    }

    #[test]
    fn protobuf_event_round_trips() {
        let e = Event {
            id: "x".into(),
            r#type: "A.B".into(),
            time: "2026-04-14T09:54:45.040Z".into(),
            tenant: "t".into(),
            data_json: "[1]".into(),
            ..Default::default()
        };
        let got = decode_event(
            AT,
            Some(b"application/x-protobuf"),
            Some(&e.encode_to_vec()),
        )
        .unwrap();
        assert_eq!(got, e);
    }

    #[test]
    fn bad_events_name_the_problem() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "invalid JSON"),
            (br#"{"type":"A","tenant":"t","extra":1}"#, "unknown field"),
            (br#"{"tenant":"t"}"#, "missing field `type`"),
            (br#"{"type":"A..B","tenant":"t"}"#, "field `type`"),
            (br#"{"type":"A","tenant":""}"#, "field `tenant`"),
            (
                br#"{"type":"A","tenant":"t","time":"noon"}"#,
                "field `time`",
            ),
        ];
        for (value, want) in cases {
            let err = decode_event(AT, None, Some(value)).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
        assert_eq!(decode_event(AT, None, None), Err(DecodeError::Empty));
        assert!(matches!(
            decode_event(AT, Some(b"text/plain"), Some(b"x")),
            Err(DecodeError::ContentType(_))
        ));
        assert!(matches!(
            decode_event(AT, Some(b"application/x-protobuf"), Some(&[0xff, 0xff])),
            Err(DecodeError::Protobuf(_))
        ));
    }

    #[test]
    fn balances_stay_exact() {
        for (raw, want) in [
            ("1.0", "1.0"),
            (
                "\"-12345678901234567890.123456789\"",
                "-12345678901234567890.123456789",
            ),
            ("0.10", "0.10"),
        ] {
            let json = format!(
                r#"{{"node":"N","account":"1","productName":"","transactionCurrency":"GBP","balance":{raw}}}"#
            );
            assert_eq!(decode_balance(None, json.as_bytes()).unwrap().balance, want);
        }
        for raw in ["1e3", "\"abc\"", "1.", "null", "\"\""] {
            let json = format!(
                r#"{{"node":"N","account":"1","transactionCurrency":"GBP","balance":{raw}}}"#
            );
            assert!(decode_balance(None, json.as_bytes()).is_err(), "{raw}");
        }
    }
}
