//! Scenario 8: message ingest through the Svix face, `POST /api/v1/app/{app}/msg`, open
//! loop (`ingest`), with every message delivered to the verifying receiver in Svix's
//! dialect. Fixed rates (500/s, 5,000/s) and the steps between and beyond them, up to the
//! first step above 5,000/s that is not sustained, give the highest sustained accept rate.
//! Then the same steps from 5,000/s up to applications without endpoints: ingest alone,
//! with no deliveries sharing the cores.
//!
//! The target is this run's subscription API, or any Svix server: `BENCH_SVIX_URL` (base
//! URL) and `BENCH_SVIX_TOKEN` (an API token of its environment). The applications,
//! endpoints and their secrets are made through the same Svix API calls either way, so the
//! same load meets both. The Svix server must run on this machine and be allowed to deliver
//! to 127.0.0.1 (`SVIX_WHITELIST_SUBNETS`); `BENCH_SVIX_PIDS` (comma-separated) adds its
//! processes to the CPU figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::Bench;
use crate::ingest::{self, Load, Sent, Target};
use crate::phase::{Latency, PhaseResult, tracing_note};
use crate::procstat::ProcFigures;
use crate::scenarios::{ScenarioResult, TENANTS};

/// Applications (one endpoint each) the messages are spread over; as many again without
/// an endpoint for the ingest-alone steps.
const APPS: usize = 4;
/// Ordering keys (each with at most one request in flight).
const KEYS: usize = 2_000;
/// Requests out at once, at most (connections; at 5,000/s and 5 ms, 25 are out).
const MAX_IN_FLIGHT: usize = 256;
/// Request body size (the payload is most of it).
const BODY_BYTES: usize = 1024;
/// A step is sustained when it accepted this share of the offered rate with no error.
const SUSTAINED_SHARE: f64 = 0.95;
/// ... and its p99 acknowledgement latency stayed within this.
const SUSTAINED_P99_MS: f64 = 100.0;

/// The target: this rate with a p50 acknowledgement latency within `TARGET_P50_MS`.
pub const TARGET_RATE: f64 = 5_000.0;
pub const TARGET_P50_MS: f64 = 5.0;

/// Calls to a Svix-compatible API to set the scenario up.
struct SvixApi {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl SvixApi {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method, &url).bearer_auth(&self.token);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| url.clone())?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{url} answered {status}: {value}");
        }
        Ok(value)
    }

    fn id(value: &Value, field: &str) -> anyhow::Result<String> {
        value[field]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("answer lacks `{field}`: {value}"))
    }
}

/// The target of this run: Hookline's API with the scenario's tenant, or `BENCH_SVIX_URL`.
fn target_of(bench: &Bench) -> anyhow::Result<(String, String, bool)> {
    match std::env::var("BENCH_SVIX_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(url) => {
            let token = std::env::var("BENCH_SVIX_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .context(
                    "BENCH_SVIX_URL needs BENCH_SVIX_TOKEN (an API token of the Svix server)",
                )?;
            Ok((url.trim_end_matches('/').to_owned(), token, false))
        }
        None => Ok((
            bench.stack.api_url.clone(),
            bench.token(TENANTS[7]).to_owned(),
            true,
        )),
    }
}

