//! Token, key-file and sealed-bytes parsers: any input gives a value or a
//! named error, never a panic; a token that parses prints back as itself, a
//! key ring that loads saves and loads to the same versions, and sealed or
//! wrapped bytes that parse serialize back to themselves; sealed quarantine
//! payloads that were not sealed under the key never open.
#![no_main]
use consentry_crypto::keyring::KeyRing;
use consentry_crypto::sealed::{Sealed, WrappedKey};
use consentry_crypto::{QuarantineContext, QuarantineKeys, Token};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// One quarantine key for the whole run (a fixed ring: inputs never open).
fn quarantine_keys() -> &'static QuarantineKeys {
    static KEYS: OnceLock<QuarantineKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ring = KeyRing::from_key(consentry_crypto::Environment::NonProduction, [7; 32]);
        QuarantineKeys::new(&ring).expect("quarantine keys")
    })
}

fuzz_target!(|data: &[u8]| {
    // Sealed quarantine payloads: any bytes are an error, never a panic
    // (a forgery that opened would be a GCM break).
    let context = QuarantineContext {
        id: "q",
        stage: "normalize",
        source_topic: "ehr.hl7v2",
        source_partition: 0,
        source_offset: 0,
        reason: "malformed",
    };
    assert!(quarantine_keys().open(&context, data).is_err());
    if let Ok(s) = Sealed::from_bytes(data) {
        assert_eq!(s.to_bytes(), data);
    }
    if let Ok(w) = WrappedKey::from_bytes(data) {
        assert_eq!(w.to_bytes(), data);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Token::parse(text) {
        assert_eq!(t.to_string(), text);
    }
    if let Ok(ring) = KeyRing::from_json(text) {
        let again = KeyRing::from_json(&ring.to_json()).expect("a saved ring loads");
        assert_eq!(again.versions(), ring.versions());
        assert_eq!(again.environment(), ring.environment());
    }
});
