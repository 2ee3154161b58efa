//! FHIR R4 resources for a synthetic patient: Patient (with US Core race,
//! ethnicity and birth sex), Encounter, Condition, Observation,
//! Appointment and a transaction Bundle (MedicationRequest and its
//! Provenance), and the pieces they share (`meta`, the subject reference,
//! codings).

use crate::patient::note;
use crate::time::iso;
use crate::{Patient, SynthConfig};
use consentry_core::envelope::identifier_kind;
use serde_json::{json, Value};

pub(crate) fn meta(version: &str, at: i64) -> Value {
    json!({"versionId": version, "lastUpdated": iso(at), "source": "CSEHR"})
}

pub(crate) fn subject_ref(cfg: &SynthConfig, p: &Patient) -> Value {
    json!({
        "reference": format!("Patient/pat-{}", p.index),
        "identifier": {"system": cfg.subject_system, "value": p.mrn},
        "display": format!("{} {}", p.given, p.family)
    })
}

const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const CDC_RACE: &str = "urn:oid:2.16.840.1.113883.6.238";

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

pub fn fhir_patient(cfg: &SynthConfig, p: &Patient) -> Value {
    let b = &p.birth_date;
    let omb = |url: &str, (code, display): (&str, &str)| {
        json!({"url": url, "extension": [
            {"url": "ombCategory", "valueCoding": coding(CDC_RACE, code, display)},
            {"url": "text", "valueString": display}
        ]})
    };
    json!({
        "resourceType": "Patient",
        "id": format!("pat-{}", p.index),
        "meta": meta("1", p.admit),
        "extension": [
            omb("http://hl7.org/fhir/us/core/StructureDefinition/us-core-race", p.race),
            omb("http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity", p.ethnicity),
            {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": p.sex}
        ],
        "identifier": [
            {"use": "usual", "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
             "system": cfg.subject_system, "value": p.mrn, "assigner": {"display": cfg.mrn_authority}},
            {"type": {"coding": [{"system": V2_0203, "code": "AN"}]},
             "system": cfg.account_system, "value": p.account, "assigner": {"display": cfg.account_authority}},
            {"type": {"coding": [{"system": V2_0203, "code": "SS"}]},
             "system": "http://hl7.org/fhir/sid/us-ssn", "value": p.ssn},
            {"type": {"coding": [{"system": V2_0203, "code": "DL"}]},
             "system": identifier_kind::drivers_license_system(Some(p.state)), "value": p.drivers_license}
        ],
        "active": true,
        "name": [{"use": "official", "family": p.family, "given": [p.given]}],
        "telecom": [
            {"system": "phone", "value": p.phone, "use": "home"},
            {"system": "fax", "value": p.fax, "use": "home"},
            {"system": "email", "value": p.email},
            {"system": "url", "value": p.portal_url}
        ],
        "gender": if p.sex == "F" { "female" } else { "male" },
        "birthDate": format!("{}-{}-{}", &b[..4], &b[4..6], &b[6..8]),
        "address": [{"use": "home", "line": [p.street], "city": p.city, "state": p.state, "postalCode": p.zip, "country": "US"}],
        "maritalStatus": {"coding": [coding("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", p.marital.0, p.marital.1)]},
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": p.language}]}, "preferred": true}],
        "contact": [{
            "relationship": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/v2-0063", p.kin.2 .0, p.kin.2 .1)]}],
            "name": {"family": p.kin.0, "given": [p.kin.1]},
            "telecom": [{"system": "phone", "value": p.kin.3}]
        }],
        "photo": [{"contentType": "image/jpeg", "url": format!("https://portal.example.org/photos/{}.jpg", p.index)}]
    })
}

pub fn fhir_encounter(cfg: &SynthConfig, p: &Patient) -> Value {
    let (_, att_family, att_given) = &p.attending;
    json!({
        "resourceType": "Encounter",
        "id": format!("enc-{}", p.index),
        "meta": meta("1", p.discharge),
        "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "VN"}]},
                        "system": cfg.visit_system, "value": p.visit, "assigner": {"display": cfg.visit_authority}}],
        "status": "finished",
        "class": coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "IMP", "inpatient encounter"),
        "serviceType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0069", "code": p.service}]},
        "subject": subject_ref(cfg, p),
        "participant": [{
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND"}]}],
            "individual": {"display": format!("{att_given} {att_family}")}
        }],
        "period": {"start": iso(p.admit), "end": iso(p.discharge)},
        "hospitalization": {
            "admitSource": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0023", "code": "7"}]},
            "dischargeDisposition": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0112", "code": "01"}]}
        },
        "location": [{"location": {"display": format!("{} {} {}", p.location.0, p.location.1, p.location.2)}}]
    })
}

