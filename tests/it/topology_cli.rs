//! `consentry topology check` rejects broken topologies with messages that
//! name the file, the line and the fix; stages refuse to start on them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn shipped() -> String {
    consentry_testkit::shipped_topology_text().to_string()
}

fn write_variant(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn check(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_consentry"))
        .args(["topology", "check"])
        .arg(file)
        .output()
        .expect("runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

#[test]
fn broken_topologies_are_rejected_with_file_line_and_fix() {
    let dir = std::env::temp_dir().join(format!("consentry-topology-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let base = shipped();

    let (ok, out) = check(&consentry_testkit::root().join("topology.yaml"));
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "valid (format 1, policy 2026.11-deidentify.1, 26 topics, 6 stages, 5 purposes"
        ),
        "{out}"
    );

    // (file name, from, to, needle for the line, expected message, expected fix)
    let cases = [
        (
            "typo-input.yaml",
            "inputs: [events.tokenized]",
            "inputs: [events.tokenised]",
            "events.tokenised",
            "stage 'route' input 'events.tokenised' is not a defined topic",
            "add it under `topics:` or correct the name",
        ),
        (
            "unknown-key.yaml",
            "    ledger: ledger.route\n",
            "    ledger: ledger.route\n    replicas: 3\n",
            "replicas: 3",
            "unknown field `replicas`",
            "remove the key or correct its spelling",
        ),
        (
            "audit-retention.yaml",
            "retention: unlimited, schema: audit_record",
            "retention: 7d, schema: audit_record",
            "role: audit",
            "audit topic 'audit' must keep its records forever",
            "set `retention: unlimited`",
        ),
        (
            "unclassified.yaml",
            "  note: highly-restricted\n",
            "",
            "fields:",
            "envelope field 'note' has no disclosure class",
            "add `note: <operational|limited|phi-restricted|highly-restricted>`",
        ),
        (
            "allow-unknown.yaml",
            "allow: [event_type, policy_version, purpose]",
            "allow: [event_type, policy_version, purpose, ssn]",
            "purpose, ssn]",
            "purpose 'marketing' allows field 'ssn', which is not a classified envelope field",
            "use a path listed under `fields:`",
        ),
        (
            "bad-profile.yaml",
            "profile: aggregate-only",
            "profile: aggregates",
            "profile: aggregates",
            "unknown variant `aggregates`",
            "use one of the expected values",
        ),
        (
            "consent-not-compacted.yaml",
            "consent.state:        { role: consent-state, partitions: 3, cleanup: compact }",
            "consent.state:        { role: consent-state, partitions: 3 }",
            "consent.state:",
            "topic 'consent.state' is a table (role ConsentState) but is not compacted",
            "set `cleanup: compact`",
        ),
        (
            "no-patient-index.yaml",
            "    state: normalize.patient-index\n",
            "",
            "  normalize:",
            "stage 'normalize' has no state topic for its patient index",
            "add `state: normalize.patient-index`",
        ),
        (
            "state-wrong-role.yaml",
            "    state: normalize.patient-index\n",
            "    state: quarantine\n",
            "state: quarantine",
            "stage 'normalize' state 'quarantine' has role Quarantine",
            "a normalize state must have a role among [State]",
        ),
        (
            "bad-hl7-path.yaml",
            "    hl7v2: []",
            "    hl7v2: [zpd-x]",
            "hl7v2: [zpd-x]",
            "'zpd-x' is not an HL7 v2 segment or field path",
            "write a segment id (`ZPD`) or a segment and field number (`PID-40`)",
        ),
        (
            "bad-fhir-path.yaml",
            "    fhir: []",
            "    fhir: [\"patient.Name\"]",
            "patient.Name",
            "'patient.Name' is not a FHIR element path",
            "write `Resource.element.child`",
        ),
        (
            "unclassified-geo.yaml",
            "  demographics.latitude: phi-restricted\n",
            "",
            "fields:",
            "envelope field 'demographics.latitude' has no disclosure class",
            "add `demographics.latitude: <operational|limited|phi-restricted|highly-restricted>`",
        ),
        (
            "zero-partitions.yaml",
            "quarantine:           { role: quarantine, partitions: 3",
            "quarantine:           { role: quarantine, partitions: 0",
            "role: quarantine",
            "topic 'quarantine' has 0 partitions",
            "set partitions between 1 and 1000",
        ),
    ];
    for (name, from, to, needle, message, fix) in cases {
        assert_eq!(base.matches(from).count(), 1, "anchor for {name}");
        let text = base.replacen(from, to, 1);
        let file = write_variant(&dir, name, &text);
        let (ok, out) = check(&file);
        assert!(!ok, "{name} was accepted");
        let line = line_of(&text, needle);
        let expected_start = format!("{}:{line}:", file.display());
        let hit = out
            .lines()
            .find(|l| l.contains(message))
            .unwrap_or_else(|| panic!("{name}: no '{message}' in:\n{out}"));
        assert!(
            hit.starts_with(&expected_start),
            "{name}: '{hit}' should start with '{expected_start}'"
        );
        assert!(
            hit.contains(&format!("; fix: {fix}")),
            "{name}: '{hit}' lacks the fix"
        );
    }

    // A stage refuses to start on an invalid topology: fail closed.
    let bad = dir.join("typo-input.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_consentry"))
        .args([
            "run",
            "normalize",
            "--exit-when-idle",
            "1",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--topology")
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid topology (nothing was started)") && err.contains("events.tokenised"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn matrix_and_diff_show_what_each_purpose_gets_and_what_a_change_releases() {
    let dir = std::env::temp_dir().join(format!("consentry-matrix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let old = write_variant(&dir, "old.yaml", &shipped());
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_consentry"))
            .current_dir(consentry_testkit::root())
            .args(args)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let m: Vec<serde_json::Value> =
        serde_json::from_str(&run(&["topology", "matrix", "--json"])).expect("json");
    let cell = |purpose: &str, field: &str| {
        m.iter()
            .find(|c| c["purpose"] == purpose && c["field"] == field)
            .map(|c| {
                (
                    c["class"].as_str().unwrap().to_string(),
                    c["allowed"].as_bool().unwrap(),
                )
            })
            .expect("cell")
    };
    assert_eq!(
        cell("patient-support", "identifiers.value"),
        ("phi-restricted".into(), true)
    );
    assert_eq!(
        cell("marketing", "identifiers.value"),
        ("phi-restricted".into(), false)
    );
    assert_eq!(
        cell("registry-research", "demographics.postal_code"),
        ("limited".into(), true)
    );
    let table = run(&["topology", "matrix"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("note ") && !l.contains('+')),
        "{table}"
    );

    let new = write_variant(
        &dir,
        "new.yaml",
        &shipped().replace(
            "allow: [event_type, policy_version, purpose]",
            "allow: [event_type, purpose, demographics.state]",
        ),
    );
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
    let text = run(&["topology", "diff", old, new]);
    assert!(
        text.contains("RELEASE   marketing: demographics.state (limited)"),
        "{text}"
    );
    assert!(
        text.contains("WITHHOLD  marketing: policy_version"),
        "{text}"
    );
    assert!(text.contains("2 change(s), 1 releasing more"), "{text}");
    assert!(run(&["topology", "diff", old, old]).contains("0 change(s)"));
}
