//! Message create of the Svix face (`POST /api/v1/app/{app_id}/msg`) against the records it
//! leaves on the real topics: an accepted message is on the events topic and on `messages`
//! (so listed), whether it was produced with its record at once (no `eventId`) or after
//! winning its `eventId`; a repeated `eventId` answers 409 and publishes nothing.

use std::collections::HashSet;

use futures::future::join_all;
use hookline_proto::Message as _;
use hookline_proto::v1::{Event, SvixMessage};
use reqwest::Method as M;
use serde_json::{Value, json};

use crate::support::{Stack, TOKEN_A, call};

/// The ids of the events on the events topic that name application `app`.
fn events_of(stack: &Stack, app: &str) -> Vec<String> {
    stack
        .read_to_end(&stack.config.topic_events)
        .iter()
        .filter_map(|v| Event::decode(v.as_slice()).ok())
        .filter(|e| e.application.as_deref() == Some(app))
        .map(|e| e.id)
        .collect()
}

/// The message records (not tombstones) on `messages` of application `app`.
fn records_of(stack: &Stack, app: &str) -> Vec<SvixMessage> {
    stack
        .read_to_end(&stack.config.topic_messages)
        .iter()
        .filter(|v| !v.is_empty())
        .filter_map(|v| SvixMessage::decode(v.as_slice()).ok())
        .filter(|m| m.application == app)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn svix_an_accepted_message_is_published_and_listed_and_a_repeated_event_id_is_not() {
    let stack = Stack::start_without_router_and_worker(|_| {}).await;
    let api = stack.api.clone();
    let (status, app) = call(
        M::POST,
        &format!("{api}/api/v1/app"),
        TOKEN_A,
        Some(json!({"name": "ingest"})),
    )
    .await;
    assert_eq!(status, 201, "{app}");
    let app = app["id"].as_str().unwrap().to_owned();
    let msgs = format!("{api}/api/v1/app/{app}/msg");

    // Without eventId, many at once: each 202 is on both topics, and listed right away.
    let sent = join_all((0..20).map(|i| {
        call(
            M::POST,
            &msgs,
            TOKEN_A,
            Some(json!({"eventType": "ACCOUNT.CREATED", "payload": {"i": i}})),
        )
    }))
    .await;
    let mut accepted: HashSet<String> = HashSet::new();
    for (status, body) in &sent {
        assert_eq!(*status, 202, "{body}");
        accepted.insert(body["id"].as_str().unwrap().to_owned());
    }
    let (status, list) = call(M::GET, &format!("{msgs}?limit=100"), TOKEN_A, None).await;
    assert_eq!(status, 200, "{list}");
    let listed: HashSet<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, accepted, "every accepted message is listed at once");

    // With an eventId: the first wins, the repeat is a 409.
    let with_id = json!({"eventType": "ACCOUNT.CREATED", "eventId": "order-1", "payload": {}});
    let (status, first) = call(M::POST, &msgs, TOKEN_A, Some(with_id.clone())).await;
    assert_eq!(status, 202, "{first}");
    accepted.insert(first["id"].as_str().unwrap().to_owned());
    let (status, again) = call(M::POST, &msgs, TOKEN_A, Some(with_id)).await;
    assert_eq!(status, 409, "{again}");
    let (status, got): (u16, Value) = call(M::GET, &format!("{msgs}/order-1"), TOKEN_A, None).await;
    assert_eq!((status, &got["id"]), (200, &first["id"]), "{got}");

    // The events topic holds exactly the accepted messages, once each: the 409 published
    // nothing.
    let events = events_of(&stack, &app);
    assert_eq!(events.len(), accepted.len(), "{events:?}");
    assert_eq!(events.into_iter().collect::<HashSet<_>>(), accepted);
    // `messages` holds every accepted one, and the repeat's record that lost the eventId.
    let records = records_of(&stack, &app);
    let recorded: HashSet<String> = records.iter().map(|m| m.id.clone()).collect();
    assert!(recorded.is_superset(&accepted), "{recorded:?}");
    let losers: Vec<&SvixMessage> = records
        .iter()
        .filter(|m| !accepted.contains(&m.id))
        .collect();
    assert_eq!(losers.len(), 1, "the 409's record: {losers:?}");
    assert_eq!(losers[0].event_id.as_deref(), Some("order-1"));
    stack.stop().await;
}
