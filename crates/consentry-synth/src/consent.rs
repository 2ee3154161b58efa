//! FHIR Consents for a synthetic patient: an opt-in permit for the
//! purposes the patient consented to (`Patient::consented`), and its
//! withdrawal (the same Consent, version 2, `inactive`).

use crate::fhir::{meta, subject_ref};
use crate::time::iso;
use crate::{Patient, SynthConfig};
use serde_json::{json, Value};

pub fn fhir_consent(cfg: &SynthConfig, p: &Patient) -> Value {
    let purposes: Vec<Value> = p
        .consented
        .iter()
        .map(|c| json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": c}))
        .collect();
    json!({
        "resourceType": "Consent",
        "id": format!("consent-{}", p.index),
        "meta": meta("1", p.admit - 86_400),
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": subject_ref(cfg, p),
        "dateTime": iso(p.admit - 86_400),
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": {"start": iso(p.admit - 86_400), "end": iso(p.admit + 3650 * 86_400)},
            "purpose": purposes
        }
    })
}

/// The patient's consent withdrawn: version 2 of the same Consent, status
/// `inactive` (FHIR R4's code for a consent no longer in force), updated
/// 30 days after admission.
pub fn fhir_consent_withdrawn(cfg: &SynthConfig, p: &Patient) -> Value {
    let mut c = fhir_consent(cfg, p);
    c["meta"] = meta("2", p.admit + 30 * 86_400);
    c["status"] = json!("inactive");
    c
}
