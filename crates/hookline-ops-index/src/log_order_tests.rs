//! A subscription's deliveries in the order of the log, whatever their times and ids.

use hookline_proto::Message as _;
use hookline_proto::v1::{DeadLetter, DeliveryJob, Event};

use crate::store::{Batch, Record, Store};

fn store() -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ops-index-order-{}", uuid::Uuid::new_v4()));
    (Store::open(&dir, 4 << 20).unwrap(), dir)
}

/// A routed job of `delivery` for the event at `events/0/event_offset`.
fn job(delivery: &str, sub: &str, event_offset: i64, routed_ms: i64) -> DeliveryJob {
    DeliveryJob {
        delivery_id: delivery.into(),
        subscription_id: sub.into(),
        tenant: "t".into(),
        event: Some(Event {
            id: format!("e-{delivery}"),
            r#type: "A.B".into(),
            ..Default::default()
        }),
        ordering_key: b"acc-1".to_vec(),
        source_topic: "events".into(),
        source_partition: 0,
        source_offset: event_offset,
        routed_at_ms: routed_ms,
        ..Default::default()
    }
}

fn job_record(job: DeliveryJob, offset: i64, record_ms: i64) -> Record {
    Record::Job {
        partition: 0,
        offset,
        record_ms,
        job,
    }
}

fn letter_record(job: DeliveryJob, offset: i64, at_ms: i64) -> Record {
    let letter = DeadLetter {
        job: Some(job),
        dead_lettered_at_ms: at_ms,
        ..Default::default()
    };
    Record::DeadLetter {
        partition: 0,
        offset,
        bytes: letter.encode_to_vec(),
        letter,
    }
}

fn ids(items: &[(String, crate::Summary)]) -> Vec<&str> {
    items.iter().map(|(id, _)| id.as_str()).collect()
}

#[test]
fn deliveries_routed_in_one_millisecond_come_out_in_log_order() {
    let (s, dir) = store();
    // Six events of one key routed in the same millisecond; their ids sort the other way.
    let burst = ["d-f", "d-e", "d-d", "d-c", "d-b", "d-a"];
    // A rebuild may fold a dead letter before the job it holds.
    let mut first = Batch::default();
    first
        .records
        .push(letter_record(job(burst[2], "s", 12, 5_000), 0, 6_000));
    s.apply(first).unwrap();
    let mut batch = Batch::default();
    for (n, id) in burst.iter().enumerate() {
        let n = n as i64;
        batch
            .records
            .push(job_record(job(id, "s", 10 + n, 5_000), 100 + n, 5_000));
        // Another subscription's deliveries of the same events, in between.
        batch.records.push(job_record(
            job(&format!("x{n}"), "other", 10 + n, 5_000),
            200 + n,
            5_000,
        ));
    }
    // Routed before the window; and one whose event position is unknown (comes last).
    batch
        .records
        .push(job_record(job("d-old", "s", 5, 1_000), 90, 1_000));
    let mut unknown = job("d-0", "s", 0, 5_000);
    unknown.source_topic.clear();
    batch.records.push(letter_record(unknown, 1, 6_000));
    // The first delivery replayed: its job appended again later, its place unchanged.
    let mut replayed = job(burst[0], "s", 10, 5_000);
    replayed.replay_id = "r1".into();
    batch.records.push(job_record(replayed, 300, 9_000));
    s.apply(batch).unwrap();
    let d = s.delivery(burst[0]).unwrap().unwrap();
    assert_eq!((d.job_offset, d.replay_id.as_str()), (300, "r1"));

    // By creation time the burst is in id order: what a replay must not follow.
    let by_time = s.deliveries_of("s", 2_000, 10_000, &[], 100).unwrap();
    let by_time: Vec<&str> = by_time.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(by_time, ["d-0", "d-a", "d-b", "d-c", "d-d", "d-e", "d-f"]);

    // In the order of the log, in pages, resumed from the cursor each page gives.
    let mut seen = Vec::new();
    let mut cursor = Vec::new();
    loop {
        let page = s
            .deliveries_in_log_order("s", 2_000, 10_000, &cursor, 4)
            .unwrap();
        assert!(page.items.len() <= 4);
        seen.extend(ids(&page.items).into_iter().map(str::to_owned));
        match page.next {
            Some(next) => {
                assert!(Store::is_log_cursor(&next));
                cursor = next;
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["d-f", "d-e", "d-d", "d-c", "d-b", "d-a", "d-0"],
        "the order of the events on the log"
    );
    // The window applies; a cursor of the other order is refused.
    let all = s.deliveries_in_log_order("s", 0, 10_000, &[], 100).unwrap();
    assert_eq!(ids(&all.items)[0], "d-old");
    assert!(all.next.is_none());
    let time_cursor = s.deliveries_of("s", 0, 10_000, &[], 1).unwrap()[0]
        .0
        .clone();
    assert!(!Store::is_log_cursor(&time_cursor));
    assert!(
        s.deliveries_in_log_order("s", 0, 10_000, &time_cursor, 10)
            .is_err()
    );

    // Retention removes them from this order too.
    s.sweep(None, None, Some(20_000), None, 1_000).unwrap();
    let page = s
        .deliveries_in_log_order("s", 0, i64::MAX, &[], 100)
        .unwrap();
    assert!(page.items.is_empty() && page.next.is_none());
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_index_of_an_earlier_layout_is_rebuilt() {
    let (s, dir) = store();
    let mut batch = Batch::default();
    batch
        .records
        .push(job_record(job("d1", "s", 1, 5_000), 0, 5_000));
    batch.positions.insert(("deliveries".into(), 0), 1);
    s.apply(batch).unwrap();
    drop(s);
    // Reopened with the same layout: kept.
    let s = Store::open(&dir, 4 << 20).unwrap();
    assert_eq!(s.positions().unwrap().len(), 1);
    s.forget_schema_for_test();
    drop(s);
    // Written by a version that kept no layout version: emptied, to be read again.
    let s = Store::open(&dir, 4 << 20).unwrap();
    assert!(s.positions().unwrap().is_empty());
    assert!(s.delivery("d1").unwrap().is_none());
    drop(s);
    let s = Store::open(&dir, 4 << 20).unwrap();
    assert!(s.positions().unwrap().is_empty());
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}
