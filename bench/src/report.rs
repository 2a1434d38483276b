//! The reports: `report.json` (every figure) and `report.md` (the DESIGN.md targets beside
//! the measured figures, then each scenario's phases and processes).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::phase::PhaseResult;
use crate::scenarios::ScenarioResult;

#[derive(Debug, Serialize)]
pub struct Meta {
    pub command: String,
    pub quick: bool,
    pub started: String,
    pub run_id: String,
    pub cores: usize,
    /// `/proc/loadavg` before and after: the machine is shared, figures are noisy.
    pub load_before: String,
    pub load_after: String,
    pub retry_schedule: String,
    pub bad_signatures: u64,
    pub unreadable_bodies: u64,
    pub services_exited: Vec<String>,
}

/// One line of the targets table.
#[derive(Debug, Serialize)]
pub struct Target {
    pub target: String,
    pub goal: String,
    pub measured: String,
    /// `met`, `not met`, `not run` or `info`.
    pub verdict: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub meta: Meta,
    pub targets: Vec<Target>,
    pub scenarios: Vec<ScenarioResult>,
}

fn verdict(ok: bool) -> String {
    if ok { "met" } else { "not met" }.into()
}

fn target(target: &str, goal: &str, measured: Option<(String, bool)>) -> Target {
    let (measured, verdict) = match measured {
        Some((m, ok)) => (m, verdict(ok)),
        None => ("-".into(), "not run".into()),
    };
    Target {
        target: target.into(),
        goal: goal.into(),
        measured,
        verdict,
    }
}

fn scenario(results: &[ScenarioResult], id: u32) -> Option<&ScenarioResult> {
    results.iter().find(|s| s.id == id && s.error.is_none())
}

