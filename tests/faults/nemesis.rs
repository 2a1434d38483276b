//! The nemesis: faults combined, in the spirit of Jepsen. A three-node cluster, the five
//! services plus two extra delivery workers and a second router, steady keyed load to a
//! healthy and a flaky (503 to a share of requests) subscription, while a seeded schedule
//! strikes every few seconds: a broker SIGKILLed and restarted, a broker SIGSTOPped, an extra
//! worker SIGKILLed or SIGTERMed and restarted, the second router SIGKILLed and restarted
//! under its own name; sometimes two at once. Then a checker reports, per subscription,
//! lost, out-of-order and duplicated deliveries, the longest gap, and which faults were in
//! flight for each anomaly.
//!
//! `nemesis_short` runs in `make test`; `nemesis_long` is `make chaos` (`CHAOS_MINUTES`, default 10; `CHAOS_SEED`, default from
//! the clock): its report goes to `.hookline/chaos/`, and its last line is
//! `chaos: N events, L lost, O out of order, D duplicates, longest gap G s`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookline_config::Config;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use crate::support::kafka::{Kafka, repo_root};
use crate::support::process::{Proc, Services};
use crate::support::receiver::{Received, Receiver};
use crate::support::{Load, SERIAL, call, config, event_id, id_number};

/// How a run is shaped.
struct Settings {
    seed: u64,
    /// How long faults strike (the load runs as long).
    faults_for: Duration,
    /// A new fault (or two) every this often.
    every: Duration,
    rate: u32,
    keys: usize,
    /// Share of the flaky receiver's answers that are 503, per mille.
    flaky_per_mille: u64,
    /// The retry schedule: its first steps are in-memory retries, a step longer than
    /// `retry_in_memory_max` (10 s) parks the subscription. Each job that needs that step
    /// parks the whole subscription once, so the share of jobs that do (`flaky_per_mille`
    /// to the power of the in-memory steps) times the step must leave the drain time.
    retry_schedule: &'static str,
    /// How long every event may take to arrive once the last fault healed.
    drain: Duration,
    /// A subscription still missing events with no new delivery for this long is stranded:
    /// the run stops waiting.
    stall: Duration,
}

impl Settings {
    fn events(&self) -> usize {
        (self.faults_for.as_secs() as usize) * self.rate as usize
    }
}

fn seed_from_env() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        })
}

/// The long run: `make chaos`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "minutes long: `make chaos`"]
async fn nemesis_long() {
    let minutes: u64 = std::env::var("CHAOS_MINUTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    nemesis(Settings {
        seed: seed_from_env(),
        faults_for: Duration::from_secs(minutes * 60),
        every: Duration::from_secs(10),
        rate: 160,
        keys: 60,
        flaky_per_mille: 100,
        // 1 job in 10,000 parks the subscription (12 s): about 10 parkings in 10 minutes.
        retry_schedule: "0s,1s,3s,6s,12s,12s,12s,12s",
        // A debug build on a small machine falls behind 160/s while faults strike (each
        // handover re-reads a partition's buffered jobs): the backlog may take long to drain,
        // and is waited for as long as deliveries go on (`stall` ends a stranded run).
        drain: Duration::from_secs(1800),
        stall: Duration::from_secs(90),
    })
    .await;
}

/// A short run: a minute of faults, in `make test` (so in CI), with a seed from the clock
/// unless `CHAOS_SEED` is set (a failure names its seed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nemesis_short() {
    nemesis(Settings {
        seed: seed_from_env(),
        faults_for: Duration::from_secs(60),
        every: Duration::from_secs(6),
        rate: 100,
        keys: 60,
        flaky_per_mille: 100,
        // 1 job in 1,000 parks the subscription (12 s): about 6 parkings.
        retry_schedule: "0s,1s,3s,12s,12s,12s,12s,12s",
        drain: Duration::from_secs(240),
        stall: Duration::from_secs(60),
    })
    .await;
}

