//! Payload filters: a JSON filter over an event's `type`, `tenant`, `metadata.*` and `data.*`,
//! compiled once (when a subscription changes) into a tree that is evaluated per event
//! without allocating.
//!
//! The language (the README's "Payload filters" says the same to tenants):
//!
//! - A filter is an object. Each key is a field path or one of `$and`, `$or` (a non-empty
//!   array of filters) and `$not` (a filter); several keys must all hold. `{}` matches
//!   every event.
//! - A field path is `type`, `tenant`, `metadata.<key>` (the rest of the path is one key of
//!   the string map) or `data` followed by dotted steps (`data.items.0.sku`): a step into an
//!   object takes the member of that name, a step into an array takes the element at that
//!   index (a decimal number). A path does not fan out over arrays: `data.items.sku` does not
//!   exist when `items` is an array (name the element, `data.items.0.sku`).
//! - A field's value is a condition: a bare scalar (`$eq`) or an object of operators, all of
//!   which must hold: `$eq $neq` (a scalar), `$gt $gte $lt $lte` (a number or a string),
//!   `$in $nin` (an array of scalars), `$exists` (a boolean), `$startsWith $endsWith` (a
//!   string), `$regex` (a string, the `regex` crate's syntax, linear time), `$not` (a
//!   condition).
//! - Numbers compare by value (`1` equals `1.0`; integers exactly, others as f64); strings
//!   lexicographically by code point. A value of another type than the operand never
//!   matches (`"5"` is not `$gt: 1`, a number never `$startsWith`); `$neq` and `$nin` hold for
//!   a present value of another type (it is not equal). A missing field matches only
//!   `$exists: false` (and a `$not` around a condition it fails).
//!
//! Limits: [`MAX_BYTES`] of canonical JSON, [`MAX_DEPTH`] levels of nesting, [`MAX_IN`]
//! entries per `$in`/`$nin`, [`MAX_REGEXES`] regexes of at most [`MAX_REGEX_LEN`] characters,
//! each compiled within [`REGEX_SIZE_LIMIT`] bytes. Every refusal is a [`FilterError`] naming
//! the JSON path of the offending part (`filter.data.amount.$gt`).

mod eval;
mod parse;

use std::collections::HashMap;

use serde_json::Value;

pub use eval::Mismatch;
use parse::Node;

/// Most bytes of a filter's canonical JSON text.
pub const MAX_BYTES: usize = 4096;
/// Most levels of JSON nesting (the filter object itself is level 1).
pub const MAX_DEPTH: usize = 10;
/// Most entries of one `$in` or `$nin` list.
pub const MAX_IN: usize = 100;
/// Most `$regex` operators in one filter.
pub const MAX_REGEXES: usize = 8;
/// Most characters of one `$regex`.
pub const MAX_REGEX_LEN: usize = 256;
/// Compiled size cap of one regex (`RegexBuilder::size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Lazy DFA cache cap of one regex (`RegexBuilder::dfa_size_limit`), so 10,000 filters with
/// regexes stay small.
pub const REGEX_DFA_LIMIT: usize = 256 * 1024;

/// Why a filter was refused: the JSON path of the offending part and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FilterError {
    /// `filter`, `filter.data.amount.$gt`, `filter.$or.1.type`, ...
    pub path: String,
    pub message: String,
    /// A `$regex` the engine cannot take (look-around, back-references, too large once
    /// compiled): well-formed as a regex may be, refused by this server.
    pub regex_refused: bool,
}

/// What a filter sees of an event. `data` is `None` when the event's data is not JSON: then
/// no `data` path exists.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub r#type: &'a str,
    pub tenant: &'a str,
    pub metadata: &'a HashMap<String, String>,
    pub data: Option<&'a Value>,
}

/// A compiled filter.
#[derive(Debug)]
pub struct Filter {
    root: Node,
    canonical: String,
    needs_data: bool,
}

impl Filter {
    /// Compiles the filter `value`, naming refused parts under `root` (the field the filter
    /// came in, e.g. `filter`).
    pub fn compile(value: &Value, root: &str) -> Result<Self, FilterError> {
        parse::check_depth(value, root, 1)?;
        let canonical = canonical(value);
        if canonical.len() > MAX_BYTES {
            return Err(FilterError {
                regex_refused: false,
                path: root.to_owned(),
                message: format!(
                    "a filter may be at most {MAX_BYTES} bytes of JSON, this one is {}",
                    canonical.len()
                ),
            });
        }
        let (root, needs_data) = parse::compile(value, root)?;
        Ok(Self {
            root,
            canonical,
            needs_data,
        })
    }

    /// Compiles a filter from its JSON text (as stored), naming refused parts under `root`.
    pub fn parse(text: &str, root: &str) -> Result<Self, FilterError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FilterError {
            regex_refused: false,
            path: root.to_owned(),
            message: format!("not JSON: {e}"),
        })?;
        Self::compile(&value, root)
    }

    /// The filter as canonical JSON text: object keys sorted, no spaces.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// Whether some path of the filter reads `data` (so the event's data must be parsed).
    pub fn needs_data(&self) -> bool {
        self.needs_data
    }

    /// Whether `event` matches. Allocates nothing.
    pub fn matches(&self, event: &Subject<'_>) -> bool {
        self.root.eval(event)
    }

    /// `None` when `event` matches; else the first part of the filter that failed (its path
    /// in the filter, without the root) and why.
    pub fn explain(&self, event: &Subject<'_>) -> Option<Mismatch> {
        self.root.explain(event)
    }
}

/// `value` as canonical JSON text: object keys sorted by code point, no whitespace, numbers
/// and strings as serde_json writes them.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests;
