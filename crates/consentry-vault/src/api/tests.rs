//! The HTTP API end to end through `Api::handle`: every status and what
//! its call record says, quarantine opening, the callers file.

use super::*;
use crate::FileStore;
use consentry_crypto::{Environment, KeyRing, QuarantineContext};
use std::time::Duration;

fn policy() -> Policy {
    Policy {
        purpose_domains: [
            ("patient-support", "crm"),
            ("marketing", "marketing"),
            ("trial-recruitment", "trial"),
        ]
        .iter()
        .map(|(p, d)| (p.to_string(), d.to_string()))
        .collect(),
        justification: None,
    }
}

const WHY: &str = "patient called about programme enrolment";
const EMERGENCY: &str = "adverse event report needs the patient's identity now";

fn entry(
    id: &str,
    secret: &str,
    domains: &[&str],
    purposes: &[&str],
    bg: bool,
    rate: u32,
) -> CallerEntry {
    CallerEntry {
        id: id.into(),
        credential_sha256: hex::encode(Credentials::digest(secret)),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        purposes: purposes.iter().map(|p| p.to_string()).collect(),
        break_glass: bg,
        rate_per_minute: rate,
    }
}

fn body(token: &str, purpose: &str, why: &str, bg: bool) -> Vec<u8> {
    serde_json::json!({"token": token, "purpose": purpose, "justification": why, "break_glass": bg})
        .to_string()
        .into_bytes()
}

