//! Evaluating a compiled filter against an event ([`Node::eval`], no allocation) and saying
//! where it did not match ([`Node::explain`], for the filter-test endpoint).

use std::cmp::Ordering;

use serde::Serialize;
use serde_json::{Number, Value};

use super::Subject;
use super::parse::{Bound, Cond, Field, Node, Op, Scalar};

/// Where a filter did not match, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The failing part's path in the filter: `data.amount.$gte`, `$or`, `$and.1.type`.
    pub path: String,
    pub reason: String,
}

/// A value found at a field path, borrowed from the event.
#[derive(Debug, Clone, Copy)]
enum Found<'a> {
    Missing,
    Str(&'a str),
    Json(&'a Value),
}

impl<'a> Found<'a> {
    fn exists(self) -> bool {
        !matches!(self, Found::Missing)
    }

    fn as_str(self) -> Option<&'a str> {
        match self {
            Found::Str(s) => Some(s),
            Found::Json(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    fn as_num(self) -> Option<&'a Number> {
        match self {
            Found::Json(Value::Number(n)) => Some(n),
            _ => None,
        }
    }

    fn describe(self) -> String {
        match self {
            Found::Missing => "missing".into(),
            Found::Str(s) => Value::String(s.into()).to_string(),
            Found::Json(v) => {
                let text = v.to_string();
                if text.chars().count() > 64 {
                    format!("{}…", text.chars().take(64).collect::<String>())
                } else {
                    text
                }
            }
        }
    }
}

impl Field {
    fn lookup<'a>(&self, ev: &Subject<'a>) -> Found<'a> {
        match self {
            Field::Type => Found::Str(ev.r#type),
            Field::Tenant => Found::Str(ev.tenant),
            Field::Metadata(k) => ev
                .metadata
                .get(&**k)
                .map_or(Found::Missing, |v| Found::Str(v)),
            Field::Data(steps) => {
                let Some(mut v) = ev.data else {
                    return Found::Missing;
                };
                for step in steps {
                    let next = match v {
                        Value::Object(map) => map.get(&*step.key),
                        Value::Array(items) => step.index.and_then(|i| items.get(i)),
                        _ => None,
                    };
                    match next {
                        Some(n) => v = n,
                        None => return Found::Missing,
                    }
                }
                Found::Json(v)
            }
        }
    }
}

/// Numbers by value: integers exactly, anything else as f64.
pub(super) fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn equals(found: Found<'_>, s: &Scalar) -> bool {
    match s {
        Scalar::Str(s) => found.as_str() == Some(&**s),
        Scalar::Num(n) => found
            .as_num()
            .is_some_and(|v| cmp_numbers(v, n) == Some(Ordering::Equal)),
        Scalar::Bool(b) => matches!(found, Found::Json(Value::Bool(v)) if v == b),
        Scalar::Null => matches!(found, Found::Json(Value::Null)),
    }
}

fn order(found: Found<'_>, bound: &Bound) -> Option<Ordering> {
    match bound {
        Bound::Num(n) => cmp_numbers(found.as_num()?, n),
        Bound::Str(s) => Some(found.as_str()?.cmp(s)),
    }
}

impl Op {
    fn holds(&self, found: Found<'_>) -> bool {
        use Ordering::*;
        match self {
            Op::Eq(s) => equals(found, s),
            Op::Neq(s) => found.exists() && !equals(found, s),
            Op::Gt(b) => order(found, b) == Some(Greater),
            Op::Gte(b) => matches!(order(found, b), Some(Greater | Equal)),
            Op::Lt(b) => order(found, b) == Some(Less),
            Op::Lte(b) => matches!(order(found, b), Some(Less | Equal)),
            Op::In(list) => list.iter().any(|s| equals(found, s)),
            Op::Nin(list) => found.exists() && !list.iter().any(|s| equals(found, s)),
            Op::Exists(want) => found.exists() == *want,
            Op::StartsWith(p) => found.as_str().is_some_and(|s| s.starts_with(&**p)),
            Op::EndsWith(p) => found.as_str().is_some_and(|s| s.ends_with(&**p)),
            Op::Regex(r) => found.as_str().is_some_and(|s| r.is_match(s)),
            Op::Not(cond) => !cond.holds(found),
        }
    }

    /// Why the operator does not hold for `found` at field `at`.
    fn reason(&self, at: &str, found: Found<'_>) -> String {
        if !found.exists() && !matches!(self, Op::Exists(false) | Op::Not(_)) {
            return format!("{at} does not exist");
        }
        let is = found.describe();
        let typed = |wanted: &str| format!("{at} is {is}: {} compares with {wanted}", self.name());
        match self {
            Op::Eq(s) => format!("{at} is {is}, not {}", scalar_text(s)),
            Op::Neq(s) => format!("{at} is {}", scalar_text(s)),
            Op::Gt(b) | Op::Gte(b) | Op::Lt(b) | Op::Lte(b) => {
                if order(found, b).is_none() {
                    return typed(match b {
                        Bound::Num(_) => "numbers",
                        Bound::Str(_) => "strings",
                    });
                }
                let sign = match self {
                    Op::Gt(_) => ">",
                    Op::Gte(_) => ">=",
                    Op::Lt(_) => "<",
                    _ => "<=",
                };
                format!("{at} is {is}, not {sign} {}", bound_text(b))
            }
            Op::In(_) => format!("{at} is {is}, not one of the $in values"),
            Op::Nin(_) => format!("{at} is {is}, one of the $nin values"),
            Op::Exists(true) => format!("{at} does not exist"),
            Op::Exists(false) => format!("{at} exists"),
            Op::StartsWith(p) | Op::EndsWith(p) if found.as_str().is_some() => {
                let how = if matches!(self, Op::StartsWith(_)) {
                    "start"
                } else {
                    "end"
                };
                format!("{at} is {is}, which does not {how} with {:?}", &**p)
            }
            Op::Regex(r) if found.as_str().is_some() => {
                format!("{at} is {is}, which does not match /{}/", r.as_str())
            }
            Op::StartsWith(_) | Op::EndsWith(_) | Op::Regex(_) => typed("strings"),
            Op::Not(_) => format!("{at} is {is}, which the negated condition accepts"),
        }
    }
}

fn scalar_text(s: &Scalar) -> String {
    match s {
        Scalar::Null => "null".into(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Num(n) => n.to_string(),
        Scalar::Str(s) => Value::String(s.to_string()).to_string(),
    }
}

fn bound_text(b: &Bound) -> String {
    match b {
        Bound::Num(n) => n.to_string(),
        Bound::Str(s) => Value::String(s.to_string()).to_string(),
    }
}

impl Cond {
    fn holds(&self, found: Found<'_>) -> bool {
        self.0.iter().all(|op| op.holds(found))
    }
}

impl Node {
    pub(super) fn eval(&self, ev: &Subject<'_>) -> bool {
        match self {
            Node::All(children) => children.iter().all(|c| c.eval(ev)),
            Node::Any { children, .. } => children.iter().any(|c| c.eval(ev)),
            Node::Not { child, .. } => !child.eval(ev),
            Node::Field { field, cond, .. } => cond.holds(field.lookup(ev)),
        }
    }

    pub(super) fn explain(&self, ev: &Subject<'_>) -> Option<Mismatch> {
        match self {
            Node::All(children) => children.iter().find_map(|c| c.explain(ev)),
            Node::Any { at, children } => {
                let first = children.iter().map(|c| c.explain(ev)).try_fold(
                    None,
                    |first: Option<Mismatch>, m| match m {
                        None => Err(()),
                        Some(m) => Ok(first.or(Some(m))),
                    },
                );
                match first {
                    Err(()) => None,
                    Ok(first) => Some(Mismatch {
                        path: at.to_string(),
                        reason: match first {
                            Some(m) => format!(
                                "no alternative matched (the first: {}: {})",
                                m.path, m.reason
                            ),
                            None => "no alternative matched".into(),
                        },
                    }),
                }
            }
            Node::Not { at, child } => child.eval(ev).then(|| Mismatch {
                path: at.to_string(),
                reason: "the negated filter matched".into(),
            }),
            Node::Field { at, field, cond } => {
                let found = field.lookup(ev);
                let failing = cond.0.iter().find(|op| !op.holds(found))?;
                Some(Mismatch {
                    path: format!("{at}.{}", failing.name()),
                    reason: failing.reason(at, found),
                })
            }
        }
    }
}
