//! The HL7 v2 reader and timestamp parser never panic and stay bounded.
#![no_main]
use consentry_stages::normalize::hl7;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = hl7::parse(data) {
        for s in m.segments() {
            for n in 0..30 {
                if let Some(f) = m.field(s, n) {
                    let _ = hl7::parse_ts(&f);
                }
                for r in m.repetitions(s, n) {
                    for c in 1..6 {
                        let _ = m.component(r, c);
                    }
                }
            }
        }
    }
});
