//! Bench scenarios 1-4: the maximum sustained rate, a fixed 5,000 deliveries/s,
//! fan-out among 10,000 subscriptions, and faulty endpoints. Each scenario has its own
//! tenant, so the subscriptions of one never receive the events of another.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::Bench;
use crate::generator::{self, KeySpec};
use crate::phase::{PhaseResult, PhaseSpec, tracing_note};
use crate::receiver::Faults;

pub const TENANTS: [&str; 8] = [
    "bench_s1", "bench_s2", "bench_s3", "bench_s4", "bench_s5", "bench_s6", "bench_s7", "bench_s8",
];
/// Quick retries, so scenario 4's 500s are retried within the run (the default schedule
/// waits 5 s, then 5 min).
pub const RETRY_SCHEDULE: &str = "0s,1s,2s,5s,10s,30s";

#[derive(Debug, Default, Serialize)]
pub struct ScenarioResult {
    pub id: u32,
    pub title: String,
    /// One line for the console and the report's overview.
    pub summary: String,
    /// No loss, duplicate, order violation or unexpected dead letter.
    pub correct: bool,
    pub error: Option<String>,
    pub figures: BTreeMap<String, Value>,
    pub notes: Vec<String>,
    pub phases: Vec<PhaseResult>,
}

pub fn failed(id: u32, e: &anyhow::Error) -> ScenarioResult {
    ScenarioResult {
        id,
        title: format!("scenario {id}"),
        summary: format!("failed: {e:#}"),
        error: Some(format!("{e:#}")),
        ..ScenarioResult::default()
    }
}

pub fn correct(phases: &[PhaseResult]) -> bool {
    phases
        .iter()
        .all(|p| p.lost == 0 && p.duplicates == 0 && p.out_of_order == 0 && p.dead_lettered == 0)
}

/// `n` subscriptions of `tenant`, subscription `i` selecting the exact type `{prefix}.T{i}`,
/// and `keys` ordering keys spread over those types (fan-out 1).
pub async fn one_to_one(
    bench: &mut Bench,
    tenant: &str,
    prefix: &str,
    n: usize,
    keys: usize,
    faulty: impl Fn(usize) -> bool,
) -> anyhow::Result<(Vec<KeySpec>, HashMap<String, u64>)> {
    let types: Vec<String> = (0..n).map(|i| format!("{prefix}.T{i}")).collect();
    let subs: Vec<(Vec<String>, bool)> = types
        .iter()
        .enumerate()
        .map(|(i, t)| (vec![t.clone()], faulty(i)))
        .collect();
    bench.subscribe(tenant, &subs).await?;
    let fanout = types.iter().map(|t| (t.clone(), 1)).collect();
    Ok((generator::keys(&format!("{prefix}k"), keys, &types), fanout))
}

/// A short low-rate phase before measuring: the router has seen the subscriptions, the
/// worker has its connections. Its figures are dropped.
pub async fn warm_up(
    bench: &Bench,
    tenant: &str,
    run: &str,
    keys: &[KeySpec],
    fanout: &HashMap<String, u64>,
) -> anyhow::Result<()> {
    let fanout_max = fanout.values().copied().max().unwrap_or(1).max(1) as f64;
    let warm = bench
        .phase(PhaseSpec {
            run: format!("{run}-warmup"),
            tenant,
            rate: (500.0 / fanout_max).max(5.0),
            duration: Duration::from_secs(2),
            keys,
            fanout,
            stall: Duration::from_secs(15),
        })
        .await?;
    if warm.lost > 0 {
        tracing_note(&format!(
            "{run}: warm-up lost {} of {} deliveries",
            warm.lost, warm.expected_deliveries
        ));
    }
    Ok(())
}

