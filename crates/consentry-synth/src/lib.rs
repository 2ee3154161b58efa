//! A deterministic, realistic synthetic EHR feed. Same seed, same bytes.
//!
//! Every identifier kind HIPAA Safe Harbor names appears somewhere: names,
//! street addresses, cities and ZIP codes, dates, phone and fax numbers,
//! email addresses, SSNs, MRNs, health-plan beneficiary numbers, account
//! numbers, licence numbers, vehicle and device ids, URLs, IP addresses, a
//! biometric id and a photo reference, in structured fields and inside free
//! text. All values are fabricated: 555-01xx phones, 9xx SSNs, example.org
//! mail and URLs, documentation-range IPs.
//!
//! Architecture invariant: pure generation; writing to Kafka or files is the
//! caller's business.
//!
//! The crate by job: `patient` draws the synthetic patients, `hl7` writes
//! their ADT messages, `fhir` their FHIR resources, `consent` their FHIR
//! Consents, and `generate` drives them into one ordered feed; `time`
//! formats the feed's timestamps, `words` holds the vocabularies drawn
//! from.

mod consent;
mod fhir;
mod generate;
mod hl7;
mod patient;
mod time;
mod words;

pub use consent::{fhir_consent, fhir_consent_withdrawn};
pub use fhir::{
    fhir_appointment, fhir_condition, fhir_encounter, fhir_medication_bundle, fhir_observation,
    fhir_patient,
};
pub use generate::{events_in, generate, withdrawals};
pub use hl7::hl7_adt;
pub use patient::{patients, Patient, CONSENT_CODES};

/// Where the generated records belong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Hl7v2,
    Fhir,
    Consent,
}

/// One generated record.
#[derive(Clone, PartialEq, Eq)]
pub struct SynthRecord {
    pub feed: Feed,
    /// Kafka key: the subject's partitioning digest.
    pub key: String,
    /// `ADT^A01`, `fhir:Patient`, ...
    pub kind: String,
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for SynthRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SynthRecord({:?}, {}, {} bytes)",
            self.feed,
            self.kind,
            self.payload.len()
        )
    }
}

/// How identities are written: the same systems `topology.yaml` maps.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub seed: u64,
    pub patients: usize,
    /// The first patient's index: feeds with different first indices have
    /// different patients, message ids and resource ids (a running
    /// pipeline takes each as new, not as a duplicate).
    pub first_patient: usize,
    pub subject_system: String,
    pub mrn_authority: String,
    pub account_authority: String,
    pub account_system: String,
    pub visit_authority: String,
    pub visit_system: String,
}

impl SynthConfig {
    pub fn new(seed: u64, patients: usize) -> SynthConfig {
        SynthConfig {
            seed,
            patients,
            first_patient: 0,
            subject_system: "urn:oid:2.16.840.1.113883.3.7777.1".into(),
            mrn_authority: "CSHOSP".into(),
            account_authority: "CSACCT".into(),
            account_system: "urn:oid:2.16.840.1.113883.3.7777.2".into(),
            visit_authority: "CSVISIT".into(),
            visit_system: "urn:oid:2.16.840.1.113883.3.7777.3".into(),
        }
    }
}