/// Creates the applications, half of them with an endpoint each (pointing at the receiver,
/// its secret trusted there); returns the targets the generator sends to: the applications
/// with an endpoint, and those without.
async fn set_up(bench: &mut Bench) -> anyhow::Result<(Target, Target)> {
    let (base, token, hookline) = target_of(bench)?;
    let api = SvixApi {
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()?,
        base: base.clone(),
        token: token.clone(),
    };
    let stamp = crate::receiver::now_us() / 1000;
    let mut apps = Vec::with_capacity(2 * APPS);
    for i in 0..2 * APPS {
        let app = api
            .call(
                reqwest::Method::POST,
                "/api/v1/app",
                json!({"name": format!("bench ingest {i}"), "uid": format!("bench-{stamp}-{i}")}),
            )
            .await?;
        let app = SvixApi::id(&app, "id")?;
        apps.push(app.clone());
        if i >= APPS {
            continue;
        }
        let sub = bench.next_endpoint();
        let endpoint = api
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/app/{app}/endpoint"),
                json!({"url": bench.receiver.svix_endpoint(sub), "version": 1,
                       "description": "hookline-bench receiver"}),
            )
            .await?;
        let endpoint = SvixApi::id(&endpoint, "id")?;
        let secret = api
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/app/{app}/endpoint/{endpoint}/secret"),
                Value::Null,
            )
            .await?;
        bench.receiver.trust(sub, &SvixApi::id(&secret, "key")?)?;
    }
    let quiet = apps.split_off(APPS);
    let delivering = Target {
        base,
        token,
        apps,
        ordering_key: hookline,
    };
    let alone = Target {
        apps: quiet,
        ..delivering.clone()
    };
    Ok((delivering, alone))
}

/// The ingest figures of one step.
#[derive(Debug, serde::Serialize)]
struct Step {
    run: String,
    offered_per_s: f64,
    accepted_per_s: f64,
    sent: Sent,
    ack: Latency,
    generator_cores: f64,
    /// CPU µs per accepted message while the load ran, per process.
    ingest_cpu_us_per_message: BTreeMap<String, f64>,
    /// The same summed over the services and the broker (the bench's own left out).
    stack_cpu_us_per_message: f64,
    sustained: bool,
}

fn is_stack(name: &str) -> bool {
    !name.starts_with("bench")
}