/// A vault on a new file store in a fresh temporary folder (the test
/// removes it), and the vault's key ring.
fn file_vault(tag: &str) -> (std::path::PathBuf, KeyRing, Vault) {
    let dir = std::env::temp_dir().join(format!("consentry-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ring = KeyRing::generate(Environment::NonProduction).unwrap();
    let vault = Vault::new(
        &ring,
        Environment::NonProduction,
        Box::new(FileStore::open(&dir.join("v.redb")).unwrap()),
    )
    .unwrap();
    (dir, ring, vault)
}

#[test]
fn every_status_and_what_its_call_record_says() {
    let (dir, _ring, vault) = file_vault("api");
    let crm = vault
        .issue("crm", "subj-1", b"urn:mrn|MRN-0001", 1)
        .unwrap();
    let gone = vault
        .issue("crm", "subj-2", b"urn:mrn|MRN-0002", 1)
        .unwrap();
    vault.shred("subj-2", None).unwrap();
    let trial = vault
        .issue("trial", "subj-1", b"urn:mrn|MRN-0001", 1)
        .unwrap();
    let file = CallersFile {
        callers: vec![
            entry(
                "desk",
                "s3cret-desk",
                &["crm", "trial"],
                &["patient-support"],
                true,
                600,
            ),
            entry(
                "slow",
                "s3cret-slow",
                &["crm"],
                &["patient-support"],
                false,
                2,
            ),
        ],
    };
    let api = Api::new(vault, file.credentials().unwrap(), policy());
    let t0 = Instant::now();
    let call = |auth: Option<&str>, b: &[u8], ms: u64| {
        api.handle(
            "POST",
            RESOLVE_PATH,
            auth,
            b,
            t0 + Duration::from_millis(ms),
        )
    };
    let desk = Some("Bearer s3cret-desk");

    let (r, c) = call(desk, &body(&crm, "patient-support", WHY, false), 0);
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (v["system"].as_str(), v["value"].as_str()),
        (Some("urn:mrn"), Some("MRN-0001"))
    );
    assert_eq!(
        (c.decision.as_str(), c.reason, c.caller.as_deref()),
        ("allow", "ok", Some("desk"))
    );
    assert_eq!(c.token.as_deref(), Some(crm.as_str()));

    // Break-glass reaches past the caller's purposes, within its
    // domains, and only for the purpose the token is of.
    let (r, c) = call(desk, &body(&trial, "trial-recruitment", EMERGENCY, true), 0);
    assert_eq!(
        (r.status, c.decision.as_str()),
        (200, "break_glass"),
        "{}",
        r.body
    );
    assert!(c.is_break_glass());
    let (r, c) = call(desk, &body(&crm, "marketing", EMERGENCY, true), 0);
    assert_eq!((r.status, c.reason), (403, "purpose_not_for_domain"));

    for (auth, status, reason) in [
        (None, 401, "unauthenticated"),
        (Some("Bearer wrong"), 401, "unauthenticated"),
        (Some("s3cret-desk"), 401, "unauthenticated"),
    ] {
        let (r, c) = call(auth, &body(&crm, "patient-support", WHY, false), 0);
        assert_eq!(
            (r.status, c.reason, c.decision.as_str()),
            (status, reason, "deny")
        );
        assert!(c.caller.is_none());
    }
    for (b, status, reason) in [
        (
            body(&trial, "trial-recruitment", WHY, false),
            403,
            "purpose_not_in_scope",
        ),
        (
            body(&crm, "marketing", WHY, false),
            403,
            "purpose_not_for_domain",
        ),
        (
            body(&crm, "no-such-purpose", WHY, false),
            403,
            "purpose_not_for_domain",
        ),
        (
            body(
                &crm.replace("tok:crm:", "tok:quarantine:"),
                "patient-support",
                WHY,
                false,
            ),
            403,
            "purpose_not_for_domain",
        ),
        (
            body(&crm, "patient-support", "because", false),
            403,
            "justification_required",
        ),
        (
            body(
                &crm.replace("tok:crm:", "tok:marketing:"),
                "marketing",
                EMERGENCY,
                true,
            ),
            403,
            "domain_not_in_scope",
        ),
        // Audited as shredded; answered as below, like an unknown token.
        (body(&gone, "patient-support", WHY, false), 404, "shredded"),
        (
            body("MRN-0001", "patient-support", WHY, false),
            400,
            "bad_request",
        ),
        (b"{\"token\": 1}".to_vec(), 400, "bad_request"),
        (
            body(&crm, "patient-support", &"why ".repeat(1000), false),
            400,
            "bad_request",
        ),
    ] {
        let (r, c) = call(desk, &b, 0);
        assert_eq!((r.status, c.reason), (status, reason), "{}", r.body);
        // A body never echoes what was sent.
        assert!(!r.body.contains("MRN-0001"));
    }
    // No oracle: a shredded token and one never issued get the same answer.
    let never = {
        // The body's first character changed for another of its own: a
        // well-formed token nobody issued.
        let (head, body) = gone.rsplit_once(':').expect("a token");
        let first = body.chars().next().expect("a body");
        let other = body.chars().find(|c| *c != first).expect("two characters");
        format!("{head}:{other}{}", &body[1..])
    };
    let (shredded, c1) = call(desk, &body(&gone, "patient-support", WHY, false), 0);
    let (unknown, c2) = call(desk, &body(&never, "patient-support", WHY, false), 0);
    assert_eq!((c1.reason, c2.reason), ("shredded", "not_found"));
    assert_eq!(
        (shredded.status, &shredded.body),
        (unknown.status, &unknown.body)
    );
    let (r, _) = api.handle("GET", "/v1/other", desk, b"", t0);
    assert_eq!(r.status, 404);

    // "slow" may make 2 calls a minute: the third is refused, with a
    // Retry-After, and a minute later it is admitted again.
    let slow = Some("Bearer s3cret-slow");
    let ok = body(&crm, "patient-support", WHY, false);
    assert_eq!(call(slow, &ok, 0).0.status, 200);
    assert_eq!(
        call(slow, &body(&trial, "trial-recruitment", EMERGENCY, true), 1)
            .0
            .status,
        403
    );
    let (r, c) = call(slow, &ok, 2);
    assert_eq!(
        (r.status, c.reason, r.retry_after_s),
        (429, "rate_limited", Some(30))
    );
    assert_eq!(call(slow, &ok, 60_000).0.status, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quarantined_payloads_open_only_in_scope_and_under_their_headers() {
    let (dir, ring, vault) = file_vault("apiq");
    let payload = b"PID|1||MRN-0042^^^GEN||Doe^Jane";
    let context = QuarantineContext {
        id: "q-1",
        stage: "normalize",
        source_topic: "ehr.hl7v2",
        source_partition: 0,
        source_offset: 7,
        reason: "schema_drift",
    };
    let sealed = consentry_crypto::QuarantineKeys::new(&ring)
        .unwrap()
        .seal(&context, payload);
    let file = CallersFile {
        callers: vec![
            entry(
                "ops",
                "s3cret-ops",
                &["quarantine"],
                &["quarantine-review"],
                false,
                600,
            ),
            entry(
                "desk",
                "s3cret-desk",
                &["crm"],
                &["quarantine-review"],
                true,
                600,
            ),
        ],
    };
    let api = Api::new(vault, file.credentials().unwrap(), policy());
    let open = |auth: &str, purpose: &str, why: &str, reason: &str| {
        let b = serde_json::json!({
            "id": "q-1", "stage": "normalize", "source_topic": "ehr.hl7v2",
            "source_partition": 0, "source_offset": 7, "reason": reason,
            "sealed_hex": hex::encode(&sealed), "purpose": purpose, "justification": why,
        });
        api.handle(
            "POST",
            QUARANTINE_OPEN_PATH,
            Some(auth),
            b.to_string().as_bytes(),
            Instant::now(),
        )
    };
    let (r, c) = open(
        "Bearer s3cret-ops",
        "quarantine-review",
        WHY,
        "schema_drift",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        hex::decode(v["payload_hex"].as_str().unwrap()).unwrap(),
        payload
    );
    assert_eq!(
        (
            c.decision.as_str(),
            c.quarantine_id.as_deref(),
            c.purpose.as_deref()
        ),
        ("allow", Some("q-1"), Some("quarantine-review"))
    );
    // Out of scope: another purpose, or a caller without the domain.
    let (r, c) = open(
        "Bearer s3cret-ops",
        "quarantine-redrive",
        WHY,
        "schema_drift",
    );
    assert_eq!((r.status, c.reason), (403, "purpose_not_in_scope"));
    let (r, c) = open("Bearer s3cret-ops", "patient-support", WHY, "schema_drift");
    assert_eq!((r.status, c.reason), (403, "purpose_not_for_domain"));
    let (r, c) = open(
        "Bearer s3cret-desk",
        "quarantine-review",
        WHY,
        "schema_drift",
    );
    assert_eq!((r.status, c.reason), (403, "domain_not_in_scope"));
    let (r, c) = open(
        "Bearer s3cret-ops",
        "quarantine-review",
        "because",
        "schema_drift",
    );
    assert_eq!((r.status, c.reason), (403, "justification_required"));
    // Headers edited after sealing: the payload does not open.
    let (r, c) = open("Bearer s3cret-ops", "quarantine-review", WHY, "malformed");
    assert_eq!(
        (r.status, c.reason, c.decision.as_str()),
        (422, "does_not_open", "deny")
    );
    assert!(!r.body.contains("MRN-0042"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_digest_names_its_caller() {
    let mut file = CallersFile {
        callers: vec![entry("desk", "x", &["crm"], &["p"], false, 1)],
    };
    file.callers[0].credential_sha256 = "zz".into();
    assert!(file.credentials().unwrap_err().contains("'desk'"));
}
