//! The report's curves, SVG files beside `report.json` (plotters' SVG backend, no font
//! files): delivered/s against offered rate, p50/p99 against offered rate, and each stage's
//! p50 (routed, job committed, first attempt, 2xx) against offered rate. The points are the
//! load phases with fan-out 1 and healthy endpoints (scenarios 1, 2 and 6), by offered rate.
//! After a soak (scenario 7), each process's RSS minute by minute.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::phase::PhaseResult;
use crate::scenarios::ScenarioResult;

const SIZE: (u32, u32) = (760, 440);
const OFFERED: &str = "offered events/s";

/// One line of a chart: its name, colour and points.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// The phases drawn, sorted by offered rate.
fn points(scenarios: &[ScenarioResult]) -> Vec<&PhaseResult> {
    let mut phases: Vec<&PhaseResult> = scenarios
        .iter()
        .filter(|s| matches!(s.id, 1 | 2 | 6) && s.error.is_none())
        .flat_map(|s| &s.phases)
        .filter(|p| p.delivered > 0)
        .collect();
    phases.sort_by(|a, b| a.target_events_per_s.total_cmp(&b.target_events_per_s));
    phases
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e}")
}

/// One chart: `series` are (name, colour, points); `log_y` draws the y axis in log scale.
fn chart(
    path: &Path,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    log_y: bool,
    series: &[Series<'_>],
) -> anyhow::Result<()> {
    let xmax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(1.0, f64::max)
        * 1.05;
    let ys = series.iter().flat_map(|s| s.2.iter().map(|p| p.1));
    let ymax = ys.clone().fold(1.0, f64::max) * 1.2;
    let ymin = ys.fold(f64::MAX, f64::min).max(0.01) / 1.5;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut c = $chart;
            c.configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .draw()
                .map_err(err)?;
            for (name, colour, pts) in series {
                let colour = *colour;
                c.draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
                    .map_err(err)?
                    .label(*name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
                c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, colour.filled())))
                    .map_err(err)?;
            }
            c.configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }};
    }
    if log_y {
        draw!(
            builder
                .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())
                .map_err(err)?
        );
    } else {
        draw!(
            builder
                .build_cartesian_2d(0f64..xmax, 0f64..ymax)
                .map_err(err)?
        );
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Draws the curves into `dir`: the three against offered rate, and the soak's memory
/// curve when the soak ran; returns the files written.
pub fn draw(dir: &Path, scenarios: &[ScenarioResult]) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = draw_rates(dir, scenarios)?;
    written.extend(draw_soak(dir, scenarios)?);
    Ok(written)
}

/// The three curves against offered rate (none without load phases).
fn draw_rates(dir: &Path, scenarios: &[ScenarioResult]) -> anyhow::Result<Vec<PathBuf>> {
    let phases = points(scenarios);
    if phases.is_empty() {
        return Ok(Vec::new());
    }
    let at = |f: &dyn Fn(&PhaseResult) -> f64| -> Vec<(f64, f64)> {
        phases
            .iter()
            .map(|p| (p.target_events_per_s, f(p)))
            .collect()
    };
    let mut written = Vec::new();
    let throughput = dir.join("throughput.svg");
    chart(
        &throughput,
        "Delivered against offered (fan-out 1)",
        OFFERED,
        "deliveries/s",
        false,
        &[
            (
                "offered",
                RGBColor(160, 160, 160),
                at(&|p| p.target_events_per_s),
            ),
            ("delivered", BLUE, at(&|p| p.deliveries_per_s_out)),
        ],
    )?;
    written.push(throughput);
    let latency = dir.join("latency.svg");
    chart(
        &latency,
        "Latency event sent to 2xx received",
        OFFERED,
        "ms (log)",
        true,
        &[
            ("p50", BLUE, at(&|p| p.latency.p50_ms.max(0.01))),
            ("p99", RED, at(&|p| p.latency.p99_ms.max(0.01))),
        ],
    )?;
    written.push(latency);
    let with_stages: Vec<&&PhaseResult> = phases.iter().filter(|p| p.stages.is_some()).collect();
    if !with_stages.is_empty() {
        let stage = |f: &dyn Fn(&crate::stages::Stages) -> f64| -> Vec<(f64, f64)> {
            with_stages
                .iter()
                .filter_map(|p| {
                    p.stages
                        .as_ref()
                        .map(|s| (p.target_events_per_s, f(s).max(0.01)))
                })
                .collect()
        };
        let stages = dir.join("stages.svg");
        chart(
            &stages,
            "Per-stage latency p50, from the event's send time",
            OFFERED,
            "ms (log)",
            true,
            &[
                ("routed", RGBColor(0, 150, 0), stage(&|s| s.routed.p50_ms)),
                (
                    "job committed",
                    RGBColor(230, 140, 0),
                    stage(&|s| s.committed.p50_ms),
                ),
                ("first attempt", MAGENTA, stage(&|s| s.first_attempt.p50_ms)),
                (
                    "2xx received",
                    BLUE,
                    with_stages
                        .iter()
                        .map(|p| (p.target_events_per_s, p.latency.p50_ms.max(0.01)))
                        .collect(),
                ),
            ],
        )?;
        written.push(stages);
    }
    Ok(written)
}

/// The soak's memory curve (scenario 7): each process's RSS at the end of every minute.
fn draw_soak(dir: &Path, scenarios: &[ScenarioResult]) -> anyhow::Result<Option<PathBuf>> {
    let Some(soak) = scenarios
        .iter()
        .find(|s| s.id == 7 && s.error.is_none() && !s.phases.is_empty())
    else {
        return Ok(None);
    };
    const COLOURS: [RGBColor; 8] = [
        BLUE,
        RED,
        RGBColor(0, 150, 0),
        RGBColor(230, 140, 0),
        MAGENTA,
        CYAN,
        RGBColor(120, 80, 0),
        RGBColor(160, 160, 160),
    ];
    let names: Vec<&str> = soak.phases[0]
        .processes
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let series: Vec<Series<'_>> = names
        .iter()
        .zip(COLOURS.iter().cycle())
        .map(|(name, colour)| {
            let points = soak
                .phases
                .iter()
                .enumerate()
                .filter_map(|(minute, phase)| {
                    let p = phase.processes.iter().find(|p| p.name == *name)?;
                    Some(((minute + 1) as f64, p.final_rss_mb))
                })
                .collect();
            (*name, *colour, points)
        })
        .collect();
    let path = dir.join("soak.svg");
    chart(
        &path,
        "Soak: resident memory at the end of each minute",
        "minutes",
        "RSS MB",
        false,
        &series,
    )?;
    Ok(Some(path))
}
