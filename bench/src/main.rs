//! `hookline-bench`: throughput, latency and memory of the whole pipeline (`make bench`).
//!
//! It starts the five services as separate processes against a broker it is given, a
//! verifying webhook receiver and an open-loop load generator in this process, runs the
//! scenarios of issue 5, and writes `report.json` and `report.md` with the targets of
//! DESIGN.md beside the measured figures.
//!
//! - `stack`: topics unique to the run, the five service processes, their environment.
//! - `api`: secrets, subscriptions and extracts through the HTTP APIs.
//! - `receiver`: the axum receiver that verifies and tallies every delivery.
//! - `generator`: the open-loop producer of events; `ingest`: the open-loop HTTP
//!   generator of Svix messages.
//! - `procstat`: per-process CPU and RSS from `/proc`.
//! - `stages`: per-stage latency (routed, job committed, first attempt) of every phase.
//! - `phase`: one measured load phase and its figures; `scenarios` and `extract`: the six
//!   scenarios, `soak` the seventh (`BENCH_SOAK=1`), `svix` the eighth (message ingest
//!   through the Svix face, or a Svix server's); `report`: the JSON and Markdown reports; `curves`: their SVG curves;
//!   `compare`: the comparison with a baseline report (`--baseline DIR`).
#![forbid(unsafe_code)]

mod api;
mod compare;
mod curves;
mod extract;
mod generator;
mod ingest;
mod phase;
mod procstat;
mod receiver;
mod report;
mod scenarios;
mod soak;
mod stack;
mod stages;
mod svix;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rdkafka::producer::FutureProducer;

use crate::api::{Api, SubSpec};
use crate::procstat::{Monitor, Watched};
use crate::receiver::Receiver;
use crate::stack::{Stack, StackOptions};

#[derive(Parser)]
#[command(about = "Hookline's end-to-end benchmark")]
struct Args {
    /// Kafka bootstrap address of a running broker (`scripts/kafka.sh start` prints one).
    #[arg(long)]
    bootstrap: String,
    /// The broker's process id, to report its CPU and memory too.
    #[arg(long)]
    kafka_pid: Option<u32>,
    /// Where report.json, report.md and the services' logs go.
    #[arg(long)]
    out: PathBuf,
    /// Folder of the release binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The short version of every scenario (about 2 minutes in all).
    #[arg(long, env = "BENCH_QUICK", value_parser = clap::builder::FalseyValueParser::new())]
    quick: bool,
    /// Scenarios to run, comma-separated numbers, in that order (default: all but the soak,
    /// the idle one first).
    #[arg(long, env = "BENCH_SCENARIOS", default_value = "6,1,2,3,4,5,8")]
    scenarios: String,
    /// Add the soak (scenario 7: 30 minutes at 2,000 events/s; `BENCH_SOAK_MINUTES`,
    /// `BENCH_SOAK_RATE`) after the other scenarios.
    #[arg(long, env = "BENCH_SOAK", value_parser = clap::builder::FalseyValueParser::new())]
    soak: bool,
    /// An earlier results folder: report.md compares this run with its report.json.
    #[arg(long, env = "BENCH_BASELINE")]
    baseline: Option<PathBuf>,
    /// Profile one service during the run: `SERVICE[:perf|callgrind]` (`make profile`);
    /// the profile goes to `logs/profile.SERVICE.txt` beside the raw data.
    #[arg(long, env = "BENCH_PROFILE")]
    profile: Option<stack::Profile>,
    /// The command line that started the bench, recorded in the report.
    #[arg(long, default_value = "make bench")]
    command: String,
}

/// Everything a scenario uses.
pub struct Bench {
    pub stack: Stack,
    pub api: Api,
    /// The extract producer's API (its own listener).
    pub extracts: Api,
    pub receiver: Receiver,
    pub monitor: Monitor,
    pub producer: FutureProducer,
    pub bootstrap: String,
    pub quick: bool,
    next_sub: u32,
    secrets: HashMap<String, String>,
}

impl Bench {
    /// Creates one subscription per `(event types, faulty endpoint)` for `tenant` through
    /// the API, all signed by the tenant's secret `bench`; returns how long that took.
    pub async fn subscribe(
        &mut self,
        tenant: &str,
        subs: &[(Vec<String>, bool)],
    ) -> anyhow::Result<Duration> {
        let token = self.stack.tokens[tenant].clone();
        if !self.secrets.contains_key(tenant) {
            let value = self.api.secret(&token, "bench").await?;
            self.secrets.insert(tenant.to_owned(), value);
        }
        let secret = self.secrets[tenant].clone();
        let mut specs = Vec::with_capacity(subs.len());
        for (types, faulty) in subs {
            let idx = self.next_sub;
            self.next_sub += 1;
            self.receiver.trust(idx, &secret)?;
            specs.push(SubSpec {
                name: format!("bench-{idx}"),
                url: self.receiver.endpoint(idx, *faulty),
                event_types: types.clone(),
            });
        }
        let types = specs.iter().flat_map(|s| s.event_types.iter().cloned());
        self.api
            .register_types(&self.stack.admin_token, types.collect::<Vec<_>>())
            .await?;
        let (_, took) = self.api.subscriptions(&token, "bench", specs).await?;
        Ok(took)
    }

