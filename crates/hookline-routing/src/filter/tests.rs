use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;

fn compile(v: Value) -> Filter {
    Filter::compile(&v, "filter").unwrap_or_else(|e| panic!("{v}: {e}"))
}

fn refused(v: Value) -> FilterError {
    match Filter::compile(&v, "filter") {
        Ok(_) => panic!("{v} was accepted"),
        Err(e) => e,
    }
}

struct Ev {
    r#type: String,
    tenant: String,
    metadata: HashMap<String, String>,
    data: Option<Value>,
}

fn ev(data: Value) -> Ev {
    Ev {
        r#type: "payment.created".into(),
        tenant: "t1".into(),
        metadata: HashMap::from([("region".to_owned(), "eu".to_owned())]),
        data: Some(data),
    }
}

impl Ev {
    fn subject(&self) -> Subject<'_> {
        Subject {
            r#type: &self.r#type,
            tenant: &self.tenant,
            metadata: &self.metadata,
            data: self.data.as_ref(),
        }
    }
}

fn matches(filter: Value, data: Value) -> bool {
    let f = compile(filter);
    let e = ev(data);
    let m = f.matches(&e.subject());
    assert_eq!(m, f.explain(&e.subject()).is_none(), "explain agrees");
    m
}

#[test]
fn every_operator() {
    let d = json!({"amount": 150, "price": 9.5, "name": "Widget-42", "ok": true,
        "none": null, "items": [{"sku": "A1"}, {"sku": "B2"}], "tags": ["x"]});
    let cases: &[(Value, bool)] = &[
        (json!({"data.amount": 150}), true),
        (json!({"data.amount": 150.0}), true),
        (json!({"data.amount": "150"}), false),
        (json!({"data.amount": {"$eq": 150}}), true),
        (json!({"data.amount": {"$neq": 150}}), false),
        (json!({"data.amount": {"$neq": "150"}}), true),
        (json!({"data.missing": {"$neq": 1}}), false),
        (json!({"data.amount": {"$gt": 149}}), true),
        (json!({"data.amount": {"$gt": 150}}), false),
        (json!({"data.amount": {"$gte": 150}}), true),
        (json!({"data.amount": {"$lt": 150.5}}), true),
        (json!({"data.amount": {"$lte": 149}}), false),
        (json!({"data.amount": {"$gte": 100, "$lt": 200}}), true),
        (json!({"data.price": {"$gt": 9}}), true),
        (json!({"data.name": {"$gt": "W"}}), true),
        (json!({"data.name": {"$lt": "W"}}), false),
        (json!({"data.name": {"$gt": 1}}), false),
        (json!({"data.amount": {"$gt": "1"}}), false),
        (json!({"data.amount": {"$in": [1, 150]}}), true),
        (json!({"data.amount": {"$in": []}}), false),
        (json!({"data.amount": {"$nin": [1, 2]}}), true),
        (json!({"data.amount": {"$nin": [150]}}), false),
        (json!({"data.missing": {"$nin": [150]}}), false),
        (json!({"data.amount": {"$exists": true}}), true),
        (json!({"data.missing": {"$exists": false}}), true),
        (json!({"data.none": {"$exists": true}}), true),
        (json!({"data.none": null}), true),
        (json!({"data.ok": true}), true),
        (json!({"data.ok": 1}), false),
        (json!({"data.name": {"$startsWith": "Wid"}}), true),
        (json!({"data.name": {"$endsWith": "42"}}), true),
        (json!({"data.name": {"$endsWith": "41"}}), false),
        (json!({"data.amount": {"$startsWith": "1"}}), false),
        (json!({"data.name": {"$regex": "^W[a-z]+-\\d+$"}}), true),
        (json!({"data.name": {"$regex": "^w"}}), false),
        (json!({"data.name": {"$regex": "(?i)^w"}}), true),
        (json!({"data.amount": {"$not": {"$lt": 100}}}), true),
        (json!({"data.amount": {"$not": 150}}), false),
        (json!({"data.missing": {"$not": {"$eq": 1}}}), true),
        (json!({"data.items.1.sku": "B2"}), true),
        (json!({"data.items.2.sku": {"$exists": false}}), true),
        (json!({"data.items.sku": {"$exists": false}}), true),
        (json!({"data.items.01.sku": "B2"}), false),
        (json!({"data.tags.0": "x"}), true),
        (json!({"data.tags": "x"}), false),
        (json!({"data.items": {"$exists": true}}), true),
        (json!({"data": {"$exists": true}}), true),
        (json!({"type": "payment.created", "tenant": "t1"}), true),
        (json!({"type": {"$startsWith": "payment."}}), true),
        (json!({"tenant": "t2"}), false),
        (json!({"metadata.region": {"$in": ["eu", "us"]}}), true),
        (json!({"metadata.other": {"$exists": true}}), false),
        (
            json!({"$and": [{"data.amount": 150}, {"metadata.region": "eu"}]}),
            true,
        ),
        (
            json!({"$and": [{"data.amount": 150}, {"metadata.region": "us"}]}),
            false,
        ),
        (
            json!({"$or": [{"data.amount": 1}, {"metadata.region": "eu"}]}),
            true,
        ),
        (
            json!({"$or": [{"data.amount": 1}, {"metadata.region": "us"}]}),
            false,
        ),
        (json!({"$not": {"data.amount": 1}}), true),
        (json!({"$not": {"data.amount": 150}}), false),
        (json!({}), true),
        (json!({"data.amount": 150, "metadata.region": "us"}), false),
    ];
    for (filter, want) in cases {
        assert_eq!(matches(filter.clone(), d.clone()), *want, "{filter}");
    }
}

