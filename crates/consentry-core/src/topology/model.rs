//! The validated topology: its topics, stages, purposes, destinations,
//! field classes and settings. A value of these types has passed every
//! check in `validate`.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

use crate::avro::SchemaRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopicRole {
    /// A feed from the EHR (raw bytes).
    Source,
    /// Consent captures and FHIR Consent resources (raw bytes).
    ConsentEvents,
    /// The compacted consent table.
    ConsentState,
    /// Between two stages.
    Internal,
    /// A purpose's destination.
    Destination,
    /// The disclosure ledger: one record per record route writes.
    Disclosures,
    Audit,
    /// The audit writers' latest signed checkpoints, one per writer
    /// (compacted JSON): evidence outside each writer's own chain.
    AuditHeads,
    Quarantine,
    /// A stage's compacted record of the inputs it has handled.
    Ledger,
    /// A stage's compacted state table (normalize's patient index).
    State,
}

/// What a raw source topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    /// One HL7 v2.x message per record, raw or MLLP-framed.
    Hl7v2,
    /// One FHIR R4 JSON resource or Bundle per record.
    FhirJson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Cleanup {
    #[default]
    Delete,
    Compact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldClass {
    Operational,
    Limited,
    PhiRestricted,
    HighlyRestricted,
}

impl FieldClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldClass::Operational => "operational",
            FieldClass::Limited => "limited",
            FieldClass::PhiRestricted => "phi-restricted",
            FieldClass::HighlyRestricted => "highly-restricted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    SafeHarbor,
    LimitedDataSet,
    IdentifiedTokenized,
    AggregateOnly,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::SafeHarbor => "safe-harbor",
            Profile::LimitedDataSet => "limited-data-set",
            Profile::IdentifiedTokenized => "identified-tokenized",
            Profile::AggregateOnly => "aggregate-only",
        }
    }

    /// Whether the profile's outputs remain PHI (and say so in their
    /// headers): a limited data set, and identified-tokenized records.
    pub fn is_phi(self) -> bool {
        matches!(self, Profile::LimitedDataSet | Profile::IdentifiedTokenized)
    }
}

/// How a purpose's records are linked to their subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Linkage {
    /// No subject token at all.
    None,
    /// A random token per subject and domain, issued and kept by the vault
    /// (the only linkage a `safe-harbor` purpose may have: HIPAA
    /// 164.514(c) forbids codes derived from the individual's information).
    Random,
    /// A keyed HMAC of the subject (and identifiers) per domain: only for
    /// `limited-data-set` and `identified-tokenized`, whose outputs stay PHI.
    Deterministic,
}

impl Linkage {
    pub fn as_str(self) -> &'static str {
        match self {
            Linkage::None => "none",
            Linkage::Random => "random",
            Linkage::Deterministic => "deterministic",
        }
    }
}

/// How a de-identified record keeps its dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DateMode {
    /// Every date and instant to its year (Safe Harbor's default).
    #[default]
    Year,
    /// Shifted by a keyed, bounded, per-subject number of days, so
    /// intervals survive (`safe-harbor` only).
    Shift,
}

/// Whether and how a de-identified record states the subject's age at the
/// event (over 89 always as `90+`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgeMode {
    #[default]
    Omit,
    Years,
    /// Bands of this many years (`40-49`).
    Band(u32),
}

/// A purpose's de-identification settings beyond its profile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeidentifySpec {
    pub dates: DateMode,
    /// Largest shift in days (for `dates: shift`).
    pub shift_max_days: u32,
    /// Keep free text after scrubbing (else it is dropped).
    pub keep_text: bool,
    pub age: AgeMode,
    /// ICD-10 codes starting with one of these (`*`: every code) are rolled
    /// up to their three-character category: rare diagnoses generalized.
    pub rollup_codes: Vec<String>,
}

/// The default largest date shift, in days.
pub const DEFAULT_SHIFT_MAX_DAYS: u32 = 180;

