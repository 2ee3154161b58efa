//! A FHIR feed no one here wrote: US Core data from carebundle 0.5.0 (a
//! synthetic-patient generator on PyPI, pinned by `scripts/test-assets.sh`),
//! as transaction Bundles with `urn:uuid:` references and as a Bulk Data
//! NDJSON export with `Type/id` references, none of it with `meta.versionId`
//! or `meta.lastUpdated`, through normalize in process.
//! (`tests/third_party_feed.rs` runs the same feed end to end on the real
//! stack.)

use consentry_core::stage::{Body, InputMeta, StageInput};
use consentry_core::topology::Topology;
use consentry_core::CanonicalEvent;
use consentry_stages::normalize::fhir::model;
use consentry_stages::normalize::Normalize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[path = "../../consentry-testkit/src/assets.rs"]
mod test_assets;

/// carebundle's one identifier system for patients (its MRNs).
const CAREBUNDLE_MRN_SYSTEM: &str = "urn:uuid:6f2a1d3e-9c47-5b8a-a1f0-2d4e6c8b0a17";

fn feed() -> PathBuf {
    test_assets::test_asset_dir("carebundle-0.5.0")
}

/// The shipped topology with the generator's MRN system as the subject
/// system (the identity mapping a site would configure for this feed).
fn topology() -> Topology {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topology.yaml");
    let text = std::fs::read_to_string(&root).expect("topology.yaml");
    let text = text.replace("urn:oid:2.16.840.1.113883.3.7777.1", CAREBUNDLE_MRN_SYSTEM);
    Topology::parse("topology.yaml (carebundle)", &text).expect("carebundle topology")
}

/// Every record of the feed: the Bundles, then the export with its
/// Patients last, so the export's other resources wait for their Patient
/// (held, then re-driven) as they would from a client that loads files in
/// name order.
fn records() -> Vec<Vec<u8>> {
    let sorted = |dir: &str| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(feed().join(dir))
            .expect("feed dir")
            .map(|e| e.expect("entry").path())
            .collect();
        v.sort_by_key(|p| (p.file_name() == Some("Patient.ndjson".as_ref()), p.clone()));
        v
    };
    let mut out: Vec<Vec<u8>> = sorted("bundles")
        .into_iter()
        .map(|b| std::fs::read(b).expect("bundle"))
        .collect();
    for f in sorted("ndjson") {
        let text = std::fs::read_to_string(f).expect("ndjson");
        out.extend(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(|l| l.as_bytes().to_vec()),
        );
    }
    out
}

/// The resources of a record, by type (a Bundle's entries).
fn resource_types(bytes: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(bytes).expect("the feed is JSON");
    let rt = |r: &Value| r["resourceType"].as_str().unwrap_or("?").to_string();
    match v["resourceType"].as_str() {
        Some("Bundle") => v["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| rt(&e["resource"]))
            .collect(),
        _ => vec![rt(&v)],
    }
}

#[test]
fn every_patient_resource_of_the_carebundle_feed_normalizes() {
    let stage = Normalize::new(&topology());
    let mut state = BTreeMap::new();
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    let mut events: Vec<CanonicalEvent> = Vec::new();
    let mut quarantined: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped = 0;
    let records = records();
    let inputs: Vec<StageInput> = records
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            for t in resource_types(bytes) {
                *sent.entry(t).or_default() += 1;
            }
            StageInput {
                meta: InputMeta {
                    topic: "ehr.fhir".into(),
                    offset: i as i64,
                    ..Default::default()
                },
                body: Body::Raw(bytes.clone()),
            }
        })
        .collect();
    // Through the driver, so held records are re-driven as their Patients
    // arrive, as the runtime does.
    let outcomes = consentry_stages::drive(&stage, &inputs, &mut state);
    for o in &outcomes {
        match (&o.quarantine, o.audit.decision.as_str()) {
            (Some(q), _) if o.audit.decision == "quarantine" && q.detail.contains("held until") => {
            }
            (Some(q), _) => {
                *quarantined
                    .entry(format!("{} {}", q.reason.as_str(), q.detail))
                    .or_default() += 1
            }
            (None, "skip") => skipped += 1,
            (None, _) => events.extend(o.outputs.iter().map(|out| (*out.event).clone())),
        }
    }
    let total: usize = sent.values().sum();
    let carried: usize = sent
        .iter()
        .filter(|(t, _)| model::EVENT_RESOURCES.contains(&t.as_str()))
        .map(|(_, n)| n)
        .sum();
    let context: usize = sent
        .iter()
        .filter(|(t, _)| model::CARE_CONTEXT_RESOURCES.contains(&t.as_str()))
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "carebundle feed: {} records, {total} resources {sent:?}; {} events, {context} care-context resources not carried ({skipped} alone), quarantined {quarantined:?}",
        records.len(),
        events.len()
    );
    assert!(quarantined.is_empty(), "{quarantined:?}");
    assert_eq!(carried + context, total, "only known types in this feed");
    // Every resource about a patient is one event, whichever shape it came in.
    assert_eq!(events.len(), carried);
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        *by_type
            .entry(e.event_type.trim_start_matches("fhir:").to_string())
            .or_default() += 1;
    }
    for (t, n) in &sent {
        if model::EVENT_RESOURCES.contains(&t.as_str()) {
            assert_eq!(by_type.get(t), Some(n), "{t}");
        }
    }
    // One subject per generated patient (40 + 12), each event on one of them.
    let patients: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.event_type == "fhir:Patient")
        .map(|e| e.subject_key.as_str())
        .collect();
    assert_eq!(patients.len(), 52);
    assert!(events
        .iter()
        .all(|e| patients.contains(e.subject_key.as_str())));
    // Event ids are unique, and none relies on a version the feed lacks.
    let ids: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len());
    assert!(events.iter().all(|e| e.event_id.contains("/_content/")));
    // A re-sent feed is the same events (the same ids): duplicates downstream.
    let again = consentry_stages::drive(&stage, &inputs[..40], &mut state.clone());
    let again: BTreeSet<String> = again
        .iter()
        .flat_map(|o| o.outputs.iter().map(|out| out.event.event_id.to_string()))
        .collect();
    assert!(!again.is_empty() && again.iter().all(|id| ids.contains(id.as_str())));
}