fn targets(results: &[ScenarioResult]) -> Vec<Target> {
    let mut out = Vec::new();
    let s1 = scenario(results, 1);
    out.push(target(
        "Sustained end-to-end deliveries/s, zero loss and order violations",
        ">= 10,000 (stretch 20,000)",
        s1.map(|s| {
            let max = s.figures["max_sustained_deliveries_per_s"]
                .as_f64()
                .unwrap_or(0.0);
            let kept_up = s
                .figures
                .get("max_rate_kept_up_deliveries_per_s")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0);
            let clean = if s.correct { "clean" } else { "NOT clean" };
            (
                format!("{max:.0}/s with p99 <= 100 ms; kept up to {kept_up:.0}/s ({clean})"),
                max >= 10_000.0 && s.correct,
            )
        }),
    ));
    let s2 = scenario(results, 2).and_then(|s| s.phases.first().map(|p| (s, p)));
    out.push(target(
        "Latency event-in to POST-received at 5,000/s, p50",
        "<= 5 ms",
        s2.map(|(_, p)| {
            (
                format!("{:.1} ms", p.latency.p50_ms),
                p.latency.p50_ms <= 5.0,
            )
        }),
    ));
    out.push(target(
        "Latency event-in to POST-received at 5,000/s, p99",
        "<= 25 ms",
        s2.map(|(_, p)| {
            (
                format!("{:.1} ms", p.latency.p99_ms),
                p.latency.p99_ms <= 25.0,
            )
        }),
    ));
    let router_us = |p: &PhaseResult| {
        p.processes
            .iter()
            .find(|f| f.name == "router")
            .map_or(0.0, |f| f.cpu_ms * 1000.0 / p.events_acked.max(1) as f64)
    };
    let s3 = scenario(results, 3).and_then(|s| s.phases.first().map(|p| (s, p)));
    let mut router = target(
        "Router: 10,000 subscriptions with wildcards, matching cost independent of their number",
        "router CPU per event flat",
        s3.map(|(s, p)| {
            let base = s2.map_or(String::new(), |(_, p2)| {
                format!(
                    " vs {:.0} µs/event with 20 (scenario 2, 5,000/s)",
                    router_us(p2)
                )
            });
            (
                format!(
                    "{:.0} µs/event with {} subscriptions (fan-out 1, {:.0}/s){base}",
                    router_us(p),
                    s.figures["subscriptions"],
                    p.events_per_s_in
                ),
                true,
            )
        }),
    );
    if router.verdict == "met" {
        router.verdict = "info".into();
    }
    out.push(router);
    let load: Vec<&PhaseResult> = [scenario(results, 1), scenario(results, 2)]
        .into_iter()
        .flatten()
        .flat_map(|s| &s.phases)
        .collect();
    out.push(target(
        "Memory: each service under 200 MB RSS at that load",
        "< 200 MB each",
        (!load.is_empty()).then(|| {
            let mut peaks: Vec<(String, f64)> = Vec::new();
            for p in &load {
                for f in &p.processes {
                    if f.name == "kafka" || f.name.starts_with("bench") {
                        continue;
                    }
                    match peaks.iter_mut().find(|(n, _)| *n == f.name) {
                        Some((_, v)) => *v = v.max(f.peak_rss_mb),
                        None => peaks.push((f.name.clone(), f.peak_rss_mb)),
                    }
                }
            }
            let worst = peaks.iter().map(|(_, v)| *v).fold(0.0, f64::max);
            let text = peaks
                .iter()
                .map(|(n, v)| format!("{n} {v:.0}"))
                .collect::<Vec<_>>()
                .join(", ");
            (format!("peak MB: {text}"), worst < 200.0)
        }),
    ));
    out.push(target("Memory flat over a 30-minute soak", "flat", None));
    for (figure, what) in [
        ("at_target_alone", "ingest alone"),
        ("at_target", "while delivering them"),
    ] {
        let s8 = scenario(results, 8).and_then(|s| s.figures.get(figure).filter(|v| !v.is_null()));
        out.push(target(
        &format!("Svix face message ingest (`POST …/msg`, issue 25), {what}: 5,000/s offered, ack p50"),
        ">= 5,000 accepted/s, p50 < 5 ms",
        s8.map(|s| {
            let rate = s["accepted_per_s"].as_f64().unwrap_or(0.0);
            let p50 = s["ack"]["p50_ms"].as_f64().unwrap_or(f64::MAX);
            let p99 = s["ack"]["p99_ms"].as_f64().unwrap_or(f64::MAX);
            let errors = s["sent"]["refused"]
                .as_object()
                .map_or(0, |r| r.values().filter_map(|v| v.as_u64()).sum::<u64>())
                + s["sent"]["transport_errors"].as_u64().unwrap_or(0);
            (
                format!("{rate:.0} accepted/s, ack p50 {p50:.2} ms, p99 {p99:.2} ms, {errors} errors"),
                rate >= 0.95 * crate::svix::TARGET_RATE
                    && p50 < crate::svix::TARGET_P50_MS
                    && errors == 0,
            )
        }),
    ));
    }
    let s1_phase = |run: &str| s1.and_then(|s| s.phases.iter().find(|p| p.run == run));
    out.push(target(
        "Latency at 500/s (light load), p50",
        "<= 5 ms (stretch 1.5 ms)",
        s1_phase("s1-step0").map(|p| {
            (
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms at {:.0}/s",
                    p.latency.p50_ms, p.latency.p99_ms, p.target_events_per_s
                ),
                p.latency.p50_ms <= 5.0,
            )
        }),
    ));
    out.push(target(
        "Overload: offered 1.5x the maximum, delivery stays >= 95% of it",
        ">= 95%",
        s1.and_then(|s| s.figures.get("overload"))
            .filter(|o| !o.is_null())
            .map(|o| {
                let share = o["share_of_max"].as_f64().unwrap_or(0.0);
                (
                    format!(
                        "offered {:.0}/s: {:.0} deliveries/s out, {:.0}% of the highest rate kept up",
                        o["offered_per_s"].as_f64().unwrap_or(0.0),
                        o["delivered_per_s"].as_f64().unwrap_or(0.0),
                        share * 100.0
                    ),
                    share >= 0.95,
                )
            }),
    ));
    let s6 = scenario(results, 6);
    out.push(target(
        "Idle (1 event/s): CPU of the whole stack",
        "< 0.02 cores",
        s6.map(|s| {
            let services = s.figures["services_cores"].as_f64().unwrap_or(0.0);
            let broker = s.figures["broker_cores"].as_f64().unwrap_or(0.0);
            (
                format!("services {services:.3} cores, broker {broker:.3}"),
                services + broker < 0.02,
            )
        }),
    ));
    let s5 = scenario(results, 5).and_then(|s| s.phases.first().map(|p| (s, p)));
    out.push(target(
        "Extract emitted",
        ">= 50,000 rows/s",
        s5.map(|(s, _)| {
            let rate = s.figures["emit_rows_per_s"].as_f64().unwrap_or(0.0);
            (format!("{rate:.0} rows/s"), rate >= 50_000.0)
        }),
    ));
    out.push(target(
        "Extract of 1,000,000 rows delivered without loss",
        "0 lost",
        s5.map(|(s, p)| {
            (
                format!(
                    "{} of {} delivered, {} lost, {} duplicates",
                    p.delivered, s.figures["rows"], p.lost, p.duplicates
                ),
                p.lost == 0 && s.figures["rows"].as_u64() == Some(1_000_000),
            )
        }),
    ));
    out
}