/// One step: the load, then its deliveries drained (when `delivering`); the ingest figures
/// and the delivery side as a phase.
async fn step(
    bench: &Bench,
    target: &Target,
    run: &str,
    rate: f64,
    secs: u64,
    delivering: bool,
) -> anyhow::Result<(Step, PhaseResult)> {
    let window = bench.monitor.begin();
    let sent = ingest::run(
        target,
        Load {
            run,
            rate,
            duration: Duration::from_secs(secs),
            keys: KEYS,
            body_bytes: BODY_BYTES,
            max_in_flight: MAX_IN_FLIGHT,
        },
    )
    .await?;
    let at_load_end: Vec<ProcFigures> = bench.monitor.end(&window, sent.accepted);
    let load_s = window.seconds();
    let backlog = sent.accepted.saturating_sub(bench.receiver.delivered(run));
    let drain_started = Instant::now();
    let (mut last, mut last_change) = (u64::MAX, Instant::now());
    let expected = if delivering { sent.accepted } else { 0 };
    loop {
        let delivered = bench.receiver.delivered(run);
        if delivered >= expected {
            break;
        }
        if delivered != last {
            (last, last_change) = (delivered, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(20) {
            tracing_note(&format!(
                "{run}: {delivered} of {} delivered, nothing new for 20 s; giving up",
                sent.accepted
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    let delivered = bench.receiver.delivered(run);
    let processes = bench.monitor.end(&window, delivered);
    let ack = Latency::of(&sent.ack_us);
    let accepted_per_s = sent.accepted as f64 / sent.span.as_secs_f64().max(1e-3);
    let ingest_cpu: BTreeMap<String, f64> = at_load_end
        .iter()
        .map(|f| (f.name.clone(), f.cpu_us_per_delivery))
        .collect();
    let stack_cpu = at_load_end
        .iter()
        .filter(|f| is_stack(&f.name))
        .map(|f| f.cpu_us_per_delivery)
        .sum();
    let sustained = sent.errors() == 0
        && sent.skipped_busy == 0
        && accepted_per_s >= SUSTAINED_SHARE * rate
        && ack.p99_ms <= SUSTAINED_P99_MS;
    let mut phase = PhaseResult {
        run: run.to_owned(),
        target_events_per_s: rate,
        duration_s: secs as f64,
        events_acked: sent.accepted,
        produce_failed: sent.errors(),
        generator_queue_full: sent.skipped_busy,
        events_per_s_in: accepted_per_s,
        expected_deliveries: expected,
        delivered,
        backlog_at_end_of_load: backlog.min(expected),
        drain_s,
        lost: expected.saturating_sub(delivered),
        processes,
        ..PhaseResult::default()
    };
    let mut last_us = sent.started_us;
    if let Some(l) = bench.receiver.with_stats(run, "ok", |s| {
        phase.duplicates = s.duplicates;
        phase.out_of_order = s.out_of_order;
        last_us = last_us.max(s.last_us);
        Latency::of(&s.latency_us)
    }) {
        phase.latency = l;
    }
    phase.deliveries_per_s_out =
        delivered as f64 / ((last_us.saturating_sub(sent.started_us)) as f64 / 1e6).max(1e-3);
    bench.receiver.forget(run);
    let generator_cores = sent.generator_cpu_ms * 1000.0 / (load_s * 1e6).max(1.0);
    Ok((
        Step {
            run: run.to_owned(),
            offered_per_s: rate,
            accepted_per_s,
            ack,
            generator_cores,
            ingest_cpu_us_per_message: ingest_cpu,
            stack_cpu_us_per_message: stack_cpu,
            sustained,
            sent,
        },
        phase,
    ))
}

fn table(steps: &[&Step], phases: &[&PhaseResult]) -> String {
    let mut md = String::from(
        "| phase | offered/s | accepted/s | ack p50 / p99 / p99.9 / max ms | errors | not sent (busy) | \
         API µs/msg | broker µs/msg | services + broker µs/msg | generator cores | delivered | delivery p50 / p99 ms | sustained |\n\
         | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --- |\n",
    );
    for (s, p) in steps.iter().zip(phases) {
        let cpu = |n: &str| s.ingest_cpu_us_per_message.get(n).copied().unwrap_or(0.0);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.2} / {:.2} / {:.2} / {:.1} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {:.1} / {:.1} | {} |",
            s.run,
            s.offered_per_s,
            s.accepted_per_s,
            s.ack.p50_ms,
            s.ack.p99_ms,
            s.ack.p999_ms,
            s.ack.max_ms,
            s.sent.errors(),
            s.sent.skipped_busy,
            cpu("subscription-api"),
            cpu("kafka"),
            s.stack_cpu_us_per_message,
            s.generator_cores,
            p.delivered,
            p.latency.p50_ms,
            p.latency.p99_ms,
            if s.sustained { "yes" } else { "no" }
        );
    }
    md
}

/// Steps `rates` up to the first one above the target rate that is not sustained.
async fn steps(
    bench: &Bench,
    target: &Target,
    prefix: &str,
    rates: &[f64],
    secs: u64,
    delivering: bool,
) -> anyhow::Result<(Vec<Step>, Vec<PhaseResult>)> {
    let (mut steps, mut phases) = (Vec::new(), Vec::new());
    for rate in rates {
        let run = format!("{prefix}-{rate}");
        tracing_note(&format!("s8: {run}: {rate} messages/s for {secs} s"));
        let (s, p) = step(bench, target, &run, *rate, secs, delivering).await?;
        if let Some(e) = &s.sent.first_error {
            tracing_note(&format!(
                "s8: {run}: {} errors, first: {e}",
                s.sent.errors()
            ));
        }
        let stop = !s.sustained && *rate > TARGET_RATE;
        steps.push(s);
        phases.push(p);
        if stop {
            break;
        }
    }
    Ok((steps, phases))
}

fn max_sustained(steps: &[Step]) -> f64 {
    steps
        .iter()
        .filter(|s| s.sustained)
        .map(|s| s.offered_per_s)
        .fold(0.0, f64::max)
}

fn at_target(steps: &[Step]) -> Option<&Step> {
    steps.iter().find(|s| s.offered_per_s == TARGET_RATE)
}

fn line(s: Option<&Step>) -> String {
    s.map_or("not run".into(), |s| {
        format!(
            "{:.0} accepted/s, ack p50 {:.2} ms, p99 {:.2} ms, {} errors, services + broker \
             {:.0} µs/message",
            s.accepted_per_s,
            s.ack.p50_ms,
            s.ack.p99_ms,
            s.sent.errors(),
            s.stack_cpu_us_per_message
        )
    })
}

/// Scenario 8: Svix message ingest.
pub async fn ingest(bench: &mut Bench) -> anyhow::Result<ScenarioResult> {
    let (delivering, alone) = set_up(bench).await?;
    let against = if delivering.ordering_key {
        "Hookline's Svix face".to_owned()
    } else {
        format!("the Svix server at {}", delivering.base)
    };
    tracing_note(&format!("s8: {} applications on {against}", 2 * APPS));
    // Warm-up: connections, the router and worker have seen the endpoints.
    step(bench, &delivering, "s8-warmup", 200.0, 2, true).await?;
    let (rates, secs): (&[f64], u64) = if bench.quick {
        (&[500.0, 2_000.0, 5_000.0, 8_000.0, 12_000.0], 5)
    } else {
        (
            &[
                500.0, 1_000.0, 2_000.0, 3_000.0, 5_000.0, 7_500.0, 10_000.0, 15_000.0, 20_000.0,
            ],
            20,
        )
    };
    let (mut all, mut phases) = steps(bench, &delivering, "s8", rates, secs, true).await?;
    let alone_rates: Vec<f64> = rates
        .iter()
        .copied()
        .filter(|r| *r >= TARGET_RATE)
        .collect();
    let (only, only_phases) = steps(bench, &alone, "s8-alone", &alone_rates, secs, false).await?;
    let (max_delivering, max_alone) = (max_sustained(&all), max_sustained(&only));
    let summary = format!(
        "at {TARGET_RATE:.0}/s offered, delivered end to end: {}; ingest alone: {}; max \
         sustained {max_delivering:.0}/s delivered, {max_alone:.0}/s alone",
        line(at_target(&all)),
        line(at_target(&only))
    );
    let correct = phases.iter().all(|p| p.lost == 0 && p.duplicates == 0)
        && (!delivering.ordering_key || phases.iter().all(|p| p.out_of_order == 0));
    let figures = BTreeMap::from([
        ("max_sustained_accepted_per_s".into(), json!(max_delivering)),
        (
            "max_sustained_accepted_per_s_alone".into(),
            json!(max_alone),
        ),
        ("at_target".into(), json!(at_target(&all))),
        ("at_target_alone".into(), json!(at_target(&only))),
        ("step_seconds".into(), json!(secs)),
    ]);
    let notes = vec![
        format!(
            "{APPS} applications with one endpoint each (Svix dialect, the receiver verifies \
             `svix-signature` with the endpoint's `whsec_` secret), {KEYS} ordering keys \
             (Hookline's `orderingKey`; at most one request in flight per key, \
             {MAX_IN_FLIGHT} in all), {BODY_BYTES}-byte bodies, `?with_content=false`. Ack = \
             request sent to answer received (open loop; one generator thread with connection \
             reuse, its CPU in `generator cores`). CPU µs/msg while the load ran, per accepted \
             message. Sustained: no error, nothing left unsent, >= {:.0}% of the offered rate \
             accepted and ack p99 <= {SUSTAINED_P99_MS} ms. Deliveries: end to end from the \
             send time, drained after each step. `s8-alone-*`: {APPS} other applications \
             without endpoints (the router matches nothing; nothing is delivered).",
            SUSTAINED_SHARE * 100.0
        ),
        table(
            &all.iter().chain(&only).collect::<Vec<_>>(),
            &phases.iter().chain(&only_phases).collect::<Vec<_>>(),
        ),
    ];
    all.extend(only);
    phases.extend(only_phases);
    let mut figures = figures;
    figures.insert("steps".into(), json!(all));
    Ok(ScenarioResult {
        id: 8,
        title: format!("Svix message ingest (POST …/msg) against {against}"),
        summary,
        correct,
        figures,
        notes,
        phases,
        ..ScenarioResult::default()
    })
}
