//! Sealing quarantined payloads (issue 4): the quarantine topic holds a
//! record's payload only as AES-256-GCM ciphertext under a quarantine key,
//! next to a reason code and a path that are never PHI.
//!
//! The quarantine key is a vault key: it is derived, like the vault's KEKs,
//! from each usable master-key version with its own HKDF salt, so it
//! rotates with `consentry keys rotate` (new records are sealed under the
//! active version; older versions keep opening until retired, after which
//! their quarantine is unreadable: retention by retirement). Stages seal;
//! the only opener a person reaches is the vault's API, which authorizes
//! and audits every opening (`consentry quarantine show`).
//!
//! The associated data binds the ciphertext to its quarantine id, stage,
//! source position and reason, so a sealed payload moved under another
//! record's headers, or headers edited after the fact, do not open.

use crate::keyring::{KeyError, KeyRing};
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use rand::RngCore;
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

use crate::sealed::{framed, SealError, NONCE_LEN};
use consentry_core::headers::QuarantineHeaders;

const QUARANTINE_SALT: &[u8] = b"consentry/quarantine-key/v1";
const QUARANTINE_AAD: &[u8] = b"consentry/quarantine/v1";
const MAGIC: &[u8; 2] = b"Q1";
/// The largest payload a quarantine record holds: what fits, sealed and
/// with its headers, in the 8 MiB the runtime's producers send
/// (`message.max.bytes`), so every record a stage refuses as too large up
/// to that size is still held. A larger one is not held (the quarantine
/// record would fail its batch every time and halt the stage): it stays
/// at its source offset, which the quarantine record names. The vault's
/// API takes request bodies big enough to open any held payload.
pub const MAX_SEALED_PAYLOAD: usize = 8 * 1024 * 1024 - 64 * 1024;

/// `aes-256-gcm/v<key version>` goes in the quarantine record's `sealed`
/// header; this is its prefix.
pub const SEALED_HEADER_PREFIX: &str = "aes-256-gcm/v";

/// What a sealed payload is bound to: its quarantine record's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineContext<'a> {
    /// The quarantine id (the audit id of the decision to quarantine).
    pub id: &'a str,
    pub stage: &'a str,
    pub source_topic: &'a str,
    pub source_partition: i32,
    pub source_offset: i64,
    pub reason: &'a str,
}

impl<'a> QuarantineContext<'a> {
    /// The context a quarantine record's headers name: the seal binds
    /// exactly what the headers say.
    pub fn of(headers: &'a QuarantineHeaders) -> QuarantineContext<'a> {
        QuarantineContext {
            id: &headers.quarantine_id,
            stage: headers.identity.stage.as_str(),
            source_topic: &headers.source_topic,
            source_partition: headers.source_partition,
            source_offset: headers.source_offset,
            reason: headers.reason_code.as_str(),
        }
    }

    fn aad(&self) -> Vec<u8> {
        framed(&[
            QUARANTINE_AAD,
            self.id.as_bytes(),
            self.stage.as_bytes(),
            self.source_topic.as_bytes(),
            &self.source_partition.to_be_bytes(),
            &self.source_offset.to_be_bytes(),
            self.reason.as_bytes(),
        ])
    }
}

/// The quarantine keys of every usable key version, derived once (a
/// cipher per version, never per record).
pub struct QuarantineKeys {
    active: u32,
    ciphers: BTreeMap<u32, Aes256Gcm>,
}

impl fmt::Debug for QuarantineKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuarantineKeys")
            .field("active", &self.active)
            .field("versions", &self.ciphers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl QuarantineKeys {
    pub fn new(ring: &KeyRing) -> Result<QuarantineKeys, KeyError> {
        let ciphers = ring
            .usable()
            .map(|(version, secret)| {
                let key = secret.derive(QUARANTINE_SALT, &version.to_be_bytes());
                let cipher =
                    Aes256Gcm::new_from_slice(key.as_ref()).expect("AES-256 takes 32-byte keys");
                (version, cipher)
            })
            .collect::<BTreeMap<_, _>>();
        let active = ring.active_version();
        if !ciphers.contains_key(&active) {
            return Err(KeyError::UnknownVersion(active));
        }
        Ok(QuarantineKeys { active, ciphers })
    }

    /// The key version new payloads are sealed under.
    pub fn active_version(&self) -> u32 {
        self.active
    }

    /// The `sealed` header value of a payload sealed now.
    pub fn header(&self) -> String {
        format!("{SEALED_HEADER_PREFIX}{}", self.active)
    }

    /// `Q1`, key version (4 bytes), nonce, ciphertext and tag.
    pub fn seal(&self, context: &QuarantineContext<'_>, payload: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = &self.ciphers[&self.active];
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: payload,
                    aad: &context.aad(),
                },
            )
            .expect("AES-GCM encrypts any message under 64 GiB");
        [
            &MAGIC[..],
            &self.active.to_be_bytes(),
            &nonce,
            ciphertext.as_slice(),
        ]
        .concat()
    }

