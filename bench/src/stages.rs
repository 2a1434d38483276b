//! Where the time goes: one read_committed consumer of the deliveries and attempts topics
//! that times, for each delivery of one run, every stage from the event's send time (`data.t`):
//! routed (the job's `routed_at_ms`), job committed (its transaction visible to a
//! read_committed consumer), first attempt started (the attempt record's `started_at_ms`).
//! With the receive time at the receiver (2xx) this splits the latency into the router's
//! part, the commit's, the worker's queueing and the HTTP exchange.
//!
//! It is cheap on purpose (it runs beside every measured phase, in the bench's own process):
//! a job's `data_json` is not parsed, the two fields it needs are found by their prefixes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use hookline_proto::Message as _;
use hookline_proto::v1::{Attempt, DeliveryJob};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::phase::Latency;

pub struct StageProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<[Histogram<u64>; 3]>>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stages {
    /// Event sent to routed (`routed_at_ms`, millisecond precision).
    pub routed: Latency,
    /// Event sent to its job visible to a read_committed consumer (transaction committed).
    pub committed: Latency,
    /// Event sent to its first attempt started (`started_at_ms`, millisecond precision).
    pub first_attempt: Latency,
}

/// `"run":"..."` and `"t":...` from an event's data as the generator writes it.
fn run_and_time(data_json: &str) -> Option<(&str, u64)> {
    let rest = &data_json[data_json.find("\"run\":\"")? + 7..];
    let run = &rest[..rest.find('"')?];
    let t = &data_json[data_json.find("\"t\":")? + 4..];
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    Some((run, t[..end].parse().ok()?))
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

impl StageProbe {
    /// Starts reading both topics from their end.
    pub fn start(
        bootstrap: &str,
        deliveries: &str,
        attempts: &str,
        run: &str,
    ) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = crate::generator::client_config(bootstrap)?
            .set("group.id", "hookline-bench-stages")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "5")
            .set("queued.max.messages.kbytes", "16384")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for topic in [deliveries, attempts] {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    tpl.add_partition_offset(topic, p.id(), Offset::End)?;
                }
            }
        }
        consumer.assign(&tpl)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, run, deliveries) = (stop.clone(), run.to_owned(), deliveries.to_owned());
        let thread = std::thread::spawn(move || {
            let [mut routed, mut committed, mut first] = [histogram()?, histogram()?, histogram()?];
            // Delivery id -> send time (µs), until its first attempt is seen.
            let mut sent: HashMap<String, u64> = HashMap::new();
            // First attempts seen before their job (the probe's two topics are read apart).
            let mut early: HashMap<String, u64> = HashMap::new();
            while !flag.load(Ordering::Relaxed) {
                let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let seen_us = crate::receiver::now_us();
                let Some(payload) = msg.payload() else {
                    continue;
                };
                if msg.topic() == deliveries {
                    let Ok(job) = DeliveryJob::decode(payload) else {
                        continue;
                    };
                    let Some((r, t)) = job.event.as_ref().and_then(|e| run_and_time(&e.data_json))
                    else {
                        continue;
                    };
                    if r != run {
                        continue;
                    }
                    let routed_us = (job.routed_at_ms.max(0) as u64) * 1000;
                    let _ = routed.record(routed_us.saturating_sub(t).max(1));
                    let _ = committed.record(seen_us.saturating_sub(t).max(1));
                    match early.remove(&job.delivery_id) {
                        Some(started) => {
                            let _ = first.record(started.saturating_sub(t).max(1));
                        }
                        None => {
                            sent.insert(job.delivery_id, t);
                        }
                    }
                } else {
                    let Ok(attempt) = Attempt::decode(payload) else {
                        continue;
                    };
                    let started = (attempt.started_at_ms.max(0) as u64) * 1000;
                    match sent.remove(&attempt.delivery_id) {
                        Some(t) => {
                            let _ = first.record(started.saturating_sub(t).max(1));
                        }
                        None => {
                            // Other runs' attempts land here too: bounded, forgotten when full.
                            if early.len() >= 200_000 {
                                early.clear();
                            }
                            early.entry(attempt.delivery_id).or_insert(started);
                        }
                    }
                }
            }
            Ok([routed, committed, first])
        });
        Ok(Self { stop, thread })
    }

    pub fn finish(self) -> anyhow::Result<Stages> {
        self.stop.store(true, Ordering::Relaxed);
        let [routed, committed, first] = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("stage probe panicked"))??;
        Ok(Stages {
            routed: Latency::of(&routed),
            committed: Latency::of(&committed),
            first_attempt: Latency::of(&first),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_run_and_time() {
        let data = r#"{"run":"s2","k":"S2k1","seq":3,"t":1700000000123456,"pad":"xx"}"#;
        assert_eq!(
            super::run_and_time(data),
            Some(("s2", 1_700_000_000_123_456))
        );
        assert_eq!(super::run_and_time(r#"{"node":"n"}"#), None);
    }
}
