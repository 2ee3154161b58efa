//! consent-gate against the consent table the consent ledger writes:
//! purposes, periods, expiry, unknown consent and nested provisions.

use super::*;
use crate::consent_ledger::ConsentLedger;
use crate::test_fixtures::{services, topology, MemoryVault};
use consentry_core::stage::{apply_writes, Body, InputMeta};
use consentry_core::CanonicalEvent;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

const SYSTEM: &str = "urn:oid:2.16.840.1.113883.3.7777.1";
const MRN: &str = "CS7654321";

/// The consent table after the ledger has read `consents` (FHIR JSON).
fn table_from(consents: &[serde_json::Value]) -> BTreeMap<String, Vec<u8>> {
    let s = services(Arc::new(MemoryVault::default()));
    let ledger = ConsentLedger::new(&topology(), s.keys.as_deref(), s.vault).unwrap();
    let mut table = BTreeMap::new();
    for c in consents {
        let input = StageInput {
            meta: InputMeta {
                topic: "consent.events".into(),
                now_ms: 1,
                ..Default::default()
            },
            body: Body::Raw(c.to_string().into_bytes()),
        };
        for o in consentry_core::stage::Stage::process(&ledger, &input, &table) {
            assert!(o.quarantine.is_none(), "{:?}", o.quarantine);
            apply_writes(&mut table, &o.state);
        }
    }
    table
}

