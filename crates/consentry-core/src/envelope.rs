//! The canonical envelope: one EHR event, whatever feed it came from.
//!
//! Holds PHI. Its `Debug` prints ids and types only, so a stray `{:?}` in a
//! log line or a panic message cannot leak a name or a date of birth.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Source formats normalize accepts.
pub const SOURCE_HL7V2: &str = "hl7v2";
pub const SOURCE_FHIR: &str = "fhir";

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CanonicalEvent {
    pub event_id: String,
    pub event_type: String,
    pub event_time_ms: Option<i64>,
    pub source_system: String,
    pub source_format: String,
    pub correlation_id: String,
    pub policy_version: String,
    pub purpose: Option<String>,
    pub subject_key: String,
    pub identifiers: Vec<Identifier>,
    pub demographics: Option<Demographics>,
    pub encounter: Option<Encounter>,
    pub codes: Vec<Coding>,
    pub note: Option<String>,
    pub suppressed: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Identifier {
    pub system: String,
    pub value: String,
    pub kind: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Demographics {
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub address_line: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default, Debug)]
pub struct Encounter {
    pub encounter_class: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub location: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default, Debug)]
pub struct Coding {
    pub system: String,
    pub code: String,
}

impl fmt::Debug for CanonicalEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CanonicalEvent")
            .field("event_id", &self.event_id)
            .field("event_type", &self.event_type)
            .field("correlation_id", &self.correlation_id)
            .field("purpose", &self.purpose)
            .field("phi", &"[redacted]")
            .finish()
    }
}

impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identifier")
            .field("system", &self.system)
            .field("kind", &self.kind)
            .field("value", &"[redacted]")
            .finish()
    }
}

impl fmt::Debug for Demographics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Demographics([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_phi() {
        let ev = CanonicalEvent {
            event_id: "hl7v2:1".into(),
            identifiers: vec![Identifier {
                system: "urn:mrn".into(),
                value: "MRN-SECRET-1".into(),
                kind: "mrn".into(),
            }],
            demographics: Some(Demographics {
                family_name: Some("Secretname".into()),
                ..Default::default()
            }),
            note: Some("note with Secretname".into()),
            ..Default::default()
        };
        let printed = format!("{ev:?} {:?} {:?}", ev.identifiers, ev.demographics);
        assert!(!printed.contains("Secretname"), "{printed}");
        assert!(!printed.contains("MRN-SECRET-1"), "{printed}");
        assert!(printed.contains("hl7v2:1"));
    }
}
