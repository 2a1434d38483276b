//! Name uniqueness across API replicas, decided by log order on the compacted claims topic.
//!
//! A create first checks its synced views (a resource with the name exists: 409), then
//! writes a [`NameClaim`] keyed `kind/tenant/name`. Every claim on one name lands in one
//! partition, so every replica folds the same sequence: the first claim after the name was
//! free becomes the holder, later ones lose. The writer waits until its own view applied its
//! claim and wins only if it is then the holder; a loser answers 409 and writes nothing else.
//!
//! A release is a tombstone. It is written *before* the change that removes the resource or
//! its name, so there is never a moment when neither a claim nor a resource holds the name.
//! A holder with no resource behind it (its writer died between claim and write) may be
//! taken over by a claim made [`CLAIM_TTL`] later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hookline_config::Config;
use hookline_events::time_fmt::now_ms;
use hookline_kafka::KafkaError;
use hookline_kafka::rdkafka::Message as _;
use hookline_kafka::view::{TopicView, Update};
use hookline_proto::Message as _;
use hookline_proto::v1::NameClaim;
use hookline_runtime::ApiError;

use crate::store::Store;

/// A claim older than this with no resource behind it is considered abandoned. Longer than
/// any write of the create path can take (the producer gives up after 60 s).
pub const CLAIM_TTL: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Subscription,
    Secret,
    /// A Svix application's `uid`, per tenant.
    Application,
    /// A Svix endpoint's `uid`, per application (the name is `app id/uid`).
    Endpoint,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Subscription => "subscription",
            Kind::Secret => "secret",
            Kind::Application => "application",
            Kind::Endpoint => "endpoint",
        }
    }
}

pub fn key(kind: Kind, tenant: &str, name: &str) -> String {
    format!("{}/{tenant}/{name}", kind.as_str())
}

/// Whether `claim` takes the name from `holder`.
fn wins(holder: Option<&NameClaim>, claim: &NameClaim) -> bool {
    match holder {
        None => true,
        Some(h) if h.claim_id == claim.claim_id => true,
        Some(h) => claim
            .takeover_before_ms
            .is_some_and(|t| h.claimed_at_ms <= t),
    }
}

/// The claims view: each key maps to its current holder. The fold keeps its own copy of the
/// holders because a claim's outcome depends on the holder before it.
pub fn view(config: &Config) -> Result<TopicView<NameClaim>, KafkaError> {
    let holders: Mutex<HashMap<String, NameClaim>> = Mutex::default();
    TopicView::start(config, &config.topic_claims, move |msg| {
        let Some(key) = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return Update::Skip;
        };
        let mut holders = holders.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bytes) = msg.payload() else {
            holders.remove(&key);
            return Update::Delete(key);
        };
        let claim = match NameClaim::decode(bytes) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(offset = msg.offset(), error = %e, "undecodable claim skipped");
                return Update::Skip;
            }
        };
        if wins(holders.get(&key), &claim) {
            holders.insert(key.clone(), claim.clone());
            Update::Upsert(key, claim)
        } else {
            Update::Skip
        }
    })
}

/// A name this process holds; release it with [`release`] if the create does not complete.
#[derive(Debug)]
pub struct Held {
    pub key: String,
}

/// Claims `name` for `owner`. The caller has synced the views and found no resource with
/// the name. 409 (naming `field`) when another claim holds it.
pub async fn claim(
    store: &Store,
    kind: Kind,
    tenant: &str,
    name: &str,
    owner: &str,
    field: &str,
) -> Result<Held, ApiError> {
    let key = key(kind, tenant, name);
    let taken = || {
        ApiError::conflict(
            field,
            format!("a {} named {name:?} already exists", kind.as_str()),
        )
    };
    let now = now_ms();
    let ttl = CLAIM_TTL.as_millis() as i64;
    let takeover_before_ms = match store.claims.get(&key) {
        None => None,
        // Someone is creating this name right now (or just did).
        Some(h) if h.claimed_at_ms > now - ttl => return Err(taken()),
        // Held for long with no resource behind it: abandoned.
        Some(_) => Some(now - ttl),
    };
    let claim = NameClaim {
        claim_id: uuid::Uuid::new_v4().to_string(),
        owner: owner.to_owned(),
        claimed_at_ms: now,
        takeover_before_ms,
    };
    store.write_claim(&key, Some(&claim)).await?;
    let won = store
        .claims
        .get(&key)
        .is_some_and(|h| h.claim_id == claim.claim_id);
    if won { Ok(Held { key }) } else { Err(taken()) }
}

/// Releases a name: before the resource (or its name) goes away.
pub async fn release(store: &Store, kind: Kind, tenant: &str, name: &str) -> Result<(), ApiError> {
    store.write_claim(&key(kind, tenant, name), None).await
}

/// Gives back a name whose create did not complete; failures are only logged (the claim is
/// then taken over once [`CLAIM_TTL`] has passed).
pub async fn abandon(store: &Store, held: Held) {
    if let Err(e) = store.write_claim(&held.key, None).await {
        tracing::warn!(key = %held.key, error = %e.message, "could not release a name claim");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, at: i64, takeover: Option<i64>) -> NameClaim {
        NameClaim {
            claim_id: id.into(),
            owner: id.into(),
            claimed_at_ms: at,
            takeover_before_ms: takeover,
        }
    }

    #[test]
    fn first_claim_holds_later_ones_lose() {
        assert!(wins(None, &c("a", 1, None)));
        assert!(!wins(Some(&c("a", 1, None)), &c("b", 2, None)));
        assert!(wins(Some(&c("a", 1, None)), &c("a", 1, None)));
    }

    #[test]
    fn takeover_only_replaces_an_old_holder() {
        let old = c("a", 1_000, None);
        assert!(wins(Some(&old), &c("b", 200_000, Some(1_000))));
        assert!(!wins(Some(&old), &c("b", 200_000, Some(999))));
        // Two takeovers racing: the second finds the first as a fresh holder and loses.
        let first = c("b", 200_000, Some(80_000));
        assert!(!wins(Some(&first), &c("c", 200_001, Some(80_001))));
    }
}
