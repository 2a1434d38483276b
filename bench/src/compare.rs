//! `--baseline DIR`: this report beside an earlier one (`DIR/report.json`), in one table, so
//! a change's effect reads at a glance. Phases are matched by their run name (`s1-step3`,
//! `s2`, ...); reports of older bench versions lack some figures, shown as `-`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// The figures compared per phase: (label, path in the phase's JSON).
const FIGURES: [(&str, &[&str]); 9] = [
    ("deliveries/s out", &["deliveries_per_s_out"]),
    ("p50 ms", &["latency", "p50_ms"]),
    ("p99 ms", &["latency", "p99_ms"]),
    ("routed p50 ms", &["stages", "routed", "p50_ms"]),
    ("job committed p50 ms", &["stages", "committed", "p50_ms"]),
    (
        "first attempt p50 ms",
        &["stages", "first_attempt", "p50_ms"],
    ),
    ("lost", &["lost"]),
    ("duplicates", &["duplicates"]),
    ("out of order", &["out_of_order"]),
];

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn phases(report: &Value) -> Vec<&Value> {
    report["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["phases"].as_array().into_iter().flatten())
        .collect()
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn change(before: Option<f64>, after: Option<f64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) if b.abs() > f64::EPSILON => format!("{:+.0}%", (a - b) / b * 100.0),
        _ => String::new(),
    }
}

/// The comparison section of `report.md`; `now` is this report as JSON.
pub fn markdown(now: &Value, baseline_dir: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(baseline_dir.join("report.json"))?;
    let before: Value = serde_json::from_str(&text)?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Compared with {} (started {})\n",
        baseline_dir.display(),
        before["meta"]["started"].as_str().unwrap_or("?")
    );
    md.push_str("| phase | figure | baseline | now | change |\n| --- | --- | --: | --: | --: |\n");
    let old = phases(&before);
    for p in phases(now) {
        let run = p["run"].as_str().unwrap_or("");
        let Some(b) = old.iter().find(|o| o["run"].as_str() == Some(run)) else {
            continue;
        };
        for (label, path) in FIGURES {
            let (x, y) = (
                at(b, path).and_then(Value::as_f64),
                at(p, path).and_then(Value::as_f64),
            );
            if x.is_none() && y.is_none() {
                continue;
            }
            let _ = writeln!(
                md,
                "| {run} | {label} | {} | {} | {} |",
                fmt(x),
                fmt(y),
                change(x, y)
            );
        }
        for proc in p["processes"].as_array().into_iter().flatten() {
            let name = proc["name"].as_str().unwrap_or("");
            let old_proc = b["processes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["name"].as_str() == Some(name));
            for (label, key) in [
                ("CPU µs/delivery", "cpu_us_per_delivery"),
                ("cores", "cores"),
                ("peak RSS MB", "peak_rss_mb"),
            ] {
                let x = old_proc.and_then(|o| o[key].as_f64());
                let y = proc[key].as_f64();
                if x.is_none() && y.is_none() {
                    continue;
                }
                let _ = writeln!(
                    md,
                    "| {run} | {name}: {label} | {} | {} | {} |",
                    if key == "cores" {
                        x.map_or("-".into(), |v| format!("{v:.4}"))
                    } else {
                        fmt(x)
                    },
                    if key == "cores" {
                        y.map_or("-".into(), |v| format!("{v:.4}"))
                    } else {
                        fmt(y)
                    },
                    change(x, y)
                );
            }
        }
    }
    md.push_str("\n| target | baseline | now |\n| --- | --- | --- |\n");
    for t in now["targets"].as_array().into_iter().flatten() {
        let name = t["target"].as_str().unwrap_or("");
        let b = before["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["target"].as_str() == Some(name));
        let _ = writeln!(
            md,
            "| {name} | {} | {} ({}) |",
            b.map_or("-".into(), |b| format!(
                "{} ({})",
                b["measured"].as_str().unwrap_or("-"),
                b["verdict"].as_str().unwrap_or("-")
            )),
            t["measured"].as_str().unwrap_or("-"),
            t["verdict"].as_str().unwrap_or("-")
        );
    }
    Ok(md)
}
