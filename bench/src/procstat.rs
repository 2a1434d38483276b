//! CPU time and memory of the processes under test, read from `/proc`: `utime + stime` from
//! `/proc/<pid>/stat`, `VmRSS` and `VmHWM` (peak RSS) from `/proc/<pid>/status`. The peak is
//! reset at the start of each measured window by writing `5` to `/proc/<pid>/clear_refs`, so
//! each scenario reports its own peak rather than the highest since start.

use std::time::Instant;

use serde::Serialize;

/// One process to watch.
#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub cpu_us: u64,
    pub rss_kb: u64,
    pub peak_kb: u64,
    pub threads: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The first number after `field` in `/proc/<pid>/status` (kB for the memory lines).
fn status_kb(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn sample(pid: u32, ticks: u64) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing ')' start at 3.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Sample {
        cpu_us: (utime + stime) * 1_000_000 / ticks,
        rss_kb: status_kb(&status, "VmRSS:"),
        peak_kb: status_kb(&status, "VmHWM:"),
        threads: status_kb(&status, "Threads:"),
    })
}

/// CPU and memory of one process over one window.
#[derive(Clone, Debug, Serialize)]
pub struct ProcFigures {
    pub name: String,
    pub cpu_ms: f64,
    /// CPU microseconds spent per delivery made in the window.
    pub cpu_us_per_delivery: f64,
    /// Average cores busy over the window (CPU time / wall time).
    pub cores: f64,
    pub peak_rss_mb: f64,
    pub final_rss_mb: f64,
    /// Threads at the end of the window (each librdkafka client brings several).
    pub threads: u64,
}

pub struct Monitor {
    procs: Vec<Watched>,
    ticks: u64,
}

/// The start of a measured window.
pub struct Window {
    started: Instant,
    at_start: Vec<Option<Sample>>,
}

impl Window {
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl Monitor {
    pub fn new(procs: Vec<Watched>) -> Self {
        Self {
            procs,
            ticks: clock_ticks(),
        }
    }

    /// Resets every peak and takes the starting CPU times.
    pub fn begin(&self) -> Window {
        for p in &self.procs {
            // Only the peak is reset ("5"); ignored where the kernel refuses.
            let _ = std::fs::write(format!("/proc/{}/clear_refs", p.pid), "5");
        }
        Window {
            started: Instant::now(),
            at_start: self
                .procs
                .iter()
                .map(|p| sample(p.pid, self.ticks))
                .collect(),
        }
    }

    /// Figures of every process since `window` began; `deliveries` made in it.
    pub fn end(&self, window: &Window, deliveries: u64) -> Vec<ProcFigures> {
        let wall_us = window.seconds() * 1e6;
        self.procs
            .iter()
            .zip(&window.at_start)
            .map(|(p, start)| {
                let now = sample(p.pid, self.ticks).unwrap_or_default();
                let start = start.unwrap_or_default();
                let cpu_us = now.cpu_us.saturating_sub(start.cpu_us) as f64;
                ProcFigures {
                    name: p.name.clone(),
                    cpu_ms: cpu_us / 1000.0,
                    cpu_us_per_delivery: if deliveries == 0 {
                        0.0
                    } else {
                        cpu_us / deliveries as f64
                    },
                    cores: cpu_us / wall_us.max(1.0),
                    peak_rss_mb: now.peak_kb.max(now.rss_kb) as f64 / 1024.0,
                    final_rss_mb: now.rss_kb as f64 / 1024.0,
                    threads: now.threads,
                }
            })
            .collect()
    }
}