fn phase_table(md: &mut String, phases: &[PhaseResult]) {
    md.push_str(
        "| phase | events/s in | deliveries/s out | p50 ms | p99 ms | p99.9 ms | max ms | \
         delivered | lost | dup | out of order | dead-lettered | backlog at end | drain s |\n\
         | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |\n",
    );
    for p in phases {
        let l = &p.latency;
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {:.1} |",
            p.run,
            p.events_per_s_in,
            p.deliveries_per_s_out,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            p.delivered,
            p.lost,
            p.duplicates,
            p.out_of_order,
            p.dead_lettered,
            p.backlog_at_end_of_load,
            p.drain_s
        );
    }
    for p in phases {
        if let (Some(h), Some(f)) = (&p.latency_healthy, &p.latency_faulty) {
            let _ = writeln!(
                md,
                "\n{}: healthy endpoints p50 {:.1} / p99 {:.1} / p99.9 {:.1} / max {:.1} ms; \
                 faulty endpoints p50 {:.1} / p99 {:.1} / max {:.1} ms; {} answered 500, {} held 2 s.",
                p.run,
                h.p50_ms,
                h.p99_ms,
                h.p999_ms,
                h.max_ms,
                f.p50_ms,
                f.p99_ms,
                f.max_ms,
                p.injected_500,
                p.injected_slow
            );
        }
    }
    if phases.iter().any(|p| p.stages.is_some()) {
        md.push_str(
            "\n| phase | routed p50 / p99 ms | job committed p50 / p99 ms | first attempt p50 / p99 ms | 2xx p50 / p99 ms |\n\
             | --- | --: | --: | --: | --: |\n",
        );
        for p in phases {
            if let Some(s) = &p.stages {
                let _ = writeln!(
                    md,
                    "| {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} |",
                    p.run,
                    s.routed.p50_ms,
                    s.routed.p99_ms,
                    s.committed.p50_ms,
                    s.committed.p99_ms,
                    s.first_attempt.p50_ms,
                    s.first_attempt.p99_ms,
                    p.latency.p50_ms,
                    p.latency.p99_ms
                );
            }
        }
    }
    md.push_str(
        "\n| phase | process | CPU ms | CPU µs / delivery | cores | peak RSS MB | final RSS MB | threads |\n\
         | --- | --- | --: | --: | --: | --: | --: | --: |\n",
    );
    for p in phases {
        for f in &p.processes {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.1} | {:.4} | {:.0} | {:.0} | {} |",
                p.run,
                f.name,
                f.cpu_ms,
                f.cpu_us_per_delivery,
                f.cores,
                f.peak_rss_mb,
                f.final_rss_mb,
                f.threads
            );
        }
    }
}

