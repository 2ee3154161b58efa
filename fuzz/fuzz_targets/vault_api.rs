//! The vault's request handling (`consentry_vault::api::Api::handle`, what
//! `vault serve` runs for every request) on arbitrary bytes: a method and
//! path chosen by the first byte, then an `Authorization` value and a body
//! from the rest, against a vault holding one token. Never a panic; every
//! answer a status the API documents; the identity only in a 200 to the
//! one valid credential; never the credential in an answer.
#![no_main]
use consentry_crypto::keyring::KeyRing;
use consentry_crypto::Environment;
use consentry_vault::access::{Credentials, Policy};
use consentry_vault::api::{Api, CallerEntry, CallersFile, QUARANTINE_OPEN_PATH, RESOLVE_PATH};
use consentry_vault::{FileStore, Vault};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Instant;

const SECRET: &str = "cvk_fuzz-credential";
const IDENTITY: &str = "MRN-FUZZ-0001";

fn api() -> &'static (Api, String) {
    static API: OnceLock<(Api, String)> = OnceLock::new();
    API.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("consentry-fuzz-vault-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let ring = KeyRing::from_key(Environment::NonProduction, [9; 32]);
        let store = FileStore::open(&dir.join("v.redb")).expect("store");
        let vault = Vault::new(&ring, Environment::NonProduction, Box::new(store)).expect("vault");
        let token = vault
            .issue("crm", "subject-1", format!("urn:mrn|{IDENTITY}").as_bytes(), 1)
            .expect("token");
        let file = CallersFile {
            callers: vec![CallerEntry {
                id: "desk".into(),
                credential_sha256: hex::encode(Credentials::digest(SECRET)),
                domains: ["crm".to_string(), "quarantine".to_string()].into(),
                purposes: ["patient-support".to_string(), "quarantine-review".to_string()].into(),
                break_glass: true,
                rate_per_minute: u32::MAX,
            }],
        };
        let policy = Policy {
            purpose_domains: [("patient-support".to_string(), "crm".to_string())].into(),
            justification: None,
        };
        (Api::new(vault, file.credentials().expect("creds"), policy), token)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (api, token) = api();
    let (method, path) = match selector % 5 {
        0 => ("POST", RESOLVE_PATH),
        1 => ("POST", QUARANTINE_OPEN_PATH),
        2 => ("GET", RESOLVE_PATH),
        3 => ("POST", "/v1/other"),
        _ => ("DELETE", QUARANTINE_OPEN_PATH),
    };
    // The authorization: the valid credential, or the input's first line.
    let split = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    let (auth_bytes, body) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
    let auth = if selector & 0x80 != 0 {
        Some(format!("Bearer {SECRET}"))
    } else {
        std::str::from_utf8(auth_bytes).ok().map(str::to_string)
    };
    // Sometimes a well-formed body around the real token, so the deeper
    // paths are reached.
    let body = if selector & 0x40 != 0 {
        serde_json::json!({
            "token": token, "purpose": String::from_utf8_lossy(body),
            "justification": "fuzzing the vault's request handling",
        })
        .to_string()
        .into_bytes()
    } else {
        body.to_vec()
    };
    let (response, call) = api.handle(method, path, auth.as_deref(), &body, Instant::now());
    assert!(
        [200, 400, 401, 403, 404, 410, 422, 429, 503].contains(&response.status),
        "{}",
        response.status
    );
    assert_eq!(call.status, response.status);
    if response.body.contains(IDENTITY) {
        assert_eq!(response.status, 200);
        assert_eq!(auth.as_deref(), Some(format!("Bearer {SECRET}").as_str()));
        assert_eq!(call.decision.as_str(), "allow");
    }
    assert!(!response.body.contains(SECRET));
});
