//! The FHIR element checker accepts or rejects any JSON with a path, never
//! a panic, and never a path that copies text from outside the element
//! grammar.
#![no_main]
use consentry_stages::normalize::fhir::model::{check, Problem};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let allow: BTreeSet<String> = ["Organization".to_string(), "Patient.extension(http://example.org/x)".to_string()].into();
    if let Err(Problem::Drift(p) | Problem::Malformed(p) | Problem::Unsupported(p)) = check(&v, &allow) {
        assert!(p.len() < 4096);
        assert!(!p.contains('\n'));
    }
});
