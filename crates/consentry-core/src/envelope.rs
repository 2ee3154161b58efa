//! The canonical envelope: one EHR event, whatever feed it came from.
//!
//! Holds PHI. Its `Debug` prints ids and types only, so a stray `{:?}` in a
//! log line or a panic message cannot leak a name or a date of birth.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The envelope's string type: values of up to 24 bytes (most names,
/// codes, dates and identifiers) live inline, without an allocation, and
/// fixed vocabulary (`Text::const_new`) is never copied. A record's
/// envelope holds some hundred strings; as `String`s they were most of
/// normalize's allocations.
pub type Text = compact_str::CompactString;

/// Pieces joined into one `Text`, sized once (cheaper than `format!` for
/// the ids and names built for every record).
pub fn concat(parts: &[&str]) -> Text {
    let mut t = Text::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        t.push_str(p);
    }
    t
}

/// A `Text` for a string that comes from configuration (an identifier
/// system `topology.yaml` maps, say) and is copied into many records:
/// interned for the life of the process, so the `Text` refers to it rather
/// than owning a heap copy, and neither making nor cloning one allocates.
/// Each distinct string is kept once; only call this with configuration,
/// never with record content, or memory grows with the input.
pub fn intern(s: &str) -> Text {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock, PoisonError};
    static INTERNED: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = INTERNED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let kept: &'static str = match set.get(s) {
        Some(k) => k,
        None => {
            let k: &'static str = Box::leak(s.into());
            set.insert(k);
            k
        }
    };
    Text::const_new(kept)
}

/// Source formats normalize accepts.
pub const SOURCE_HL7V2: &str = "hl7v2";
pub const SOURCE_FHIR: &str = "fhir";

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CanonicalEvent {
    pub event_id: Text,
    pub event_type: Text,
    pub event_time_ms: Option<i64>,
    pub source_system: Text,
    pub source_format: Text,
    pub correlation_id: Text,
    pub policy_version: Text,
    pub purpose: Option<Text>,
    pub subject_key: Text,
    pub identifiers: Vec<Identifier>,
    pub demographics: Option<Demographics>,
    pub encounter: Option<Encounter>,
    pub codes: Vec<Coding>,
    pub note: Option<Text>,
    pub suppressed: Vec<Text>,
    pub contacts: Vec<Contact>,
    pub appointment: Option<Appointment>,
    pub medication: Option<Medication>,
    pub consent: Option<ConsentInfo>,
    pub provenance: Option<ProvenanceInfo>,
    pub links: Vec<Link>,
    pub security_labels: Vec<Text>,
    pub coverages: Vec<Coverage>,
    /// The subject's internal pseudonym (`tok:subject:v<N>:…`, a
    /// deterministic token of `subject_key`), set by consent-gate for the
    /// consent table and the disclosure ledger. Never on an allowlist:
    /// route removes it before anything leaves.
    pub subject_token: Option<Text>,
    /// The consent entry consent-gate allowed the record on
    /// (`<reference>@v<version>/<channel>`): route re-checks it against the
    /// consent table before writing, and removes it.
    pub consent_basis: Option<Text>,
}

/// Identifier kinds (`Identifier::kind`), from HL7 table 0203 type codes.
pub mod identifier_kind {
    pub const MRN: &str = "mrn";
    pub const ACCOUNT: &str = "account";
    pub const SSN: &str = "ssn";
    pub const DRIVERS_LICENSE: &str = "drivers_license";
    pub const PASSPORT: &str = "passport";
    pub const HEALTH_PLAN: &str = "health_plan";
    pub const VISIT: &str = "visit";
    pub const OTHER: &str = "other";

