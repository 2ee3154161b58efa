//! How the vault's store names a subject: an HMAC-SHA256 of the subject
//! key under a key derived per key version (`consentry/vault-subject/v1`).
//! The subject key itself is an unkeyed digest of the subject's identifier
//! (so every stage computes the same one); stored as is, a stolen copy of
//! the vault could be searched by hashing candidate MRNs. Keyed, it cannot
//! without the key ring.
//!
//! The key derives from the ring's anchor version (its oldest usable one),
//! so every process agrees on a subject's name whatever version it runs
//! as active: during a rolling rotation a consent-ledger on the old ring
//! and a tokenize on the new one name the subject alike, and a shred
//! reaches what either wrote. Retiring the anchor renames every subject
//! (`consentry keys retire` asks for `--anchor`).

use crate::keyring::{KeyError, KeyRing};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

const SALT: &[u8] = b"consentry/vault-subject/v1";

pub struct SubjectRefs {
    version: u32,
    mac: Hmac<Sha256>,
}

impl fmt::Debug for SubjectRefs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectRefs")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl SubjectRefs {
    pub fn new(ring: &KeyRing) -> Result<SubjectRefs, KeyError> {
        let version = ring.anchor_version();
        let k = ring.secret(version)?.derive(SALT, &version.to_be_bytes());
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(k.as_ref())
            .expect("HMAC takes keys of any length");
        Ok(SubjectRefs { version, mac })
    }

    /// The store's name for the subject with subject key `subject`.
    pub fn of(&self, subject: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(subject.as_bytes());
        format!(
            "s{}:{}",
            self.version,
            hex::encode(&mac.finalize().into_bytes()[..16])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Environment;

    #[test]
    fn references_are_keyed_and_survive_rotation() {
        let mut ring = KeyRing::from_key(Environment::NonProduction, [2; 32]);
        let r1 = SubjectRefs::new(&ring).unwrap();
        let a = r1.of("subject-key-a");
        assert!(a.starts_with("s1:") && a.len() == 3 + 32);
        assert_ne!(a, r1.of("subject-key-b"));
        let other = SubjectRefs::new(&KeyRing::from_key(Environment::NonProduction, [3; 32]));
        assert_ne!(a, other.unwrap().of("subject-key-a"), "another ring");
        // A process on the rotated ring names the subject alike.
        ring.rotate().unwrap();
        assert_eq!(SubjectRefs::new(&ring).unwrap().of("subject-key-a"), a);
        // Retiring the anchor renames it.
        ring.retire(1).unwrap();
        assert!(SubjectRefs::new(&ring)
            .unwrap()
            .of("subject-key-a")
            .starts_with("s2:"));
    }
}
