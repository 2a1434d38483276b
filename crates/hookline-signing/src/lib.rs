//! Signing and secret handling for webhook deliveries.
//!
//! - [`WebhookSecret`]: a signing key, with a masking `Debug`: `whsec_` + base64 (HMAC-SHA256,
//!   Standard Webhooks `v1`) or `whsk_` + base64 (ed25519, `v1a`, with its `whpk_` public key).
//! - [`sign`] / [`verify`] / [`verify_ed25519`]: Standard Webhooks signatures over
//!   `"{id}.{timestamp}.{body}"`.
//! - [`seal::MasterKey`]: AES-256-GCM sealing of secret values before they reach Kafka.
#![forbid(unsafe_code)]

pub mod seal;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
const SECRET_KEY_PREFIX: &str = "whsk_";
const PUBLIC_KEY_PREFIX: &str = "whpk_";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("secret must be `whsec_` or `whsk_` followed by base64")]
    BadSecretFormat,
    #[error("an ed25519 secret key must be 32 or 64 bytes (seed, or seed and public key)")]
    BadSecretKey,
    #[error("secret key must be 24 to 64 bytes, got {0}")]
    BadSecretLength(usize),
    #[error("no signature matched")]
    NoMatch,
    #[error("timestamp outside the tolerance")]
    TimestampOutOfTolerance,
    #[error("sealing failed: {0}")]
    Seal(&'static str),
}

/// How a secret signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HMAC-SHA256, Standard Webhooks `v1`, a `whsec_` secret.
    HmacSha256,
    /// Ed25519, Standard Webhooks `v1a`, a `whsk_` secret key and `whpk_` public key.
    Ed25519,
}

impl Scheme {
    /// The API's name of the scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::HmacSha256 => "hmac-sha256",
            Scheme::Ed25519 => "ed25519",
        }
    }
}

/// A signing key. `Debug` never shows the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Key,
}

#[derive(Clone)]
enum Key {
    Hmac(Vec<u8>),
    /// The 32-byte seed, the public key it gives, and the expanded key pair (made once: the
    /// expansion costs about as much as a signature).
    Ed25519 {
        seed: [u8; 32],
        public: [u8; 32],
        pair: std::sync::Arc<ring::signature::Ed25519KeyPair>,
    },
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Key::Hmac(a), Key::Hmac(b)) => a == b,
            (Key::Ed25519 { seed: a, .. }, Key::Ed25519 { seed: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for Key {}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(****)")
    }
}

impl WebhookSecret {
    /// A fresh random HMAC secret of 32 bytes.
    pub fn generate() -> Self {
        Self::generate_for(Scheme::HmacSha256)
    }

    /// A fresh random secret of `scheme`.
    pub fn generate_for(scheme: Scheme) -> Self {
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut bytes);
        match scheme {
            Scheme::HmacSha256 => Self {
                key: Key::Hmac(bytes.to_vec()),
            },
            Scheme::Ed25519 => Self::ed25519(bytes),
        }
    }

    fn ed25519(seed: [u8; 32]) -> Self {
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .expect("any 32 bytes are an ed25519 seed");
        let mut public = [0u8; 32];
        public.copy_from_slice(ring::signature::KeyPair::public_key(&pair).as_ref());
        Self {
            key: Key::Ed25519 {
                seed,
                public,
                pair: std::sync::Arc::new(pair),
            },
        }
    }

    /// Parses `whsec_<base64>` (a 24-64 byte key) or `whsk_<base64>` (an ed25519 seed, or
    /// seed and public key as libsodium writes them).
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        if let Some(b64) = text.strip_prefix(SECRET_KEY_PREFIX) {
            let bytes = B64.decode(b64).map_err(|_| SigningError::BadSecretFormat)?;
            let seed: [u8; 32] = bytes
                .get(..32)
                .and_then(|s| s.try_into().ok())
                .filter(|_| bytes.len() == 32 || bytes.len() == 64)
                .ok_or(SigningError::BadSecretKey)?;
            let secret = Self::ed25519(seed);
            if bytes.len() == 64 && secret.public_key_bytes() != Some(&bytes[32..]) {
                return Err(SigningError::BadSecretKey);
            }
            return Ok(secret);
        }
        let b64 = text
            .strip_prefix(PREFIX)
            .ok_or(SigningError::BadSecretFormat)?;
        let key = B64.decode(b64).map_err(|_| SigningError::BadSecretFormat)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SigningError::BadSecretLength(key.len()));
        }
        Ok(Self {
            key: Key::Hmac(key),
        })
    }

    pub fn scheme(&self) -> Scheme {
        match self.key {
            Key::Hmac(_) => Scheme::HmacSha256,
            Key::Ed25519 { .. } => Scheme::Ed25519,
        }
    }

    /// The text form (`whsec_...`, or `whsk_...` of seed and public key), to be shown to its
    /// owner exactly once.
    pub fn expose(&self) -> String {
        match &self.key {
            Key::Hmac(key) => format!("{PREFIX}{}", B64.encode(key)),
            Key::Ed25519 { seed, public, .. } => {
                let mut both = seed.to_vec();
                both.extend_from_slice(public);
                format!("{SECRET_KEY_PREFIX}{}", B64.encode(both))
            }
        }
    }

    fn public_key_bytes(&self) -> Option<&[u8]> {
        match &self.key {
            Key::Hmac(_) => None,
            Key::Ed25519 { public, .. } => Some(public),
        }
    }

    /// The `whpk_` public key receivers verify `v1a` signatures with; `None` for HMAC.
    pub fn public_key(&self) -> Option<String> {
        self.public_key_bytes()
            .map(|p| format!("{PUBLIC_KEY_PREFIX}{}", B64.encode(p)))
    }

    /// HMAC-SHA256 state over the Standard Webhooks signed content `"{id}.{timestamp}.{body}"`.
    fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key size");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// One signature of the header: `v1,<base64>` or `v1a,<base64>`.
    fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        match &self.key {
            Key::Hmac(key) => format!(
                "v1,{}",
                B64.encode(Self::mac(key, id, timestamp, body).finalize().into_bytes())
            ),
            Key::Ed25519 { pair, .. } => {
                let signed = signed_content(id, timestamp, body);
                format!("v1a,{}", B64.encode(pair.sign(&signed).as_ref()))
            }
        }
    }
}

