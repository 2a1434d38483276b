//! Per-event matching with payload filters: 10,000 subscriptions of one tenant, each with a
//! filter, against the same 10,000 without; and the cost of filters that do get evaluated
//! (100 subscriptions selecting the event, with and without filters); and 10 filtered
//! subscriptions against 10,000, for the flat cost per event.
//!
//! As in `matcher.rs`, subscription `i` selects `D{i}.THING.CREATED`, `D{i}.*` or
//! `D{i}.THING.*`, and three more select everything, so an event selects four subscriptions
//! whatever their number: with filters on all of them, four filters are evaluated per event.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hookline_routing::{EventFields, Filter, SubscriptionIndex};

const N: usize = 10_000;

fn patterns(i: usize) -> Vec<String> {
    vec![match i % 3 {
        0 => format!("D{i}.THING.CREATED"),
        1 => format!("D{i}.*"),
        _ => format!("D{i}.THING.*"),
    }]
}

fn filter(i: usize) -> Filter {
    let v = serde_json::json!({
        "data.amount": {"$gte": (i % 1000) as u64},
        "metadata.region": {"$in": ["eu", "us"]},
        "$or": [{"data.items.0.sku": {"$startsWith": "A"}}, {"data.currency": "GBP"}],
    });
    Filter::compile(&v, "filter").expect("a valid filter")
}

fn index(n: usize, filtered: bool, selecting_all: usize) -> SubscriptionIndex {
    let mut index = SubscriptionIndex::new();
    for i in 0..n {
        let f = filtered.then(|| filter(i));
        index.upsert_filtered(&format!("sub-{i}"), "tenant", None, true, &patterns(i), f);
    }
    for k in 0..selecting_all {
        let f = filtered.then(|| filter(k));
        index.upsert_filtered(&format!("all-{k}"), "tenant", None, true, &["*"], f);
    }
    index
}

const DATA: &str = r#"{"id":"acc-1","amount":750,"currency":"GBP","status":"ACTIVE","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"owner":{"name":"Ada","country":"GB"}}"#;

fn bench(c: &mut Criterion) {
    let metadata = HashMap::from([("region".to_owned(), "eu".to_owned())]);
    let events = |n: usize| -> Vec<String> {
        (0..1024)
            .map(|k| format!("D{}.THING.CREATED", (k * 7919) % n))
            .collect()
    };
    let mut group = c.benchmark_group("match_event_with_filters");
    group.measurement_time(Duration::from_secs(3));
    for (name, n, filtered, all) in [
        ("subscriptions_no_filters", N, false, 3),
        ("subscriptions_all_filtered", 10, true, 3),
        ("subscriptions_all_filtered", N, true, 3),
        ("100_selecting_no_filters", N, false, 100),
        ("100_selecting_all_filtered", N, true, 100),
    ] {
        let index = index(n, filtered, all);
        let events = events(n);
        group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % events.len();
                black_box(index.matching_event(&EventFields {
                    r#type: &events[k],
                    tenant: "tenant",
                    application: None,
                    metadata: &metadata,
                    data_json: DATA,
                }))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
