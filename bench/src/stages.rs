//! Where the time goes: a read_committed consumer of the deliveries topic that times, for
//! each delivery job of one run, when the router routed it (`routed_at_ms`) and when its
//! transaction became visible to the delivery worker, both from the event's send time in
//! `data.t`. With the receive time at the receiver this splits the latency into the router's
//! part (event in, job committed) and the worker's (job committed, POST received).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use hookline_proto::Message as _;
use hookline_proto::v1::DeliveryJob;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;

use crate::phase::Latency;

pub struct StageProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<(Histogram<u64>, Histogram<u64>)>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Stages {
    /// Event sent to routed (`routed_at_ms`, millisecond precision).
    pub routed: Latency,
    /// Event sent to its job visible to a read_committed consumer (transaction committed).
    pub committed: Latency,
}

#[derive(Deserialize)]
struct Data {
    run: Option<String>,
    t: Option<u64>,
}

impl StageProbe {
    /// Starts reading the deliveries topic from its end.
    pub fn start(bootstrap: &str, topic: &str, run: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "hookline-bench-stages")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::End)?;
            }
        }
        consumer.assign(&tpl)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, run) = (stop.clone(), run.to_owned());
        let thread = std::thread::spawn(move || {
            let mut routed = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
            let mut committed = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
            while !flag.load(Ordering::Relaxed) {
                let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let seen_us = crate::receiver::now_us();
                let Some(job) = msg.payload().and_then(|p| DeliveryJob::decode(p).ok()) else {
                    continue;
                };
                let Some(event) = job.event else { continue };
                let Ok(data) = serde_json::from_str::<Data>(&event.data_json) else {
                    continue;
                };
                let (Some(sent), Some(r)) = (data.t, data.run) else {
                    continue;
                };
                if r != run {
                    continue;
                }
                let routed_us = (job.routed_at_ms.max(0) as u64) * 1000;
                let _ = routed.record(routed_us.saturating_sub(sent).max(1));
                let _ = committed.record(seen_us.saturating_sub(sent).max(1));
            }
            Ok((routed, committed))
        });
        Ok(Self { stop, thread })
    }

    pub fn finish(self) -> anyhow::Result<Stages> {
        self.stop.store(true, Ordering::Relaxed);
        let (routed, committed) = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("stage probe panicked"))??;
        Ok(Stages {
            routed: Latency::of(&routed),
            committed: Latency::of(&committed),
        })
    }
}
