//! Sealing of secret values at rest: AES-256-GCM under a master key from configuration.
//! The key id travels with every sealed value so the master key can be rotated.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::SigningError;

/// A named AES-256 master key. `Debug` never shows the key.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}, ****)", self.id)
    }
}

/// A sealed value: what is written to Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl MasterKey {
    /// `key_b64` is 32 bytes in standard base64.
    pub fn from_base64(id: &str, key_b64: &str) -> Result<Self, SigningError> {
        let key = B64
            .decode(key_b64.trim())
            .map_err(|_| SigningError::Seal("master key is not base64"))?;
        if key.len() != 32 {
            return Err(SigningError::Seal("master key must be 32 bytes"));
        }
        if id.is_empty() {
            return Err(SigningError::Seal("master key id must not be empty"));
        }
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| SigningError::Seal("bad key"))?;
        Ok(Self {
            id: id.to_owned(),
            cipher,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext`, binding it to `context` (e.g. "tenant/name") so a sealed value
    /// cannot be replayed under another name.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Sealed, SigningError> {
        let mut nonce = [0u8; 12];
        rand::Rng::fill(&mut rand::thread_rng(), &mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SigningError::Seal("encryption failed"))?;
        Ok(Sealed {
            key_id: self.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<Vec<u8>, SigningError> {
        if sealed.key_id != self.id {
            return Err(SigningError::Seal("sealed under another master key"));
        }
        if sealed.nonce.len() != 12 {
            return Err(SigningError::Seal("bad nonce"));
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SigningError::Seal("decryption failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_base64("k1", &B64.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn seal_round_trips_and_hides_plaintext() {
        let k = key();
        let sealed = k.seal(b"whsec_plain", "t/n").unwrap();
        assert!(!sealed.ciphertext.windows(11).any(|w| w == b"whsec_plain"));
        assert_eq!(k.open(&sealed, "t/n").unwrap(), b"whsec_plain");
    }

    #[test]
    fn context_and_key_id_are_bound() {
        let k = key();
        let sealed = k.seal(b"x", "t/n").unwrap();
        assert!(k.open(&sealed, "t/other").is_err());
        let other = MasterKey::from_base64("k2", &B64.encode([7u8; 32])).unwrap();
        assert!(other.open(&sealed, "t/n").is_err());
    }

    #[test]
    fn rejects_bad_keys() {
        assert!(MasterKey::from_base64("k", "short").is_err());
        assert!(MasterKey::from_base64("", &B64.encode([1u8; 32])).is_err());
        assert_eq!(format!("{:?}", key()), "MasterKey(k1, ****)");
    }
}
