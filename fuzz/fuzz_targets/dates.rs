//! Every date parser never panics on any UTF-8 (issue 16: a non-ASCII
//! character in a FHIR zone offset crashed normalize for good). Each input
//! is tried alone and after valid prefixes, so the fuzzer reaches the
//! zone, fraction and offset paths with multi-byte characters in them.
#![no_main]
use consentry_stages::deidentify::values as safe_harbor;
use consentry_stages::normalize::hl7;
use consentry_stages::time;
use libfuzzer_sys::fuzz_target;

const PREFIXES: [&str; 8] = [
    "",
    "2026",
    "2026-11",
    "2026-11-01",
    "2026-11-01T08:30:00",
    "2026-11-01T08:30:00.",
    "2026-11-01T08:30:00+0",
    "20261101083000",
];

fuzz_target!(|data: &[u8]| {
    let tail = String::from_utf8_lossy(data);
    for p in PREFIXES {
        let s = format!("{p}{tail}");
        let _ = time::parse_fhir_datetime(&s);
        let _ = time::parse_date(&s);
        let _ = hl7::parse_ts(&s);
        let _ = safe_harbor::year_only(&s);
        let _ = safe_harbor::shift_date(&s, -180);
        let _ = safe_harbor::age_at(&s, 1_796_000_000_000);
    }
});
