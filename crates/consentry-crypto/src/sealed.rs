//! Sealed vault records: one data key per subject, wrapped by a
//! key-encryption key (KEK) derived from the key ring (the scheme
//! cryptographers call envelope encryption; "envelope" in this workspace
//! means the canonical event, hence the module's name); vault records
//! sealed with AES-256-GCM under the subject's data key, with associated
//! data binding each to its token, domain and subject.
//!
//! Crypto-shredding is deleting a subject's wrapped data key: every record
//! sealed under it becomes unopenable, wherever a copy of it lies. Nothing
//! here stores anything; the vault's storage keeps `WrappedKey` and
//! `Sealed` bytes.

use crate::keyring::{KeyError, KeyRing, Secret, KEY_LEN};
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use rand::{RngCore, TryRngCore};
use std::fmt;
use zeroize::Zeroizing;

pub const NONCE_LEN: usize = 12;
const KEK_SALT: &[u8] = b"consentry/kek/v1";
const DEK_AAD: &[u8] = b"consentry/dek/v1";
const RECORD_AAD: &[u8] = b"consentry/vault-record/v1";
const WRAPPED_MAGIC: &[u8; 2] = b"W1";
const SEALED_MAGIC: &[u8; 2] = b"S1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Wrong key, wrong associated data, or altered bytes: GCM cannot tell
    /// which, and neither does this error.
    #[error("cannot open: wrong key or associated data, or altered ciphertext")]
    Open,
    #[error("sealed bytes are malformed")]
    Malformed,
}

/// A key-encryption key: wraps and unwraps subjects' data keys.
pub struct Kek {
    version: u32,
    cipher: Aes256Gcm,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// The KEK of one key version (HKDF-SHA256 from its master key).
    pub fn of_version(ring: &KeyRing, version: u32) -> Result<Kek, KeyError> {
        let key = ring
            .secret(version)?
            .derive(KEK_SALT, &version.to_be_bytes());
        Ok(Kek {
            version,
            cipher: Aes256Gcm::new_from_slice(key.as_ref()).expect("AES-256 takes 32-byte keys"),
        })
    }

    /// The KEK of the ring's active version (new data keys are wrapped
    /// under it).
    pub fn active(ring: &KeyRing) -> Result<Kek, KeyError> {
        Kek::of_version(ring, ring.active_version())
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Wraps a subject's data key; the subject is bound as associated data,
    /// so a wrapped key moved to another subject does not unwrap.
    pub fn wrap(&self, key: &DataKey, subject: &str) -> WrappedKey {
        let nonce = random_nonce();
        let aad = framed(&[DEK_AAD, subject.as_bytes(), &self.version.to_be_bytes()]);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &key.0 .0,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encrypts any message under 64 GiB");
        WrappedKey {
            kek_version: self.version,
            nonce,
            ciphertext,
        }
    }

    pub fn unwrap_key(&self, wrapped: &WrappedKey, subject: &str) -> Result<DataKey, SealError> {
        if wrapped.kek_version != self.version {
            return Err(SealError::Open);
        }
        let aad = framed(&[DEK_AAD, subject.as_bytes(), &self.version.to_be_bytes()]);
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    Nonce::from_slice(&wrapped.nonce),
                    Payload {
                        msg: &wrapped.ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| SealError::Open)?,
        );
        let mut key = Secret([0; KEY_LEN]);
        if plain.len() != KEY_LEN {
            return Err(SealError::Malformed);
        }
        key.0.copy_from_slice(&plain);
        Ok(DataKey(key))
    }
}

/// One subject's data key: random, zeroed on drop, never printed.
pub struct DataKey(Secret);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

/// What a vault record is bound to: opening it under any other token,
/// domain or subject fails.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub token: &'a str,
    pub domain: &'a str,
    pub subject: &'a str,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        framed(&[
            RECORD_AAD,
            self.token.as_bytes(),
            self.domain.as_bytes(),
            self.subject.as_bytes(),
        ])
    }
}

impl DataKey {
    pub fn generate() -> Result<DataKey, KeyError> {
        let mut key = Secret([0; KEY_LEN]);
        rand::rngs::OsRng
            .try_fill_bytes(&mut key.0)
            .map_err(|_| KeyError::Random)?;
        Ok(DataKey(key))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&self.0 .0).expect("AES-256 takes 32-byte keys")
    }

    /// Seals a vault record (an identity) under this key.
    pub fn seal(&self, plaintext: &[u8], binding: Binding<'_>) -> Sealed {
        let nonce = random_nonce();
        let ciphertext = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &binding.aad(),
                },
            )
            .expect("AES-GCM encrypts any message under 64 GiB");
        Sealed { nonce, ciphertext }
    }

    /// Opens a record sealed under this key for the same binding.
    pub fn open(
        &self,
        sealed: &Sealed,
        binding: Binding<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.cipher()
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &binding.aad(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }
}

