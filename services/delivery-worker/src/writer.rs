//! The parking machine's Kafka writes, performed by a task of their own so the dispatcher
//! never waits on the broker: lane appends, parked-state records and their tombstones, in the
//! order asked, each acknowledged back in that order. A barrier writes nothing and is
//! acknowledged once everything asked for before it is.
//!
//! Transient trouble is waited out, never fatal: a full producer queue is retried after a
//! short pause (later writes wait behind, keeping the order), and the producer never gives a
//! record up on time (`message.timeout.ms` 0), so a broker outage delays acknowledgements
//! instead of failing them. A record the broker refuses for good is logged and written again.

use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use hookline_config::Config;
use hookline_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use hookline_kafka::rdkafka::message::{Header, OwnedHeaders};
use hookline_kafka::rdkafka::producer::{DeliveryFuture, FutureRecord};
use hookline_proto::Message as _;
use hookline_proto::v1::{DeliveryJob, ParkedState};
use tokio::sync::mpsc;

use crate::park::{MainRef, ParkId};

/// A write the parking machine asked for.
pub enum Write {
    Append {
        sub: String,
        park: ParkId,
        job: Box<DeliveryJob>,
        main: Option<MainRef>,
    },
    State {
        park: ParkId,
        state: ParkedState,
    },
    Clear {
        sub: String,
    },
    /// Writes nothing: acknowledged once every write asked for before it is.
    Barrier {
        partition: i32,
        epoch: u64,
    },
}

/// An acknowledged write.
pub enum Ack {
    Appended {
        sub: String,
        park: ParkId,
        main: Option<MainRef>,
        partition: i32,
        offset: i64,
    },
    StateWritten {
        sub: String,
        park: ParkId,
    },
    Cleared,
    Barrier {
        partition: i32,
        epoch: u64,
    },
}

struct Topics {
    lane: String,
    parked: String,
}

/// Starts the writer; acknowledgements arrive on the returned receiver.
pub fn start(
    config: &Config,
    producer: std::sync::Arc<hookline_kafka::Producer>,
) -> Result<(mpsc::UnboundedSender<Write>, mpsc::UnboundedReceiver<Ack>), crate::Error> {
    let topics = Topics {
        lane: config.topic_retry_lane.clone(),
        parked: config.topic_parked.clone(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(producer, topics, rx, ack_tx));
    Ok((tx, ack_rx))
}

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Ack> + Send>>;

async fn run(
    producer: std::sync::Arc<hookline_kafka::Producer>,
    topics: Topics,
    mut writes: mpsc::UnboundedReceiver<Write>,
    acks: mpsc::UnboundedSender<Ack>,
) {
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            w = writes.recv(), if open => match w {
                Some(Write::Barrier { partition, epoch }) => {
                    pending.push_back(Box::pin(std::future::ready(Ack::Barrier { partition, epoch })));
                }
                Some(w) => pending.push_back(submit(&producer, &topics, w).await),
                None => open = false,
            },
            Some(ack) = pending.next() => {
                if acks.send(ack).is_err() {
                    return;
                }
            }
        }
    }
}

/// Hands `w` to the producer (waiting while its queue is full) and returns its ack.
async fn submit(producer: &hookline_kafka::Producer, topics: &Topics, w: Write) -> Pending {
    let main = match &w {
        Write::Append { main: Some(m), .. } => Some(main_header(m)),
        _ => None,
    };
    let (topic, key, payload) = match &w {
        Write::Append { sub, job, .. } => (&topics.lane, sub.clone(), Some(job.encode_to_vec())),
        Write::State { state, .. } => (
            &topics.parked,
            state.subscription_id.clone(),
            Some(state.encode_to_vec()),
        ),
        Write::Clear { sub } => (&topics.parked, sub.clone(), None),
        Write::Barrier { .. } => unreachable!("a barrier is acknowledged without writing"),
    };
    let delivery = enqueue(producer, topic, &key, payload.as_deref(), main.as_deref()).await;
    let (producer, topic) = (producer.clone(), topic.clone());
    Box::pin(async move {
        let mut delivery = delivery;
        let (partition, offset) = loop {
            match delivery.await {
                Ok(Ok(d)) => break (d.partition, d.offset),
                Ok(Err((e, _))) => {
                    tracing::warn!(%topic, error = %e, "parking write refused; writing it again");
                }
                Err(_) => tracing::warn!(%topic, "parking write dropped; writing it again"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            delivery = enqueue(&producer, &topic, &key, payload.as_deref(), main.as_deref()).await;
        };
        match w {
            Write::Append {
                sub, park, main, ..
            } => Ack::Appended {
                sub,
                park,
                main,
                partition,
                offset,
            },
            Write::State { park, state } => Ack::StateWritten {
                sub: state.subscription_id,
                park,
            },
            Write::Clear { .. } => Ack::Cleared,
            Write::Barrier { partition, epoch } => Ack::Barrier { partition, epoch },
        }
    })
}

/// The record header of a lane job naming the `deliveries` record it was appended for, so a
/// reading can tell a copy (the record read again and appended again by the partition's next
/// owner) from the job itself.
pub const MAIN_HEADER: &str = "hookline-deliveries-record";

fn main_header(m: &MainRef) -> String {
    format!("{}/{}", m.partition, m.offset)
}

/// The `deliveries` record a lane record's [`MAIN_HEADER`] names.
pub fn parse_main_header(value: &[u8]) -> Option<(i32, i64)> {
    let (p, o) = std::str::from_utf8(value).ok()?.split_once('/')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

async fn enqueue(
    producer: &hookline_kafka::Producer,
    topic: &str,
    key: &str,
    payload: Option<&[u8]>,
    main: Option<&str>,
) -> DeliveryFuture {
    loop {
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(m) = main {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: MAIN_HEADER,
                value: Some(m),
            }));
        }
        match producer.send_result(record) {
            Ok(delivery) => return delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((e, _)) => {
                tracing::warn!(topic, error = %e, "parking write not accepted; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
