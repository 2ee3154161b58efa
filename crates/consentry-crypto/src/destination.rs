//! Keyed ids for what leaves the boundary. Inside it, ids are digests of
//! the source's own ids (HL7 MSH-3 + MSH-10, FHIR type/id/version): anyone
//! holding the feed could compute them. HIPAA §164.514(c) lets a code leave
//! only if it is not derived from information about the individual, or is
//! keyed by a secret the recipient does not hold. So every id-like value a
//! destination receives (record key, `correlation-id` and `idempotency-key`
//! headers, `correlation_id` and `event_id` fields) is an HMAC-SHA256 of the
//! internal id under a key derived per purpose and key version: two
//! purposes' ids never join, and two key rings share no id.
//!
//! The same internal id gives the same destination id under the same key
//! version, so a replay is recognizable downstream; after a rotation the
//! ids of re-sent records change (the audit trail maps both back).

use crate::keyring::{KeyError, KeyRing};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::fmt;

const SALT: &[u8] = b"consentry/destination-id/v1";

/// Which id is made: each kind is domain-separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Correlation,
    Idempotency,
    Event,
}

impl IdKind {
    fn tag(self) -> &'static [u8] {
        match self {
            IdKind::Correlation => b"correlation",
            IdKind::Idempotency => b"idempotency",
            IdKind::Event => b"event",
        }
    }
}

/// The destination-id keys of each purpose under the active key version,
/// derived once.
pub struct DestinationIds {
    version: u32,
    keys: BTreeMap<String, Hmac<Sha256>>,
}

impl fmt::Debug for DestinationIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DestinationIds")
            .field("version", &self.version)
            .field("purposes", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl DestinationIds {
    pub fn new<'a>(
        ring: &KeyRing,
        purposes: impl IntoIterator<Item = &'a str>,
    ) -> Result<DestinationIds, KeyError> {
        let version = ring.active_version();
        let secret = ring.secret(version)?;
        let keys = purposes
            .into_iter()
            .map(|p| {
                let info = [p.as_bytes(), b":", &version.to_be_bytes()].concat();
                let k = secret.derive(SALT, &info);
                let mac = <Hmac<Sha256> as Mac>::new_from_slice(k.as_ref())
                    .expect("HMAC takes keys of any length");
                (p.to_string(), mac)
            })
            .collect();
        Ok(DestinationIds { version, keys })
    }

    /// The key version ids are made under.
    pub fn version(&self) -> u32 {
        self.version
    }

    fn mac(&self, purpose: &str, kind: IdKind, internal: &str) -> Option<[u8; 32]> {
        let mut mac = self.keys.get(purpose)?.clone();
        mac.update(&(kind.tag().len() as u64).to_be_bytes());
        mac.update(kind.tag());
        mac.update(internal.as_bytes());
        Some(mac.finalize().into_bytes().into())
    }

    /// The destination's id for `internal`: a correlation id in UUID
    /// layout, an idempotency key `ik2-<32 hex>`, an event id
    /// `ev1-<32 hex>`. `None` for a purpose without a key (fail closed:
    /// the caller must not send).
    pub fn id(&self, purpose: &str, kind: IdKind, internal: &str) -> Option<String> {
        let d = self.mac(purpose, kind, internal)?;
        let h = hex::encode(&d[..16]);
        Some(match kind {
            IdKind::Correlation => format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ),
            IdKind::Idempotency => format!("ik2-{h}"),
            IdKind::Event => format!("ev1-{h}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Environment;

    #[test]
    fn ids_are_keyed_per_purpose_kind_and_ring() {
        let ring = KeyRing::from_key(Environment::NonProduction, [5; 32]);
        let other = KeyRing::from_key(Environment::NonProduction, [6; 32]);
        let a = DestinationIds::new(&ring, ["marketing", "trial"]).unwrap();
        let b = DestinationIds::new(&other, ["marketing", "trial"]).unwrap();
        let id = |d: &DestinationIds, p, k| d.id(p, k, "hl7v2:CSEHR:MSG1").unwrap();
        let corr = id(&a, "marketing", IdKind::Correlation);
        assert_eq!(corr.len(), 36);
        assert_eq!(corr.matches('-').count(), 4);
        assert_eq!(corr, id(&a, "marketing", IdKind::Correlation), "stable");
        assert_ne!(
            corr,
            id(&b, "marketing", IdKind::Correlation),
            "another ring"
        );
        assert_ne!(
            corr,
            id(&a, "trial", IdKind::Correlation),
            "another purpose"
        );
        assert_ne!(
            &id(&a, "marketing", IdKind::Idempotency)[4..],
            &corr.replace('-', "")[..32],
            "another kind"
        );
        assert!(id(&a, "marketing", IdKind::Idempotency).starts_with("ik2-"));
        assert!(id(&a, "marketing", IdKind::Event).starts_with("ev1-"));
        assert_eq!(a.id("unknown", IdKind::Event, "x"), None);
        // Debug names the version and purposes, never key material.
        assert_eq!(
            format!("{a:?}"),
            r#"DestinationIds { version: 1, purposes: ["marketing", "trial"], .. }"#
        );
    }
}
