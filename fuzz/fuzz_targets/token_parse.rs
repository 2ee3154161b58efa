//! Token, key-file and sealed-bytes parsers: any input gives a value or a
//! named error, never a panic; a token that parses prints back as itself, a
//! key ring that loads saves and loads to the same versions, and sealed or
//! wrapped bytes that parse serialize back to themselves.
#![no_main]
use consentry_crypto::envelope::{Sealed, WrappedKey};
use consentry_crypto::keyring::KeyRing;
use consentry_crypto::Token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
