//! Filter JSON → the compiled tree, with every limit checked and every refusal naming the
//! JSON path of the offending part.

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Number, Value};

use super::{
    FilterError, MAX_DEPTH, MAX_IN, MAX_REGEX_LEN, MAX_REGEXES, REGEX_DFA_LIMIT, REGEX_SIZE_LIMIT,
};

/// A node of a compiled filter. Each carries the path of its part in the filter (without
/// the root), for explanations.
#[derive(Debug)]
pub(super) enum Node {
    /// Every child holds (an object of several keys, or `$and`).
    All(Vec<Node>),
    /// Some child holds (`$or`); `at` is the path of the `$or`.
    Any { at: Box<str>, children: Vec<Node> },
    /// The child does not hold (`$not`).
    Not { at: Box<str>, child: Box<Node> },
    /// A field's condition.
    Field {
        at: Box<str>,
        field: Field,
        cond: Cond,
    },
}

/// Where a field path leads.
#[derive(Debug)]
pub(super) enum Field {
    Type,
    Tenant,
    Metadata(Box<str>),
    Data(Vec<Step>),
}

/// One step of a `data` path: the member `key` of an object, or the element `index` of an
/// array (when `key` is a decimal number).
#[derive(Debug)]
pub(super) struct Step {
    pub key: Box<str>,
    pub index: Option<usize>,
}

/// Operators that must all hold.
#[derive(Debug)]
pub(super) struct Cond(pub Vec<Op>);

/// A JSON scalar operand.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Null,
    Bool(bool),
    Num(Number),
    Str(Box<str>),
}

/// An operand of an ordering comparison.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Bound {
    Num(Number),
    Str(Box<str>),
}

#[derive(Debug)]
pub(super) enum Op {
    Eq(Scalar),
    Neq(Scalar),
    Gt(Bound),
    Gte(Bound),
    Lt(Bound),
    Lte(Bound),
    In(Vec<Scalar>),
    Nin(Vec<Scalar>),
    Exists(bool),
    StartsWith(Box<str>),
    EndsWith(Box<str>),
    Regex(Regex),
    Not(Cond),
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Eq(_) => "$eq",
            Op::Neq(_) => "$neq",
            Op::Gt(_) => "$gt",
            Op::Gte(_) => "$gte",
            Op::Lt(_) => "$lt",
            Op::Lte(_) => "$lte",
            Op::In(_) => "$in",
            Op::Nin(_) => "$nin",
            Op::Exists(_) => "$exists",
            Op::StartsWith(_) => "$startsWith",
            Op::EndsWith(_) => "$endsWith",
            Op::Regex(_) => "$regex",
            Op::Not(_) => "$not",
        }
    }
}

const OPERATORS: &str = "$eq, $neq, $gt, $gte, $lt, $lte, $in, $nin, $exists, $startsWith, \
    $endsWith, $regex, $not";

fn err(path: &str, message: impl Into<String>) -> FilterError {
    FilterError {
        path: path.to_owned(),
        message: message.into(),
        regex_refused: false,
    }
}

fn join(path: &str, key: &str) -> String {
    if key.is_empty() {
        path.to_owned()
    } else if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Refuses JSON nested deeper than [`MAX_DEPTH`], naming the first part too deep.
pub(super) fn check_depth(value: &Value, path: &str, depth: usize) -> Result<(), FilterError> {
    let deeper = |v: &Value, p: String| check_depth(v, &p, depth + 1);
    match value {
        Value::Object(_) | Value::Array(_) if depth > MAX_DEPTH => Err(err(
            path,
            format!("a filter may nest at most {MAX_DEPTH} levels of objects and arrays"),
        )),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| deeper(v, join(path, k))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| deeper(v, join(path, &i.to_string()))),
        _ => Ok(()),
    }
}

struct Compiler<'r> {
    root: &'r str,
    regexes: usize,
    needs_data: bool,
}

/// Compiles `value` (already checked for depth and size); returns the tree and whether it
/// reads `data`.
pub(super) fn compile(value: &Value, root: &str) -> Result<(Node, bool), FilterError> {
    let mut c = Compiler {
        root,
        regexes: 0,
        needs_data: false,
    };
    let node = c.filter(value, "")?;
    Ok((node, c.needs_data))
}

