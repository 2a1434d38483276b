//! Property test: the compiled filter against a naive reference evaluator that reads the
//! filter JSON directly, on generated filters and events; `explain` agrees with `matches`;
//! and the canonical text compiles to the same filter.

use std::cmp::Ordering;
use std::collections::HashMap;

use hookline_routing::{Filter, Subject};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

// ---- the reference: the README's rules, read off the JSON each time ----

fn index(seg: &str) -> Option<usize> {
    if seg.is_empty() || !seg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if seg.len() > 1 && seg.starts_with('0') {
        return None;
    }
    seg.parse().ok()
}

/// The value at `path` of the event (an object with `type`, `tenant`, `metadata`, `data`).
fn lookup(event: &Value, path: &str) -> Option<Value> {
    if path == "type" || path == "tenant" {
        return event.get(path).cloned();
    }
    if let Some(k) = path.strip_prefix("metadata.") {
        return event["metadata"].get(k).cloned();
    }
    let mut v = event.get("data")?.clone();
    if path == "data" {
        return Some(v);
    }
    for seg in path.strip_prefix("data.")?.split('.') {
        v = match &v {
            Value::Object(m) => m.get(seg)?.clone(),
            Value::Array(a) => a.get(index(seg)?)?.clone(),
            _ => return None,
        };
    }
    Some(v)
}

fn num_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    let (a, b) = (a.as_number()?, b.as_number()?);
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

fn same(v: &Value, operand: &Value) -> bool {
    match (v, operand) {
        (Value::Number(_), Value::Number(_)) => num_cmp(v, operand) == Some(Ordering::Equal),
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}

fn compare(v: &Value, operand: &Value) -> Option<Ordering> {
    match (v, operand) {
        (Value::Number(_), Value::Number(_)) => num_cmp(v, operand),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn condition(v: Option<&Value>, cond: &Value) -> bool {
    let Some(ops) = cond.as_object() else {
        return v.is_some_and(|v| same(v, cond));
    };
    ops.iter().all(|(op, operand)| {
        let list = || operand.as_array().unwrap().iter();
        let text = || v.and_then(Value::as_str);
        match op.as_str() {
            "$eq" => v.is_some_and(|v| same(v, operand)),
            "$neq" => v.is_some_and(|v| !same(v, operand)),
            "$gt" => v.and_then(|v| compare(v, operand)) == Some(Ordering::Greater),
            "$gte" => v
                .and_then(|v| compare(v, operand))
                .is_some_and(Ordering::is_ge),
            "$lt" => v.and_then(|v| compare(v, operand)) == Some(Ordering::Less),
            "$lte" => v
                .and_then(|v| compare(v, operand))
                .is_some_and(Ordering::is_le),
            "$in" => v.is_some_and(|v| list().any(|o| same(v, o))),
            "$nin" => v.is_some_and(|v| !list().any(|o| same(v, o))),
            "$exists" => v.is_some() == operand.as_bool().unwrap(),
            "$startsWith" => text().is_some_and(|t| t.starts_with(operand.as_str().unwrap())),
            "$endsWith" => text().is_some_and(|t| t.ends_with(operand.as_str().unwrap())),
            // The generated regexes are literal prefixes anchored with `^`.
            "$regex" => text()
                .is_some_and(|t| t.starts_with(operand.as_str().unwrap().trim_start_matches('^'))),
            "$not" => !condition(v, operand),
            other => panic!("generated an unknown operator {other}"),
        }
    })
}

fn reference(event: &Value, filter: &Value) -> bool {
    filter
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| match k.as_str() {
            "$and" => v.as_array().unwrap().iter().all(|f| reference(event, f)),
            "$or" => v.as_array().unwrap().iter().any(|f| reference(event, f)),
            "$not" => !reference(event, v),
            path => condition(lookup(event, path).as_ref(), v),
        })
}

// ---- generators: few names and values, so filters and events meet often ----

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(|n| json!(n)),
        prop_oneof![Just(1.0f64), Just(2.5), Just(-0.5)].prop_map(|f| json!(f)),
        prop_oneof![Just("a"), Just("ab"), Just("b"), Just("eu"), Just("")].prop_map(|s| json!(s)),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("type".to_owned()),
        Just("tenant".to_owned()),
        Just("metadata.region".to_owned()),
        Just("metadata.tier".to_owned()),
        Just("data".to_owned()),
        Just("data.x".to_owned()),
        Just("data.y".to_owned()),
        Just("data.list.0".to_owned()),
        Just("data.list.1".to_owned()),
        Just("data.list.x".to_owned()),
        Just("data.obj.x".to_owned()),
        Just("data.obj.0".to_owned()),
    ]
}