/// Scenario 1: step the rate up until p99 passes 100 ms or the backlog keeps growing.
pub async fn max_sustained(bench: &mut Bench) -> anyhow::Result<ScenarioResult> {
    let tenant = TENANTS[0];
    let (keys, fanout) = one_to_one(bench, tenant, "S1", 20, 2000, |_| false).await?;
    warm_up(bench, tenant, "s1", &keys, &fanout).await?;
    let (steps, secs): (&[f64], u64) = if bench.quick {
        (&[500.0, 1500.0], 5)
    } else {
        (
            &[
                500.0, 1000.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0, 10_000.0, 12_500.0,
                15_000.0, 20_000.0, 25_000.0,
            ],
            20,
        )
    };
    let mut phases = Vec::new();
    // Sustained: p99 within 100 ms, and at most one second of work left when the load stopped
    // (a backlog that grew through the step means the pipeline fell behind). Stepping goes
    // on past a p99 failure while the pipeline keeps up, so both rates are known.
    let mut best: Option<f64> = None;
    let mut keeping_up: Option<f64> = None;
    let mut stopped_by = String::from("the last step kept up (the bench's top step)");
    let mut p99_failed_at: Option<f64> = None;
    for (i, rate) in steps.iter().enumerate() {
        tracing_note(&format!("s1: step {i}: {rate} deliveries/s for {secs} s"));
        let p = bench
            .phase(PhaseSpec {
                run: format!("s1-step{i}"),
                tenant,
                rate: *rate,
                duration: Duration::from_secs(secs),
                keys: &keys,
                fanout: &fanout,
                stall: Duration::from_secs(20),
            })
            .await?;
        let too_slow = p.latency.p99_ms > 100.0;
        let behind = p.backlog_at_end_of_load as f64 > *rate;
        phases.push(p);
        if behind {
            stopped_by = format!(
                "step {rate}/s: backlog grew (more than 1 s of deliveries owed when the load stopped)"
            );
            break;
        }
        keeping_up = Some(*rate);
        if too_slow {
            p99_failed_at.get_or_insert(*rate);
        } else if p99_failed_at.is_none() {
            best = Some(*rate);
        }
    }
    // Overload: 1.5 times the highest rate that kept up. Delivery should stay near that
    // rate (a slow but healthy endpoint is back-pressure, not a failure).
    let mut overload = None;
    if let Some(kept) = keeping_up {
        let rate = kept * 1.5;
        tracing_note(&format!("s1: overload: {rate} deliveries/s for {secs} s"));
        let p = bench
            .phase(PhaseSpec {
                run: "s1-overload".into(),
                tenant,
                rate,
                duration: Duration::from_secs(secs),
                keys: &keys,
                fanout: &fanout,
                stall: Duration::from_secs(20),
            })
            .await?;
        overload = Some(json!({
            "offered_per_s": rate,
            "delivered_per_s": p.deliveries_per_s_out,
            "share_of_max": p.deliveries_per_s_out / kept,
        }));
        phases.push(p);
    }
    let max = best.unwrap_or(0.0);
    let p99_note = match (p99_failed_at, best) {
        (Some(r), Some(_)) => format!("p99 first above 100 ms at {r}/s"),
        (Some(r), None) => format!("p99 above 100 ms already at the first step ({r}/s)"),
        (None, _) => "p99 within 100 ms at every step that kept up".into(),
    };
    stopped_by = format!("{stopped_by}; {p99_note}");
    Ok(ScenarioResult {
        id: 1,
        title: "Maximum sustained deliveries/s (rate stepped up, fan-out 1)".into(),
        summary: format!(
            "max sustained (p99 <= 100 ms, keeping up) {max:.0} deliveries/s; kept up to {:.0}/s; \
             stopped by {stopped_by}",
            keeping_up.unwrap_or(0.0)
        ),
        correct: correct(&phases),
        figures: BTreeMap::from([
            ("max_sustained_deliveries_per_s".into(), json!(max)),
            (
                "max_rate_kept_up_deliveries_per_s".into(),
                json!(keeping_up.unwrap_or(0.0)),
            ),
            ("stopped_by".into(), json!(stopped_by)),
            ("step_seconds".into(), json!(secs)),
            ("overload".into(), overload.unwrap_or(Value::Null)),
        ]),
        notes: vec![
            "20 subscriptions of exact types, 2,000 ordering keys, 1 KB events. A step passes \
             when its p99 is at most 100 ms and at most one second of deliveries is still \
             owed when its load stops (it kept up); stepping stops at the first step that did \
             not keep up. Then one overload phase offers 1.5 times the highest rate that kept \
             up; its deliveries/s out (until drained) should stay >= 95% of that rate."
                .into(),
        ],
        phases,
        ..ScenarioResult::default()
    })
}

/// Scenario 2: a fixed 5,000 deliveries/s.
pub async fn fixed_rate(bench: &mut Bench) -> anyhow::Result<ScenarioResult> {
    let tenant = TENANTS[1];
    let (keys, fanout) = one_to_one(bench, tenant, "S2", 20, 2000, |_| false).await?;
    warm_up(bench, tenant, "s2", &keys, &fanout).await?;
    let secs = if bench.quick { 8 } else { 60 };
    let p = bench
        .phase(PhaseSpec {
            run: "s2".into(),
            tenant,
            rate: 5000.0,
            duration: Duration::from_secs(secs),
            keys: &keys,
            fanout: &fanout,
            stall: Duration::from_secs(20),
        })
        .await?;
    let summary = format!(
        "p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms at {:.0} deliveries/s out",
        p.latency.p50_ms,
        p.latency.p99_ms,
        p.latency.p999_ms,
        p.latency.max_ms,
        p.deliveries_per_s_out
    );
    let stages = p.stages.clone().unwrap_or_default();
    let breakdown = format!(
        "Where the time goes (a read_committed consumer of the deliveries and attempts topics, \
         from each event's send time): routed p50 {:.1} / p99 {:.1} ms (router's \
         `routed_at_ms`); job committed and visible p50 {:.1} / p99 {:.1} ms; first attempt \
         started p50 {:.1} / p99 {:.1} ms; POST received (2xx) p50 {:.1} / p99 {:.1} ms.",
        stages.routed.p50_ms,
        stages.routed.p99_ms,
        stages.committed.p50_ms,
        stages.committed.p99_ms,
        stages.first_attempt.p50_ms,
        stages.first_attempt.p99_ms,
        p.latency.p50_ms,
        p.latency.p99_ms
    );
    let phases = vec![p];
    Ok(ScenarioResult {
        id: 2,
        title: format!("Fixed 5,000 deliveries/s for {secs} s"),
        summary,
        correct: correct(&phases),
        notes: vec![
            "20 subscriptions of exact types, 2,000 ordering keys, 1 KB events.".into(),
            breakdown,
        ],
        figures: BTreeMap::from([("latency_stages".into(), json!(stages))]),
        phases,
        ..ScenarioResult::default()
    })
}

