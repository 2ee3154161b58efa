//! `consentry synth --out DIR`: same seed, same bytes; another seed, other bytes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn synth(dir: &Path, seed: &str) -> BTreeMap<String, Vec<u8>> {
    let out = Command::new(env!("CARGO_BIN_EXE_consentry"))
        .current_dir(consentry_testkit::root())
        .args(["synth", "--seed", seed, "--patients", "5", "--out"])
        .arg(dir)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let feed = consentry_synth::generate(&consentry_synth::SynthConfig::new(
        seed.parse().expect("numeric seed"),
        5,
    ));
    let count = |f: consentry_synth::Feed| feed.iter().filter(|r| r.feed == f).count();
    let want = format!(
        "wrote {} HL7 v2, {} FHIR and {} consent records",
        count(consentry_synth::Feed::Hl7v2),
        count(consentry_synth::Feed::Fhir),
        count(consentry_synth::Feed::Consent)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&want), "{stdout}");
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
    let records = consentry_synth::generate(&consentry_synth::SynthConfig::new(5, 5)).len();
    assert_eq!(a.len(), records);
    assert!(records > 35, "5 patients: {records} records");
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

/// `--drift-segment`: every HL7 v2 message ends with the Z-segment (and
/// nothing else changes); a name that is not a Z-segment is refused.
#[test]
fn drift_segment_is_appended_to_every_hl7_message() {
    let base = std::env::temp_dir().join(format!("consentry-synth-drift-{}", std::process::id()));
    let run = |extra: &[&str], dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_consentry"))
            .current_dir(consentry_testkit::root())
            .args([
                "synth",
                "--seed",
                "5",
                "--patients",
                "2",
                "--only",
                "ehr",
                "--out",
            ])
            .arg(dir)
            .args(extra)
            .output()
            .expect("runs")
    };
    assert!(run(&[], &base.join("plain")).status.success());
    assert!(run(&["--drift-segment", "ZQX"], &base.join("drift"))
        .status
        .success());
    let read = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir.join("hl7v2"))
            .expect("dir")
            .map(|e| {
                let p = e.expect("entry").path();
                (
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    std::fs::read_to_string(&p).expect("read"),
                )
            })
            .collect()
    };
    let (plain, drift) = (read(&base.join("plain")), read(&base.join("drift")));
    assert!(!plain.is_empty());
    assert_eq!(
        plain.keys().collect::<Vec<_>>(),
        drift.keys().collect::<Vec<_>>()
    );
    for (name, msg) in &plain {
        assert_eq!(
            drift[name],
            format!("{}\rZQX|1|drift\r", msg.trim_end_matches(['\r', '\n'])),
            "{name}"
        );
    }
    let refused = run(&["--drift-segment", "PID"], &base.join("bad"));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a Z-segment"));
    let _ = std::fs::remove_dir_all(&base);
}
