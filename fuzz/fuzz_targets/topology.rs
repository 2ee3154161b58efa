//! The topology loader reports errors for any text; it never panics.
#![no_main]
use consentry_core::topology::Topology;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = Topology::parse("fuzz.yaml", text) {
            assert!(!e.errors.is_empty());
        }
    }
});