/// The Standard Webhooks signed content: `"{id}.{timestamp}.{body}"`.
fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let ts = timestamp.to_string();
    let mut out = Vec::with_capacity(id.len() + ts.len() + body.len() + 2);
    out.extend_from_slice(id.as_bytes());
    out.push(b'.');
    out.extend_from_slice(ts.as_bytes());
    out.push(b'.');
    out.extend_from_slice(body);
    out
}

/// The `webhook-signature` header value: one `v1,<base64>` (HMAC) or `v1a,<base64>`
/// (ed25519) per secret, space-separated, so that during a rotation receivers holding either
/// the old or the new key verify.
pub fn sign(secrets: &[WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.signature(id, timestamp, body))
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
    let Key::Hmac(key) = &secret.key else {
        return Err(SigningError::NoMatch);
    };
    let mac = WebhookSecret::mac(key, id, timestamp, body);
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

/// Receiver-side check of the `v1a` (ed25519) signatures of a `webhook-signature` header
/// against a `whpk_` public key.
pub fn verify_ed25519(
    public_key: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> Result<(), SigningError> {
    let public = public_key
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .and_then(|b| B64.decode(b).ok())
        .ok_or(SigningError::BadSecretFormat)?;
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public);
    let signed = signed_content(id, timestamp, body);
    let matched = header
        .split_whitespace()
        .filter_map(|part| part.strip_prefix("v1a,"))
        .filter_map(|sig| B64.decode(sig).ok())
        .any(|sig| key.verify(&signed, &sig).is_ok());
    if matched {
        Ok(())
    } else {
        Err(SigningError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_keys_round_trip_and_sign_v1a_beside_v1() {
        let ed = WebhookSecret::generate_for(Scheme::Ed25519);
        assert_eq!(ed.scheme(), Scheme::Ed25519);
        let text = ed.expose();
        assert!(text.starts_with("whsk_"));
        assert_eq!(WebhookSecret::parse(&text).unwrap(), ed);
        let public = ed.public_key().unwrap();
        assert!(public.starts_with("whpk_"));
        // A rotation from HMAC to ed25519: both sign, each verifies with its own key.
        let hmac = WebhookSecret::generate();
        let header = sign(&[ed.clone(), hmac.clone()], ID, TS, BODY);
        assert!(
            header.starts_with("v1a,") && header.contains(" v1,"),
            "{header}"
        );
        verify_ed25519(&public, ID, TS, BODY, &header).unwrap();
        verify(&hmac, ID, TS, BODY, &header, TS, 300).unwrap();
        assert_eq!(
            verify_ed25519(&public, ID, TS, b"other", &header),
            Err(SigningError::NoMatch)
        );
        let other = WebhookSecret::generate_for(Scheme::Ed25519);
        assert_eq!(
            verify_ed25519(&other.public_key().unwrap(), ID, TS, BODY, &header),
            Err(SigningError::NoMatch)
        );
        // A seed alone parses to the same key; a mismatched public half is refused.
        let bytes = B64.decode(text.strip_prefix("whsk_").unwrap()).unwrap();
        let seed_only = format!("whsk_{}", B64.encode(&bytes[..32]));
        assert_eq!(WebhookSecret::parse(&seed_only).unwrap(), ed);
        let mut bad = bytes.clone();
        bad[40] ^= 1;
        assert_eq!(
            WebhookSecret::parse(&format!("whsk_{}", B64.encode(bad))),
            Err(SigningError::BadSecretKey)
        );
        assert!(format!("{ed:?}").contains("****"));
    }

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
