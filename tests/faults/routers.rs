//! A second router joining a busy one, again and again: every event is routed after each
//! join. The join moves partitions while the first router has a transaction open (its offset
//! commit is refused for the old generation, so it aborts and rewinds with a new consumer);
//! the second router then leaves by SIGKILL and stays away past its session, so the group
//! rebalances back, and joins again.

use std::time::{Duration, Instant};

use crate::support::kafka::Kafka;
use crate::support::process::Proc;
use crate::support::{Load, Run, SERIAL, Tally, event_id};

const RATE: u32 = 300;
const EVENTS: usize = 24_000;
const JOINS: usize = 3;
/// How long the second router stays away: longer than the session timeout (10 s), so its
/// static membership ends and the group rebalances without it.
const AWAY: Duration = Duration::from_secs(12);
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_router_joining_a_busy_one_leaves_no_partition_unrouted() {
    let _serial = SERIAL.lock().await;
    let kafka = Kafka::start(1).await;
    let mut run = Run::start(&kafka, 1, 1).await;
    let mut load = Load::start(&kafka.bootstrap, &run.config.topic_events, EVENTS, RATE);
    load.release_second_half();
    run.wait_delivered(RATE as usize, 120, "the first deliveries", &kafka, &load)
        .await;

    let mut config = run.config.clone();
    config.router_instance = format!("{}-extra", config.router_instance);
    [config.router_listen] = crate::support::free_addrs::<1>();
    let logs = kafka.dir().join("services");
    let mut extra: Option<Proc> = None;
    for join in 1..=JOINS {
        match &mut extra {
            None => {
                extra = Some(Proc::start(
                    "router-extra",
                    "hookline-router",
                    &config,
                    &logs,
                ))
            }
            Some(p) => p.restart(),
        }
        // Everything published until now and in the next two seconds, while the group
        // rebalances under load, must arrive: with a partition routed by nobody, a third
        // of it never would.
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until && load.acked() < EVENTS {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let n = load.acked();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let tally = Tally::of(&run.receiver.received());
            let missing = (0..n).filter(|i| !tally.first.contains_key(&event_id(*i)));
            if missing.count() == 0 {
                eprintln!("join {join}: the first {n} events delivered");
                break;
            }
            if Instant::now() >= deadline {
                let logs = extra.as_ref().map(|p| p.log_tail(20)).unwrap_or_default();
                panic!(
                    "join {join}: events published before it not delivered within {DEADLINE:?}\n{}\n{logs}",
                    run.report(&tally, n, &kafka, &load)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Some(p) = &mut extra {
            p.kill();
            assert!(p.crashes().is_empty(), "router-extra exited by itself");
        }
        // The fault's length (its session must expire), not a wait for a condition.
        tokio::time::sleep(AWAY).await;
    }
    load.finish().await;
    let tally = run
        .wait_delivered(EVENTS, 120, "every event", &kafka, &load)
        .await;
    run.check(&tally, EVENTS, &kafka, &load);
}
