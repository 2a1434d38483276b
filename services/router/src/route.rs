//! The pure routing step: one consumed `events` record becomes the records to produce in
//! its transaction, delivery jobs or a quarantine record, and the span of its routing.
//!
//! Trace context: the producer's W3C `traceparent` record header is the parent of the
//! event's `route` span (a new root when absent); each job carries the span's context in
//! its `traceparent` field and record header, so every attempt, retry-lane pass and replay
//! of the delivery continues the same trace. With tracing off the producer's context (or a
//! new unsampled trace id) is passed on as it is.

use hookline_events::time_fmt::now_ms;
use hookline_events::{CONTENT_TYPE_HEADER, DecodeError, Event, RecordPosition, decode_event};
use hookline_kafka::rdkafka::Message as _;
use hookline_kafka::rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use hookline_proto::Message as _;
use hookline_proto::v1::DeliveryJob;
use hookline_routing::{EventFields, SubscriptionIndex};
use hookline_telemetry::trace::{self, Traced};

/// Header of a quarantined record: why it could not be routed.
pub const QUARANTINE_REASON: &str = "hookline-quarantine-reason";
/// Headers of a quarantined record: where it was read.
pub const SOURCE_TOPIC: &str = "hookline-source-topic";
pub const SOURCE_PARTITION: &str = "hookline-source-partition";
pub const SOURCE_OFFSET: &str = "hookline-source-offset";
pub const SOURCE_TIMESTAMP: &str = "hookline-source-timestamp";

/// A record to produce inside the batch's transaction.
pub struct Outgoing {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
}

/// The delivery jobs for `event`: one per enabled subscription of its tenant (of its
/// application, when it names one) that selects its
/// type and whose payload filter (if any) the event matches, each with the delivery id of
/// (event id, subscription id) and `traceparent`; and how many subscriptions selected the
/// type but filtered the event out. Filters see the decoded event: `type`, `tenant`,
/// `metadata` and `data` (the JSON of `data_json`).
pub fn route(
    index: &SubscriptionIndex,
    event: &Event,
    key: &[u8],
    at: RecordPosition<'_>,
    traceparent: &str,
) -> (Vec<DeliveryJob>, usize) {
    let routed_at_ms = now_ms();
    let matched = index.matching_event(&EventFields {
        r#type: &event.r#type,
        tenant: &event.tenant,
        application: event.application.as_deref(),
        metadata: &event.metadata,
        data_json: &event.data_json,
    });
    #[allow(clippy::needless_update)] // fields added to the job later default to empty
    let jobs = matched
        .subscriptions
        .into_iter()
        .map(|sub| DeliveryJob {
            delivery_id: hookline_events::delivery_id(&event.id, &sub),
            subscription_id: sub.to_string(),
            tenant: event.tenant.clone(),
            event: Some(event.clone()),
            ordering_key: key.to_vec(),
            attempt: 0,
            due_at_ms: 0,
            source_topic: at.topic.to_owned(),
            source_partition: at.partition,
            source_offset: at.offset,
            traceparent: traceparent.to_owned(),
            routed_at_ms,
            ..Default::default()
        })
        .collect();
    (jobs, matched.filtered)
}

fn position(msg: &OwnedMessage) -> RecordPosition<'_> {
    RecordPosition {
        topic: msg.topic(),
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp_ms: msg.timestamp().to_millis(),
    }
}

/// Decodes one consumed record.
pub fn decode(msg: &OwnedMessage) -> Result<Event, DecodeError> {
    decode_event(
        position(msg),
        hookline_kafka::header(msg, CONTENT_TYPE_HEADER),
        msg.payload(),
    )
}

