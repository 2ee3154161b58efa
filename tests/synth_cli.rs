//! `consentry synth --out DIR`: same seed, same bytes; another seed, other bytes.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn synth(dir: &Path, seed: &str) -> BTreeMap<String, Vec<u8>> {
    let out = Command::new(env!("CARGO_BIN_EXE_consentry"))
        .current_dir(common::root())
        .args(["synth", "--seed", seed, "--patients", "5", "--out"])
        .arg(dir)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("wrote 15 HL7 v2, 15 FHIR and 5 consent records"));
    let mut files = BTreeMap::new();
    for sub in ["hl7v2", "fhir", "consent"] {
        for e in std::fs::read_dir(dir.join(sub)).expect("dir") {
            let p = e.expect("entry").path();
            files.insert(
                format!(
                    "{sub}/{}",
                    p.file_name().unwrap_or_default().to_string_lossy()
                ),
                std::fs::read(&p).expect("read"),
            );
        }
    }
    files
}

#[test]
fn same_seed_writes_the_same_bytes() {
    let base = std::env::temp_dir().join(format!("consentry-synth-{}", std::process::id()));
    let a = synth(&base.join("a"), "5");
    let b = synth(&base.join("b"), "5");
    let c = synth(&base.join("c"), "6");
    assert_eq!(a.len(), 35);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a
        .keys()
        .any(|k| k.starts_with("hl7v2/") && k.ends_with("-ADT_A01.hl7")));
    assert!(a
        .keys()
        .any(|k| k.starts_with("fhir/") && k.ends_with("-fhir_Patient.json")));
    let _ = std::fs::remove_dir_all(&base);
}
