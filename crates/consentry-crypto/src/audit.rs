//! Keys of the audit trail: the chain key, whose HMAC-SHA256 makes each
//! audit record's `hash` (so a record cannot be altered or forged without
//! it), and the fingerprint key, whose HMAC of an input or output record's
//! bytes lets an auditor match a record to its audit entry without the
//! audit topic holding anything of its content.
//!
//! A third key per version is an Ed25519 key pair that signs checkpoints:
//! its public half ([`CheckpointKeys`], a file `consentry keys
//! audit-public-key` writes) lets anyone verify that a checkpoint is
//! genuine without holding anything that could forge one, which the
//! symmetric chain key cannot give.
//!
//! All are derived once per usable key version with their own HKDF salt.
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
    /// Zeroed on drop (ed25519-dalek's `zeroize` feature).
    signing: ed25519_dalek::SigningKey,
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
                        signing: {
                            let info =
                                [&b"checkpoint-signing:"[..], &version.to_be_bytes()].concat();
                            let seed = secret.derive(AUDIT_SALT, &info);
                            let mut bytes = [0u8; 32];
                            bytes.copy_from_slice(&seed.as_ref()[..32]);
                            let key = ed25519_dalek::SigningKey::from_bytes(&bytes);
                            zeroize::Zeroize::zeroize(&mut bytes);
                            key
                        },
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

    /// Signs a checkpoint's message under the active version: the version
    /// and the signature's hex.
    pub fn sign_checkpoint(&self, message: &[u8]) -> (u32, String) {
        use ed25519_dalek::Signer;
        match self.versions.get(&self.active) {
            Some(k) => (self.active, hex::encode(k.signing.sign(message).to_bytes())),
            None => (self.active, String::new()),
        }
    }

    /// The public halves of the checkpoint keys, for verifiers.
    pub fn checkpoint_public_keys(&self) -> CheckpointKeys {
        CheckpointKeys {
            keys: self
                .versions
                .iter()
                .map(|(v, k)| (*v, k.signing.verifying_key()))
                .collect(),
        }
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

/// Checkpoint verification keys by key version: public, safe to hand to
/// an auditor (they verify signatures and can make none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointKeys {
    keys: BTreeMap<u32, ed25519_dalek::VerifyingKey>,
}

/// What a checkpoint's signature says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    Valid,
    /// Not made by the key of that version over that message.
    Invalid,
    /// No public key of that version is known.
    UnknownVersion,
}

const PUBLIC_KEYS_KIND: &str = "consentry-audit-checkpoint-keys";

impl CheckpointKeys {
    /// `{"kind": "consentry-audit-checkpoint-keys", "keys": [{"version", "ed25519"}]}`.
    pub fn to_json(&self) -> String {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|(v, k)| serde_json::json!({"version": v, "ed25519": hex::encode(k.as_bytes())}))
            .collect();
        serde_json::to_string_pretty(&serde_json::json!({"kind": PUBLIC_KEYS_KIND, "keys": keys}))
            .unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<CheckpointKeys, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|_| "not JSON".to_string())?;
        if v["kind"] != PUBLIC_KEYS_KIND {
            return Err(format!("not a {PUBLIC_KEYS_KIND} file"));
        }
        let mut keys = BTreeMap::new();
        for k in v["keys"].as_array().ok_or("no keys")? {
            let version = k["version"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or("a key without a version")?;
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(k["ed25519"].as_str().unwrap_or(""), &mut bytes)
                .map_err(|_| format!("version {version}: not 32 bytes of hex"))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|_| format!("version {version}: not an Ed25519 public key"))?;
            keys.insert(version, key);
        }
        if keys.is_empty() {
            return Err("no keys".into());
        }
        Ok(CheckpointKeys { keys })
    }

    pub fn verify(&self, version: u32, message: &[u8], signature_hex: &str) -> SignatureCheck {
        let Some(key) = self.keys.get(&version) else {
            return SignatureCheck::UnknownVersion;
        };
        let mut bytes = [0u8; 64];
        if hex::decode_to_slice(signature_hex, &mut bytes).is_err() {
            return SignatureCheck::Invalid;
        }
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        match key.verify_strict(message, &signature) {
            Ok(()) => SignatureCheck::Valid,
            Err(_) => SignatureCheck::Invalid,
        }
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

    #[test]
    fn checkpoints_verify_with_the_public_keys_alone() {
        let mut ring = KeyRing::from_key(Environment::NonProduction, [7; 32]);
        let keys = AuditKeys::new(&ring).unwrap();
        let (v, sig) = keys.sign_checkpoint(b"checkpoint");
        let public = CheckpointKeys::from_json(&keys.checkpoint_public_keys().to_json()).unwrap();
        assert_eq!(public, keys.checkpoint_public_keys());
        assert_eq!(public.verify(v, b"checkpoint", &sig), SignatureCheck::Valid);
        assert_eq!(
            public.verify(v, b"checkpoinT", &sig),
            SignatureCheck::Invalid
        );
        assert_eq!(
            public.verify(v, b"checkpoint", "00"),
            SignatureCheck::Invalid
        );
        assert_eq!(
            public.verify(9, b"checkpoint", &sig),
            SignatureCheck::UnknownVersion
        );
        // Another ring's key signs nothing this one accepts.
        let other =
            AuditKeys::new(&KeyRing::from_key(Environment::NonProduction, [8; 32])).unwrap();
        let (_, forged) = other.sign_checkpoint(b"checkpoint");
        assert_eq!(
            public.verify(v, b"checkpoint", &forged),
            SignatureCheck::Invalid
        );
        // The public file holds no secret: not the chain key's MACs, not
        // the signing seed.
        let text = public.to_json();
        assert!(!text.contains(&hex::encode(keys.chain_mac_active(b"x"))));
        ring.rotate().unwrap();
        let rotated = AuditKeys::new(&ring).unwrap();
        let (v2, sig2) = rotated.sign_checkpoint(b"c");
        assert_eq!(v2, 2);
        let both = rotated.checkpoint_public_keys();
        assert_eq!(both.verify(2, b"c", &sig2), SignatureCheck::Valid);
        assert_eq!(both.verify(1, b"checkpoint", &sig), SignatureCheck::Valid);
        assert!(CheckpointKeys::from_json("{}").is_err());
    }
}