fn consent(purposes: &[&str], nested: serde_json::Value) -> serde_json::Value {
    json!({
        "resourceType": "Consent", "id": "c-9",
        "meta": {"versionId": "1"},
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": SYSTEM, "value": MRN}},
        "provision": {
            "type": "permit",
            "period": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
            "purpose": purposes.iter().map(|c| json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": c})).collect::<Vec<_>>(),
            "provision": nested
        }
    })
}

/// 2026-06-01 and 2026-07-01, inside the consent's period.
const EVENT_MS: i64 = 1_780_272_000_000;
const NOW_MS: i64 = 1_782_864_000_000;

fn gate_decisions(
    table: &BTreeMap<String, Vec<u8>>,
    event_type: &str,
    now_ms: i64,
) -> BTreeMap<String, (String, String, usize)> {
    let s = services(Arc::new(MemoryVault::default()));
    let gate = ConsentGate::new(&topology(), s.keys.as_deref()).unwrap();
    let ev = CanonicalEvent {
        event_id: "e1".into(),
        event_type: event_type.into(),
        event_time_ms: Some(EVENT_MS),
        correlation_id: "c1".into(),
        subject_key: consentry_core::keys::subject_key(SYSTEM, MRN),
        ..Default::default()
    };
    let input = StageInput {
        meta: InputMeta {
            topic: "events.normalized".into(),
            key: Some("k".into()),
            idempotency_key: Some("ik-1".into()),
            now_ms,
            ..Default::default()
        },
        body: Body::Event(Box::new(ev)),
    };
    let outs = gate.process(&input, table);
    assert_eq!(outs.len(), 5, "one unit per purpose");
    outs.into_iter()
        .map(|o| {
            let purpose = o.audit.purpose.clone().unwrap().to_string();
            for out in &o.outputs {
                assert_eq!(out.event.purpose.as_deref(), Some(purpose.as_str()));
                assert!(out
                    .event
                    .subject_token
                    .as_deref()
                    .is_some_and(|t| t.starts_with("tok:subject:")));
                if o.audit.decision == "allow" {
                    assert_eq!(out.event.consent_basis.as_deref(), Some("Consent/c-9@v1/*"));
                }
            }
            if o.audit.reason_code != "consent_unknown" {
                assert_eq!(o.audit.consent_reference.as_deref(), Some("Consent/c-9"));
                assert_eq!(o.audit.consent_version.as_deref(), Some("v1"));
            }
            (
                purpose,
                (
                    o.audit.decision.to_string(),
                    o.audit.reason_code.to_string(),
                    o.outputs.len(),
                ),
            )
        })
        .collect()
}

fn d(decision: &str, reason: &str, outputs: usize) -> (String, String, usize) {
    (decision.into(), reason.into(), outputs)
}

#[test]
fn unknown_consent_denies_or_asks() {
    let got = gate_decisions(&BTreeMap::new(), "ADT^A01", NOW_MS);
    for p in [
        "outcomes-analytics",
        "patient-support",
        "registry-research",
        "trial-recruitment",
    ] {
        assert_eq!(got[p], d("deny", "consent_unknown", 0), "{p}");
    }
    assert_eq!(got["marketing"], d("downgrade", "consent_unknown", 1));
}

#[test]
fn decisions_follow_purpose_period_and_expiry() {
    let table = table_from(&[consent(&["HRESCH", "HOPERAT"], json!([]))]);
    let got = gate_decisions(&table, "ADT^A01", NOW_MS);
    assert_eq!(got["trial-recruitment"], d("allow", "consent_active", 1));
    assert_eq!(got["registry-research"], d("allow", "consent_active", 1));
    assert_eq!(got["outcomes-analytics"], d("allow", "consent_active", 1));
    assert_eq!(got["patient-support"], d("deny", "consent_unknown", 0));
    assert_eq!(got["marketing"], d("downgrade", "consent_unknown", 1));
    // Processed after the consent's end (2027-01-01): expired.
    let got = gate_decisions(&table, "ADT^A01", 1_800_000_000_000);
    assert_eq!(got["trial-recruitment"], d("deny", "consent_expired", 0));
}

/// A permit with a nested deny for Observations: the narrower decision for
/// an Observation, the broad one for the rest.
#[test]
fn nested_deny_provision_for_a_data_class_narrows_the_decision() {
    let nested = json!([{
        "type": "deny",
        "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}],
        "provision": [{
            "type": "permit",
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HOPERAT"}]
        }]
    }]);
    let table = table_from(&[consent(&["HRESCH", "HOPERAT"], nested)]);
    let obs = gate_decisions(&table, "fhir:Observation", NOW_MS);
    assert_eq!(obs["trial-recruitment"], d("deny", "provision_deny", 0));
    assert_eq!(obs["registry-research"], d("deny", "provision_deny", 0));
    // The deeper permit opens Observations again for HOPERAT only.
    assert_eq!(obs["outcomes-analytics"], d("allow", "consent_active", 1));
    let cond = gate_decisions(&table, "fhir:Condition", NOW_MS);
    assert_eq!(cond["trial-recruitment"], d("allow", "consent_active", 1));
}

#[test]
fn a_downgrade_carries_nothing_of_the_event() {
    let s = services(Arc::new(MemoryVault::default()));
    let gate = ConsentGate::new(&topology(), s.keys.as_deref()).unwrap();
    let ev = CanonicalEvent {
        event_id: "e1".into(),
        event_type: "fhir:Condition".into(),
        correlation_id: "c1".into(),
        subject_key: consentry_core::keys::subject_key(SYSTEM, MRN),
        note: Some("free text".into()),
        identifiers: vec![Default::default()],
        ..Default::default()
    };
    let input = StageInput {
        meta: InputMeta {
            idempotency_key: Some("ik".into()),
            ..Default::default()
        },
        body: Body::Event(Box::new(ev)),
    };
    let outs = gate.process(&input, &BTreeMap::new());
    let notice = outs
        .iter()
        .flat_map(|o| &o.outputs)
        .next()
        .expect("marketing's notice");
    assert_eq!(notice.event.event_type, CONSENT_NEEDED);
    assert!(notice.event.note.is_none() && notice.event.identifiers.is_empty());
    assert!(gate.process(
        &StageInput {
            body: Body::Event(Box::default()),
            ..input
        },
        &BTreeMap::new()
    )[0]
    .quarantine
    .is_some());
}