    /// A new endpoint number for the receiver (it picks the secret that verifies).
    pub fn next_endpoint(&mut self) -> u32 {
        self.next_sub += 1;
        self.next_sub - 1
    }

    pub fn token(&self, tenant: &str) -> &str {
        &self.stack.tokens[tenant]
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(args.out.join("logs"))?;
    let mut wanted: Vec<u32> = args
        .scenarios
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if args.soak && !wanted.contains(&7) {
        wanted.push(7);
    }
    let run_id = format!("bench{}", receiver::now_us() / 1_000_000);
    let retry = (
        "HOOKLINE_RETRY_SCHEDULE".to_owned(),
        scenarios::RETRY_SCHEDULE.to_owned(),
    );
    let started = time::OffsetDateTime::now_utc();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let receiver = Receiver::start().await?;
    let stack = Stack::start(StackOptions {
        bin_dir: &args.bin_dir,
        log_dir: &args.out.join("logs"),
        bootstrap: &args.bootstrap,
        run_id: &run_id,
        tenants: &scenarios::TENANTS,
        settings: &[retry],
        profile: args.profile.as_ref(),
    })
    .await
    .context("starting the services")?;
    let mut watched = stack.watched();
    if let Some(pid) = args.kafka_pid {
        watched.push(Watched {
            name: "kafka".into(),
            pid,
        });
    }
    // A Svix server under scenario 8 (`BENCH_SVIX_URL`): its processes' CPU too.
    let svix_pids = std::env::var("BENCH_SVIX_PIDS").unwrap_or_default();
    for pid in svix_pids.split(',').filter_map(|p| p.trim().parse().ok()) {
        watched.push(Watched {
            name: format!("svix {pid}"),
            pid,
        });
    }
    watched.push(Watched {
        name: "bench (generator + receiver)".into(),
        pid: std::process::id(),
    });
    let mut bench = Bench {
        api: Api::new(&stack.api_url)?,
        extracts: Api::new(&stack.extracts_url)?,
        stack,
        receiver,
        monitor: Monitor::new(watched),
        producer: generator::producer(&args.bootstrap)?,
        bootstrap: args.bootstrap.clone(),
        quick: args.quick,
        next_sub: 0,
        secrets: HashMap::new(),
    };
    let pids: Vec<String> = bench
        .stack
        .watched()
        .iter()
        .map(|w| format!("{} {}", w.name, w.pid))
        .collect();
    phase::tracing_note(&format!(
        "services up ({run_id}; pids: {}; receiver {}), quick={}, scenarios {wanted:?}",
        pids.join(", "),
        bench.receiver.base_url,
        args.quick,
    ));

    let mut results = Vec::new();
    for n in wanted {
        let outcome = match n {
            1 => scenarios::max_sustained(&mut bench).await,
            2 => scenarios::fixed_rate(&mut bench).await,
            3 => scenarios::fan_out(&mut bench).await,
            4 => scenarios::faulty_endpoints(&mut bench).await,
            5 => extract::million_rows(&mut bench).await,
            6 => scenarios::idle(&mut bench).await,
            7 => soak::soak(&mut bench).await,
            8 => svix::ingest(&mut bench).await,
            _ => continue,
        };
        let result = outcome.unwrap_or_else(|e| scenarios::failed(n, &e));
        phase::tracing_note(&format!("scenario {n} done: {}", result.summary));
        results.push(result);
        let exited = bench.stack.exited();
        if !exited.is_empty() {
            phase::tracing_note(&format!("services exited: {exited:?}; stopping"));
            break;
        }
    }
    let (bad_signatures, unreadable) = bench.receiver.rejected();
    let meta = report::Meta {
        command: args.command.clone(),
        quick: args.quick,
        started: started
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        run_id,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before: load_before.trim().to_owned(),
        load_after: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        retry_schedule: scenarios::RETRY_SCHEDULE.to_owned(),
        bad_signatures,
        unreadable_bodies: unreadable,
        services_exited: bench.stack.exited(),
    };
    bench.stack.stop();
    let report = report::Report::new(meta, results);
    let (json, md) = report.write(&args.out, args.baseline.as_deref())?;
    phase::tracing_note(&format!("report: {}", md.display()));
    println!("{}", json.display());
    Ok(())
}