/// The event-type patterns of scenario 3's subscriptions: 1 matching `S3.F1.EVT`, 10 for
/// `S3.F10.EVT` and 100 for `S3.F100.EVT` (half exact, half `PREFIX.*`), the rest on types
/// never published (exact, wildcard, and lists of several).
fn fan_out_patterns(n: usize) -> Vec<Vec<String>> {
    let mut subs = vec![vec!["S3.F1.*".to_owned()]];
    for fan in [10, 100] {
        for i in 0..fan {
            let t = if i % 2 == 0 {
                format!("S3.F{fan}.EVT")
            } else {
                format!("S3.F{fan}.*")
            };
            subs.push(vec![t]);
        }
    }
    for i in subs.len()..n {
        subs.push(match i % 3 {
            0 => vec![format!("S3.N{i}.*")],
            1 => vec![format!("S3.N{i}.EVT")],
            _ => vec![
                format!("S3.N{i}.A"),
                format!("S3.N{i}.B.*"),
                "S3.OTHER".into(),
            ],
        });
    }
    subs
}

/// Scenario 3: fan-out 1, 10 and 100 among 10,000 subscriptions, wildcards among them.
pub async fn fan_out(bench: &mut Bench) -> anyhow::Result<ScenarioResult> {
    let tenant = TENANTS[2];
    let (n, per_s, secs) = if bench.quick {
        (1000, 1000.0, 5)
    } else {
        (10_000, 2000.0, 20)
    };
    let subs: Vec<(Vec<String>, bool)> = fan_out_patterns(n)
        .into_iter()
        .map(|p| (p, false))
        .collect();
    tracing_note(&format!("s3: creating {n} subscriptions through the API"));
    let took = bench.subscribe(tenant, &subs).await?;
    let create_rate = n as f64 / took.as_secs_f64();
    tracing_note(&format!(
        "s3: {n} subscriptions in {:.1} s ({create_rate:.0}/s)",
        took.as_secs_f64()
    ));
    let mut phases = Vec::new();
    for fan in [1u64, 10, 100] {
        let ty = format!("S3.F{fan}.EVT");
        let fanout = HashMap::from([(ty.clone(), fan)]);
        let keys = generator::keys(&format!("s3f{fan}k"), 100, std::slice::from_ref(&ty));
        if fan == 1 {
            warm_up(bench, tenant, "s3", &keys, &fanout).await?;
        }
        tracing_note(&format!(
            "s3: fan-out {fan}: {per_s} deliveries/s for {secs} s"
        ));
        phases.push(
            bench
                .phase(PhaseSpec {
                    run: format!("s3-fanout{fan}"),
                    tenant,
                    rate: per_s / fan as f64,
                    duration: Duration::from_secs(secs),
                    keys: &keys,
                    fanout: &fanout,
                    stall: Duration::from_secs(20),
                })
                .await?,
        );
    }
    let router_us_per_event: Vec<Value> = phases
        .iter()
        .map(|p| {
            let cpu = p
                .processes
                .iter()
                .find(|f| f.name == "router")
                .map_or(0.0, |f| f.cpu_ms * 1000.0);
            json!(cpu / p.events_acked.max(1) as f64)
        })
        .collect();
    let summary = phases
        .iter()
        .map(|p| format!("{}: p99 {:.1} ms", p.run, p.latency.p99_ms))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(ScenarioResult {
        id: 3,
        title: format!("Fan-out 1, 10 and 100 among {n} subscriptions"),
        summary,
        correct: correct(&phases),
        figures: BTreeMap::from([
            ("subscriptions".into(), json!(n)),
            ("subscriptions_created_s".into(), json!(took.as_secs_f64())),
            ("subscriptions_created_per_s".into(), json!(create_rate)),
            (
                "router_cpu_us_per_event_fanout_1_10_100".into(),
                json!(router_us_per_event),
            ),
        ]),
        notes: vec![format!(
            "{per_s} deliveries/s at each fan-out (events/s = that / fan-out), 100 keys, 1 KB \
             events. Half of the matching subscriptions are exact types, half `PREFIX.*`; the \
             others select types never published (exact, wildcard, lists). Subscriptions \
             created through the Fynapse API, {} at a time.",
            32
        )],
        phases,
        ..ScenarioResult::default()
    })
}