#[test]
fn numbers_compare_exactly_when_they_are_integers() {
    let big = json!({"n": 9007199254740993u64});
    assert!(matches(json!({"data.n": 9007199254740993u64}), big.clone()));
    assert!(!matches(
        json!({"data.n": 9007199254740992u64}),
        big.clone()
    ));
    assert!(matches(json!({"data.n": {"$gt": -1}}), big));
    assert!(matches(json!({"data.n": {"$lt": 0}}), json!({"n": -5})));
}

#[test]
fn data_that_is_not_json_has_no_data_paths() {
    let f = compile(json!({"data.x": {"$exists": false}, "type": "payment.created"}));
    let mut e = ev(json!({}));
    e.data = None;
    assert!(f.matches(&e.subject()));
    assert!(!compile(json!({"data": {"$exists": true}})).matches(&e.subject()));
}

#[test]
fn explain_names_the_failing_part() {
    let f = compile(json!({"data.amount": {"$gte": 100}, "metadata.region": {"$in": ["eu"]}}));
    let e = ev(json!({"amount": 50}));
    let m = f.explain(&e.subject()).unwrap();
    assert_eq!(m.path, "data.amount.$gte");
    assert_eq!(m.reason, "data.amount is 50, not >= 100");
    let e = ev(json!({}));
    assert_eq!(
        f.explain(&e.subject()).unwrap().reason,
        "data.amount does not exist"
    );
    let f = compile(json!({"$or": [{"type": "x"}, {"tenant": "y"}]}));
    let m = f.explain(&e.subject()).unwrap();
    assert_eq!(m.path, "$or");
    assert!(m.reason.contains("$or.0.type.$eq"), "{}", m.reason);
    let f = compile(json!({"$and": [{"type": "payment.created"}, {"data.a": {"$gt": "x"}}]}));
    let m = f.explain(&ev(json!({"a": 3})).subject()).unwrap();
    assert_eq!(m.path, "$and.1.data.a.$gt");
    assert!(m.reason.contains("compares with strings"), "{}", m.reason);
    let f = compile(json!({"$not": {"type": "payment.created"}}));
    assert_eq!(f.explain(&e.subject()).unwrap().path, "$not");
}