    /// Opens a payload sealed for `context`. A retired or unknown key
    /// version is `KeyError`; altered bytes or context, `SealError::Open`.
    pub fn open(
        &self,
        context: &QuarantineContext<'_>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let rest = sealed.strip_prefix(MAGIC).ok_or(SealError::Malformed)?;
        let version = rest
            .get(..4)
            .and_then(|v| v.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or(SealError::Malformed)?;
        let nonce = rest.get(4..4 + NONCE_LEN).ok_or(SealError::Malformed)?;
        let cipher = self
            .ciphers
            .get(&version)
            .ok_or(KeyError::Retired(version))?;
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: &rest[4 + NONCE_LEN..],
                    aad: &context.aad(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Seal(SealError::Open))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Environment;

    fn ctx(id: &str) -> QuarantineContext<'_> {
        QuarantineContext {
            id,
            stage: "normalize",
            source_topic: "ehr.hl7v2",
            source_partition: 2,
            source_offset: 41,
            reason: "schema_drift",
        }
    }

    const PAYLOAD: &[u8] = b"MSH|^~\\&|EHR|GEN|||20261124||ADT^A01|X1|P|2.5\rPID|1||MRN7^^^GEN";

    #[test]
    fn seals_opens_and_hides_the_payload() {
        let ring = KeyRing::generate(Environment::NonProduction).unwrap();
        let keys = QuarantineKeys::new(&ring).unwrap();
        let sealed = keys.seal(&ctx("q1"), PAYLOAD);
        assert!(sealed.starts_with(b"Q1"));
        assert!(!sealed.windows(4).any(|w| w == b"MRN7"));
        assert_eq!(keys.open(&ctx("q1"), &sealed).unwrap().as_slice(), PAYLOAD);
        // Two seals of one payload differ (random nonces).
        assert_ne!(sealed, keys.seal(&ctx("q1"), PAYLOAD));
        assert_eq!(keys.header(), "aes-256-gcm/v1");
    }

    #[test]
    fn any_other_context_or_a_flipped_bit_does_not_open() {
        let ring = KeyRing::generate(Environment::NonProduction).unwrap();
        let keys = QuarantineKeys::new(&ring).unwrap();
        let sealed = keys.seal(&ctx("q1"), PAYLOAD);
        let base = ctx("q1");
        for other in [
            ctx("q2"),
            QuarantineContext {
                stage: "route",
                ..base
            },
            QuarantineContext {
                source_topic: "ehr.fhir",
                ..base
            },
            QuarantineContext {
                source_partition: 3,
                ..base
            },
            QuarantineContext {
                source_offset: 42,
                ..base
            },
            QuarantineContext {
                reason: "malformed",
                ..base
            },
        ] {
            assert!(matches!(
                keys.open(&other, &sealed),
                Err(OpenError::Seal(SealError::Open))
            ));
        }
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(keys.open(&base, &bad).is_err(), "bit flip at {i} opened");
        }
        assert!(matches!(
            keys.open(&base, b"Q1"),
            Err(OpenError::Seal(SealError::Malformed))
        ));
        // Another ring's key does not open it.
        let stranger =
            QuarantineKeys::new(&KeyRing::generate(Environment::NonProduction).unwrap()).unwrap();
        assert!(stranger.open(&base, &sealed).is_err());
    }

    #[test]
    fn rotation_keeps_old_payloads_until_their_version_retires() {
        let mut ring = KeyRing::generate(Environment::NonProduction).unwrap();
        let old = QuarantineKeys::new(&ring)
            .unwrap()
            .seal(&ctx("q1"), PAYLOAD);
        ring.rotate().unwrap();
        let keys = QuarantineKeys::new(&ring).unwrap();
        assert_eq!(keys.header(), "aes-256-gcm/v2");
        let new = keys.seal(&ctx("q1"), PAYLOAD);
        assert_eq!(&new[2..6], &2u32.to_be_bytes());
        assert_eq!(keys.open(&ctx("q1"), &old).unwrap().as_slice(), PAYLOAD);
        ring.retire(1).unwrap();
        let keys = QuarantineKeys::new(&ring).unwrap();
        assert!(matches!(
            keys.open(&ctx("q1"), &old),
            Err(OpenError::Key(KeyError::Retired(1)))
        ));
        assert_eq!(keys.open(&ctx("q1"), &new).unwrap().as_slice(), PAYLOAD);
    }
}
