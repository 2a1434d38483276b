//! The shared state every service reads: subscriptions and secrets, as rebuilt from their
//! compacted topics.
//!
//! - [`subscriptions`] / [`secrets`]: start a [`TopicView`] over each topic.
//! - [`secret_key`]: the record key of a secret, `tenant/name`.
//! - [`SecretBox`]: seals new secret values and opens the versions that sign a delivery.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hookline_config::Config;
use hookline_kafka::KafkaError;
use hookline_kafka::rdkafka::Message as _;
use hookline_kafka::view::{TopicView, Update};
use hookline_proto::v1::{CustomHeader, Secret, SecretVersion, Subscription};
use hookline_signing::WebhookSecret;
use hookline_signing::seal::{MasterKey, Sealed};

pub type SubscriptionView = TopicView<Subscription>;
pub type SecretView = TopicView<Secret>;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("master key: {0}")]
    MasterKey(#[from] hookline_signing::SigningError),
}

fn decode<M: hookline_proto::Message + Default>(
    msg: &hookline_kafka::rdkafka::message::BorrowedMessage<'_>,
) -> Update<M> {
    let Some(key) = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
        return Update::Skip;
    };
    match msg.payload() {
        None => Update::Delete(key),
        Some(bytes) => match M::decode(bytes) {
            Ok(v) => Update::Upsert(key, v),
            Err(e) => {
                tracing::warn!(topic = msg.topic(), offset = msg.offset(), error = %e, "undecodable state record skipped");
                Update::Skip
            }
        },
    }
}

/// Subscriptions by id, kept current from the compacted topic.
pub fn subscriptions(config: &Config) -> Result<SubscriptionView, KafkaError> {
    TopicView::start(config, &config.topic_subscriptions, decode::<Subscription>)
}

/// Secrets by `tenant/name`, kept current from the compacted topic.
pub fn secrets(config: &Config) -> Result<SecretView, KafkaError> {
    TopicView::start(config, &config.topic_secrets, decode::<Secret>)
}

pub fn secret_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

/// Seals and opens secret values with the configured master key.
///
/// Opened signing secrets are kept (per secret record, at most [`OPENED_MAX`] records) so a
/// delivery does not decrypt and parse them again: an ed25519 key's expansion costs about as
/// much as a signature. Opened custom headers are kept the same way, per subscription version.
#[derive(Clone)]
pub struct SecretBox {
    master: MasterKey,
    opened: Arc<Mutex<HashMap<OpenedKey, Opened>>>,
    headers: Arc<Mutex<HashMap<HeadersKey, OpenedHeaders>>>,
}

/// A subscription (`tenant/id`) and the nonces of its sealed header values.
type HeadersKey = (String, Vec<u8>);

/// A subscription's custom headers with their values opened, in order.
pub type OpenedHeaders = Arc<[(String, String)]>;

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

/// A secret record as it was opened: its key, when it last changed and how many versions.
type OpenedKey = (String, i64, usize);

/// A record's versions opened, each with when it stops signing.
type Opened = Vec<(Option<i64>, WebhookSecret)>;

/// How many secret records [`SecretBox`] keeps opened; past it, it starts over.
pub const OPENED_MAX: usize = 4096;

impl SecretBox {
    pub fn from_config(config: &Config) -> Result<Self, StateError> {
        Ok(Self {
            master: MasterKey::from_base64(&config.master_key_id, &config.master_key)?,
            opened: Arc::default(),
            headers: Arc::default(),
        })
    }

    /// A new sealed version holding `secret`.
    pub fn seal(
        &self,
        tenant: &str,
        name: &str,
        secret: &WebhookSecret,
        now_ms: i64,
    ) -> Result<SecretVersion, StateError> {
        let sealed = self
            .master
            .seal(secret.expose().as_bytes(), &secret_key(tenant, name))?;
        Ok(SecretVersion {
            key_id: sealed.key_id,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
            created_at_ms: now_ms,
            expires_at_ms: None,
            public_key: secret.public_key().unwrap_or_default(),
        })
    }

    /// Custom header `name` of subscription `subscription_id` with `value` sealed.
    pub fn seal_header(
        &self,
        tenant: &str,
        subscription_id: &str,
        name: &str,
        value: &str,
    ) -> Result<CustomHeader, StateError> {
        let sealed = self.master.seal(
            value.as_bytes(),
            &header_context(tenant, subscription_id, name),
        )?;
        Ok(CustomHeader {
            name: name.to_owned(),
            key_id: sealed.key_id,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
        })
    }

