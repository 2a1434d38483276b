//! Scenario 7, the soak (`BENCH_SOAK=1`): a steady load for 30 minutes (`BENCH_SOAK_MINUTES`)
//! at 2,000 events/s (`BENCH_SOAK_RATE`), measured minute by minute, to show that memory
//! stays flat and the pipeline keeps up without loss over time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::Bench;
use crate::phase::{PhaseSpec, tracing_note};
use crate::scenarios::{ScenarioResult, correct, one_to_one, warm_up};

const TENANT: &str = crate::scenarios::TENANTS[6];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub async fn soak(bench: &mut Bench) -> anyhow::Result<ScenarioResult> {
    let minutes: u32 = env_or("BENCH_SOAK_MINUTES", 30).max(2);
    let rate: f64 = env_or("BENCH_SOAK_RATE", 2000.0);
    let (keys, fanout) = one_to_one(bench, TENANT, "S7", 20, 2000, |_| false).await?;
    warm_up(bench, TENANT, "s7", &keys, &fanout).await?;
    let mut phases = Vec::new();
    for minute in 1..=minutes {
        let p = bench
            .phase(PhaseSpec {
                run: format!("s7-m{minute}"),
                tenant: TENANT,
                rate,
                duration: Duration::from_secs(60),
                keys: &keys,
                fanout: &fanout,
                stall: Duration::from_secs(30),
            })
            .await?;
        tracing_note(&format!(
            "s7: minute {minute}/{minutes}: {:.0} deliveries/s, p99 {:.1} ms, lost {}",
            p.deliveries_per_s_out, p.latency.p99_ms, p.lost
        ));
        phases.push(p);
    }
    // Per process: RSS after the first minute, the last, and the highest at any minute's end;
    // the growth is last minus first (the first minute includes the warm-up's allocations).
    let mut memory = BTreeMap::new();
    for (i, first) in phases[0].processes.iter().enumerate() {
        let series: Vec<f64> = phases
            .iter()
            .filter_map(|p| p.processes.get(i).map(|f| f.final_rss_mb))
            .collect();
        let last = series.last().copied().unwrap_or_default();
        let peak = phases
            .iter()
            .filter_map(|p| p.processes.get(i).map(|f| f.peak_rss_mb))
            .fold(0.0, f64::max);
        memory.insert(
            first.name.clone(),
            json!({
                "first_minute_mb": first.final_rss_mb,
                "last_minute_mb": last,
                "growth_mb": last - first.final_rss_mb,
                "peak_mb": peak,
            }),
        );
    }
    let services: Vec<String> = memory
        .iter()
        .filter(|(name, _)| !name.starts_with("bench"))
        .map(|(name, m)| {
            format!(
                "{name} {:.0} → {:.0} MB (peak {:.0})",
                m["first_minute_mb"].as_f64().unwrap_or_default(),
                m["last_minute_mb"].as_f64().unwrap_or_default(),
                m["peak_mb"].as_f64().unwrap_or_default(),
            )
        })
        .collect();
    let delivered: u64 = phases.iter().map(|p| p.delivered).sum();
    let lost: u64 = phases.iter().map(|p| p.lost).sum();
    let slowest = phases
        .iter()
        .map(|p| p.deliveries_per_s_out)
        .fold(f64::MAX, f64::min);
    let p99_worst = phases.iter().map(|p| p.latency.p99_ms).fold(0.0, f64::max);
    let summary = format!(
        "{minutes} min at {rate:.0}/s: {delivered} delivered, {lost} lost, slowest minute \
         {slowest:.0}/s, worst p99 {p99_worst:.1} ms; RSS first → last minute: {}",
        services.join(", ")
    );
    Ok(ScenarioResult {
        id: 7,
        title: format!("Soak: {rate:.0} events/s for {minutes} minutes"),
        summary,
        correct: correct(&phases),
        notes: vec![
            "20 subscriptions of exact types, 2,000 ordering keys, 1 KB events, one phase a \
             minute (each drains before the next starts)."
                .into(),
        ],
        figures: BTreeMap::from([
            ("memory".into(), json!(memory)),
            ("delivered".into(), json!(delivered)),
            ("lost".into(), json!(lost)),
            ("slowest_minute_per_s".into(), json!(slowest)),
            ("worst_p99_ms".into(), json!(p99_worst)),
        ]),
        phases,
        ..ScenarioResult::default()
    })
}
