//! A three-node cluster (topics with replication factor 3, min.insync.replicas 2): the broker
//! leading the events topic's partition 0 is killed with SIGKILL under load, and is not
//! brought back; two in-sync replicas remain, so nothing may stop.

use std::time::Instant;

use crate::support::kafka::Kafka;
use crate::support::{Load, Run, SERIAL};

const EVENTS: usize = 3000;
const RATE: u32 = 300;
const KILL_AT: usize = 300;
const DELIVERY_DEADLINE_SECS: u64 = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_leader_killed() {
    let _serial = SERIAL.lock().await;
    let kafka = Kafka::start(3).await;
    let mut run = Run::start(&kafka, 3, 2).await;
    let mut load = Load::start(&kafka.bootstrap, &run.config.topic_events, EVENTS, RATE);
    run.wait_delivered(KILL_AT, 120, "the first deliveries", &kafka, &load)
        .await;

    // The victim: the leader of the events topic's partition 0. The subscription's jobs all
    // go to one partition of the deliveries topic (they are keyed by subscription id); when
    // the same broker leads that one too, both the router's input and its output (the
    // worker's input) move to a new leader at once. When they differ, the events partition's
    // leader is the one killed: the router's consumer and transactions and the publisher
    // then face a leader change, and the worker keeps its partition's leader.
    let events = &run.config.topic_events;
    let deliveries = &run.config.topic_deliveries;
    let events_leader = load.leader(events, 0).await;
    let jobs_partitions = load.partitions_with_records(deliveries).await;
    let mut jobs_leaders = Vec::new();
    for p in &jobs_partitions {
        jobs_leaders.push((*p, load.leader(deliveries, *p).await));
    }
    let victim = events_leader;
    let also = if jobs_leaders.iter().any(|(_, leader)| *leader == victim) {
        "also"
    } else {
        "not"
    };
    eprintln!(
        "killing node {victim}: leader of {events} partition 0, {also} of the deliveries \
         partition(s) holding jobs (partition, leader): {jobs_leaders:?}"
    );
    let victim_node = usize::try_from(victim).expect("a node id");
    kafka.kill_node(victim_node).await;
    let killed = Instant::now();
    load.release_second_half();

    let tally = run
        .wait_delivered(
            EVENTS,
            DELIVERY_DEADLINE_SECS,
            "every event after the leader was killed",
            &kafka,
            &load,
        )
        .await;
    load.finish().await;
    eprintln!(
        "all {EVENTS} events delivered {:.1?} after the kill ({} requests, {} repeats); \
         longest pause without a new event after the kill: {:.1?}",
        tally.last_new_at.map(|t| t - killed).unwrap_or_default(),
        tally.requests,
        tally.requests - tally.first.len(),
        tally.longest_pause_after(killed),
    );
    run.check(&tally, EVENTS, &kafka, &load);
}
