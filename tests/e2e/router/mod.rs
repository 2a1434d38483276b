//! The router end to end: exactly-once fan-out across SIGKILLs of a separate router process,
//! quarantine of undecodable records, and events from a producer that is not Hookline's code.

mod external;
mod kill;
mod quarantine;

use std::collections::HashMap;
use std::time::Duration;

use hookline_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use hookline_kafka::rdkafka::message::{Headers, Message};
use hookline_kafka::rdkafka::{Offset, TopicPartitionList};

/// One record as read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: HashMap<String, Vec<u8>>,
}

impl Record {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| std::str::from_utf8(v).expect("UTF-8 header"))
            .unwrap_or("")
    }
}

/// Every record of `topic` up to its end, as a reader with `isolation` sees it: reads until
/// its position on every partition has reached the high watermark, so what it returns is the
/// whole topic, not a prefix. (A `read_committed` reader gets there only once no transaction
/// is open on the topic.)
pub fn read_to_end(bootstrap: &str, topic: &str, isolation: &str) -> Vec<Record> {
    let plain = hookline_config::Config {
        kafka_bootstrap: bootstrap.to_owned(),
        ..Default::default()
    };
    let consumer: BaseConsumer = hookline_kafka::client_config(&plain)
        .expect("client settings")
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = meta.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    assert!(!partitions.is_empty(), "topic {topic} has partitions");
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Record {
                    key: m.key().unwrap_or_default().to_vec(),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if at_end(&consumer, topic, &partitions) => return out,
            None => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} to its end took over 60 s"
        );
    }
}

fn at_end(consumer: &BaseConsumer, topic: &str, partitions: &[i32]) -> bool {
    let Ok(position) = consumer.position() else {
        return false;
    };
    partitions.iter().all(|p| {
        let (_, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .expect("watermarks");
        let mine = position
            .find_partition(topic, *p)
            .and_then(|e| e.offset().to_raw())
            .unwrap_or(-1);
        high == 0 || mine >= high
    })
}