/// What one consumed record turns into: its delivery jobs, or its quarantine record; the
/// span of its routing, to be kept open until the transaction is over; and how many
/// subscriptions filtered it out.
pub fn outgoing(
    index: &SubscriptionIndex,
    msg: &OwnedMessage,
    deliveries: &str,
    quarantine: &str,
) -> (Vec<Outgoing>, Traced, usize) {
    let parent = trace::from_kafka(msg.headers());
    let span = Traced::start(&parent, || {
        tracing::info_span!(
            "route",
            otel.kind = "consumer",
            hookline.service = "router",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = msg.topic(),
            messaging.destination.partition.id = msg.partition(),
            messaging.kafka.offset = msg.offset(),
            hookline.event.id = tracing::field::Empty,
            hookline.event.type = tracing::field::Empty,
            hookline.fanout = tracing::field::Empty,
        )
    });
    let mut filtered = 0;
    let records = match decode(msg) {
        Ok(event) => {
            let mut traceparent = span.traceparent();
            if traceparent.is_empty() {
                traceparent = trace::traceparent(&trace::new_root());
            }
            let (jobs, dropped) = route(
                index,
                &event,
                msg.key().unwrap_or_default(),
                position(msg),
                &traceparent,
            );
            filtered = dropped;
            let s = span.span();
            s.record("hookline.event.id", event.id.as_str());
            s.record("hookline.event.type", event.r#type.as_str());
            s.record("hookline.fanout", jobs.len());
            jobs.into_iter()
                .map(|job| Outgoing {
                    topic: deliveries.to_owned(),
                    key: job.subscription_id.clone().into_bytes(),
                    value: Some(job.encode_to_vec()),
                    headers: Some(OwnedHeaders::new().insert(Header {
                        key: trace::TRACEPARENT,
                        value: Some(traceparent.as_str()),
                    })),
                })
                .collect()
        }
        Err(reason) => {
            tracing::warn!(partition = msg.partition(), offset = msg.offset(), %reason, "event quarantined");
            span.fail("quarantined");
            vec![quarantined(msg, &reason, quarantine)]
        }
    };
    (records, span, filtered)
}

/// The original key, value and headers, plus the reason and the source position.
pub fn quarantined(msg: &OwnedMessage, reason: &DecodeError, topic: &str) -> Outgoing {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = msg.headers() {
        for h in original.iter() {
            headers = headers.insert(h);
        }
    }
    let reason = reason.to_string();
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let timestamp = msg.timestamp().to_millis().map(|t| t.to_string());
    let mut extra = vec![
        (QUARANTINE_REASON, reason.as_str()),
        (SOURCE_TOPIC, msg.topic()),
        (SOURCE_PARTITION, partition.as_str()),
        (SOURCE_OFFSET, offset.as_str()),
    ];
    if let Some(t) = &timestamp {
        extra.push((SOURCE_TIMESTAMP, t.as_str()));
    }
    for (key, value) in extra {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    Outgoing {
        topic: topic.to_owned(),
        key: msg.key().unwrap_or_default().to_vec(),
        value: msg.payload().map(<[u8]>::to_vec),
        headers: Some(headers),
    }
}

#[cfg(test)]
mod tests {
    use hookline_kafka::rdkafka::Timestamp;

    use super::*;

    fn record(value: &[u8], content_type: Option<&str>) -> OwnedMessage {
        let headers = content_type.map(|ct| {
            OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(ct),
            })
        });
        OwnedMessage::new(
            Some(value.to_vec()),
            Some(b"acct-1".to_vec()),
            "events".into(),
            Timestamp::CreateTime(1_000),
            2,
            7,
            headers,
        )
    }

    fn index() -> SubscriptionIndex {
        let mut ix = SubscriptionIndex::new();
        ix.upsert("s-all", "t1", true, &["*"]);
        ix.upsert("s-card", "t1", true, &["CARD.*"]);
        ix.upsert("s-other", "t2", true, &["*"]);
        ix
    }

    #[test]
    fn an_event_fans_out_to_its_tenants_matches() {
        let msg = record(br#"{"id":"e1","type":"CARD.X.Y","tenant":"t1"}"#, None);
        let (out, _, _) = outgoing(&index(), &msg, "deliveries", "quarantine");
        let jobs: Vec<DeliveryJob> = out
            .iter()
            .map(|o| {
                assert_eq!(o.topic, "deliveries");
                DeliveryJob::decode(o.value.as_deref().unwrap()).unwrap()
            })
            .collect();
        let subs: Vec<&str> = jobs.iter().map(|j| j.subscription_id.as_str()).collect();
        assert_eq!(subs, ["s-all", "s-card"]);
        assert_eq!(
            jobs[1].delivery_id,
            hookline_events::delivery_id("e1", "s-card")
        );
        assert_eq!(jobs[1].ordering_key, b"acct-1");
        assert_eq!((jobs[1].source_partition, jobs[1].source_offset), (2, 7));
        assert_eq!(out[1].key, b"s-card");
    }

    #[test]
    fn a_filtered_out_event_makes_no_job_and_is_counted() {
        let mut ix = index();
        let filter = hookline_routing::Filter::parse(
            r#"{"data.amount": {"$gte": 100}, "metadata.region": {"$in": ["eu", "us"]}}"#,
            "filter",
        )
        .unwrap();
        ix.upsert_filtered("s-big", "t1", None, true, &["CARD.*"], Some(filter));
        let subs = |value: &[u8]| {
            let (out, _, filtered) =
                outgoing(&ix, &record(value, None), "deliveries", "quarantine");
            let subs: Vec<String> = out
                .iter()
                .map(|o| String::from_utf8(o.key.clone()).unwrap())
                .collect();
            (subs, filtered)
        };
        let big = br#"{"id":"e1","type":"CARD.X","tenant":"t1","metadata":{"region":"eu"},"data":{"amount":150}}"#;
        assert_eq!(subs(big).0, ["s-all", "s-big", "s-card"]);
        assert_eq!(subs(big).1, 0);
        let small = br#"{"id":"e2","type":"CARD.X","tenant":"t1","metadata":{"region":"eu"},"data":{"amount":5}}"#;
        assert_eq!(subs(small), (vec!["s-all".into(), "s-card".into()], 1));
        let nowhere = br#"{"id":"e3","type":"CARD.X","tenant":"t1","data":{"amount":500}}"#;
        assert_eq!(subs(nowhere).1, 1);
        let other_type = br#"{"id":"e4","type":"ACCOUNT.X","tenant":"t1","data":{"amount":5}}"#;
        assert_eq!(subs(other_type), (vec!["s-all".into()], 0));
    }

    #[test]
    fn an_event_of_an_application_reaches_only_its_subscriptions() {
        let mut ix = index();
        ix.upsert_filtered("ep-1", "t1", Some("app_1"), true, &[] as &[&str], None);
        ix.upsert_filtered("ep-2", "t1", Some("app_2"), true, &["*"], None);
        let subs = |value: &[u8]| {
            let (out, _, _) = outgoing(&ix, &record(value, None), "deliveries", "quarantine");
            out.iter()
                .map(|o| String::from_utf8(o.key.clone()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            subs(br#"{"id":"msg_1","type":"CARD.X","tenant":"t1","application":"app_1"}"#),
            ["ep-1"]
        );
        assert_eq!(
            subs(br#"{"id":"e1","type":"CARD.X","tenant":"t1"}"#),
            ["s-all", "s-card"]
        );
    }

    fn job_traceparents(out: &[Outgoing]) -> Vec<(String, String)> {
        out.iter()
            .map(|o| {
                let job = DeliveryJob::decode(o.value.as_deref().unwrap()).unwrap();
                let header = o
                    .headers
                    .as_ref()
                    .and_then(|h| h.iter().find(|h| h.key == trace::TRACEPARENT))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                (job.traceparent, header)
            })
            .collect()
    }

    #[test]
    fn jobs_carry_the_producers_traceparent() {
        // Tracing is off in unit tests: the producer's context is passed on unchanged.
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let msg = OwnedMessage::new(
            Some(br#"{"id":"e1","type":"CARD.X","tenant":"t1"}"#.to_vec()),
            Some(b"acct-1".to_vec()),
            "events".into(),
            Timestamp::CreateTime(1_000),
            0,
            1,
            Some(OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some(parent),
            })),
        );
        let (out, _, _) = outgoing(&index(), &msg, "deliveries", "quarantine");
        let tps = job_traceparents(&out);
        assert_eq!(tps.len(), 2);
        for (field, header) in tps {
            assert_eq!((field.as_str(), header.as_str()), (parent, parent));
        }
    }

    #[test]
    fn an_event_without_traceparent_gets_one_trace_id_for_all_its_jobs() {
        let msg = record(br#"{"id":"e1","type":"CARD.X","tenant":"t1"}"#, None);
        let (out, _, _) = outgoing(&index(), &msg, "deliveries", "quarantine");
        let tps = job_traceparents(&out);
        assert_eq!(tps.len(), 2);
        let first = &tps[0].0;
        assert!(
            trace::traceparent(&trace::from_traceparent(first)) == *first,
            "{first}"
        );
        assert!(tps.iter().all(|(f, h)| f == first && h == first));
        let (again, _, _) = outgoing(&index(), &msg, "deliveries", "quarantine");
        assert_ne!(
            job_traceparents(&again)[0].0,
            *first,
            "a new trace per routing"
        );
    }

    #[test]
    fn a_bad_record_is_quarantined_whole() {
        let msg = record(b"\x00not json", Some("text/csv"));
        let (out, _, _) = outgoing(&index(), &msg, "deliveries", "quarantine");
        assert_eq!(out.len(), 1);
        let q = &out[0];
        assert_eq!(q.topic, "quarantine");
        assert_eq!(q.key, b"acct-1");
        assert_eq!(q.value.as_deref(), Some(&b"\x00not json"[..]));
        let headers: Vec<(String, String)> = q
            .headers
            .as_ref()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                )
            })
            .collect();
        let get = |k: &str| {
            headers
                .iter()
                .find(|(hk, _)| hk == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("content-type"), Some("text/csv"));
        assert!(get(QUARANTINE_REASON).unwrap().contains("content-type"));
        assert_eq!(get(SOURCE_TOPIC), Some("events"));
        assert_eq!(get(SOURCE_PARTITION), Some("2"));
        assert_eq!(get(SOURCE_OFFSET), Some("7"));
        assert_eq!(get(SOURCE_TIMESTAMP), Some("1000"));
    }
}
