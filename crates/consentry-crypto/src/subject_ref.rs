//! How the vault's store names a subject: an HMAC-SHA256 of the subject
//! key under a key derived per key version (`consentry/vault-subject/v1`).
//! The subject key itself is an unkeyed digest of the subject's identifier
//! (so every stage computes the same one); stored as is, a stolen copy of
//! the vault could be searched by hashing candidate MRNs. Keyed, it cannot
//! without the key ring.
//!
//! Rows are written under the active version's reference and found under
//! any usable version's, so rotation re-keys nothing; a retired version's
//! rows are unreachable, like the data keys its KEK wrapped.

use crate::keyring::{KeyError, KeyRing};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::fmt;

const SALT: &[u8] = b"consentry/vault-subject/v1";

pub struct SubjectRefs {
    active: u32,
    versions: BTreeMap<u32, Hmac<Sha256>>,
}

impl fmt::Debug for SubjectRefs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectRefs")
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl SubjectRefs {
    pub fn new(ring: &KeyRing) -> Result<SubjectRefs, KeyError> {
        let versions: BTreeMap<u32, Hmac<Sha256>> = ring
            .usable()
            .map(|(version, secret)| {
                let k = secret.derive(SALT, &version.to_be_bytes());
                let mac = <Hmac<Sha256> as Mac>::new_from_slice(k.as_ref())
                    .expect("HMAC takes keys of any length");
                (version, mac)
            })
            .collect();
        let active = ring.active_version();
        if !versions.contains_key(&active) {
            return Err(KeyError::UnknownVersion(active));
        }
        Ok(SubjectRefs { active, versions })
    }

    fn of(&self, version: u32, mac: &Hmac<Sha256>, subject: &str) -> String {
        let mut mac = mac.clone();
        mac.update(subject.as_bytes());
        format!(
            "s{version}:{}",
            hex::encode(&mac.finalize().into_bytes()[..16])
        )
    }

    /// The reference new rows are written under.
    pub fn active(&self, subject: &str) -> String {
        let mac = &self.versions[&self.active];
        self.of(self.active, mac, subject)
    }

    /// The subject's reference under every usable version, the active one
    /// first, then newest to oldest.
    pub fn all(&self, subject: &str) -> Vec<String> {
        let mut out = vec![self.active(subject)];
        out.extend(
            self.versions
                .iter()
                .rev()
                .filter(|(v, _)| **v != self.active)
                .map(|(v, mac)| self.of(*v, mac, subject)),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Environment;

    #[test]
    fn references_are_keyed_and_found_across_rotation() {
        let mut ring = KeyRing::from_key(Environment::NonProduction, [2; 32]);
        let r1 = SubjectRefs::new(&ring).unwrap();
        let a = r1.active("subject-key-a");
        assert!(a.starts_with("s1:") && a.len() == 3 + 32);
        assert_ne!(a, r1.active("subject-key-b"));
        let other = SubjectRefs::new(&KeyRing::from_key(Environment::NonProduction, [3; 32]));
        assert_ne!(a, other.unwrap().active("subject-key-a"), "another ring");
        ring.rotate().unwrap();
        let r2 = SubjectRefs::new(&ring).unwrap();
        let all = r2.all("subject-key-a");
        assert_eq!(all.len(), 2);
        assert!(all[0].starts_with("s2:"));
        assert_eq!(all[1], a, "rows written before the rotation are found");
        ring.retire(1).unwrap();
        assert_eq!(
            SubjectRefs::new(&ring).unwrap().all("subject-key-a").len(),
            1
        );
    }
}
