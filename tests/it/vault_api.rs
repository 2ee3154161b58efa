//! `consentry vault serve` on the real stack: callers made with `consentry
//! vault caller add`, every status the API gives (200, 400, 401, 403, 404,
//! 429, break-glass), a token resolved only for its own purpose, the
//! break-glass metric, one audit record on the audit topic per call with a
//! caller and one per peer for the unauthenticated ones, holding neither
//! an identity nor a credential.

use consentry_testkit::{free_port, signal, wait_exit, Children, Env};
use std::time::Duration;

pub(crate) const WHY: &str = "patient called about programme enrolment";
pub(crate) const EMERGENCY: &str = "adverse event report needs the patient's identity now";

fn add_caller(env: &Env, id: &str, extra: &[&str]) -> String {
    env.add_caller(id, extra)
}

/// `POST /v1/resolve` (the other suites that call the vault use it too):
/// the status and the JSON body.
pub(crate) fn post(
    port: u16,
    auth: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.post(&format!("http://127.0.0.1:{port}/v1/resolve"));
    if let Some(a) = auth {
        req = req.header("Authorization", &format!("Bearer {a}"));
    }
    let mut resp = req.send_json(body).expect("the vault answers");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).expect("a JSON body"))
}

pub(crate) fn resolve(
    token: &str,
    purpose: &str,
    why: &str,
    break_glass: bool,
) -> serde_json::Value {
    serde_json::json!({"token": token, "purpose": purpose, "justification": why, "break_glass": break_glass})
}

