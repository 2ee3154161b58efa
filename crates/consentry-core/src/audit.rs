//! The audit record: one stage's decision about one input. Holds ids,
//! codes, field paths and method names; never a field value.

use crate::envelope::Text;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub audit_id: Text,
    pub stage: Text,
    pub policy_version: Text,
    pub correlation_id: Option<Text>,
    pub event_id: Option<Text>,
    pub idempotency_key: Text,
    pub decision: Decision,
    pub reason_code: Text,
    pub placeholder: bool,
    pub purpose: Option<Text>,
    /// The de-identification profile applied (`safe-harbor`, ...), with
    /// `transformations` as the rest of the recipe.
    pub profile: Option<Text>,
    pub source_topic: Text,
    pub source_partition: i32,
    pub source_offset: i64,
    pub outputs: Vec<AuditOutput>,
    pub transformations: Vec<Transformation>,
    /// Who acted, for calls to a service (a vault caller's id); stages
    /// leave it empty.
    pub actor: Option<Text>,
    /// `high` for what needs an auditor's eye (break-glass access).
    pub severity: Option<Text>,
    /// The caller's stated justification, scrubbed of identifier shapes.
    pub justification: Option<Text>,
    /// The token a vault call was about (a token, never what it stands for).
    pub token: Option<Text>,
    /// The quarantined record a vault call opened (its quarantine id).
    #[serde(default)]
    pub quarantine_id: Option<Text>,
    /// Who decided: `consentry/<stage>@<version>` (set by the runtime).
    #[serde(default)]
    pub service: Text,
    /// The consent record and version a decision relied on.
    #[serde(default)]
    pub consent_reference: Option<Text>,
    #[serde(default)]
    pub consent_version: Option<Text>,
    /// Keyed fingerprint of the input's bytes (set by the runtime).
    #[serde(default)]
    pub input_fingerprint: Option<Text>,
    #[serde(default)]
    pub event_time_ms: Option<i64>,
    /// When the writer wrote the record (set by the writer).
    #[serde(default)]
    pub processing_time_ms: i64,
    /// Checkpoint records: the committed chain heads of the writers in the
    /// process.
    #[serde(default)]
    pub checkpoint: Vec<ChainHead>,
    /// Checkpoint records: the first sequence number `segment_digest`
    /// covers; it covers the writer's records from there to this one
    /// (exclusive).
    #[serde(default)]
    pub segment_from: i64,
    /// Checkpoint records: hex SHA-256 over the SHA-256 of each covered
    /// record's bytes as written, in order: anyone can recompute it.
    #[serde(default)]
    pub segment_digest: Option<Text>,
    /// Checkpoint records: hex Ed25519 signature of
    /// `chain::checkpoint_message`, under `signature_key_version`'s
    /// checkpoint key (verifiable with the public key alone).
    #[serde(default)]
    pub signature: Option<Text>,
    #[serde(default)]
    pub signature_key_version: i32,
    /// Records `consentry replay apply` writes: the replay, the disclosure
    /// a correction or retraction supersedes, and the policy version the
    /// superseded record was shaped under (`policy_version` is the new one).
    #[serde(default)]
    pub replay_id: Option<Text>,
    #[serde(default)]
    pub supersedes: Option<Text>,
    #[serde(default)]
    pub previous_policy_version: Option<Text>,
    /// The chain fields, set by `chain::ChainWriter` as the record is
    /// encoded; `hash` is the Avro body's last field.
    #[serde(default)]
    pub writer_id: Text,
    #[serde(default)]
    pub sequence: i64,
    #[serde(default)]
    pub previous_hash: Text,
    #[serde(default)]
    pub hash_key_version: i32,
    #[serde(default)]
    pub hash: Text,
}

