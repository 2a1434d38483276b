//! Event-type schemas: a type's `schemas` (version → JSON Schema) are checked when stored,
//! and a message of a type that has them is checked against the newest version (the largest
//! version number) before it is published.
//!
//! Schemas are compiled without remote references (no HTTP, no files: the crate is built
//! without them), so a schema cannot make the API fetch anything. Compiled validators are
//! kept per type and replaced when the type's schemas change; there are at most as many as
//! catalog types.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hookline_runtime::ApiError;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::AppState;

/// Versions a type may hold.
pub const VERSIONS_MAX: usize = 20;
/// Largest stored schemas of one type, in bytes of JSON.
pub const SCHEMAS_MAX_BYTES: usize = 64 * 1024;

/// A compiled validator and the schemas text it was compiled from.
type Compiled = (String, Arc<jsonschema::Validator>);

/// Compiled validators by event type.
#[derive(Clone, Default)]
pub struct Validators {
    by_type: Arc<Mutex<HashMap<String, Compiled>>>,
}

/// The newest version's schema of `schemas` (versions are numbers; others sort first).
fn newest(schemas: &serde_json::Map<String, Value>) -> Option<&Value> {
    schemas
        .iter()
        .max_by_key(|(v, _)| v.parse::<u64>().unwrap_or(0))
        .map(|(_, s)| s)
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .build(schema)
        .map_err(|e| e.to_string())
}

/// Checks the `schemas` of an event type about to be stored: at most [`VERSIONS_MAX`]
/// versions, each named by a number and a JSON Schema that compiles.
pub fn check(schemas: Option<&std::collections::BTreeMap<String, Value>>) -> Result<(), ApiError> {
    let Some(schemas) = schemas else {
        return Ok(());
    };
    if schemas.len() > VERSIONS_MAX {
        return Err(ApiError::invalid(
            "schemas",
            format!("at most {VERSIONS_MAX} schema versions"),
        ));
    }
    let size = serde_json::to_string(schemas).map_or(0, |s| s.len());
    if size > SCHEMAS_MAX_BYTES {
        return Err(ApiError::invalid(
            "schemas",
            format!("`schemas` must be at most {SCHEMAS_MAX_BYTES} bytes of JSON"),
        ));
    }
    for (version, schema) in schemas {
        if version.parse::<u32>().ok().filter(|v| *v > 0).is_none() {
            return Err(ApiError::invalid(
                "schemas",
                format!("schema version {version:?} must be a positive number"),
            ));
        }
        if !schema.is_object() {
            return Err(ApiError::invalid(
                "schemas",
                format!("schema version {version} must be a JSON Schema object"),
            ));
        }
        compile(schema).map_err(|e| {
            ApiError::invalid(
                "schemas",
                format!("schema version {version} is not a valid JSON Schema: {e}"),
            )
        })?;
    }
    Ok(())
}

/// `payload` against the newest schema of `event_type`, when the type has schemas: a 422
/// naming where in the payload it fails.
pub fn check_payload(
    state: &AppState,
    event_type: &str,
    payload: &RawValue,
) -> Result<(), ApiError> {
    let Some(text) = state
        .store
        .event_types
        .read(|t| t.get(event_type).map(|e| e.schemas_json.clone()))
        .filter(|s| !s.is_empty())
    else {
        return Ok(());
    };
    let validator = match state.validators.get(event_type, &text) {
        Some(v) => v,
        None => return Ok(()),
    };
    let value: Value = serde_json::from_str(payload.get())
        .map_err(|_| ApiError::invalid("payload", "`payload` must be a JSON object"))?;
    if let Some(e) = validator.iter_errors(&value).next() {
        let path = e.instance_path().to_string();
        let field = std::iter::once("payload")
            .chain(path.split('/').filter(|s| !s.is_empty()))
            .collect::<Vec<_>>()
            .join(".");
        return Err(ApiError::invalid(
            field,
            format!("the payload does not match the {event_type:?} schema: {e}"),
        ));
    }
    Ok(())
}

impl Validators {
    /// The validator of `event_type` for its schemas `text`, compiled on first use; `None`
    /// when they hold no usable schema (a type stored before schemas were checked).
    fn get(&self, event_type: &str, text: &str) -> Option<Arc<jsonschema::Validator>> {
        let mut by_type = self.by_type.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, v)) = by_type.get(event_type).filter(|(seen, _)| seen == text) {
            return Some(v.clone());
        }
        let schemas: serde_json::Map<String, Value> = serde_json::from_str(text).ok()?;
        let validator = match compile(newest(&schemas)?) {
            Ok(v) => Arc::new(v),
            Err(e) => {
                tracing::warn!(event_type, error = %e, "event type schema does not compile; messages are not checked");
                return None;
            }
        };
        by_type.insert(event_type.to_owned(), (text.to_owned(), validator.clone()));
        Some(validator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_are_checked_when_stored() {
        let ok: std::collections::BTreeMap<String, Value> =
            serde_json::from_value(json!({"1": {"type": "object"}, "2": {"type": "object",
                "required": ["id"]}}))
            .unwrap();
        assert!(check(Some(&ok)).is_ok());
        assert!(check(None).is_ok());
        for bad in [
            json!({"one": {"type": "object"}}),
            json!({"0": {"type": "object"}}),
            json!({"1": "object"}),
            json!({"1": {"type": "no such type"}}),
        ] {
            let m: std::collections::BTreeMap<String, Value> =
                serde_json::from_value(bad.clone()).unwrap();
            let e = check(Some(&m)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("schemas"), "{bad}");
        }
    }

    #[test]
    fn the_newest_version_is_the_largest_number() {
        let m: serde_json::Map<String, Value> =
            serde_json::from_value(json!({"2": {"a": 2}, "10": {"a": 10}, "9": {"a": 9}})).unwrap();
        assert_eq!(newest(&m), Some(&json!({"a": 10})));
    }
}
