//! The driver: every patient's HL7 messages, FHIR resources and Consent,
//! in one stable order, keyed by the subject's partitioning digest.

use crate::fhir::{
    fhir_appointment, fhir_condition, fhir_encounter, fhir_medication_bundle, fhir_observation,
    fhir_patient,
};
use crate::{
    fhir_consent, fhir_consent_withdrawn, hl7_adt, patients, Feed, SynthConfig, SynthRecord,
};
use consentry_core::keys;
use serde_json::Value;

/// Generates the whole feed in a stable order: per patient its HL7
/// messages, its FHIR resources and its consents. Every patient has ADT
/// A01 or A04, A08 and A03, a FHIR Patient, Encounter, Condition and
/// Observation; some also an A40 merge, an Appointment, or a transaction
/// Bundle (MedicationRequest and its Provenance). Every tenth patient's
/// Observation arrives before its Patient, so normalize must hold it until
/// the Patient comes.
pub fn generate(cfg: &SynthConfig) -> Vec<SynthRecord> {
    let mut out = Vec::new();
    for p in patients(cfg) {
        let key = keys::subject_key(&cfg.subject_system, &p.mrn).to_string();
        let first = if p.index % 2 == 0 { "A01" } else { "A04" };
        let mut triggers = vec![first, "A08", "A03"];
        if p.merged_mrn.is_some() {
            triggers.push("A40");
        }
        for (n, trigger) in triggers.into_iter().enumerate() {
            out.push(SynthRecord {
                feed: Feed::Hl7v2,
                key: key.clone(),
                kind: format!("ADT^{trigger}"),
                payload: hl7_adt(cfg, &p, trigger, n).into_bytes(),
            });
        }
        let mut fhir: Vec<(&str, Value)> = vec![
            ("Patient", fhir_patient(cfg, &p)),
            ("Encounter", fhir_encounter(cfg, &p)),
            ("Condition", fhir_condition(cfg, &p)),
            ("Observation", fhir_observation(cfg, &p)),
        ];
        if p.index % 10 == 9 {
            // The Observation names its Patient by id only, and comes first.
            fhir.swap(0, 3);
        }
        if p.index % 3 == 1 {
            fhir.push(("Appointment", fhir_appointment(cfg, &p)));
        }
        if p.index % 4 == 2 {
            fhir.push(("Bundle", fhir_medication_bundle(cfg, &p)));
        }
        for (kind, resource) in fhir {
            out.push(SynthRecord {
                feed: Feed::Fhir,
                key: key.clone(),
                kind: format!("fhir:{kind}"),
                payload: resource.to_string().into_bytes(),
            });
        }
        out.push(SynthRecord {
            feed: Feed::Consent,
            key: key.clone(),
            kind: "fhir:Consent".into(),
            payload: fhir_consent(cfg, &p).to_string().into_bytes(),
        });
    }
    out
}

/// Consent withdrawals for the first `n` patients who consented to
/// anything: each one's Consent again, version 2, `inactive`.
pub fn withdrawals(cfg: &SynthConfig, n: usize) -> Vec<SynthRecord> {
    patients(cfg)
        .into_iter()
        .filter(|p| !p.consented.is_empty())
        .take(n)
        .map(|p| SynthRecord {
            feed: Feed::Consent,
            key: keys::subject_key(&cfg.subject_system, &p.mrn).to_string(),
            kind: "fhir:Consent".into(),
            payload: fhir_consent_withdrawn(cfg, &p).to_string().into_bytes(),
        })
        .collect()
}

/// How many canonical events a record yields (a Bundle, one per resource).
pub fn events_in(r: &SynthRecord) -> usize {
    match r.kind.as_str() {
        "fhir:Bundle" => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = generate(&SynthConfig::new(7, 5));
        let b = generate(&SynthConfig::new(7, 5));
        let c = generate(&SynthConfig::new(8, 5));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let per_patient: usize = patients(&SynthConfig::new(7, 5))
            .iter()
            .map(|p| {
                3 + 4
                    + 1
                    + usize::from(p.merged_mrn.is_some())
                    + usize::from(p.index % 3 == 1)
                    + usize::from(p.index % 4 == 2)
            })
            .sum();
        assert_eq!(a.len(), per_patient);
    }

    /// Feeds from different first patients share no message id, resource
    /// id nor MRN (a running pipeline takes them as new); withdrawals are
    /// version 2 of the same Consents, `inactive`.
    #[test]
    fn later_first_patients_are_new_and_withdrawals_follow_their_consents() {
        let first = SynthConfig::new(7, 4);
        let later = SynthConfig {
            first_patient: 100,
            ..SynthConfig::new(7, 4)
        };
        let control_ids = |cfg: &SynthConfig| -> std::collections::BTreeSet<String> {
            generate(cfg)
                .iter()
                .filter(|r| r.feed == Feed::Hl7v2)
                .filter_map(|r| {
                    String::from_utf8_lossy(&r.payload)
                        .split('|')
                        .nth(9)
                        .map(String::from)
                })
                .collect()
        };
        let (a, b) = (control_ids(&first), control_ids(&later));
        assert_eq!((a.len(), b.len()), (a.len(), a.len()));
        assert!(a.is_disjoint(&b), "{a:?} {b:?}");
        let mrns = |cfg: &SynthConfig| -> Vec<String> {
            patients(cfg).into_iter().map(|p| p.mrn).collect()
        };
        assert!(mrns(&first).iter().all(|m| !mrns(&later).contains(m)));
        assert_eq!(patients(&later)[0].index, 100);

        let consented = patients(&first)
            .iter()
            .filter(|p| !p.consented.is_empty())
            .count();
        let w = withdrawals(&first, 2);
        assert_eq!(w.len(), 2.min(consented));
        for r in &w {
            let v: Value = serde_json::from_slice(&r.payload).expect("JSON");
            assert_eq!(v["status"], "inactive");
            assert_eq!(v["meta"]["versionId"], "2");
            let original = generate(&first)
                .into_iter()
                .find(|o| o.feed == Feed::Consent && o.key == r.key)
                .expect("the consent it withdraws");
            let o: Value = serde_json::from_slice(&original.payload).expect("JSON");
            assert_eq!((&o["id"], &o["provision"]), (&v["id"], &v["provision"]));
        }
    }

    #[test]
    fn every_safe_harbor_kind_is_present() {
        let cfg = SynthConfig::new(1, 3);
        let feed = generate(&cfg);
        let all: String = feed
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect();
        for p in patients(&cfg) {
            let d = &p.birth_date;
            for v in [
                &p.family,
                &p.given,
                &p.street,
                &p.zip,
                &p.phone,
                &p.fax,
                &p.email,
                &p.ssn,
                &p.mrn,
                &p.plan_beneficiary,
                &p.account,
                &p.drivers_license,
                &p.vehicle_id,
                &p.device_id,
                &p.portal_url,
                &p.ip,
                &p.biometric_id,
                d,
            ] {
                assert!(
                    all.contains(v.as_str()),
                    "value of patient {} missing from feed",
                    p.index
                );
            }
            assert!(all.contains(&format!(
                "https://portal.example.org/photos/{}.jpg",
                p.index
            )));
        }
    }
}
