//! `consentry keys`: the key file's life cycle through the binary, and the
//! tokens it makes across a rotation. No broker needed.

use consentry_crypto::keyring::{Environment, KeyFile, KeyProvider};
use consentry_crypto::Tokenizer;
use std::path::Path;
use std::process::Command;

fn keys(args: &[&str], file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_consentry"))
        .arg("keys")
        .args(args)
        .arg("--file")
        .arg(file)
        .output()
        .expect("runs consentry");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn init_rotate_retire_list_and_tokens_across_a_rotation() {
    let dir = std::env::temp_dir().join(format!("consentry-keys-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.json");

    let (ok, out) = keys(&["init", "--environment", "development"], &file);
    assert!(ok, "{out}");
    let ring = KeyFile::new(&file).key_ring().unwrap();
    assert_eq!(ring.environment(), Environment::NonProduction);
    let v1 = Tokenizer::new(&ring, "crm")
        .unwrap()
        .deterministic("urn:example:mrn", "MRN-1");

    // A second init would lose every token: refused.
    let (ok, out) = keys(&["init", "--environment", "development"], &file);
    assert!(!ok && out.contains("exists"), "{out}");

    let (ok, out) = keys(&["rotate"], &file);
    assert!(ok && out.contains("key version 2 active"), "{out}");
    let ring = KeyFile::new(&file).key_ring().unwrap();
    let t = Tokenizer::new(&ring, "crm").unwrap();
    assert!(t
        .deterministic("urn:example:mrn", "MRN-1")
        .starts_with("tok:crm:v2:"));
    assert_eq!(
        t.deterministic_with(1, "urn:example:mrn", "MRN-1"),
        Some(v1),
        "a rotation keeps version 1 tokens the same"
    );

    let (ok, out) = keys(&["retire", "--version", "2"], &file);
    assert!(!ok && out.contains("cannot be retired"), "{out}");
    // Version 1 is the anchor (pseudonyms, the vault's names for subjects,
    // date shifts derive from it): refused unless asked for by name.
    let (ok, out) = keys(&["retire", "--version", "1"], &file);
    assert!(
        !ok && out.contains("is the anchor") && out.contains("--anchor"),
        "{out}"
    );
    let (ok, out) = keys(&["retire", "--version", "1", "--anchor"], &file);
    assert!(ok, "{out}");
    let (ok, out) = keys(&["list"], &file);
    assert!(ok, "{out}");
    assert!(out.contains("(non-production)"), "{out}");
    assert!(
        out.contains("v1  retired") && out.contains("v2  active"),
        "{out}"
    );

    // Nothing the command printed is key material.
    let text = std::fs::read_to_string(&file).unwrap();
    let material: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"material\": \""))
        .map(|l| l.trim_end_matches(['"', ',']))
        .collect();
    assert_eq!(material.len(), 2);
    for m in material {
        assert!(!out.contains(m));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