/// Scenario 4: 10 healthy endpoints, 10 faulty ones (5% of answers 500, 0.1% after 2 s).
pub async fn faulty_endpoints(bench: &mut Bench) -> anyhow::Result<ScenarioResult> {
    let tenant = TENANTS[3];
    let (keys, fanout) = one_to_one(bench, tenant, "S4", 20, 2000, |i| i >= 10).await?;
    bench.receiver.set_faults(Faults {
        fail_fraction: 0.0,
        slow_fraction: 0.0,
        slow: Duration::ZERO,
    });
    warm_up(bench, tenant, "s4", &keys, &fanout).await?;
    bench.receiver.set_faults(Faults::default());
    let secs = if bench.quick { 8 } else { 60 };
    let p = bench
        .phase(PhaseSpec {
            run: "s4".into(),
            tenant,
            rate: 2000.0,
            duration: Duration::from_secs(secs),
            keys: &keys,
            fanout: &fanout,
            stall: Duration::from_secs(45),
        })
        .await?;
    let healthy = p.latency_healthy.clone().unwrap_or_default();
    let faulty = p.latency_faulty.clone().unwrap_or_default();
    let summary = format!(
        "healthy p50 {:.1} ms p99 {:.1} ms; faulty p99 {:.1} ms; {} answered 500, {} slow; \
         out of order {}",
        healthy.p50_ms,
        healthy.p99_ms,
        faulty.p99_ms,
        p.injected_500,
        p.injected_slow,
        p.out_of_order
    );
    let phases = vec![p];
    Ok(ScenarioResult {
        id: 4,
        title: "Faulty endpoints: 5% of answers 500, 0.1% slow (2 s)".into(),
        summary,
        correct: correct(&phases),
        notes: vec![format!(
            "2,000 deliveries/s over 20 subscriptions of exact types and 2,000 keys; the 10 \
             faulty endpoints answer 500 to 5% of requests and hold 0.1% for 2 s before 200. \
             Retry schedule {RETRY_SCHEDULE} (strict order: a key waits for its retry). \
             `latency_healthy` is the healthy endpoints', `latency_faulty` the faulty ones' \
             (retries included)."
        )],
        phases,
        ..ScenarioResult::default()
    })
}

/// Scenario 6: the stack at rest, one event a second: the CPU each process burns idle.
pub async fn idle(bench: &mut Bench) -> anyhow::Result<ScenarioResult> {
    let tenant = TENANTS[5];
    let (keys, fanout) = one_to_one(bench, tenant, "S6", 1, 10, |_| false).await?;
    warm_up(bench, tenant, "s6", &keys, &fanout).await?;
    // What the warm-up set going (connections, batches) settles first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let secs = if bench.quick { 20 } else { 60 };
    let p = bench
        .phase(PhaseSpec {
            run: "s6".into(),
            tenant,
            rate: 1.0,
            duration: Duration::from_secs(secs),
            keys: &keys,
            fanout: &fanout,
            stall: Duration::from_secs(20),
        })
        .await?;
    let services: f64 = p
        .processes
        .iter()
        .filter(|f| f.name != "kafka" && !f.name.starts_with("bench"))
        .map(|f| f.cores)
        .sum();
    let broker = p
        .processes
        .iter()
        .find(|f| f.name == "kafka")
        .map_or(0.0, |f| f.cores);
    let per = p
        .processes
        .iter()
        .map(|f| format!("{} {:.4}", f.name, f.cores))
        .collect::<Vec<_>>()
        .join(", ");
    let summary = format!(
        "services {services:.4} cores in all, broker {broker:.4}; p50 {:.1} ms, p99 {:.1} ms",
        p.latency.p50_ms, p.latency.p99_ms
    );
    let phases = vec![p];
    Ok(ScenarioResult {
        id: 6,
        title: format!("Idle: 1 event/s for {secs} s"),
        summary,
        correct: correct(&phases),
        notes: vec![format!(
            "One subscription, 1 event a second; cores = CPU time over wall time per process: {per}."
        )],
        figures: BTreeMap::from([
            ("services_cores".into(), json!(services)),
            ("broker_cores".into(), json!(broker)),
        ]),
        phases,
        ..ScenarioResult::default()
    })
}
