//! Matching cost at 10, 1,000 and 100,000 subscriptions of one tenant, every third one a
//! wildcard, against the naive linear scan the router used before the index.
//!
//! Subscription `i` has the pattern `D{i}.THING.CREATED`, `D{i}.*` or `D{i}.THING.*` (by
//! `i % 3`), and three more select everything, so each event matches a handful of
//! subscriptions whatever their number: what grows is only what the matcher must skip.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hookline_routing::{SubscriptionIndex, selects};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

fn patterns(i: usize) -> Vec<String> {
    vec![match i % 3 {
        0 => format!("D{i}.THING.CREATED"),
        1 => format!("D{i}.*"),
        _ => format!("D{i}.THING.*"),
    }]
}

fn subscriptions(n: usize) -> Vec<(String, Vec<String>)> {
    let mut subs: Vec<(String, Vec<String>)> =
        (0..n).map(|i| (format!("sub-{i}"), patterns(i))).collect();
    for k in 0..3 {
        subs.push((format!("all-{k}"), vec!["*".to_owned()]));
    }
    subs
}

/// Event types spread over the subscriptions' domains, deterministic.
fn event_types(n: usize) -> Vec<String> {
    (0..1024)
        .map(|k| format!("D{}.THING.CREATED", (k * 7919) % n))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_one_event");
    group.measurement_time(Duration::from_secs(3));
    for n in SIZES {
        let subs = subscriptions(n);
        let mut index = SubscriptionIndex::new();
        for (id, p) in &subs {
            index.upsert(id, "tenant", true, p);
        }
        let events = event_types(n);
        group.bench_with_input(BenchmarkId::new("index", n), &n, |b, _| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % events.len();
                black_box(index.matching("tenant", &events[k]))
            })
        });
    }
    // The same subscriptions spread over 100 applications of the tenant (Svix endpoints),
    // each event for the application of the subscription it was made for.
    for n in SIZES {
        let subs = subscriptions(n);
        let mut index = SubscriptionIndex::new();
        for (i, (id, p)) in subs.iter().enumerate() {
            let app = format!("app_{}", i % 100);
            index.upsert_filtered(id, "tenant", Some(&app), true, p, None);
        }
        let events: Vec<(String, String)> = (0..1024)
            .map(|k| {
                let i = (k * 7919) % n;
                (format!("app_{}", i % 100), format!("D{i}.THING.CREATED"))
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("index_in_application", n), &n, |b, _| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % events.len();
                let (app, t) = &events[k];
                black_box(index.matching_in("tenant", Some(app), t))
            })
        });
    }
    group.sample_size(10);
    for n in SIZES {
        let subs = subscriptions(n);
        let events = event_types(n);
        group.bench_with_input(BenchmarkId::new("linear_scan", n), &n, |b, _| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % events.len();
                let e = &events[k];
                black_box(
                    subs.iter()
                        .filter(|(_, p)| selects(p, e))
                        .map(|(id, _)| id.as_str())
                        .collect::<Vec<_>>(),
                )
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("change_one_subscription");
    group.measurement_time(Duration::from_secs(2));
    for n in SIZES {
        let mut index = SubscriptionIndex::new();
        for (id, p) in subscriptions(n) {
            index.upsert(&id, "tenant", true, &p);
        }
        let mut k = 0usize;
        group.bench_with_input(BenchmarkId::new("upsert", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % n;
                let id = format!("sub-{k}");
                black_box(index.upsert(&id, "tenant", true, &patterns(k + 1)));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
