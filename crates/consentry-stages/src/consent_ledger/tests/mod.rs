//! The consent ledger's tests, by theme: the internal capture form, FHIR
//! Consent documents, which version of a document wins, and revocations
//! reaching the vault. The helpers here build inputs and feed them in
//! order, applying each unit's writes as the runtime would.

mod captures;
mod documents;
mod ordering;
mod revocation;

use super::*;
use crate::test_fixtures::{services, topology, MemoryVault};
use consentry_core::stage::{apply_writes, InputMeta, Stage};
use serde_json::json;
use std::collections::BTreeMap;

const SYSTEM: &str = "urn:oid:2.16.840.1.113883.3.7777.1";
const MRN: &str = "CS1234567";
const ARRIVAL_MS: i64 = 1_796_500_000_000;

/// A ledger over a fresh in-memory vault, and an empty consent table.
fn fresh() -> (Arc<MemoryVault>, ConsentLedger, BTreeMap<String, Vec<u8>>) {
    let vault = Arc::new(MemoryVault::default());
    (Arc::clone(&vault), ledger(vault), BTreeMap::new())
}

fn ledger(vault: Arc<MemoryVault>) -> ConsentLedger {
    let s = services(vault);
    ConsentLedger::new(&topology(), s.keys.as_deref(), s.vault).expect("builds")
}

fn input(bytes: Vec<u8>, offset: i64) -> StageInput {
    StageInput {
        meta: InputMeta {
            topic: "consent.events".into(),
            offset,
            // Arrival: now (2026-12), as the broker stamps it; a document's
            // own times are never taken to be later than this.
            timestamp_ms: Some(ARRIVAL_MS + offset),
            now_ms: ARRIVAL_MS + 1_000,
            ..Default::default()
        },
        body: Body::Raw(bytes),
    }
}

fn capture(purpose: &str, channel: &str, state: &str, version: i64) -> Vec<u8> {
    let c = ConsentEvent {
        consent_id: "cap-1".into(),
        subject_system: SYSTEM.into(),
        subject_value: MRN.into(),
        purpose: purpose.into(),
        channel: channel.into(),
        state: state.into(),
        version,
        effective_ms: 500,
        expires_ms: None,
        source: "portal".into(),
        captured_by: Some("role:front-desk".into()),
        notice_version: Some("np-2026".into()),
    };
    avro::encode_consent_event(&c, 7).expect("encodes")
}

/// Feeds inputs in order, applying each unit's writes, like the runtime.
fn feed(
    l: &ConsentLedger,
    table: &mut BTreeMap<String, Vec<u8>>,
    inputs: Vec<Vec<u8>>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (i, bytes) in inputs.into_iter().enumerate() {
        for o in l.process(&input(bytes, i as i64), table) {
            apply_writes(table, &o.state);
            out.push(o);
        }
    }
    out
}

fn reasons(outs: &[Outcome]) -> Vec<String> {
    outs.iter()
        .map(|o| match &o.quarantine {
            Some(q) => format!("{}: {}", q.reason, q.detail),
            None => o.audit.decision.to_string(),
        })
        .collect()
}

fn fhir_consent(
    version: u32,
    status: &str,
    purposes: &[&str],
    nested: serde_json::Value,
) -> Vec<u8> {
    json!({
        "resourceType": "Consent",
        "id": "c-77",
        "meta": {"versionId": version.to_string(), "lastUpdated": "2026-10-01T00:00:00Z"},
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": SYSTEM, "value": MRN}},
        "dateTime": "2026-10-01T00:00:00Z",
        "provision": {
            "type": "permit",
            "period": {"start": "2026-09-01T00:00:00Z", "end": "2036-09-01T00:00:00Z"},
            "purpose": purposes.iter().map(|c| json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": c})).collect::<Vec<_>>(),
            "provision": nested
        }
    })
    .to_string()
    .into_bytes()
}

/// A Consent document as real systems send it: no `meta` at all, ordered
/// by its `dateTime`.
fn document(id: &str, version: Option<u32>, date_time: &str, decision: &str) -> Vec<u8> {
    let mut v = json!({
        "resourceType": "Consent",
        "id": id,
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
        "patient": {"identifier": {"system": SYSTEM, "value": MRN}},
        "dateTime": date_time,
        "provision": {
            "type": decision,
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]
        }
    });
    if let Some(n) = version {
        v["meta"] = json!({"versionId": n.to_string()});
    }
    v.to_string().into_bytes()
}

/// A Consent document with what a test varies.
fn doc(
    id: &str,
    mrn: &str,
    meta: serde_json::Value,
    date_time: Option<&str>,
    status: &str,
    provision: serde_json::Value,
) -> Vec<u8> {
    let mut v = json!({
        "resourceType": "Consent",
        "id": id,
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
        "patient": {"identifier": {"system": SYSTEM, "value": mrn}},
        "provision": provision
    });
    if !meta.is_null() {
        v["meta"] = meta;
    }
    if let Some(t) = date_time {
        v["dateTime"] = json!(t);
    }
    v.to_string().into_bytes()
}

fn research(decision: &str) -> serde_json::Value {
    json!({"type": decision, "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]})
}

fn entry_of(table: &BTreeMap<String, Vec<u8>>, l: &ConsentLedger, mrn: &str) -> ConsentEntry {
    let pseudonym = l.subjects.of(&keys::subject_key(SYSTEM, mrn));
    ConsentEntry::decode(&table[&consent::table_key(&pseudonym, "HRESCH", "*")]).unwrap()
}