    /// The custom headers of `sub` with their values opened, in order, opened once per
    /// set of sealed values (at most [`OPENED_MAX`] subscriptions kept). A header that cannot be
    /// opened (sealed under another master key, or moved from another subscription) is left
    /// out, with a warning naming it but never its value.
    pub fn open_headers(&self, sub: &Subscription) -> OpenedHeaders {
        if sub.headers.is_empty() {
            return Arc::new([]);
        }
        // Every sealing draws a fresh nonce: the nonces name this set of values exactly.
        let nonces = sub.headers.iter().flat_map(|h| h.nonce.iter().copied());
        let key = (secret_key(&sub.tenant, &sub.id), nonces.collect());
        let mut cache = self.headers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = cache.get(&key) {
            return h.clone();
        }
        if cache.len() >= OPENED_MAX {
            cache.clear();
        }
        let opened: OpenedHeaders = self.open_headers_now(sub).into();
        cache.insert(key, opened.clone());
        opened
    }

    fn open_headers_now(&self, sub: &Subscription) -> Vec<(String, String)> {
        sub.headers
            .iter()
            .filter_map(|h| {
                let sealed = Sealed {
                    key_id: h.key_id.clone(),
                    nonce: h.nonce.clone(),
                    ciphertext: h.ciphertext.clone(),
                };
                let opened = self
                    .master
                    .open(&sealed, &header_context(&sub.tenant, &sub.id, &h.name))
                    .ok()
                    .and_then(|v| String::from_utf8(v).ok());
                if opened.is_none() {
                    tracing::warn!(subscription_id = %sub.id, header = %h.name, "a custom header cannot be opened; sent without it");
                }
                Some((h.name.clone(), opened?))
            })
            .collect()
    }

    /// Every version of `secret` that still signs at `now_ms`, newest first. Versions that
    /// cannot be opened are logged and left out.
    pub fn signing_secrets(&self, secret: &Secret, now_ms: i64) -> Vec<WebhookSecret> {
        let context = secret_key(&secret.tenant, &secret.name);
        let key = (context, secret.updated_at_ms, secret.versions.len());
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if !opened.contains_key(&key) {
            if opened.len() >= OPENED_MAX {
                opened.clear();
            }
            let versions = self.open_versions(secret, &key.0);
            opened.insert(key.clone(), versions);
        }
        opened[&key]
            .iter()
            .filter(|(expires, _)| expires.is_none_or(|t| t > now_ms))
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Every version of `secret` opened, with when it stops signing.
    fn open_versions(&self, secret: &Secret, context: &str) -> Opened {
        secret
            .versions
            .iter()
            .filter_map(|v| {
                let sealed = Sealed {
                    key_id: v.key_id.clone(),
                    nonce: v.nonce.clone(),
                    ciphertext: v.ciphertext.clone(),
                };
                let opened = self.master.open(&sealed, context).ok()?;
                let parsed = WebhookSecret::parse(std::str::from_utf8(&opened).ok()?).ok()?;
                Some((v.expires_at_ms, parsed))
            })
            .collect()
    }
}

/// The associated data of a sealed header value. `:` is in no tenant id, so it never equals
/// a secret's ("tenant/name").
fn header_context(tenant: &str, subscription_id: &str, name: &str) -> String {
    format!("header:{tenant}/{subscription_id}/{name}")
}

/// Encodes a state record for producing.
pub fn encode<M: hookline_proto::Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_box() -> SecretBox {
        let config = Config {
            // 32 bytes of 7, base64.
            master_key: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into(),
            ..Config::default()
        };
        SecretBox::from_config(&config).unwrap()
    }

    fn with_headers(b: &SecretBox, values: &[(&str, &str)]) -> Subscription {
        let mut sub = Subscription {
            id: "s1".into(),
            tenant: "t1".into(),
            ..Subscription::default()
        };
        sub.headers = values
            .iter()
            .map(|(n, v)| b.seal_header("t1", "s1", n, v).unwrap())
            .collect();
        sub
    }

    #[test]
    fn custom_headers_are_opened_once_per_set_of_sealed_values() {
        let b = secret_box();
        let sub = with_headers(&b, &[("x-api-key", "one"), ("x-b", "two")]);
        let first = b.open_headers(&sub);
        assert_eq!(
            &*first,
            &[
                ("x-api-key".to_owned(), "one".to_owned()),
                ("x-b".to_owned(), "two".to_owned())
            ]
        );
        assert!(Arc::ptr_eq(&first, &b.open_headers(&sub)), "kept");
        // A new value, even at the same moment, is a new seal: opened afresh.
        let changed = with_headers(&b, &[("x-api-key", "three")]);
        assert_eq!(
            &*b.open_headers(&changed),
            &[("x-api-key".to_owned(), "three".to_owned())]
        );
        assert!(b.open_headers(&Subscription::default()).is_empty());
    }
}
