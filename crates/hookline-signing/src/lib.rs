//! Signing and secret handling for webhook deliveries.
//!
//! - [`WebhookSecret`]: a `whsec_` + base64 signing key, with a masking `Debug`.
//! - [`sign`] / [`verify`]: Standard Webhooks v1 signatures over `"{id}.{timestamp}.{body}"`.
//! - [`seal::MasterKey`]: AES-256-GCM sealing of secret values before they reach Kafka.
#![forbid(unsafe_code)]

pub mod seal;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("secret must start with `whsec_` followed by base64")]
    BadSecretFormat,
    #[error("secret key must be 24 to 64 bytes, got {0}")]
    BadSecretLength(usize),
    #[error("no signature matched")]
    NoMatch,
    #[error("timestamp outside the tolerance")]
    TimestampOutOfTolerance,
    #[error("sealing failed: {0}")]
    Seal(&'static str),
}

/// A signing key. `Debug` never shows the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(****)")
    }
}

impl WebhookSecret {
    /// A fresh random secret of 32 bytes.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), key.as_mut_slice());
        Self { key }
    }

    /// Parses `whsec_<base64>`; the key must be 24-64 bytes.
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        let b64 = text
            .strip_prefix(PREFIX)
            .ok_or(SigningError::BadSecretFormat)?;
        let key = B64.decode(b64).map_err(|_| SigningError::BadSecretFormat)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SigningError::BadSecretLength(key.len()));
        }
        Ok(Self { key })
    }

    /// The `whsec_...` text form, to be shown to its owner exactly once.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", B64.encode(&self.key))
    }

    /// HMAC-SHA256 state over the Standard Webhooks signed content `"{id}.{timestamp}.{body}"`.
    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// The `webhook-signature` header value: one `v1,<base64>` per secret, space-separated,
/// so that during a rotation receivers holding either the old or the new secret verify.
pub fn sign(secrets: &[WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| {
            format!(
                "v1,{}",
                B64.encode(s.mac(id, timestamp, body).finalize().into_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Receiver-side check of a `webhook-signature` header; `now` and `tolerance_secs` bound replays.
pub fn verify(
    secret: &WebhookSecret,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SigningError> {
    if (now - timestamp).abs() > tolerance_secs {
        return Err(SigningError::TimestampOutOfTolerance);
    }
    let mac = secret.mac(id, timestamp, body);
    for part in header.split_whitespace() {
        let Some(sig) = part.strip_prefix("v1,") else {
            continue;
        };
        let Ok(bytes) = B64.decode(sig) else { continue };
        // Constant-time comparison by the MAC's own verifier.
        if mac.clone().verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err(SigningError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published Standard Webhooks test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(sign(std::slice::from_ref(&s), ID, TS, BODY), EXPECTED);
        verify(&s, ID, TS, BODY, EXPECTED, TS, 300).unwrap();
    }

    #[test]
    fn rotation_signs_with_every_secret_and_either_verifies() {
        let old = WebhookSecret::generate();
        let new = WebhookSecret::generate();
        let header = sign(&[new.clone(), old.clone()], "id", 5, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        verify(&old, "id", 5, b"{}", &header, 5, 0).unwrap();
        verify(&new, "id", 5, b"{}", &header, 5, 0).unwrap();
        let other = WebhookSecret::generate();
        assert_eq!(
            verify(&other, "id", 5, b"{}", &header, 5, 0),
            Err(SigningError::NoMatch)
        );
    }

    #[test]
    fn tampering_and_stale_timestamps_fail() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(
            verify(&s, ID, TS, b"{}", EXPECTED, TS, 300),
            Err(SigningError::NoMatch)
        );
        assert_eq!(
            verify(&s, ID, TS, BODY, EXPECTED, TS + 301, 300),
            Err(SigningError::TimestampOutOfTolerance)
        );
    }

    #[test]
    fn secret_text_round_trips_and_debug_masks() {
        let s = WebhookSecret::generate();
        let text = s.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(&text).unwrap(), s);
        assert_eq!(format!("{s:?}"), "WebhookSecret(****)");
        assert!(WebhookSecret::parse("nope").is_err());
        assert_eq!(
            WebhookSecret::parse("whsec_AAAA"),
            Err(SigningError::BadSecretLength(3))
        );
    }
}
