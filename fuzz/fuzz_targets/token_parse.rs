//! Token and key-file parsers: any text gives a value or a named error,
//! never a panic; a token that parses prints back as itself, and a key
//! ring that loads saves and loads to the same versions.
#![no_main]
use consentry_crypto::keyring::KeyRing;
use consentry_crypto::Token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