#[test]
fn every_call_is_authenticated_scoped_limited_and_audited() {
    let env = Env::new("vault");
    // Tokens in the vault before it serves (the file is locked while open).
    let (crm, shredded, trial) = {
        let (_, vault) = env.open_vault();
        let crm = vault
            .subject_token(
                "crm",
                "subject-a",
                b"urn:oid:2.16.840.1.113883.3.7777.1|CS0000042",
                1,
            )
            .expect("issues");
        let gone = vault
            .subject_token(
                "crm",
                "subject-b",
                b"urn:oid:2.16.840.1.113883.3.7777.1|CS0000043",
                1,
            )
            .expect("issues");
        vault.shred("subject-b", None).expect("shreds");
        let trial = vault
            .subject_token(
                "trial",
                "subject-a",
                b"urn:oid:2.16.840.1.113883.3.7777.1|CS0000042",
                1,
            )
            .expect("issues");
        (crm, gone, trial)
    };
    let desk = add_caller(
        &env,
        "support-desk",
        &[
            "--domains",
            "crm,trial",
            "--purposes",
            "patient-support",
            "--break-glass",
        ],
    );
    let slow = add_caller(
        &env,
        "batch-job",
        &[
            "--domains",
            "crm,trial",
            "--purposes",
            "patient-support",
            "--rate-per-minute",
            "2",
        ],
    );
    // Well-formed, never issued: the body's first character changed for
    // another of its own.
    let unknown = {
        let (head, body) = crm.rsplit_once(':').expect("a token");
        let first = body.chars().next().expect("a body");
        let other = body.chars().find(|c| *c != first).expect("two characters");
        format!("{head}:{other}{}", &body[1..])
    };
    let callers_text = std::fs::read_to_string(env.dir.join("callers.json")).expect("callers");
    assert!(!callers_text.contains(&desk), "only the digest is stored");

    let served = env.serve_vault_with(&[], &[]);
    let (port, mport) = (served.port, served.metrics_port);
    let mut children = Children(vec![served.child]);

    let mut calls = 0;
    let mut call = |auth: Option<&str>, body: serde_json::Value| {
        calls += 1;
        post(port, auth, &body)
    };
    let (status, body) = call(Some(&desk), resolve(&crm, "patient-support", WHY, false));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "CS0000042");
    assert_eq!(body["system"], "urn:oid:2.16.840.1.113883.3.7777.1");
    let (status, body) = call(
        Some(&desk),
        resolve(&trial, "trial-recruitment", EMERGENCY, true),
    );
    assert_eq!((status, body["break_glass"].as_bool()), (200, Some(true)));
    let mut unauthenticated = 0;

    for (auth, req, want, reason) in [
        (
            None,
            resolve(&crm, "patient-support", WHY, false),
            401,
            "unauthenticated",
        ),
        (
            Some("cvk_wrong"),
            resolve(&crm, "patient-support", WHY, false),
            401,
            "unauthenticated",
        ),
        (
            Some(desk.as_str()),
            resolve(&trial, "trial-recruitment", WHY, false),
            403,
            "purpose_not_in_scope",
        ),
        // A token answers only the purpose it was issued for, break-glass
        // or not.
        (
            Some(desk.as_str()),
            resolve(&crm, "marketing", EMERGENCY, true),
            403,
            "purpose_not_for_domain",
        ),
        (
            Some(desk.as_str()),
            resolve(&crm, "patient-support", "why not", false),
            403,
            "justification_required",
        ),
        // A shredded token is answered as an unknown one (no oracle);
        // the audit record and a metric tell them apart.
        (
            Some(desk.as_str()),
            resolve(&shredded, "patient-support", WHY, false),
            404,
            "not_found",
        ),
        (
            Some(desk.as_str()),
            resolve(&unknown, "patient-support", WHY, false),
            404,
            "not_found",
        ),
        (
            Some(desk.as_str()),
            resolve("CS0000042", "patient-support", WHY, false),
            400,
            "bad_token",
        ),
        (
            Some(slow.as_str()),
            resolve(&trial, "trial-recruitment", EMERGENCY, true),
            403,
            "break_glass_not_permitted",
        ),
        (
            Some(slow.as_str()),
            resolve(&crm, "patient-support", WHY, false),
            200,
            "ok",
        ),
        (
            Some(slow.as_str()),
            resolve(&crm, "patient-support", WHY, false),
            429,
            "rate_limited",
        ),
    ] {
        let (status, body) = call(auth, req);
        assert_eq!(status, want, "{body}");
        unauthenticated += usize::from(status == 401);
        if status != 200 {
            assert_eq!(body["reason"], reason, "{body}");
            assert!(
                !body.to_string().contains("CS0000042"),
                "no identity in errors"
            );
        }
    }
    let metrics = consentry_testkit::scrape(mport);
    assert_eq!(
        consentry_testkit::metric_value(
            &metrics,
            "consentry_vault_break_glass_total{caller=\"support-desk\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        consentry_testkit::metric_value(
            &metrics,
            "consentry_vault_requests_total{decision=\"deny\",status=\"429\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        consentry_testkit::metric_value(&metrics, "consentry_vault_unauthenticated_total"),
        Some(2.0)
    );
    assert_eq!(
        consentry_testkit::metric_value(
            &metrics,
            "consentry_vault_resolves_after_revocation_total{caller=\"support-desk\",purpose=\"patient-support\"}"
        ),
        Some(1.0),
        "the shredded token only"
    );
    signal(&children.0[0], "TERM");
    assert!(wait_exit(&mut children.0[0], Duration::from_secs(20)).success());

    // One audit record per call with a caller, allowed or denied, and one
    // for the unauthenticated calls of the peer (written in aggregate at
    // the latest on shutdown); none holds an identity or a credential; the
    // break-glass one is high severity.
    // (Its chain's checkpoints aside.)
    let all: Vec<_> = env
        .audits()
        .into_iter()
        .filter(|a| a.stage == "vault" && a.decision != "checkpoint")
        .collect();
    let (aggregated, audits): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|a| a.actor.as_deref().is_some_and(|x| x.starts_with("peer:")));
    assert_eq!(unauthenticated, 2);
    assert_eq!(audits.len(), calls - unauthenticated);
    assert_eq!(aggregated.len(), 1, "{aggregated:?}");
    assert_eq!(aggregated[0].actor.as_deref(), Some("peer:127.0.0.1"));
    assert_eq!(
        (
            aggregated[0].decision.as_str(),
            aggregated[0].reason_code.as_str()
        ),
        ("deny", "unauthenticated")
    );
    assert!(
        aggregated[0].transformations[0]
            .params
            .starts_with("calls=2,"),
        "{:?}",
        aggregated[0].transformations
    );
    let raw: Vec<u8> = env
        .read("audit")
        .iter()
        .flat_map(|m| {
            consentry_runtime::rdkafka::Message::payload(m)
                .unwrap_or_default()
                .to_vec()
        })
        .collect();
    for secret in ["CS0000042", desk.as_str(), slow.as_str()] {
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
    let glass: Vec<_> = audits
        .iter()
        .filter(|a| a.decision == "break_glass")
        .collect();
    assert_eq!(glass.len(), 1);
    assert_eq!(glass[0].severity.as_deref(), Some("high"));
    assert_eq!(glass[0].actor.as_deref(), Some("support-desk"));
    assert_eq!(glass[0].justification.as_deref(), Some(EMERGENCY));
    assert_eq!(glass[0].token.as_deref(), Some(&*trial));
    let decisions: Vec<(&str, &str)> = audits
        .iter()
        .map(|a| (a.decision.as_str(), a.reason_code.as_str()))
        .collect();
    for want in [
        ("allow", "ok"),
        ("deny", "purpose_not_for_domain"),
        ("deny", "purpose_not_in_scope"),
        ("deny", "not_found"),
        ("deny", "shredded"),
        ("deny", "rate_limited"),
        ("deny", "break_glass_not_permitted"),
    ] {
        assert!(
            decisions.contains(&want),
            "{want:?} not audited: {decisions:?}"
        );
    }
}

/// Fail closed: with no broker to take the audit record, a call that would
/// be allowed gets 503 and no identity.
#[test]
fn no_audit_record_means_no_answer() {
    let env = Env::new("vault-closed");
    let token = env.subject_token(
        "crm",
        "subject-a",
        b"urn:oid:2.16.840.1.113883.3.7777.1|CS0000077",
    );
    let desk = add_caller(
        &env,
        "support-desk",
        &["--domains", "crm", "--purposes", "patient-support"],
    );
    // The audit topic's broker: a port where nothing listens.
    let dead = format!("127.0.0.1:{}", free_port());
    let served = env.serve_vault_with(&[], &[("CONSENTRY_BOOTSTRAP", &dead)]);
    let port = served.port;
    let _vault = Children(vec![served.child]);
    let (status, body) = post(
        port,
        Some(&desk),
        &resolve(&token, "patient-support", WHY, false),
    );
    assert_eq!(
        (status, body["reason"].as_str()),
        (503, Some("audit_unavailable"))
    );
    assert!(!body.to_string().contains("CS0000077"));
}