impl Compiler<'_> {
    /// The path of `rel` under the root, for refusals.
    fn full(&self, rel: &str) -> String {
        join(self.root, rel)
    }

    fn filter(&mut self, value: &Value, at: &str) -> Result<Node, FilterError> {
        let Value::Object(map) = value else {
            return Err(err(
                &self.full(at),
                format!("a filter is an object, not {}", kind(value)),
            ));
        };
        let mut nodes = Vec::with_capacity(map.len());
        for (key, v) in map {
            let here = join(at, key);
            nodes.push(match key.as_str() {
                "$and" | "$or" => {
                    let children = self.list(v, &here, key)?;
                    if key == "$and" {
                        Node::All(children)
                    } else {
                        Node::Any {
                            at: here.into(),
                            children,
                        }
                    }
                }
                "$not" => Node::Not {
                    child: Box::new(self.filter(v, &here)?),
                    at: here.into(),
                },
                k if k.starts_with('$') => {
                    return Err(err(
                        &self.full(&here),
                        format!(
                            "`{k}` is not a filter operator: a filter's keys are field paths \
                             or $and, $or, $not"
                        ),
                    ));
                }
                _ => {
                    let field = self.field(key, &here)?;
                    let cond = self.cond(v, &here)?;
                    Node::Field {
                        at: here.into(),
                        field,
                        cond,
                    }
                }
            });
        }
        Ok(if nodes.len() == 1 {
            nodes.pop().expect("one node")
        } else {
            Node::All(nodes)
        })
    }

    fn list(&mut self, value: &Value, at: &str, key: &str) -> Result<Vec<Node>, FilterError> {
        match value {
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, v)| self.filter(v, &join(at, &i.to_string())))
                .collect(),
            _ => Err(err(
                &self.full(at),
                format!("`{key}` takes a non-empty array of filters"),
            )),
        }
    }

    fn field(&mut self, key: &str, at: &str) -> Result<Field, FilterError> {
        let bad = |why: &str| {
            err(
                &self.full(at),
                format!(
                    "`{key}` is not a field path ({why}): use type, tenant, metadata.<key> or \
                     data.<path>"
                ),
            )
        };
        match key {
            "type" => return Ok(Field::Type),
            "tenant" => return Ok(Field::Tenant),
            "data" => {
                self.needs_data = true;
                return Ok(Field::Data(Vec::new()));
            }
            _ => {}
        }
        if let Some(k) = key.strip_prefix("metadata.") {
            if k.is_empty() {
                return Err(bad("no metadata key"));
            }
            return Ok(Field::Metadata(k.into()));
        }
        let Some(rest) = key.strip_prefix("data.") else {
            return Err(bad("unknown field"));
        };
        let mut steps = Vec::new();
        for seg in rest.split('.') {
            if seg.is_empty() {
                return Err(bad("an empty step"));
            }
            steps.push(Step {
                key: seg.into(),
                index: index_of(seg),
            });
        }
        self.needs_data = true;
        Ok(Field::Data(steps))
    }

    /// A field's condition: a bare scalar, or an object of operators.
    fn cond(&mut self, value: &Value, at: &str) -> Result<Cond, FilterError> {
        let Value::Object(ops) = value else {
            return Ok(Cond(vec![Op::Eq(self.scalar(
                value,
                at,
                "a bare value",
            )?)]));
        };
        if ops.is_empty() {
            return Err(err(
                &self.full(at),
                format!("an empty object is no condition: use one of {OPERATORS}"),
            ));
        }
        self.ops(ops, at).map(Cond)
    }

    fn ops(&mut self, ops: &Map<String, Value>, at: &str) -> Result<Vec<Op>, FilterError> {
        let mut out = Vec::with_capacity(ops.len());
        for (name, v) in ops {
            let here = join(at, name);
            let op = match name.as_str() {
                "$eq" => Op::Eq(self.scalar(v, &here, name)?),
                "$neq" => Op::Neq(self.scalar(v, &here, name)?),
                "$gt" => Op::Gt(self.bound(v, &here, name)?),
                "$gte" => Op::Gte(self.bound(v, &here, name)?),
                "$lt" => Op::Lt(self.bound(v, &here, name)?),
                "$lte" => Op::Lte(self.bound(v, &here, name)?),
                "$in" => Op::In(self.scalars(v, &here, name)?),
                "$nin" => Op::Nin(self.scalars(v, &here, name)?),
                "$exists" => match v {
                    Value::Bool(b) => Op::Exists(*b),
                    _ => return Err(self.operand(&here, name, "a boolean", v)),
                },
                "$startsWith" => Op::StartsWith(self.string(v, &here, name)?),
                "$endsWith" => Op::EndsWith(self.string(v, &here, name)?),
                "$regex" => Op::Regex(self.regex(v, &here)?),
                "$not" => Op::Not(self.cond(v, &here)?),
                other if other.starts_with('$') => {
                    return Err(err(
                        &self.full(&here),
                        format!("unknown operator `{other}`: use one of {OPERATORS}"),
                    ));
                }
                other => {
                    return Err(err(
                        &self.full(&here),
                        format!(
                            "`{other}` is not an operator: a field's object holds operators \
                             ({OPERATORS}); objects are not compared"
                        ),
                    ));
                }
            };
            out.push(op);
        }
        Ok(out)
    }

    fn operand(&self, at: &str, op: &str, wanted: &str, got: &Value) -> FilterError {
        err(
            &self.full(at),
            format!("`{op}` takes {wanted}, not {}", kind(got)),
        )
    }

    fn scalar(&self, v: &Value, at: &str, op: &str) -> Result<Scalar, FilterError> {
        Ok(match v {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => Scalar::Num(n.clone()),
            Value::String(s) => Scalar::Str(s.as_str().into()),
            Value::Array(_) => {
                return Err(err(
                    &self.full(at),
                    format!("{op} cannot be an array: use $in for a list of values"),
                ));
            }
            Value::Object(_) => return Err(self.operand(at, op, "a scalar", v)),
        })
    }

    fn bound(&self, v: &Value, at: &str, op: &str) -> Result<Bound, FilterError> {
        match v {
            Value::Number(n) => Ok(Bound::Num(n.clone())),
            Value::String(s) => Ok(Bound::Str(s.as_str().into())),
            _ => Err(self.operand(at, op, "a number or a string", v)),
        }
    }

    fn scalars(&self, v: &Value, at: &str, op: &str) -> Result<Vec<Scalar>, FilterError> {
        let Value::Array(items) = v else {
            return Err(self.operand(at, op, "an array of scalars", v));
        };
        if items.len() > MAX_IN {
            return Err(err(
                &self.full(at),
                format!(
                    "`{op}` may list at most {MAX_IN} values, this one has {}",
                    items.len()
                ),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Array(_) | Value::Object(_) => {
                    Err(self.operand(&join(at, &i.to_string()), op, "scalars", item))
                }
                _ => self.scalar(item, at, op),
            })
            .collect()
    }

    fn string(&self, v: &Value, at: &str, op: &str) -> Result<Box<str>, FilterError> {
        match v {
            Value::String(s) => Ok(s.as_str().into()),
            _ => Err(self.operand(at, op, "a string", v)),
        }
    }

    fn regex(&mut self, v: &Value, at: &str) -> Result<Regex, FilterError> {
        let pattern = self.string(v, at, "$regex")?;
        self.regexes += 1;
        if self.regexes > MAX_REGEXES {
            return Err(err(
                &self.full(at),
                format!("a filter may hold at most {MAX_REGEXES} regexes"),
            ));
        }
        let n = pattern.chars().count();
        if n > MAX_REGEX_LEN {
            return Err(err(
                &self.full(at),
                format!("a regex may be at most {MAX_REGEX_LEN} characters, this one is {n}"),
            ));
        }
        RegexBuilder::new(&pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_LIMIT)
            .build()
            .map_err(|e| {
                let why = match e {
                    regex::Error::CompiledTooBig(limit) => {
                        format!("the regex compiles to more than {limit} bytes")
                    }
                    other => format!("not a regex this server takes: {other}"),
                };
                FilterError {
                    regex_refused: true,
                    ..err(&self.full(at), why)
                }
            })
    }
}

/// The array index a step names: a decimal number without leading zeros.
fn index_of(seg: &str) -> Option<usize> {
    let digits = seg.bytes().all(|b| b.is_ascii_digit());
    if !digits || (seg.len() > 1 && seg.starts_with('0')) {
        return None;
    }
    seg.parse().ok()
}

/// What a JSON value is, in refusals.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
