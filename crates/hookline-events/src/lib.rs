//! The data contracts between producers, Hookline and receivers.
//!
//! - [`decode_event`]: an `events` record (protobuf or JSON, by `content-type`) into [`Event`].
//! - [`decode_balance`]: a `balances` record into [`BalanceRow`], the balance kept exact.
//! - [`delivery_id`]: the stable id of an (event, subscription) pair; [`body_event_id`]: the
//!   UUID a Synctera body carries for an event id of any form.
//! - [`payload`]: the Fynapse envelope and the Synctera `WebhookRequest` bodies.
//! - [`operational`]: Hookline's own `hookline.*` events.
#![forbid(unsafe_code)]

pub mod operational;
pub mod payload;
mod record;
pub mod time_fmt;

pub use hookline_proto::v1::{BalanceRow, Event};
pub use record::{
    CONTENT_TYPE_HEADER, CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, DecodeError, RecordPosition,
    balance_key, decode_balance, decode_event, is_decimal, validate_event_type,
};

/// Namespace of every id Hookline derives (UUID v5).
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6b0e_9a4c_3f21_5d8e_a1b7_24c9_0f3e_8d51);

/// The delivery id of an (event, subscription) pair: the same on every retry, redelivery and
/// replay, sent as `Idempotency-Key` and `webhook-id`.
pub fn delivery_id(event_id: &str, subscription_id: &str) -> String {
    let name = format!("delivery/{event_id}/{subscription_id}");
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

/// The `id` a Synctera `WebhookRequest` carries (a `string<uuid>` in the seed): the event's
/// id when it is a UUID (in its lowercase hyphenated form), else the UUIDv5 of
/// `event-id/{id}` under Hookline's namespace, so the same on every attempt and replay.
pub fn body_event_id(event_id: &str) -> String {
    match uuid::Uuid::try_parse(event_id) {
        Ok(u) => u.hyphenated().to_string(),
        Err(_) => {
            let name = format!("event-id/{event_id}");
            uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
        }
    }
}

/// The id of an event whose producer gave none: a function of where the record sits.
pub fn derived_event_id(topic: &str, partition: i32, offset: i64) -> String {
    let name = format!("event/{topic}/{partition}/{offset}");
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        assert_eq!(delivery_id("e1", "s1"), delivery_id("e1", "s1"));
        assert_ne!(delivery_id("e1", "s1"), delivery_id("e1", "s2"));
        assert_ne!(delivery_id("e1", "s1"), delivery_id("e2", "s1"));
        assert_ne!(derived_event_id("t", 0, 1), derived_event_id("t", 1, 0));
    }

    #[test]
    fn body_ids_are_uuids_and_stable() {
        let u = "a3efc743-ac6c-463b-aa19-4dd9c45b5b96";
        assert_eq!(body_event_id(u), u);
        assert_eq!(body_event_id(&u.to_uppercase()), u);
        assert_eq!(body_event_id("a3efc743ac6c463baa194dd9c45b5b96"), u);
        let derived = body_event_id("order-42");
        assert_eq!(derived, body_event_id("order-42"));
        assert_ne!(derived, body_event_id("order-43"));
        let parsed = uuid::Uuid::parse_str(&derived).unwrap();
        assert_eq!(parsed.get_version_num(), 5);
        // The documented mapping, recomputable by anyone from the namespace.
        assert_eq!(
            derived,
            uuid::Uuid::new_v5(
                &uuid::uuid!("6b0e9a4c-3f21-5d8e-a1b7-24c90f3e8d51"),
                b"event-id/order-42"
            )
            .to_string()
        );
    }
}
