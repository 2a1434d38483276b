//! One broker, killed with SIGKILL while events flow and started again on the same address:
//! after a short outage and after a long one.

use std::time::{Duration, Instant};

use crate::support::kafka::Kafka;
use crate::support::{Load, Run, SERIAL, Tally};

/// Events in all; the first half is published before the broker dies, the second from the
/// moment it dies.
const EVENTS: usize = 3000;
/// Publishing rate, events per second.
const RATE: u32 = 300;
/// The broker dies once this many events reached the receiver (mid-load).
const KILL_AT: usize = 300;
/// How long every event may take to arrive once the broker is back (normally seconds).
const DELIVERY_DEADLINE_SECS: u64 = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_restart_quickly() {
    broker_restart(Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_restart_after_a_minute() {
    broker_restart(Duration::from_secs(60)).await;
}

/// Publishes `EVENTS` events on `KEYS` keys; once `KILL_AT` arrived, SIGKILLs the broker,
/// publishes on (the producer buffers and retries), restarts it `outage` after the kill on the
/// same address, and waits until every event arrived.
async fn broker_restart(outage: Duration) {
    let _serial = SERIAL.lock().await;
    let kafka = Kafka::start(1).await;
    let mut run = Run::start(&kafka, 1, 1).await;
    let mut load = Load::start(&kafka.bootstrap, &run.config.topic_events, EVENTS, RATE);
    run.wait_delivered(KILL_AT, 120, "the first deliveries", &kafka, &load)
        .await;

    kafka.kill_node(1).await;
    let killed = Instant::now();
    let before_kill = load.enqueued();
    load.release_second_half();
    // The outage itself: the broker stays down this long (not a wait for a condition).
    tokio::time::sleep_until((killed + outage).into()).await;
    let delivered_by_restart = Tally::of(&run.receiver.received()).first.len();
    kafka.start_node(1).await;
    let back = Instant::now();
    eprintln!(
        "broker killed after {before_kill} events were enqueued; down {:.1?} (restart included); \
         {delivered_by_restart} events had arrived by the restart",
        back - killed
    );

    let tally = run
        .wait_delivered(
            EVENTS,
            DELIVERY_DEADLINE_SECS,
            "every event after the broker returned",
            &kafka,
            &load,
        )
        .await;
    load.finish().await;
    let resumed = tally
        .first_new_after(back)
        .expect("events arrived after the broker returned");
    eprintln!("delivery resumed {resumed:?} after the broker returned");
    eprintln!(
        "all {EVENTS} events delivered {:.1?} after the broker returned ({} requests, {} repeats); \
         longest pause without a new event after the kill: {:.1?}",
        tally.last_new_at.map(|t| t - back).unwrap_or_default(),
        tally.requests,
        tally.requests - tally.first.len(),
        tally.longest_pause_after(killed),
    );
    run.check(&tally, EVENTS, &kafka, &load);
}