/// One fault of the schedule.
#[derive(Debug, Clone)]
enum Fault {
    BrokerKill { node: usize, down: Duration },
    BrokerPause { node: usize, paused: Duration },
    WorkerKill { worker: usize, down: Duration },
    WorkerTerm { worker: usize, down: Duration },
    RouterKill { down: Duration },
}

impl Fault {
    fn target(&self) -> String {
        match self {
            Fault::BrokerKill { node, .. } | Fault::BrokerPause { node, .. } => {
                format!("broker {node}")
            }
            Fault::WorkerKill { worker, .. } | Fault::WorkerTerm { worker, .. } => {
                format!("worker-extra-{worker}")
            }
            Fault::RouterKill { .. } => "router-extra".into(),
        }
    }

    /// How long its target is out.
    fn lasts(&self) -> Duration {
        match self {
            Fault::BrokerKill { down, .. }
            | Fault::WorkerKill { down, .. }
            | Fault::WorkerTerm { down, .. }
            | Fault::RouterKill { down } => *down,
            Fault::BrokerPause { paused, .. } => *paused,
        }
    }

    fn describe(&self) -> String {
        let secs = self.lasts().as_secs_f64();
        match self {
            Fault::BrokerKill { node, .. } => {
                format!("SIGKILL broker {node}, back after {secs:.0} s")
            }
            Fault::BrokerPause { node, .. } => format!("SIGSTOP broker {node} for {secs:.0} s"),
            Fault::WorkerKill { worker, .. } => {
                format!("SIGKILL worker-extra-{worker}, back after {secs:.0} s")
            }
            Fault::WorkerTerm { worker, .. } => {
                format!("SIGTERM worker-extra-{worker}, back after {secs:.0} s")
            }
            Fault::RouterKill { .. } => format!("SIGKILL router-extra, back after {secs:.0} s"),
        }
    }
}

/// The schedule a seed makes: when each fault strikes (from the start of the load). A
/// target is struck again only once its previous fault has healed.
fn plan(s: &Settings) -> Vec<(Duration, Fault)> {
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut busy_until: HashMap<String, Duration> = HashMap::new();
    let mut out = Vec::new();
    let mut at = s.every;
    while at < s.faults_for {
        // One fault, sometimes two at once.
        let n = if rng.gen_ratio(1, 4) { 2 } else { 1 };
        for _ in 0..n {
            for _try in 0..5 {
                let secs = |rng: &mut StdRng, lo: u64, hi: u64| {
                    Duration::from_secs(rng.gen_range(lo..=hi))
                };
                let fault = match rng.gen_range(0..5) {
                    0 => Fault::BrokerKill {
                        node: rng.gen_range(1..=3),
                        down: secs(&mut rng, 5, 15),
                    },
                    1 => Fault::BrokerPause {
                        node: rng.gen_range(1..=3),
                        paused: Duration::from_secs(8),
                    },
                    2 => Fault::WorkerKill {
                        worker: rng.gen_range(0..2),
                        down: secs(&mut rng, 1, 5),
                    },
                    3 => Fault::WorkerTerm {
                        worker: rng.gen_range(0..2),
                        down: secs(&mut rng, 1, 5),
                    },
                    _ => Fault::RouterKill {
                        down: secs(&mut rng, 1, 5),
                    },
                };
                let target = fault.target();
                if busy_until.get(&target).is_some_and(|until| *until > at) {
                    continue;
                }
                busy_until.insert(target, at + fault.lasts() + Duration::from_secs(1));
                out.push((at, fault));
                break;
            }
        }
        at += s.every;
    }
    out
}

/// A fault as it happened.
#[derive(Debug, Clone)]
struct Struck {
    what: String,
    from: Instant,
    to: Option<Instant>,
}

type Timeline = Arc<Mutex<Vec<Struck>>>;

