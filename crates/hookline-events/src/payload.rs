//! The bodies POSTed to receivers, one shape per API dialect (a Svix endpoint gets the
//! message payload itself).
//!
//! Times are sent as RFC 3339 UTC with milliseconds and `Z`, whatever offset or precision
//! the producer wrote; the Synctera `id` is always a UUID ([`crate::body_event_id`]).

use std::collections::BTreeMap;

use hookline_proto::v1::{Dialect, Event, Subscription};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::time_fmt::normalize_rfc3339;

/// Fynapse event delivery: `{event_id, event_type, metadata, event_timestamp, data}`.
#[derive(Serialize)]
struct FynapseEnvelope<'a> {
    event_id: &'a str,
    event_type: &'a str,
    metadata: BTreeMap<&'a str, &'a str>,
    event_timestamp: String,
    data: &'a RawValue,
}

/// Synctera `WebhookRequest`.
#[derive(Serialize)]
struct WebhookRequest<'a> {
    event_time: String,
    id: String,
    metadata: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    url: &'a str,
    webhook_id: &'a str,
    event_resource: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_resource_changed_fields: Option<&'a str>,
}

fn raw(json: &str) -> &RawValue {
    // Events were validated as JSON when decoded; fall back to an empty object otherwise.
    serde_json::from_str(json).unwrap_or_else(|_| serde_json::from_str("{}").expect("valid"))
}

/// The JSON body of a delivery of `event` to `subscription`, in the subscription's dialect.
pub fn body(event: &Event, subscription: &Subscription) -> Vec<u8> {
    let result = match subscription.dialect() {
        // Svix: the message's payload, as the producer gave it.
        Dialect::Svix => Ok(if event.data_json.is_empty() {
            b"{}".to_vec()
        } else {
            event.data_json.clone().into_bytes()
        }),
        Dialect::Synctera => serde_json::to_vec(&WebhookRequest {
            event_time: normalize_rfc3339(&event.time),
            id: crate::body_event_id(&event.id),
            metadata: subscription.metadata.as_deref().unwrap_or(""),
            kind: &event.r#type,
            url: &subscription.endpoint_url,
            webhook_id: &subscription.id,
            event_resource: if event.data_json.is_empty() {
                "{}"
            } else {
                &event.data_json
            },
            event_resource_changed_fields: Some(event.changed_fields_json.as_str())
                .filter(|s| !s.is_empty()),
        }),
        Dialect::Fynapse | Dialect::Unspecified => {
            let mut metadata: BTreeMap<&str, &str> = event
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            metadata.entry("eventType").or_insert(&event.r#type);
            serde_json::to_vec(&FynapseEnvelope {
                event_id: &event.id,
                event_type: &event.r#type,
                metadata,
                event_timestamp: normalize_rfc3339(&event.time),
                data: raw(&event.data_json),
            })
        }
    };
    result.expect("serializing borrowed strings cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            id: "a3efc743-ac6c-463b-aa19-4dd9c45b5b96".into(),
            r#type: "balance.extracted".into(),
            time: "2026-04-14T09:54:45.040Z".into(),
            tenant: "t".into(),
            metadata: [
                ("startedOn".to_string(), "2026-04-14T09:54:43.674940Z".to_string()),
                ("extractConfigurationName".to_string(), "test".to_string()),
            ]
            .into(),
            data_json: r#"{"node":"Node1","account":"222","balance":1.0,"productName":"","transactionCurrency":"GBP"}"#.into(),
            changed_fields_json: String::new(),
            application: None,
        }
    }

    #[test]
    fn fynapse_envelope_matches_the_seed() {
        let sub = Subscription {
            dialect: Dialect::Fynapse as i32,
            ..Default::default()
        };
        let body = String::from_utf8(body(&event(), &sub)).unwrap();
        assert_eq!(
            body,
            r#"{"event_id":"a3efc743-ac6c-463b-aa19-4dd9c45b5b96","event_type":"balance.extracted","metadata":{"eventType":"balance.extracted","extractConfigurationName":"test","startedOn":"2026-04-14T09:54:43.674940Z"},"event_timestamp":"2026-04-14T09:54:45.040Z","data":{"node":"Node1","account":"222","balance":1.0,"productName":"","transactionCurrency":"GBP"}}"#
        );
    }

    #[test]
    fn synctera_request_carries_resource_as_a_string() {
        let sub = Subscription {
            id: "3c90c3cc-0d44-4b50-8888-8dd25736052a".into(),
            dialect: Dialect::Synctera as i32,
            endpoint_url: "https://example.com/h".into(),
            metadata: Some("m".into()),
            ..Default::default()
        };
        let mut e = event();
        e.changed_fields_json = r#"{"status":"OLD"}"#.into();
        let v: serde_json::Value = serde_json::from_slice(&body(&e, &sub)).unwrap();
        assert_eq!(v["webhook_id"], "3c90c3cc-0d44-4b50-8888-8dd25736052a");
        assert_eq!(v["metadata"], "m");
        assert_eq!(v["type"], "balance.extracted");
        assert_eq!(v["url"], "https://example.com/h");
        let resource: serde_json::Value =
            serde_json::from_str(v["event_resource"].as_str().unwrap()).unwrap();
        assert_eq!(resource["account"], "222");
        assert_eq!(v["event_resource_changed_fields"], r#"{"status":"OLD"}"#);
        assert_eq!(v["id"], "a3efc743-ac6c-463b-aa19-4dd9c45b5b96");
        assert_eq!(v["event_time"], "2026-04-14T09:54:45.040Z");
    }

    #[test]
    fn a_svix_endpoint_gets_the_payload_verbatim() {
        let sub = Subscription {
            dialect: Dialect::Svix as i32,
            ..Default::default()
        };
        let mut e = event();
        e.data_json = r#"{"b": 1.10, "a": [true]}"#.into();
        assert_eq!(body(&e, &sub), e.data_json.as_bytes());
    }

    #[test]
    fn ids_become_uuids_and_times_utc_milliseconds() {
        let mut e = event();
        e.id = "order-42".into();
        e.time = "2026-04-14T11:54:45.04012+02:00".into();
        let synctera = Subscription {
            dialect: Dialect::Synctera as i32,
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&e, &synctera)).unwrap();
        let id = v["id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        assert_eq!(id, crate::body_event_id("order-42"));
        assert_eq!(v["event_time"], "2026-04-14T09:54:45.040Z");
        let fynapse = Subscription {
            dialect: Dialect::Fynapse as i32,
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&e, &fynapse)).unwrap();
        assert_eq!(
            v["event_id"], "order-42",
            "the Fynapse envelope keeps the producer's id"
        );
        assert_eq!(v["event_timestamp"], "2026-04-14T09:54:45.040Z");
    }
}