impl Report {
    pub fn new(meta: Meta, scenarios: Vec<ScenarioResult>) -> Self {
        Self {
            targets: targets(&scenarios),
            meta,
            scenarios,
        }
    }

    pub fn markdown(&self) -> String {
        let m = &self.meta;
        let mut md = String::new();
        let _ = writeln!(md, "# Hookline bench report\n");
        let _ = writeln!(
            md,
            "Command: `{}`{} · started {} · run `{}` · {} cores, shared with other work \
             (load average before `{}`, after `{}`): figures are noisy. Retry schedule `{}`. \
             Receiver rejections: {} bad signatures, {} unreadable bodies.{}\n",
            m.command,
            if m.quick {
                " (BENCH_QUICK=1: short version)"
            } else {
                ""
            },
            m.started,
            m.run_id,
            m.cores,
            m.load_before,
            m.load_after,
            m.retry_schedule,
            m.bad_signatures,
            m.unreadable_bodies,
            if m.services_exited.is_empty() {
                String::new()
            } else {
                format!(" Services that exited: {:?}.", m.services_exited)
            }
        );
        md.push_str("## DESIGN.md targets\n\n| target | goal | measured | verdict |\n| --- | --- | --- | --- |\n");
        for t in &self.targets {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                t.target, t.goal, t.measured, t.verdict
            );
        }
        for s in &self.scenarios {
            let _ = writeln!(md, "\n## {}. {}\n\n{}\n", s.id, s.title, s.summary);
            if let Some(e) = &s.error {
                let _ = writeln!(md, "**Failed:** {e}\n");
                continue;
            }
            let _ = writeln!(
                md,
                "Correctness (no loss, duplicate, order violation or dead letter): **{}**\n",
                if s.correct { "yes" } else { "NO" }
            );
            for n in &s.notes {
                let _ = writeln!(md, "{n}\n");
            }
            for (k, v) in &s.figures {
                // Scenario 8's steps are its table (in a note); report.json has them all.
                if k != "run"
                    && !(s.id == 8 && (k.starts_with("steps") || k.starts_with("at_target")))
                {
                    let _ = writeln!(md, "- {k}: {v}");
                }
            }
            md.push('\n');
            phase_table(&mut md, &s.phases);
        }
        md
    }

    /// Writes both reports and the curves into `dir`, the Markdown one compared with the
    /// report in `baseline` when given; returns the reports' paths.
    pub fn write(&self, dir: &Path, baseline: Option<&Path>) -> anyhow::Result<(PathBuf, PathBuf)> {
        let json = dir.join("report.json");
        let md = dir.join("report.md");
        let value = serde_json::to_value(self)?;
        std::fs::write(&json, serde_json::to_string_pretty(&value)?)?;
        let mut text = self.markdown();
        match crate::curves::draw(dir, &self.scenarios) {
            Ok(files) if !files.is_empty() => {
                text.push_str("\n## Curves\n\n");
                for f in files {
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                    let name = name.unwrap_or_default();
                    let _ = writeln!(text, "![{name}]({name})\n");
                }
            }
            Ok(_) => {}
            Err(e) => crate::phase::tracing_note(&format!("curves: {e:#}")),
        }
        if let Some(b) = baseline {
            match crate::compare::markdown(&value, b) {
                Ok(section) => {
                    text.push('\n');
                    text.push_str(&section);
                }
                Err(e) => crate::phase::tracing_note(&format!(
                    "baseline {}: {e:#}; no comparison",
                    b.display()
                )),
            }
        }
        std::fs::write(&md, text)?;
        Ok((json, md))
    }
}