/// Carries out `fault` against the cluster and the extra processes, recording it.
async fn strike(
    fault: Fault,
    kafka: Arc<Kafka>,
    workers: Arc<Vec<tokio::sync::Mutex<Proc>>>,
    router: Arc<tokio::sync::Mutex<Proc>>,
    brokers: Arc<Vec<tokio::sync::Mutex<()>>>,
    timeline: Timeline,
) {
    let index = {
        let mut t = timeline.lock().unwrap();
        t.push(Struck {
            what: fault.describe(),
            from: Instant::now(),
            to: None,
        });
        t.len() - 1
    };
    eprintln!("nemesis: {}", fault.describe());
    // The fault's own duration: the target stays out this long (not a wait for a condition).
    match fault {
        // One fault at a time per broker: a kill landing on a node that another fault is
        // restarting would make that restart fail, a fault of the harness, not of Hookline.
        Fault::BrokerKill { node, down } => {
            let _node = brokers[node - 1].lock().await;
            kafka.kill_node(node).await;
            tokio::time::sleep(down).await;
            kafka.start_node(node).await;
        }
        Fault::BrokerPause { node, paused } => {
            let _node = brokers[node - 1].lock().await;
            kafka.pause_node(node).await;
            tokio::time::sleep(paused).await;
            kafka.resume_node(node).await;
        }
        Fault::WorkerKill { worker, down } => {
            let mut p = workers[worker].lock().await;
            p.kill();
            tokio::time::sleep(down).await;
            p.restart();
        }
        Fault::WorkerTerm { worker, down } => {
            let mut p = workers[worker].lock().await;
            if !p.terminate(Duration::from_secs(30)).await {
                eprintln!("nemesis: {} did not leave within 30 s of SIGTERM", p.label);
            }
            tokio::time::sleep(down).await;
            p.restart();
        }
        Fault::RouterKill { down } => {
            let mut p = router.lock().await;
            p.kill();
            tokio::time::sleep(down).await;
            p.restart();
        }
    }
    timeline.lock().unwrap()[index].to = Some(Instant::now());
}

/// What one subscription's receiver got, folded as it arrives.
#[derive(Default)]
struct Check {
    folded: usize,
    requests: usize,
    /// 503s the flaky receiver answered itself.
    refused: usize,
    /// Event number → its first 2xx.
    ok: HashMap<usize, Instant>,
    /// 2xx answers to an event that had one already: (when, event).
    duplicates: Vec<(Instant, usize)>,
    /// Per key: which sequences succeeded, and how many from 0 in a row.
    done: HashMap<usize, (Vec<bool>, usize)>,
    /// A sequence first attempted before an earlier one of its key succeeded.
    order: Vec<(Instant, String)>,
    attempted: HashMap<usize, ()>,
    undecodable: usize,
}

impl Check {
    fn fold(&mut self, received: &[Received], keys: usize) {
        self.folded += received.len();
        for r in received {
            self.requests += 1;
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let Some(n) = body["event_id"].as_str().and_then(id_number) else {
                self.undecodable += 1;
                continue;
            };
            let (key, seq) = (n % keys, n / keys);
            let (succeeded, in_a_row) = self.done.entry(key).or_default();
            if self.attempted.insert(n, ()).is_none() && *in_a_row < seq {
                self.order.push((
                    r.at,
                    format!("key k{key:02}: seq {seq} attempted before seq {in_a_row} succeeded"),
                ));
            }
            if !r.succeeded() {
                self.refused += 1;
                continue;
            }
            if self.ok.contains_key(&n) {
                self.duplicates.push((r.at, n));
                continue;
            }
            self.ok.insert(n, r.at);
            if succeeded.len() <= seq {
                succeeded.resize(seq + 1, false);
            }
            succeeded[seq] = true;
            while *in_a_row < succeeded.len() && succeeded[*in_a_row] {
                *in_a_row += 1;
            }
        }
    }

    /// When the latest first 2xx came.
    fn last_ok(&self) -> Option<Instant> {
        self.ok.values().max().copied()
    }

    /// The longest time between `start` and `end` without a new 2xx, and when it began.
    fn longest_gap(&self, start: Instant, end: Instant) -> (Duration, Instant) {
        let mut times: Vec<Instant> = self.ok.values().copied().collect();
        times.sort();
        times.push(end);
        let (mut prev, mut best) = (start, (Duration::ZERO, start));
        for at in times {
            if at.saturating_duration_since(prev) > best.0 {
                best = (at.saturating_duration_since(prev), prev);
            }
            prev = prev.max(at);
        }
        best
    }
}