/// A data key wrapped under a KEK version, as the vault stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub kek_version: u32,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl WrappedKey {
    pub fn to_bytes(&self) -> Vec<u8> {
        [
            &WRAPPED_MAGIC[..],
            &self.kek_version.to_be_bytes(),
            &self.nonce,
            &self.ciphertext,
        ]
        .concat()
    }

    pub fn from_bytes(b: &[u8]) -> Result<WrappedKey, SealError> {
        let rest = b.strip_prefix(WRAPPED_MAGIC).ok_or(SealError::Malformed)?;
        let version = rest.get(..4).ok_or(SealError::Malformed)?;
        let nonce = rest.get(4..4 + NONCE_LEN).ok_or(SealError::Malformed)?;
        let mut w = WrappedKey {
            kek_version: u32::from_be_bytes(version.try_into().map_err(|_| SealError::Malformed)?),
            nonce: [0; NONCE_LEN],
            ciphertext: rest[4 + NONCE_LEN..].to_vec(),
        };
        w.nonce.copy_from_slice(nonce);
        Ok(w)
    }
}

/// A sealed vault record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    pub fn to_bytes(&self) -> Vec<u8> {
        [&SEALED_MAGIC[..], &self.nonce, &self.ciphertext].concat()
    }

    pub fn from_bytes(b: &[u8]) -> Result<Sealed, SealError> {
        let rest = b.strip_prefix(SEALED_MAGIC).ok_or(SealError::Malformed)?;
        let nonce = rest.get(..NONCE_LEN).ok_or(SealError::Malformed)?;
        let mut s = Sealed {
            nonce: [0; NONCE_LEN],
            ciphertext: rest[NONCE_LEN..].to_vec(),
        };
        s.nonce.copy_from_slice(nonce);
        Ok(s)
    }
}

/// Random 96-bit nonces: each data key seals a handful of records and each
/// KEK wraps one key per subject, far below GCM's random-nonce bound.
fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

/// Length-prefixed parts, so no two part lists frame to the same bytes.
pub(crate) fn framed(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| 4 + p.len()).sum());
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Environment;

    fn binding<'a>(token: &'a str, subject: &'a str) -> Binding<'a> {
        Binding {
            token,
            domain: "trial",
            subject,
        }
    }

    #[test]
    fn sealed_records_open_only_for_their_binding_and_key() {
        let key = DataKey::generate().unwrap();
        let b = binding("tok:trial:r1:aaaa", "subj-1");
        let sealed = key.seal(b"MRN-SECRET-1", b);
        assert!(!sealed.ciphertext.windows(12).any(|w| w == b"MRN-SECRET-1"));
        assert_eq!(&key.open(&sealed, b).unwrap()[..], b"MRN-SECRET-1");
        // Another token, domain or subject: refused.
        for other in [
            binding("tok:trial:r1:bbbb", "subj-1"),
            binding("tok:trial:r1:aaaa", "subj-2"),
            Binding { domain: "crm", ..b },
        ] {
            assert_eq!(key.open(&sealed, other), Err(SealError::Open));
        }
        // Another key: refused.
        let other_key = DataKey::generate().unwrap();
        assert_eq!(other_key.open(&sealed, b), Err(SealError::Open));
        // Altered bytes: refused.
        let mut bytes = sealed.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let altered = Sealed::from_bytes(&bytes).unwrap();
        assert_eq!(key.open(&altered, b), Err(SealError::Open));
        assert_eq!(Sealed::from_bytes(&sealed.to_bytes()).unwrap(), sealed);
        assert_eq!(Sealed::from_bytes(b"S1short"), Err(SealError::Malformed));
        assert_eq!(Sealed::from_bytes(b"XX"), Err(SealError::Malformed));
    }

    #[test]
    fn wrapped_keys_unwrap_for_their_subject_and_version_and_shredding_loses_records() {
        let mut ring = KeyRing::generate(Environment::NonProduction).unwrap();
        let kek1 = Kek::active(&ring).unwrap();
        let key = DataKey::generate().unwrap();
        let wrapped = WrappedKey::from_bytes(&kek1.wrap(&key, "subj-1").to_bytes()).unwrap();
        let b = binding("tok:trial:r1:aaaa", "subj-1");
        let sealed = key.seal(b"identity", b);

        // A restart: the same ring unwraps the same key, which opens the record.
        let again = kek1.unwrap_key(&wrapped, "subj-1").unwrap();
        assert_eq!(&again.open(&sealed, b).unwrap()[..], b"identity");
        // Bound to the subject.
        assert_eq!(
            kek1.unwrap_key(&wrapped, "subj-2").unwrap_err(),
            SealError::Open
        );

        // Rotation: new keys wrap under v2, v1-wrapped keys still unwrap with v1.
        ring.rotate().unwrap();
        let kek2 = Kek::active(&ring).unwrap();
        assert_eq!(kek2.version(), 2);
        assert_eq!(
            kek2.unwrap_key(&wrapped, "subj-1").unwrap_err(),
            SealError::Open
        );
        let kek1_again = Kek::of_version(&ring, 1).unwrap();
        assert!(kek1_again.unwrap_key(&wrapped, "subj-1").is_ok());
        ring.retire(1).unwrap();
        assert!(matches!(
            Kek::of_version(&ring, 1),
            Err(KeyError::Retired(1))
        ));

        // Shredding: without the wrapped key, no key opens the record.
        drop(wrapped);
        let fresh = DataKey::generate().unwrap();
        assert_eq!(fresh.open(&sealed, b), Err(SealError::Open));
        assert_eq!(format!("{fresh:?}"), "DataKey([redacted])");
        assert_eq!(format!("{kek2:?}"), "Kek { version: 2, .. }");
    }
}