    /// The kind of an HL7 v2 identifier type code (table 0203).
    pub fn from_type_code(code: &str) -> &'static str {
        match code {
            "MR" | "PI" | "MRT" => MRN,
            "AN" | "AM" | "ANON" | "ANT" => ACCOUNT,
            "SS" | "SSN" => SSN,
            "DL" | "DR" => DRIVERS_LICENSE,
            "PPN" => PASSPORT,
            "MB" | "MA" | "MC" | "SN" | "MCN" | "HC" => HEALTH_PLAN,
            "VN" => VISIT,
            _ => OTHER,
        }
    }

    /// US driver's licence numbers: the state's OID arc
    /// (2.16.840.1.113883.4.3.<FIPS>), as US Core examples write them.
    pub fn drivers_license_system(state: Option<&str>) -> super::Text {
        // A match, not a table scan: this runs for every message with a
        // licence number.
        let fips: u8 = match state.unwrap_or("") {
            "AL" => 1,
            "AK" => 2,
            "AZ" => 4,
            "AR" => 5,
            "CA" => 6,
            "CO" => 8,
            "CT" => 9,
            "DE" => 10,
            "DC" => 11,
            "FL" => 12,
            "GA" => 13,
            "HI" => 15,
            "ID" => 16,
            "IL" => 17,
            "IN" => 18,
            "IA" => 19,
            "KS" => 20,
            "KY" => 21,
            "LA" => 22,
            "ME" => 23,
            "MD" => 24,
            "MA" => 25,
            "MI" => 26,
            "MN" => 27,
            "MS" => 28,
            "MO" => 29,
            "MT" => 30,
            "NE" => 31,
            "NV" => 32,
            "NH" => 33,
            "NJ" => 34,
            "NM" => 35,
            "NY" => 36,
            "NC" => 37,
            "ND" => 38,
            "OH" => 39,
            "OK" => 40,
            "OR" => 41,
            "PA" => 42,
            "RI" => 44,
            "SC" => 45,
            "SD" => 46,
            "TN" => 47,
            "TX" => 48,
            "UT" => 49,
            "VT" => 50,
            "VA" => 51,
            "WA" => 53,
            "WV" => 54,
            "WI" => 55,
            "WY" => 56,
            _ => return super::Text::const_new("urn:oid:2.16.840.1.113883.4.3"),
        };
        let digits = [b'0' + fips / 10, b'0' + fips % 10];
        let digits = std::str::from_utf8(&digits).unwrap_or_default();
        super::concat(&[
            "urn:oid:2.16.840.1.113883.4.3.",
            digits.trim_start_matches('0'),
        ])
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Identifier {
    pub system: Text,
    pub value: Text,
    pub kind: Text,
    pub authority: Option<Text>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Demographics {
    pub family_name: Option<Text>,
    pub given_name: Option<Text>,
    pub birth_date: Option<Text>,
    pub sex: Option<Text>,
    pub address_line: Option<Text>,
    pub city: Option<Text>,
    pub state: Option<Text>,
    pub postal_code: Option<Text>,
    pub phone: Option<Text>,
    pub email: Option<Text>,
    pub middle_name: Option<Text>,
    pub name_suffix: Option<Text>,
    pub mothers_maiden_name: Option<Text>,
    pub birth_sex: Option<Text>,
    pub race: Vec<Text>,
    pub ethnicity: Vec<Text>,
    pub marital_status: Option<Text>,
    pub language: Option<Text>,
    pub religion: Option<Text>,
    pub deceased: Option<bool>,
    pub deceased_date: Option<Text>,
    pub county: Option<Text>,
    pub country: Option<Text>,
    pub latitude: Option<Text>,
    pub longitude: Option<Text>,
    pub fax: Option<Text>,
    pub url: Option<Text>,
    /// Set by de-identification only (age in years, a band, or `90+`).
    pub age: Option<Text>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Encounter {
    pub encounter_class: Option<Text>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub location: Option<Text>,
    pub status: Option<Text>,
    pub prior_location: Option<Text>,
    pub hospital_service: Option<Text>,
    pub admit_source: Option<Text>,
    pub discharge_disposition: Option<Text>,
    pub attending: Option<Text>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct Coding {
    pub system: Text,
    pub code: Text,
    pub kind: Option<Text>,
    pub display: Option<Text>,
    pub value: Option<Text>,
    pub value_type: Option<Text>,
    pub unit: Option<Text>,
    pub status: Option<Text>,
    pub recorded_ms: Option<i64>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Contact {
    pub relationship: Option<Text>,
    pub family_name: Option<Text>,
    pub given_name: Option<Text>,
    pub phone: Option<Text>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct Appointment {
    pub status: Option<Text>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct Medication {
    pub status: Option<Text>,
    pub intent: Option<Text>,
    pub authored_ms: Option<i64>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct ConsentInfo {
    pub reference: Text,
    pub status: Option<Text>,
    pub scope: Option<Text>,
    pub categories: Vec<Text>,
    pub decision: Option<Text>,
    pub purposes: Vec<Text>,
    pub period_start_ms: Option<i64>,
    pub period_end_ms: Option<i64>,
    pub provisions: Vec<ConsentProvision>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct ConsentProvision {
    pub decision: Option<Text>,
    pub purposes: Vec<Text>,
    pub data_classes: Vec<Text>,
    pub depth: i32,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct ProvenanceInfo {
    pub recorded_ms: Option<i64>,
    pub activity: Option<Text>,
    pub targets: Vec<Text>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Link {
    pub relation: Text,
    pub system: Text,
    pub value: Text,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct Coverage {
    pub payer: Option<Text>,
    pub plan: Option<Text>,
    pub relationship: Option<Text>,
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

impl fmt::Debug for Encounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Locations and the attending's name can identify; times are dates.
        f.debug_struct("Encounter")
            .field("encounter_class", &self.encounter_class)
            .field("status", &self.status)
            .field("phi", &"[redacted]")
            .finish()
    }
}

impl fmt::Debug for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contact")
            .field("relationship", &self.relationship)
            .field("phi", &"[redacted]")
            .finish()
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("relation", &self.relation)
            .field("system", &self.system)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// Keeps only the fields whose dotted path (`demographics.city`,
/// `codes.code`: array items share their array's path) `keep` accepts.
/// Returns the reduced event and the paths it removed, each once, sorted. A record left empty disappears (`None`, or out of its
/// array), so "removed" never leaves an empty shell that looks like data.
pub fn retain_fields(
    ev: &CanonicalEvent,
    keep: impl Fn(&str) -> bool,
) -> (CanonicalEvent, Vec<String>) {
    let r = retain_fields_kept(ev, keep);
    (r.event, r.removed)
}

/// What `retain_fields_kept` left and took.
pub struct Retained {
    pub event: CanonicalEvent,
    /// Paths removed, each once, sorted.
    pub removed: Vec<String>,
    /// Paths kept that hold a value, each once, sorted: what the record
    /// carries (the PHI footprint of a disclosure).
    pub kept: Vec<String>,
}

/// `retain_fields`, also naming the paths kept that hold a value.
pub fn retain_fields_kept(ev: &CanonicalEvent, keep: impl Fn(&str) -> bool) -> Retained {
    use serde_json::Value;
    struct Paths {
        removed: Vec<String>,
        kept: Vec<String>,
    }
    fn walk(v: &mut Value, prefix: &str, keep: &dyn Fn(&str) -> bool, paths: &mut Paths) {
        let Value::Object(map) = v else { return };
        let keys: Vec<String> = map.keys().cloned().collect();
        for k in keys {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let Some(child) = map.get_mut(&k) else {
                continue;
            };
            let present = match child {
                Value::Null => false,
                Value::Array(a) => !a.is_empty(),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            match child {
                Value::Object(_) => {
                    walk(child, &path, keep, paths);
                    if child.as_object().is_some_and(|m| m.is_empty()) {
                        map.remove(&k);
                    }
                }
                Value::Array(items) if items.iter().any(Value::is_object) => {
                    for item in items.iter_mut() {
                        walk(item, &path, keep, paths);
                    }
                    items.retain(|i| !i.as_object().is_some_and(|m| m.is_empty()));
                }
                _ if !keep(&path) => {
                    if present && !paths.removed.contains(&path) {
                        paths.removed.push(path);
                    }
                    map.remove(&k);
                }
                _ if present && !paths.kept.contains(&path) => paths.kept.push(path),
                _ => {}
            }
        }
    }
    // Serializing plain structs of strings cannot fail; if it ever did,
    // remove everything rather than keep something unchecked.
    let nothing = || Retained {
        event: CanonicalEvent::default(),
        removed: vec!["*".into()],
        kept: Vec::new(),
    };
    let Ok(mut v) = serde_json::to_value(ev) else {
        return nothing();
    };
    let mut paths = Paths {
        removed: Vec::new(),
        kept: Vec::new(),
    };
    walk(&mut v, "", &keep, &mut paths);
    paths.removed.sort();
    paths.kept.sort();
    match serde_json::from_value(v) {
        Ok(event) => Retained {
            event,
            removed: paths.removed,
            kept: paths.kept,
        },
        Err(_) => nothing(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_text_is_shared_not_copied() {
        let system = "urn:oid:2.16.840.1.113883.3.7777.1".to_string();
        let a = intern(&system);
        let b = intern(&system.clone());
        assert_eq!(a, system);
        assert!(!a.is_heap_allocated() && !a.clone().is_heap_allocated());
        assert_eq!(a.as_ptr(), b.as_ptr(), "one copy per distinct string");
        assert_ne!(intern("urn:oid:2.16.840.1.113883.3.7777.2"), a);
    }

    #[test]
    fn drivers_license_systems_use_the_state_fips_code() {
        use identifier_kind::drivers_license_system as dl;
        assert_eq!(dl(Some("AL")), "urn:oid:2.16.840.1.113883.4.3.1");
        assert_eq!(dl(Some("CT")), "urn:oid:2.16.840.1.113883.4.3.9");
        assert_eq!(dl(Some("DE")), "urn:oid:2.16.840.1.113883.4.3.10");
        assert_eq!(dl(Some("WY")), "urn:oid:2.16.840.1.113883.4.3.56");
        assert_eq!(dl(Some("ZZ")), "urn:oid:2.16.840.1.113883.4.3");
        assert_eq!(dl(None), "urn:oid:2.16.840.1.113883.4.3");
    }

    #[test]
    fn debug_never_prints_phi() {
        let ev = CanonicalEvent {
            event_id: "hl7v2:1".into(),
            identifiers: vec![Identifier {
                system: "urn:mrn".into(),
                value: "MRN-SECRET-1".into(),
                kind: "mrn".into(),
                authority: None,
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

    #[test]
    fn retain_fields_removes_by_path_and_reports_each_path_once() {
        let ev = CanonicalEvent {
            event_id: "e".into(),
            subject_key: "k".into(),
            identifiers: vec![
                Identifier {
                    system: "s1".into(),
                    value: "v1".into(),
                    kind: "mrn".into(),
                    authority: None,
                },
                Identifier {
                    system: "s2".into(),
                    value: "v2".into(),
                    kind: "ssn".into(),
                    authority: None,
                },
            ],
            demographics: Some(Demographics {
                family_name: Some("F".into()),
                state: Some("IL".into()),
                ..Default::default()
            }),
            contacts: vec![Contact {
                family_name: Some("C".into()),
                ..Default::default()
            }],
            codes: vec![Coding {
                system: "x".into(),
                code: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let keep = |p: &str| {
            matches!(
                p,
                "event_id" | "identifiers.system" | "identifiers.kind" | "demographics.state"
            )
        };
        let (out, removed) = retain_fields(&ev, keep);
        assert_eq!(out.event_id, "e");
        assert_eq!(out.subject_key, "");
        assert_eq!(out.identifiers.len(), 2);
        assert!(out.identifiers.iter().all(|i| i.value.is_empty()));
        assert_eq!(out.identifiers[1].system, "s2");
        let d = out.demographics.as_ref().unwrap();
        assert_eq!(
            (d.family_name.as_deref(), d.state.as_deref()),
            (None, Some("IL"))
        );
        assert!(
            out.contacts.is_empty(),
            "an emptied record leaves its array"
        );
        assert!(out.codes.is_empty());
        assert_eq!(
            removed,
            [
                "codes.code",
                "codes.system",
                "contacts.family_name",
                "demographics.family_name",
                "identifiers.value",
                "subject_key"
            ]
        );
        // Keeping nothing leaves an event with no content at all.
        let (none, _) = retain_fields(&ev, |_| false);
        assert_eq!(none, CanonicalEvent::default());
        // What was kept and holds a value, each path once (two identifiers
        // share theirs); an allowed path with no value is not counted.
        let r = retain_fields_kept(&ev, |p| keep(p) || p == "demographics.city");
        assert_eq!(
            r.kept,
            [
                "demographics.state",
                "event_id",
                "identifiers.kind",
                "identifiers.system"
            ]
        );
        assert_eq!((r.event, r.removed), (out, removed));
    }
}