pub fn fhir_condition(cfg: &SynthConfig, p: &Patient) -> Value {
    json!({
        "resourceType": "Condition",
        "id": format!("cond-{}", p.index),
        "meta": meta("1", p.admit + 3_600),
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis"}]}],
        "code": {"coding": [coding("http://hl7.org/fhir/sid/icd-10-cm", p.diagnosis.0, p.diagnosis.1)]},
        "subject": subject_ref(cfg, p),
        "recordedDate": iso(p.admit + 3_600),
        "note": [{"text": note(p)}]
    })
}

/// A vital sign or lab result that names its patient by id only: normalize
/// resolves it through its patient index.
pub fn fhir_observation(_cfg: &SynthConfig, p: &Patient) -> Value {
    let (code, display, unit, value) = p.observation;
    json!({
        "resourceType": "Observation",
        "id": format!("obs-{}", p.index),
        "meta": meta("1", p.admit + 1_800),
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [coding("http://loinc.org", code, display)]},
        "subject": {"reference": format!("Patient/pat-{}", p.index)},
        "effectiveDateTime": iso(p.admit + 1_800),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    })
}

pub fn fhir_appointment(_cfg: &SynthConfig, p: &Patient) -> Value {
    json!({
        "resourceType": "Appointment",
        "id": format!("appt-{}", p.index),
        "meta": meta("1", p.discharge),
        "status": "booked",
        "serviceType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/service-type", "code": "124", "display": "General Practice"}]}],
        "description": format!("Follow-up for {} {}", p.given, p.family),
        "start": iso(p.discharge + 14 * 86_400),
        "end": iso(p.discharge + 14 * 86_400 + 1_800),
        "participant": [
            {"actor": {"reference": format!("Patient/pat-{}", p.index), "type": "Patient", "display": format!("{} {}", p.given, p.family)}, "status": "accepted"},
            {"actor": {"display": format!("Dr {}", p.attending.1)}, "status": "accepted"}
        ]
    })
}

/// A transaction Bundle as an EHR posts a new prescription: the order and
/// its Provenance, linked by urn:uuid, without versions of their own.
pub fn fhir_medication_bundle(cfg: &SynthConfig, p: &Patient) -> Value {
    let order = format!(
        "urn:uuid:5f0c{:08x}-0000-4000-8000-{:012x}",
        p.index,
        cfg.seed & 0xffff_ffff_ffff
    );
    json!({
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:b0c1{:08x}-0000-4000-8000-{:012x}", p.index, cfg.seed & 0xffff_ffff_ffff)},
        "type": "transaction",
        "timestamp": iso(p.discharge),
        "entry": [
            {"fullUrl": order, "resource": {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"coding": [coding("http://www.nlm.nih.gov/research/umls/rxnorm", p.medication.0, p.medication.1)]},
                "subject": {"reference": format!("Patient/pat-{}", p.index)},
                "authoredOn": iso(p.discharge),
                "requester": {"display": format!("Dr {}", p.attending.1)},
                "dosageInstruction": [{"text": "1 tablet by mouth daily"}]
             }, "request": {"method": "POST", "url": "MedicationRequest"}},
            {"fullUrl": format!("urn:uuid:9a0e{:08x}-0000-4000-8000-{:012x}", p.index, cfg.seed & 0xffff_ffff_ffff), "resource": {
                "resourceType": "Provenance",
                "target": [{"reference": order}],
                "recorded": iso(p.discharge),
                "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}]},
                "agent": [{"who": {"display": format!("Dr {}", p.attending.1)}}]
             }, "request": {"method": "POST", "url": "Provenance"}}
        ]
    })
}
