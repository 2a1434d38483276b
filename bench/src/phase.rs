//! One measured phase: produce a load open-loop, wait for its deliveries to drain, and
//! gather every figure of the phase (rates, latency, correctness counts, CPU and memory).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::Bench;
use crate::generator::{self, KeySpec, Load};
use crate::procstat::ProcFigures;
use crate::receiver::RunStats;
use crate::stages::{StageProbe, Stages};

/// Approximate size of every event record (the targets are stated for 1 KB events).
pub const EVENT_BYTES: usize = 1024;
/// Phases offered fewer events a second run without the stage probe.
const PROBE_MIN_RATE: f64 = 10.0;

pub struct PhaseSpec<'a> {
    /// The run name carried in each event's `data.run`: unique per phase.
    pub run: String,
    pub tenant: &'a str,
    /// Events per second.
    pub rate: f64,
    pub duration: Duration,
    pub keys: &'a [KeySpec],
    /// Deliveries each event of a type should make (its fan-out).
    pub fanout: &'a HashMap<String, u64>,
    /// Give up draining when nothing arrives for this long.
    pub stall: Duration,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseResult {
    pub run: String,
    pub target_events_per_s: f64,
    pub duration_s: f64,
    pub events_acked: u64,
    pub produce_failed: u64,
    pub generator_queue_full: u64,
    pub events_per_s_in: f64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub deliveries_per_s_out: f64,
    /// Deliveries still owed when the generator stopped (end-to-end backlog).
    pub backlog_at_end_of_load: u64,
    pub drain_s: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub dead_lettered: u64,
    /// Requests answered 500 / held on purpose (faulty endpoints only).
    pub injected_500: u64,
    pub injected_slow: u64,
    pub latency: Latency,
    /// Set when some endpoints were faulty: the healthy endpoints' and the faulty ones'.
    pub latency_healthy: Option<Latency>,
    pub latency_faulty: Option<Latency>,
    /// Per-stage latency from the send time: routed, job committed, first attempt started
    /// (`latency` is the last stage, 2xx received).
    pub stages: Option<Stages>,
    pub processes: Vec<ProcFigures>,
}

/// Records on `topic` in committed transactions or outside any (read_committed), counted
/// by reading the whole topic.
pub fn count_records(bootstrap: &str, topic: &str) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = generator::client_config(bootstrap)?
        .set("group.id", "hookline-bench-counter")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            if high > low {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                ends.insert(p.id(), high);
            }
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut count = 0;
    while Instant::now() < deadline {
        let position = consumer.position()?;
        let done = position.elements().iter().all(|e| match e.offset() {
            Offset::Offset(o) => o >= ends[&e.partition()],
            _ => false,
        });
        if done {
            break;
        }
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(200)) {
            count += 1;
        }
    }
    Ok(count)
}

impl Bench {
    async fn dead_letters(&self) -> u64 {
        let (bootstrap, topic) = (
            self.bootstrap.clone(),
            self.stack.value("HOOKLINE_TOPIC_DEAD_LETTERS").to_owned(),
        );
        tokio::task::spawn_blocking(move || count_records(&bootstrap, &topic))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0)
    }

    /// Runs one phase and returns its figures; the receiver forgets the run afterwards.
    pub async fn phase(&self, spec: PhaseSpec<'_>) -> anyhow::Result<PhaseResult> {
        let dead_before = self.dead_letters().await;
        // Not at idle rates: the probe's own fetches would be most of what the broker does.
        let probe = (spec.rate >= PROBE_MIN_RATE)
            .then(|| {
                StageProbe::start(
                    &self.bootstrap,
                    self.stack.value("HOOKLINE_TOPIC_DELIVERIES"),
                    self.stack.value("HOOKLINE_TOPIC_ATTEMPTS"),
                    &spec.run,
                )
                .map_err(|e| tracing_note(&format!("{}: no stage probe: {e:#}", spec.run)))
                .ok()
            })
            .flatten();
        let window = self.monitor.begin();
        let events_topic = self.stack.value("HOOKLINE_TOPIC_EVENTS").to_owned();
        let sent = generator::run(
            &self.producer,
            &events_topic,
            Load {
                run: &spec.run,
                tenant: spec.tenant,
                rate: spec.rate,
                duration: spec.duration,
                keys: spec.keys,
                event_bytes: EVENT_BYTES,
            },
        )
        .await;
        let expected: u64 = sent
            .acked
            .iter()
            .map(|(ty, n)| n * spec.fanout.get(ty).copied().unwrap_or(0))
            .sum();
        let backlog = expected.saturating_sub(self.receiver.delivered(&spec.run));
        let drain_started = Instant::now();
        let (mut last, mut last_change) = (u64::MAX, Instant::now());
        loop {
            let delivered = self.receiver.delivered(&spec.run);
            if delivered >= expected {
                break;
            }
            if delivered != last {
                (last, last_change) = (delivered, Instant::now());
            } else if last_change.elapsed() > spec.stall {
                tracing_note(&format!(
                    "{}: {delivered} of {expected} delivered, nothing new for {:?}; giving up",
                    spec.run, spec.stall
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let drain_s = drain_started.elapsed().as_secs_f64();
        let delivered = self.receiver.delivered(&spec.run);
        let processes = self.monitor.end(&window, delivered);
        let stages = match probe.map(StageProbe::finish) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                tracing_note(&format!("{}: stage probe: {e:#}", spec.run));
                None
            }
            None => None,
        };
        let dead_lettered = self.dead_letters().await.saturating_sub(dead_before);

        let mut all = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
        let mut result = PhaseResult {
            run: spec.run.clone(),
            target_events_per_s: spec.rate,
            duration_s: spec.duration.as_secs_f64(),
            events_acked: sent.acked_total(),
            produce_failed: sent.failed,
            generator_queue_full: sent.queue_full,
            events_per_s_in: sent.acked_total() as f64 / sent.sending.as_secs_f64().max(1e-3),
            expected_deliveries: expected,
            delivered,
            backlog_at_end_of_load: backlog,
            drain_s,
            lost: expected.saturating_sub(delivered),
            dead_lettered,
            stages,
            processes,
            ..PhaseResult::default()
        };
        let mut last_us = sent.started_us;
        let mut per_mode = Vec::new();
        for mode in ["ok", "faulty"] {
            let figures = self.receiver.with_stats(&spec.run, mode, |s: &RunStats| {
                let _ = all.add(&s.latency_us);
                last_us = last_us.max(s.last_us);
                result.duplicates += s.duplicates;
                result.out_of_order += s.out_of_order;
                result.injected_500 += s.injected_500;
                result.injected_slow += s.injected_slow;
                Latency::of(&s.latency_us)
            });
            per_mode.push(figures);
        }
        result.latency = Latency::of(&all);
        if per_mode[1].is_some() {
            result.latency_healthy = per_mode[0].clone();
            result.latency_faulty = per_mode[1].clone();
        }
        let span_s = (last_us.saturating_sub(sent.started_us)) as f64 / 1e6;
        result.deliveries_per_s_out = delivered as f64 / span_s.max(1e-3);
        self.receiver.forget(&spec.run);
        Ok(result)
    }
}

/// Progress lines go to stderr so stdout stays the report path.
pub fn tracing_note(line: &str) {
    eprintln!("bench: {line}");
}