#[test]
fn refusals_name_the_path() {
    let cases: &[(Value, &str, &str)] = &[
        (json!([]), "filter", "a filter is an object"),
        (
            json!({"data.amount": {"$gt": true}}),
            "filter.data.amount.$gt",
            "a number or a string",
        ),
        (
            json!({"data.amount": {"$foo": 1}}),
            "filter.data.amount.$foo",
            "unknown operator",
        ),
        (
            json!({"data.amount": {"gt": 1}}),
            "filter.data.amount.gt",
            "not an operator",
        ),
        (
            json!({"data.amount": {}}),
            "filter.data.amount",
            "empty object",
        ),
        (json!({"data.amount": [1]}), "filter.data.amount", "use $in"),
        (json!({"$foo": {}}), "filter.$foo", "not a filter operator"),
        (json!({"amount": 1}), "filter.amount", "not a field path"),
        (json!({"data..x": 1}), "filter.data..x", "empty step"),
        (
            json!({"metadata.": 1}),
            "filter.metadata.",
            "no metadata key",
        ),
        (json!({"$and": []}), "filter.$and", "non-empty array"),
        (json!({"$or": {}}), "filter.$or", "non-empty array"),
        (
            json!({"$or": [{"type": "a"}, 3]}),
            "filter.$or.1",
            "a filter is an object",
        ),
        (json!({"$not": [1]}), "filter.$not", "a filter is an object"),
        (
            json!({"data.x": {"$in": 1}}),
            "filter.data.x.$in",
            "an array of scalars",
        ),
        (
            json!({"data.x": {"$in": [[1]]}}),
            "filter.data.x.$in.0",
            "scalars",
        ),
        (
            json!({"data.x": {"$exists": 1}}),
            "filter.data.x.$exists",
            "a boolean",
        ),
        (
            json!({"data.x": {"$startsWith": 1}}),
            "filter.data.x.$startsWith",
            "a string",
        ),
        (
            json!({"data.x": {"$regex": "("}}),
            "filter.data.x.$regex",
            "not a regex this server takes",
        ),
        (
            json!({"data.x": {"$regex": "a(?=b)"}}),
            "filter.data.x.$regex",
            "not a regex this server takes",
        ),
        (
            json!({"data.x": {"$not": {"$bar": 1}}}),
            "filter.data.x.$not.$bar",
            "unknown operator",
        ),
    ];
    for (filter, path, message) in cases {
        let e = refused(filter.clone());
        assert_eq!(e.path, *path, "{filter}: {e}");
        assert!(e.message.contains(message), "{filter}: {e}");
    }
}

#[test]
fn limits() {
    // Depth: 10 levels of nesting pass, 11 do not.
    let mut ok = json!({"type": "x"});
    for _ in 0..9 {
        ok = json!({"$not": ok});
    }
    compile(ok.clone());
    let e = refused(json!({"$not": ok}));
    assert!(e.path.starts_with("filter.$not.$not"), "{e}");
    assert!(e.message.contains("at most 10 levels"), "{e}");
    // Size.
    let big = json!({"data.x": {"$in": (0..99).map(|i| "v".repeat(40) + &i.to_string()).collect::<Vec<_>>()}});
    let e = refused(big);
    assert_eq!(e.path, "filter");
    assert!(e.message.contains("at most 4096 bytes"), "{e}");
    // $in entries.
    compile(json!({"data.x": {"$in": (0..100).collect::<Vec<_>>()}}));
    let e = refused(json!({"data.x": {"$nin": (0..101).collect::<Vec<_>>()}}));
    assert_eq!(e.path, "filter.data.x.$nin");
    assert!(e.message.contains("at most 100 values"), "{e}");
    // Regex length, count and compiled size.
    compile(json!({"data.x": {"$regex": "a".repeat(256)}}));
    let e = refused(json!({"data.x": {"$regex": "a".repeat(257)}}));
    assert!(e.message.contains("at most 256 characters"), "{e}");
    let many: serde_json::Map<String, Value> = (0..9)
        .map(|i| (format!("data.f{i}"), json!({"$regex": "a"})))
        .collect();
    let e = refused(Value::Object(many));
    assert!(e.message.contains("at most 8 regexes"), "{e}");
    let e = refused(json!({"data.x": {"$regex": "\\w{200}\\w{200}"}}));
    assert_eq!(e.path, "filter.data.x.$regex");
    assert!(e.message.contains("compiles to more than"), "{e}");
}

#[test]
fn canonical_text_sorts_keys_and_round_trips() {
    let f =
        compile(json!({"metadata.region": {"$in": ["eu", "us"]}, "data.amount": {"$gte": 100}}));
    assert_eq!(
        f.canonical(),
        r#"{"data.amount":{"$gte":100},"metadata.region":{"$in":["eu","us"]}}"#
    );
    let again = Filter::parse(f.canonical(), "filter").unwrap();
    assert_eq!(again.canonical(), f.canonical());
    assert!(f.needs_data());
    assert!(!compile(json!({"metadata.region": "eu"})).needs_data());
    assert_eq!(Filter::parse("{", "filter").unwrap_err().path, "filter");
}
