//! Hookline's own events (`hookline.*`), published to the events topic so tenants subscribe
//! to them like any other type.
//!
//! - `hookline.delivery.exhausted`: a delivery was dead-lettered (retries exhausted, a final
//!   failure, 410 Gone, its subscription gone or disabled).
//! - `hookline.subscription.disabled`: Hookline disabled a subscription (410 Gone, or every
//!   attempt failing for `auto_disable_after`).
//! - `hookline.delivery.recovered`: a replayed delivery reached its endpoint.
//!
//! Each has a stable id (UUID v5 of what it is about), so a repeat of the same fact carries
//! the same id and a receiver's dedupe works. Hookline does not report on its own reports: a
//! `hookline.*` delivery that is dead-lettered raises no `hookline.delivery.exhausted` (an
//! endpoint that fails would otherwise feed itself).

use hookline_proto::v1::{DeliveryJob, Event};
use serde_json::{Value, json};

use crate::time_fmt::rfc3339_millis;

pub const DELIVERY_EXHAUSTED: &str = "hookline.delivery.exhausted";
pub const SUBSCRIPTION_DISABLED: &str = "hookline.subscription.disabled";
pub const DELIVERY_RECOVERED: &str = "hookline.delivery.recovered";

/// Every operational event type, for the catalog.
pub const TYPES: [&str; 3] = [
    DELIVERY_EXHAUSTED,
    SUBSCRIPTION_DISABLED,
    DELIVERY_RECOVERED,
];

/// Whether `event_type` is one of Hookline's own.
pub fn is_operational(event_type: &str) -> bool {
    event_type.starts_with("hookline.")
}

fn event(kind: &str, about: &str, tenant: &str, at_ms: i64, data: Value) -> Event {
    let name = format!("{kind}/{about}");
    Event {
        id: uuid::Uuid::new_v5(&crate::NAMESPACE, name.as_bytes()).to_string(),
        r#type: kind.to_owned(),
        time: rfc3339_millis(at_ms),
        tenant: tenant.to_owned(),
        metadata: [("source".to_owned(), "hookline".to_owned())].into(),
        data_json: data.to_string(),
        changed_fields_json: String::new(),
        application: None,
    }
}

/// What a dead-lettered delivery's event says; `None` for a `hookline.*` delivery.
pub struct Exhausted<'a> {
    pub job: &'a DeliveryJob,
    pub reason: &'a str,
    /// HTTP status of the last attempt; 0 when none answered.
    pub last_status: u32,
    pub at_ms: i64,
}

/// `hookline.delivery.exhausted`, unless the delivery is itself an operational event.
pub fn exhausted(e: &Exhausted<'_>) -> Option<Event> {
    let source = e.job.event.as_ref();
    let event_type = source.map(|s| s.r#type.as_str()).unwrap_or_default();
    if is_operational(event_type) {
        return None;
    }
    let data = json!({
        "deliveryId": e.job.delivery_id,
        "subscriptionId": e.job.subscription_id,
        "eventId": source.map(|s| s.id.as_str()).unwrap_or_default(),
        "eventType": event_type,
        "attempts": e.job.attempt,
        "lastStatus": (e.last_status != 0).then_some(e.last_status),
        "reason": e.reason,
        "deadLetteredAt": rfc3339_millis(e.at_ms),
    });
    // One per dead-lettering: a replayed delivery that is exhausted again reports again.
    let about = format!("{}/{}", e.job.delivery_id, e.at_ms);
    Some(event(
        DELIVERY_EXHAUSTED,
        &about,
        &e.job.tenant,
        e.at_ms,
        data,
    ))
}

/// `hookline.subscription.disabled`; `version` is the subscription's version once disabled.
pub fn subscription_disabled(
    subscription_id: &str,
    tenant: &str,
    version: u64,
    reason: &str,
    at_ms: i64,
) -> Event {
    let data = json!({
        "subscriptionId": subscription_id,
        "reason": reason,
        "disabledAt": rfc3339_millis(at_ms),
    });
    let about = format!("{subscription_id}/{version}");
    event(SUBSCRIPTION_DISABLED, &about, tenant, at_ms, data)
}

/// `hookline.delivery.recovered`: the replay `replay_id` of `job` was delivered.
pub fn delivery_recovered(job: &DeliveryJob, replay_id: &str, at_ms: i64) -> Option<Event> {
    let source = job.event.as_ref();
    let event_type = source.map(|s| s.r#type.as_str()).unwrap_or_default();
    if is_operational(event_type) {
        return None;
    }
    let data = json!({
        "deliveryId": job.delivery_id,
        "subscriptionId": job.subscription_id,
        "eventId": source.map(|s| s.id.as_str()).unwrap_or_default(),
        "eventType": event_type,
        "replayId": replay_id,
        "attempts": job.attempt,
        "recoveredAt": rfc3339_millis(at_ms),
    });
    let about = format!("{}/{replay_id}", job.delivery_id);
    Some(event(DELIVERY_RECOVERED, &about, &job.tenant, at_ms, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(event_type: &str) -> DeliveryJob {
        DeliveryJob {
            delivery_id: "d1".into(),
            subscription_id: "s1".into(),
            tenant: "t1".into(),
            event: Some(Event {
                id: "e1".into(),
                r#type: event_type.into(),
                ..Event::default()
            }),
            attempt: 4,
            ..DeliveryJob::default()
        }
    }

    #[test]
    fn exhausted_carries_the_delivery_and_a_stable_id() {
        let j = job("ACCOUNT.CREATED");
        let e = Exhausted {
            job: &j,
            reason: "retries exhausted",
            last_status: 503,
            at_ms: 1_700_000_000_000,
        };
        let a = exhausted(&e).expect("an event");
        let b = exhausted(&e).expect("an event");
        assert_eq!(a.id, b.id, "the same fact, the same id");
        assert_eq!(a.r#type, DELIVERY_EXHAUSTED);
        assert_eq!(a.tenant, "t1");
        let data: Value = serde_json::from_str(&a.data_json).expect("json");
        assert_eq!(data["deliveryId"], "d1");
        assert_eq!(data["eventType"], "ACCOUNT.CREATED");
        assert_eq!(data["attempts"], 4);
        assert_eq!(data["lastStatus"], 503);
        assert_eq!(a.time, "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn operational_deliveries_raise_no_operational_event() {
        let j = job(DELIVERY_EXHAUSTED);
        let e = Exhausted {
            job: &j,
            reason: "retries exhausted",
            last_status: 0,
            at_ms: 1,
        };
        assert!(exhausted(&e).is_none());
        assert!(delivery_recovered(&j, "r1", 1).is_none());
    }

    #[test]
    fn a_disable_per_version() {
        let a = subscription_disabled("s1", "t1", 3, "410", 1);
        let b = subscription_disabled("s1", "t1", 5, "410", 1);
        assert_ne!(a.id, b.id);
        assert_eq!(a.r#type, SUBSCRIPTION_DISABLED);
    }
}