/// Retention of a topic in milliseconds; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Default,
    Unlimited,
    Millis(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub role: TopicRole,
    pub partitions: i32,
    pub cleanup: Cleanup,
    pub retention: Retention,
    /// `None` for raw topics, else the Avro schema records carry.
    pub schema: Option<SchemaRef>,
    /// For source and consent-event topics: what the raw bytes are.
    pub format: Option<SourceFormat>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSpec {
    pub name: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub consumer_group: String,
    pub ledger: String,
    /// The stage's state table, if it keeps one.
    pub state: Option<String>,
    /// A table the stage reads but never writes (the consent table, for
    /// consent-gate and route). Its keys and the stage's own never overlap.
    pub reads: Option<String>,
}

/// normalize's settings beyond the shared ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizeSpec {
    /// HL7 v2 segments (`ZPD`) or fields (`PID-40`) the mapping does not
    /// know but this site sends on purpose: accepted, not carried.
    pub allow_hl7v2: BTreeSet<String>,
    /// FHIR element paths (`Patient.extension(<url>)`, `Encounter.length`)
    /// accepted and not carried.
    pub allow_fhir: BTreeSet<String>,
    /// Memory for records held until their subject resolves.
    pub unresolved_hold_bytes: usize,
}

/// 64 MiB of held records per normalize instance.
pub const DEFAULT_UNRESOLVED_HOLD_BYTES: usize = 64 * 1024 * 1024;

impl Default for NormalizeSpec {
    fn default() -> Self {
        NormalizeSpec {
            allow_hl7v2: BTreeSet::new(),
            allow_fhir: BTreeSet::new(),
            unresolved_hold_bytes: DEFAULT_UNRESOLVED_HOLD_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    pub name: String,
    pub consent_code: String,
    pub destination: String,
    /// The destination's topic.
    pub topic: String,
    pub profile: Profile,
    pub allow: BTreeSet<String>,
    /// The token domain of this purpose's tokens (`tok:<domain>:...`);
    /// every purpose has its own, so purposes never share a join key.
    pub token_domain: String,
    pub linkage: Linkage,
    pub deidentify: DeidentifySpec,
    /// The channel its records go out on, as consents name channels
    /// (`*`: any; a consent for `*` covers every channel).
    pub channel: String,
    /// What the gate does when there is no consent to act on.
    pub on_missing_consent: MissingConsent,
}

/// What consent-gate does for a purpose when the subject's consent is
/// unknown, pending or lapsed (never when it was refused or revoked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MissingConsent {
    /// Nothing goes out.
    #[default]
    Deny,
    /// A non-PHI "consent needed" notice goes out instead of the event.
    Notify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    pub topic: String,
    pub system: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identifier system whose value is the subject's identity.
    pub subject_system: String,
    /// HL7 PID-3.4 assigning authority -> identifier system.
    pub hl7_authorities: BTreeMap<String, String>,
}

/// A validated topology. Every cross-reference in it resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub policy_version: String,
    pub topics: BTreeMap<String, TopicSpec>,
    pub stages: BTreeMap<String, StageSpec>,
    pub destinations: BTreeMap<String, Destination>,
    pub purposes: BTreeMap<String, Purpose>,
    pub identity: Identity,
    pub fields: BTreeMap<String, FieldClass>,
    pub normalize: NormalizeSpec,
    pub audit_topic: String,
    /// Where every audit writer keeps its latest signed checkpoint.
    pub audit_heads_topic: String,
    pub quarantine_topic: String,
    /// The disclosure ledger (`role: disclosures`).
    pub disclosure_topic: String,
}

impl Topology {
    pub fn stage(&self, name: &str) -> Option<&StageSpec> {
        self.stages.get(name)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.get(name)
    }

    /// The purpose whose destination writes to `topic`.
    pub fn purpose_of_topic(&self, topic: &str) -> Option<&Purpose> {
        self.purposes.values().find(|p| p.topic == topic)
    }

    /// The Avro schema text records of `topic` are written with: a shipped
    /// schema, or a destination's own (derived from its allowlist).
    pub fn schema_text(&self, topic: &str) -> Option<String> {
        match self.topic(topic)?.schema? {
            SchemaRef::Destination => {
                let p = self.purpose_of_topic(topic)?;
                Some(crate::destination::schema_text(self, p))
            }
            shipped => Some(shipped.source().to_string()),
        }
    }
}