/// The faults in flight at `at` (or healed within the 10 s before).
fn in_flight(timeline: &[Struck], at: Instant) -> Vec<String> {
    timeline
        .iter()
        .filter(|s| s.from <= at && s.to.is_none_or(|to| to + Duration::from_secs(10) >= at))
        .map(|s| s.what.clone())
        .collect()
}

async fn nemesis(s: Settings) {
    let _serial = SERIAL.lock().await;
    let events = s.events();
    let schedule = plan(&s);
    eprintln!(
        "nemesis: seed {}, {} events on {} keys at {}/s, {} faults over {:?}",
        s.seed,
        events,
        s.keys,
        s.rate,
        schedule.len(),
        s.faults_for
    );
    let kafka = Arc::new(Kafka::start(3).await);
    let mut config = config(&kafka.bootstrap, 3, 2);
    // Retries stay short and never run out in a test's time: eight tries at 10% failures
    // leave 1e-8 of the events to dead letters.
    config.retry_schedule = s.retry_schedule.into();
    hookline_kafka::ensure_topics(&config)
        .await
        .expect("create the test topics");
    let logs = kafka.dir().join("services");
    let healthy = Receiver::start().await;
    let flaky = Receiver::flaky(s.flaky_per_mille, s.seed).await;
    let mut services = Services::start(&config, &logs).await;
    let extra = |edit: &dyn Fn(&mut Config)| {
        let mut c = config.clone();
        let [port] = crate::support::free_addrs::<1>();
        c.worker_listen = port;
        c.router_listen = port;
        edit(&mut c);
        c
    };
    // Whose `/metrics` go with the logs of a failed run.
    let mut scraped = vec![("hookline-delivery-worker".to_owned(), config.worker_listen)];
    let workers: Arc<Vec<tokio::sync::Mutex<Proc>>> = Arc::new(
        (0..2)
            .map(|i| {
                let c = extra(&|_| {});
                scraped.push((format!("worker-extra-{i}"), c.worker_listen));
                tokio::sync::Mutex::new(Proc::start(
                    &format!("worker-extra-{i}"),
                    "hookline-delivery-worker",
                    &c,
                    &logs,
                ))
            })
            .collect(),
    );
    let router_config = extra(&|c| {
        c.router_instance = format!("{}-extra", c.router_instance);
    });
    let router = Arc::new(tokio::sync::Mutex::new(Proc::start(
        "router-extra",
        "hookline-router",
        &router_config,
        &logs,
    )));
    let api = format!(
        "http://{}/api/v1/event-deliveries/subscriptions",
        config.api_listen
    );
    let mut subscriptions = Vec::new();
    for (name, receiver) in [("healthy", &healthy), ("flaky", &flaky)] {
        let (status, body) = call(
            reqwest::Method::POST,
            &api,
            Some(json!({"name": name, "endpointUrl": receiver.url, "eventTypes": null})),
        )
        .await;
        assert_eq!(status, 201, "create the {name} subscription: {body}");
        subscriptions.push(body["id"].as_str().expect("id").to_owned());
    }

    let started = Instant::now();
    let mut load = Load::start_keys(
        &kafka.bootstrap,
        &config.topic_events,
        events,
        s.rate,
        s.keys,
    );
    load.release_second_half();
    let timeline: Timeline = Arc::default();
    let brokers: Arc<Vec<tokio::sync::Mutex<()>>> =
        Arc::new((0..3).map(|_| tokio::sync::Mutex::new(())).collect());
    let mut strikes = Vec::new();
    for (at, fault) in schedule {
        tokio::time::sleep_until((started + at).into()).await;
        strikes.push(tokio::spawn(strike(
            fault,
            kafka.clone(),
            workers.clone(),
            router.clone(),
            brokers.clone(),
            timeline.clone(),
        )));
    }
    for strike in strikes {
        strike.await.expect("a fault task");
    }
    let healed = Instant::now();
    load.finish().await;

    let mut checks = [Check::default(), Check::default()];
    let deadline = healed + s.drain;
    let stranded = loop {
        for (check, receiver) in checks.iter_mut().zip([&healthy, &flaky]) {
            let new = receiver.received_from(check.folded);
            check.fold(&new, s.keys);
        }
        if checks.iter().all(|c| c.ok.len() >= events) || Instant::now() >= deadline {
            break false;
        }
        let now = Instant::now();
        if checks.iter().any(|c| {
            c.ok.len() < events && now - c.last_ok().unwrap_or(healed).max(healed) > s.stall
        }) {
            break true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let end = Instant::now();

    // The report.
    let timeline = timeline.lock().unwrap().clone();
    let mut report = format!(
        "# Nemesis run\n\nseed {}; {events} events on {} keys at {}/s; faults for {:?}, one every {:?}; \
         flaky receiver answers 503 to {}‰; retry schedule {}\n\n## Faults\n\n",
        s.seed, s.keys, s.rate, s.faults_for, s.every, s.flaky_per_mille, s.retry_schedule
    );
    for f in &timeline {
        let _ = writeln!(
            report,
            "- +{:.1} s to +{}: {}",
            (f.from - started).as_secs_f64(),
            f.to.map(|t| format!("{:.1} s", (t - started).as_secs_f64()))
                .unwrap_or_else(|| "?".into()),
            f.what
        );
    }
    let (mut lost, mut disorder, mut duplicates, mut gap) = (0, 0, 0, Duration::ZERO);
    for ((name, check), id) in ["healthy", "flaky"].iter().zip(&checks).zip(&subscriptions) {
        let missing: Vec<usize> = (0..events).filter(|n| !check.ok.contains_key(n)).collect();
        let dead = dead_lettered(&config, id).await;
        let lost_here: Vec<usize> = missing
            .iter()
            .copied()
            .filter(|n| !dead.contains(&event_id(*n)))
            .collect();
        // A subscription that got everything has no gap after its last delivery.
        let until = if missing.is_empty() {
            check.last_ok().unwrap_or(end)
        } else {
            end
        };
        let (longest, gap_from) = check.longest_gap(started, until);
        lost += lost_here.len();
        disorder += check.order.len();
        duplicates += check.duplicates.len();
        gap = gap.max(longest);
        let mut by_fault: BTreeMap<String, usize> = BTreeMap::new();
        for (at, _) in &check.duplicates {
            let faults = in_flight(&timeline, *at);
            if faults.is_empty() {
                *by_fault.entry("no fault in flight".into()).or_default() += 1;
            }
            for f in faults {
                *by_fault.entry(f).or_default() += 1;
            }
        }
        let _ = write!(
            report,
            "\n## Subscription {name} ({id})\n\n\
             - delivered: {} of {events}; dead-lettered: {}; lost: {}\n\
             - requests: {}; answered 503 by the receiver: {}; duplicates (2xx again): {}\n\
             - out of order: {}\n\
             - last new delivery at +{:.1} s (faults healed at +{:.1} s)\n\
             - longest gap without a new delivery: {:.1} s from +{:.1} s (faults then: {:?})\n",
            check.ok.len(),
            missing.len() - lost_here.len(),
            lost_here.len(),
            check.requests,
            check.refused,
            check.duplicates.len(),
            check.order.len(),
            (check.last_ok().unwrap_or(started) - started).as_secs_f64(),
            (healed - started).as_secs_f64(),
            longest.as_secs_f64(),
            (gap_from - started).as_secs_f64(),
            in_flight(&timeline, gap_from),
        );
        if !lost_here.is_empty() {
            let mut per_key: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for n in &lost_here {
                per_key.entry(n % s.keys).or_default().push(n / s.keys);
            }
            for (k, seqs) in per_key.iter().take(10) {
                let _ = writeln!(
                    report,
                    "  - lost on key k{k:02}: {} from seq {}",
                    seqs.len(),
                    seqs[0]
                );
            }
        }
        for (at, what) in check.order.iter().take(20) {
            let _ = writeln!(
                report,
                "  - out of order at +{:.1} s: {what} (faults: {:?})",
                (*at - started).as_secs_f64(),
                in_flight(&timeline, *at)
            );
        }
        for (f, n) in &by_fault {
            let _ = writeln!(report, "  - duplicates while \"{f}\": {n}");
        }
    }
    report.push_str("\n## Copies of jobs\n\n");
    // Copies of one job: on `deliveries` (the router's fan-out, replays) and in the retry
    // lane (a job appended again by a partition's next owner).
    for (what, topic) in [
        ("deliveries", &config.topic_deliveries),
        ("retry lane", &config.topic_retry_lane),
    ] {
        let records = crate::support::read_to_end(&config, topic).await;
        for (name, id) in ["healthy", "flaky"].iter().zip(&subscriptions) {
            let mut jobs: HashMap<String, usize> = HashMap::new();
            for (_, key, value) in &records {
                if key.as_slice() != id.as_bytes() {
                    continue;
                }
                let job = <hookline_proto::v1::DeliveryJob as hookline_proto::Message>::decode(
                    value.as_slice(),
                )
                .expect("a delivery job");
                *jobs
                    .entry(format!("{}/{}", job.delivery_id, job.replay_id))
                    .or_default() += 1;
            }
            let total: usize = jobs.values().sum();
            let _ = writeln!(
                report,
                "- {what} of {name}: {total} records of {} jobs ({} copies)",
                jobs.len(),
                total - jobs.len()
            );
        }
    }
    let mut crashed = services.exited();
    for w in workers.iter() {
        crashed.extend(w.lock().await.crashes());
    }
    crashed.extend(router.lock().await.crashes());
    let _ = writeln!(report, "\nservices that exited by themselves: {crashed:?}");
    if stranded {
        let _ = writeln!(
            report,
            "stopped waiting: a subscription missing events had no new delivery for {:?}",
            s.stall
        );
    }
    let summary = format!(
        "chaos: {events} events, {lost} lost, {disorder} out of order, {duplicates} duplicates, longest gap {:.1} s",
        gap.as_secs_f64()
    );
    report.push_str(&format!("\n{summary}\n"));
    let dir = repo_root().join(".hookline/chaos");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!(
        "report-seed{}-{}.md",
        s.seed,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    ));
    let _ = std::fs::write(&path, &report);
    eprintln!("{report}\nreport: {}", path.display());
    let failed = lost > 0 || disorder > 0 || !crashed.is_empty();
    if failed {
        // The services' logs go with the report (the cluster's directory goes at the end).
        let kept = path.with_extension("logs");
        let _ = std::fs::create_dir_all(&kept);
        for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
            let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
        }
        for (name, addr) in &scraped {
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client");
            let text = match client.get(format!("http://{addr}/metrics")).send().await {
                Ok(r) => r.text().await.unwrap_or_else(|e| e.to_string()),
                Err(e) => e.to_string(),
            };
            let _ = std::fs::write(kept.join(format!("{name}.metrics")), text);
        }
        eprintln!("services' logs and workers' metrics: {}", kept.display());
    }
    let mut logs = services.log_tails(30);
    for w in workers.iter() {
        logs.push_str(&w.lock().await.log_tail(30));
    }
    logs.push_str(&router.lock().await.log_tail(30));
    assert!(!failed, "{summary}\n{logs}");
    println!("{summary}");
}

/// The event ids of `subscription`'s dead letters, from the operations API.
async fn dead_lettered(config: &Config, subscription: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!(
            "http://{}/api/v1/event-deliveries/dead-letters?subscriptionId={subscription}&limit=100{}",
            config.dead_letters_listen,
            if cursor.is_empty() {
                String::new()
            } else {
                format!("&cursor={cursor}")
            }
        );
        let (status, body) = call(reqwest::Method::GET, &url, None).await;
        if status != 200 {
            eprintln!("nemesis: dead letters of {subscription}: {status} {body}");
            return out;
        }
        for item in body["items"].as_array().into_iter().flatten() {
            if let Some(id) = item["eventId"].as_str() {
                out.push(id.to_owned());
            }
        }
        match body["nextCursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = c.to_owned(),
            _ => return out,
        }
    }
}