fn operator() -> impl Strategy<Value = Value> {
    let string = prop_oneof![Just("a"), Just("ab"), Just("e"), Just("")];
    let leaf = prop_oneof![
        scalar().prop_map(|s| json!({"$eq": s})),
        scalar().prop_map(|s| json!({"$neq": s})),
        (
            prop_oneof![Just("$gt"), Just("$gte"), Just("$lt"), Just("$lte")],
            prop_oneof![
                (-3i64..4).prop_map(|n| json!(n)),
                Just(json!(0.5)),
                Just(json!("ab"))
            ]
        )
            .prop_map(|(op, v)| json!({ op: v })),
        (
            prop_oneof![Just("$in"), Just("$nin")],
            prop::collection::vec(scalar(), 0..4)
        )
            .prop_map(|(op, v)| json!({ op: v })),
        any::<bool>().prop_map(|b| json!({"$exists": b})),
        string.clone().prop_map(|s| json!({"$startsWith": s})),
        string.clone().prop_map(|s| json!({"$endsWith": s})),
        string.prop_map(|s| json!({"$regex": format!("^{s}")})),
    ];
    leaf.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|c| json!({"$not": c})),
            (inner.clone(), inner).prop_map(|(a, b)| {
                let mut m = a.as_object().unwrap().clone();
                m.extend(b.as_object().unwrap().clone());
                Value::Object(m)
            }),
        ]
    })
}

fn condition_value() -> impl Strategy<Value = Value> {
    prop_oneof![1 => scalar(), 3 => operator()]
}

fn filter() -> impl Strategy<Value = Value> {
    let field = prop::collection::btree_map(path(), condition_value(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>()));
    field.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"$and": v})),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"$or": v})),
            inner.clone().prop_map(|f| json!({"$not": f})),
            (inner, path(), condition_value()).prop_map(|(f, p, c)| {
                let mut m = f.as_object().unwrap().clone();
                m.insert(p, c);
                Value::Object(m)
            }),
        ]
    })
}

fn data() -> impl Strategy<Value = Value> {
    let small = prop_oneof![scalar(), Just(json!([])), Just(json!({}))];
    (
        prop::option::of(scalar()),
        prop::option::of(scalar()),
        prop::option::of(prop::collection::vec(scalar(), 0..3)),
        prop::option::of(small),
    )
        .prop_map(|(x, y, list, obj)| {
            let mut m = Map::new();
            if let Some(x) = x {
                m.insert("x".into(), x);
            }
            if let Some(y) = y {
                m.insert("y".into(), y);
            }
            if let Some(l) = list {
                m.insert("list".into(), Value::Array(l));
            }
            if let Some(o) = obj {
                m.insert("obj".into(), json!({"x": o, "0": "a"}));
            }
            Value::Object(m)
        })
}

fn event() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("a"), Just("ab"), Just("b")],
        prop_oneof![Just("eu"), Just("a")],
        prop::option::of(prop_oneof![Just("eu"), Just("ab"), Just("")]),
        prop::option::of(data()),
    )
        .prop_map(|(t, tenant, region, data)| {
            let metadata: Map<String, Value> = region
                .map(|r| ("region".to_owned(), json!(r)))
                .into_iter()
                .collect();
            let mut e = json!({"type": t, "tenant": tenant, "metadata": metadata});
            if let Some(d) = data {
                e["data"] = d;
            }
            e
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_compiled_filter_agrees_with_the_reference(f in filter(), e in event()) {
        let compiled = Filter::compile(&f, "filter").unwrap_or_else(|err| panic!("{f}: {err}"));
        let metadata: HashMap<String, String> = e["metadata"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let subject = Subject {
            r#type: e["type"].as_str().unwrap(),
            tenant: e["tenant"].as_str().unwrap(),
            metadata: &metadata,
            data: e.get("data"),
        };
        let got = compiled.matches(&subject);
        prop_assert_eq!(got, reference(&e, &f), "filter {} event {}", f, e);
        prop_assert_eq!(compiled.explain(&subject).is_none(), got, "explain, filter {}", f);
        let again = Filter::parse(compiled.canonical(), "filter").unwrap();
        prop_assert_eq!(again.matches(&subject), got);
        prop_assert_eq!(again.canonical(), compiled.canonical());
    }

    /// Any JSON at all: compiled or refused with a path under the root, never a panic.
    #[test]
    fn any_json_is_compiled_or_refused_with_a_path(v in arb_json()) {
        if let Err(e) = Filter::compile(&v, "filter") {
            prop_assert!(e.path == "filter" || e.path.starts_with("filter."), "{}", e);
            prop_assert!(!e.message.is_empty());
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("$and".to_owned()),
        Just("$or".to_owned()),
        Just("$not".to_owned()),
        Just("$gt".to_owned()),
        Just("$in".to_owned()),
        Just("$regex".to_owned()),
        Just("data.x".to_owned()),
        Just("type".to_owned()),
        "[a-z$.]{0,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[(a-z\\[*+?]{0,5}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 40, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
