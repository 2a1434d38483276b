//! Benchmark of the operations index (not a test): folds synthetic attempt records into a
//! fresh store in the reader's batch size, reporting the ingest rate and this process's RSS,
//! then measures query latency (p50/p99/max) with everything indexed.
//!
//! `cargo run --release -p hookline-ops-index --example ops_index_bench` (10,000,000 attempts;
//! `OPS_BENCH_ATTEMPTS=1000000` for fewer; `OPS_BENCH_DIR` for the store's folder).

use std::time::Instant;

use hdrhistogram::Histogram;
use hookline_ops_index::store::{Batch, Record};
use hookline_ops_index::{Scope, Store, Window};
use hookline_proto::Message as _;
use hookline_proto::v1::{Attempt, AttemptOutcome, Header};

const SUBSCRIPTIONS: u64 = 1_000;
const TENANTS: u64 = 50;
const BATCH: usize = 5_000;

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Attempt `n`: two attempts per delivery, the first failing (503), the second succeeding.
fn attempt(n: u64, base_ms: i64) -> Attempt {
    let delivery = n / 2;
    let first = n & 1 == 0;
    let sub = delivery % SUBSCRIPTIONS;
    Attempt {
        delivery_id: format!("{delivery:032x}"),
        subscription_id: format!("sub-{sub:06}"),
        tenant: format!("tenant-{}", sub % TENANTS),
        event_id: format!("evt-{delivery:024x}"),
        event_type: "ACCOUNT.UPDATED".into(),
        attempt: (n % 2) as u32 + 1,
        started_at_ms: base_ms + (n / 10) as i64,
        duration_ms: 12,
        status_code: if first { 503 } else { 200 },
        outcome: if first {
            AttemptOutcome::Retryable as i32
        } else {
            AttemptOutcome::Succeeded as i32
        },
        error_class: if first {
            "status".into()
        } else {
            String::new()
        },
        response_body: br#"{"ok":true}"#.to_vec(),
        endpoint_url: "https://example.com/hook".into(),
        request_headers: vec![
            Header {
                name: "webhook-id".into(),
                value: format!("{delivery:032x}"),
            },
            Header {
                name: "webhook-signature".into(),
                value: "v1,****".into(),
            },
        ],
        ..Default::default()
    }
}

fn main() {
    let total: u64 = std::env::var("OPS_BENCH_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = std::env::var("OPS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::temp_dir().join(format!("ops-index-bench-{}", std::process::id()))
        });
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir, 32 << 20).expect("open the store");
    let base_ms = 1_760_000_000_000;
    let started = Instant::now();
    let mut window_start = Instant::now();
    let mut peak_rss = 0;
    let mut n = 0u64;
    let mut next_report = 1_000_000;
    while n < total {
        let mut batch = Batch::default();
        let end = (n + BATCH as u64).min(total);
        for i in n..end {
            let a = attempt(i, base_ms);
            batch.records.push(Record::Attempt {
                partition: (i % 12) as i32,
                offset: (i / 12) as i64,
                bytes: a.encode_to_vec(),
                attempt: a,
            });
        }
        batch.positions.insert(("attempts".into(), 0), end as i64);
        store.apply(batch).expect("apply");
        n = end;
        peak_rss = peak_rss.max(rss_kb("VmRSS:"));
        if n >= next_report || n == total {
            next_report += 1_000_000;
            let rate = 1_000_000f64.min(n as f64) / window_start.elapsed().as_secs_f64();
            println!(
                "indexed {n:>10} attempts: {rate:>8.0}/s over the last million, RSS {} MB",
                rss_kb("VmRSS:") / 1024
            );
            window_start = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ingest: {total} attempts in {secs:.0} s = {:.0} attempts/s; peak RSS {} MB while indexing",
        total as f64 / secs,
        peak_rss / 1024
    );
    let size: u64 = std::fs::metadata(dir.join("index.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("store size {} MB", size / (1 << 20));

    // Queries, each a page of 50, over random keys.
    let deliveries = total / 2;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let page = Window {
        since_ms: None,
        until_ms: None,
        cursor: None,
        limit: 50,
        oldest_first: false,
    };
    type ScopeOf = fn(u64) -> Scope;
    let kinds: [(&str, ScopeOf); 4] = [
        ("delivery attempts", |d| {
            Scope::Delivery(format!("{d:032x}"))
        }),
        ("by event", |d| Scope::Event(format!("evt-{d:024x}"))),
        ("by subscription", |d| {
            Scope::Subscription(format!("sub-{:06}", d % SUBSCRIPTIONS))
        }),
        ("by tenant", |d| {
            Scope::Tenant(format!("tenant-{}", d % TENANTS))
        }),
    ];
    let mut all = Histogram::<u64>::new(3).unwrap();
    for (name, scope) in kinds {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for _ in 0..2_000 {
            let d = rand() % deliveries;
            let t = Instant::now();
            let got = store.attempts(&scope(d), &page, |_| true).expect("query");
            assert!(!got.items.is_empty());
            let us = t.elapsed().as_micros() as u64;
            h.record(us).unwrap();
            all.record(us).unwrap();
        }
        println!(
            "query {name:<18} p50 {:>6} µs  p99 {:>6} µs  max {:>6} µs",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
    let mut h = Histogram::<u64>::new(3).unwrap();
    for _ in 0..2_000 {
        let d = rand() % deliveries;
        let t = Instant::now();
        store
            .delivery(&format!("{d:032x}"))
            .expect("summary")
            .expect("known");
        h.record(t.elapsed().as_micros() as u64).unwrap();
    }
    println!(
        "query {:<18} p50 {:>6} µs  p99 {:>6} µs  max {:>6} µs",
        "delivery summary",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
    println!(
        "all list queries: p99 {} µs; peak RSS (VmHWM) {} MB",
        all.value_at_quantile(0.99),
        rss_kb("VmHWM:") / 1024
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