/// Where one writer's chain stood: the last committed record's sequence
/// number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub writer_id: Text,
    pub sequence: i64,
    pub hash: Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditOutput {
    pub topic: Text,
    pub idempotency_key: Text,
    /// Keyed fingerprint of the bytes written (set by the runtime).
    #[serde(default)]
    pub fingerprint: Text,
    /// The record's correlation id as written: for a destination, the
    /// keyed id the recipient holds (`consentry_crypto::destination`), so
    /// `audit trace` can go from it back to the source event.
    #[serde(default)]
    pub correlation_id: Option<Text>,
    /// The event id the record carries where it was keyed for a destination
    /// (route); `None` elsewhere (the record's own is the audit record's).
    #[serde(default)]
    pub event_id: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transformation {
    /// The source path.
    pub path: Text,
    /// Where the value went, when not to `path`.
    #[serde(default)]
    pub target_path: Option<Text>,
    pub method: Text,
    /// The method's parameters (`max_days=180`, `width=10`), never a value.
    pub params: Text,
}

/// A revocation notice's flag (`params` of a `flag` step): the subject's
/// data first reached the destination after the revocation had arrived.
pub const DISCLOSED_AFTER_REVOCATION: &str = "disclosed_after_revocation";

impl Transformation {
    pub fn new(path: &str, method: &'static str, params: &str) -> Transformation {
        Transformation {
            path: path.into(),
            target_path: None,
            method: Text::const_new(method),
            params: params.into(),
        }
    }
}

/// What a stage (or the vault, or a writer's checkpoint) decided. On the
/// wire it is the Avro string `as_str` names, so every record writes as it
/// did when the field was free text. Reading is closed: a string outside
/// this vocabulary (no writer has written one; the schema's doc still lists
/// `fan_out`, which nothing ever wrote) makes the record undecodable, which
/// `audit verify` reports as a break of its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Decision {
    /// Written on (the default only so an `AuditRecord` can be built with
    /// `..Default::default()`; every writer sets its own).
    #[default]
    Forward,
    Quarantine,
    /// A record with nothing to carry (normalize: a Practitioner alone):
    /// acknowledged, nothing written.
    Skip,
    /// A record held until its subject resolved, now sent on.
    Redrive,
    /// Vault calls: resolved, resolved by break-glass, refused; the gate's
    /// verdicts (allow, deny) too.
    Allow,
    BreakGlass,
    Deny,
    /// consent-gate: a "consent needed" notice instead of the event.
    Downgrade,
    /// The consent ledger: a change applied to the consent table, or the
    /// same change seen again.
    ConsentApply,
    ConsentDuplicate,
    /// route: a revocation notice written to a destination.
    RevocationNotice,
    /// A writer's record of the chain heads (`AuditRecord::checkpoint`).
    Checkpoint,
    /// replay apply: a destination record reshaped under a new policy, a
    /// record the new policy no longer sends (a retraction notice), a
    /// record it newly sends.
    Correction,
    Retraction,
    Backfill,
}

impl Decision {
    pub const ALL: [Decision; 15] = [
        Decision::Forward,
        Decision::Quarantine,
        Decision::Skip,
        Decision::Redrive,
        Decision::Allow,
        Decision::BreakGlass,
        Decision::Deny,
        Decision::Downgrade,
        Decision::ConsentApply,
        Decision::ConsentDuplicate,
        Decision::RevocationNotice,
        Decision::Checkpoint,
        Decision::Correction,
        Decision::Retraction,
        Decision::Backfill,
    ];

    /// The stable wire spelling (audit records, metric labels).
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Forward => "forward",
            Decision::Quarantine => "quarantine",
            Decision::Skip => "skip",
            Decision::Redrive => "redrive",
            Decision::Allow => "allow",
            Decision::BreakGlass => "break_glass",
            Decision::Deny => "deny",
            Decision::Downgrade => "downgrade",
            Decision::ConsentApply => "consent_apply",
            Decision::ConsentDuplicate => "consent_duplicate",
            Decision::RevocationNotice => "revocation_notice",
            Decision::Checkpoint => "checkpoint",
            Decision::Correction => "correction",
            Decision::Retraction => "retraction",
            Decision::Backfill => "backfill",
        }
    }

    pub fn parse(s: &str) -> Option<Decision> {
        Decision::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: tables print these with widths.
        f.pad(self.as_str())
    }
}

impl PartialEq<str> for Decision {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Decision {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Decision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Decision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Decision, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Decision::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown audit decision '{s}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip_as_their_wire_strings() {
        for d in Decision::ALL {
            assert_eq!(Decision::parse(d.as_str()), Some(d));
            let json = serde_json::to_string(&d).expect("a decision serializes");
            assert_eq!(json, format!("\"{d}\""));
            assert_eq!(serde_json::from_str::<Decision>(&json).ok(), Some(d));
        }
        assert!(serde_json::from_str::<Decision>("\"fan_out\"").is_err());
    }
}
