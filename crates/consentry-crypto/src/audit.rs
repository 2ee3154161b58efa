//! Keys of the audit trail: the chain key, whose HMAC-SHA256 makes each
//! audit record's `hash` (so a record cannot be altered or forged without
//! it), and the fingerprint key, whose HMAC of an input or output record's
//! bytes lets an auditor match a record to its audit entry without the
//! audit topic holding anything of its content.
//!
//! Both are derived once per usable key version with their own HKDF salt.
//! Writers use the active version; a verifier needs the versions the trail
//! was written under (a retired version's records are reported
//! unverifiable, never clean).

use crate::keyring::{KeyError, KeyRing};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::fmt;

const AUDIT_SALT: &[u8] = b"consentry/audit-key/v1";
/// Fingerprints are this many bytes of the HMAC (128 bits).
const FINGERPRINT_BYTES: usize = 16;

struct VersionKeys {
    chain: Hmac<Sha256>,
    fingerprint: Hmac<Sha256>,
}

/// The audit keys of every usable key version, derived once.
pub struct AuditKeys {
    active: u32,
    versions: BTreeMap<u32, VersionKeys>,
}

impl fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditKeys")
            .field("active", &self.active)
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AuditKeys {
    pub fn new(ring: &KeyRing) -> Result<AuditKeys, KeyError> {
        let key = |secret: &crate::keyring::Secret, version: u32, purpose: &[u8]| {
            let info = [purpose, b":", &version.to_be_bytes()].concat();
            let k = secret.derive(AUDIT_SALT, &info);
            <Hmac<Sha256> as Mac>::new_from_slice(k.as_ref())
                .expect("HMAC takes keys of any length")
        };
        let versions: BTreeMap<u32, VersionKeys> = ring
            .usable()
            .map(|(version, secret)| {
                (
                    version,
                    VersionKeys {
                        chain: key(secret, version, b"chain"),
                        fingerprint: key(secret, version, b"fingerprint"),
                    },
                )
            })
            .collect();
        let active = ring.active_version();
        if !versions.contains_key(&active) {
            return Err(KeyError::UnknownVersion(active));
        }
        Ok(AuditKeys { active, versions })
    }

    /// The version new records are hashed and fingerprinted under.
    pub fn active_version(&self) -> u32 {
        self.active
    }

    /// The chain MAC of `bytes` under `version`; `None` if that version is
    /// not usable (retired or unknown).
    pub fn chain_mac(&self, version: u32, bytes: &[u8]) -> Option<[u8; 32]> {
        let mut mac = self.versions.get(&version)?.chain.clone();
        mac.update(bytes);
        Some(mac.finalize().into_bytes().into())
    }

    /// The chain MAC under the active version.
    pub fn chain_mac_active(&self, bytes: &[u8]) -> [u8; 32] {
        // `versions` always holds the active version (checked in `new`).
        self.chain_mac(self.active, bytes).unwrap_or_default()
    }

    /// `v<version>:<hex>`: a keyed fingerprint of a record's bytes.
    pub fn fingerprint(&self, bytes: &[u8]) -> String {
        let Some(keys) = self.versions.get(&self.active) else {
            return String::new();
        };
        let mut mac = keys.fingerprint.clone();
        mac.update(bytes);
        let d = mac.finalize().into_bytes();
        format!("v{}:{}", self.active, hex::encode(&d[..FINGERPRINT_BYTES]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Environment;

    #[test]
    fn keys_differ_by_purpose_and_ring_and_version() {
        let mut ring = KeyRing::from_key(Environment::NonProduction, [7; 32]);
        let a = AuditKeys::new(&ring).unwrap();
        let other =
            AuditKeys::new(&KeyRing::from_key(Environment::NonProduction, [8; 32])).unwrap();
        assert_ne!(a.chain_mac_active(b"x"), other.chain_mac_active(b"x"));
        assert_eq!(a.chain_mac(1, b"x"), Some(a.chain_mac_active(b"x")));
        let fp = a.fingerprint(b"x");
        assert!(fp.starts_with("v1:") && fp.len() == 3 + 32, "{fp}");
        assert!(!hex::encode(a.chain_mac_active(b"x")).starts_with(&fp[3..]));
        ring.rotate().unwrap();
        let rotated = AuditKeys::new(&ring).unwrap();
        assert_eq!(rotated.active_version(), 2);
        assert_eq!(rotated.chain_mac(1, b"x"), a.chain_mac(1, b"x"));
        assert_ne!(rotated.chain_mac(2, b"x"), rotated.chain_mac(1, b"x"));
        ring.retire(1).unwrap();
        assert_eq!(AuditKeys::new(&ring).unwrap().chain_mac(1, b"x"), None);
    }
}
