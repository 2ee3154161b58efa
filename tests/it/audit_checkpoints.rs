//! Signed checkpoints on the real stack, with one stage per process and
//! the vault beside them: the clean trail verifies with the checkpoint
//! public keys alone (no key ring); a copy with the tail of one stage's
//! chain cut, one without the vault's chain, one with a record altered in
//! place and one with a checkpoint re-signed by another key are each
//! reported by name.

use consentry_core::avro::{self, split_wire};
use consentry_core::chain::ChainWriter;
use consentry_crypto::{AuditKeys, KeyFile, KeyProvider, KeyRing};
use consentry_runtime::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use consentry_runtime::rdkafka::client::DefaultClientContext;
use consentry_runtime::rdkafka::message::Message;
use consentry_synth::{generate, SynthConfig};
use consentry_testkit::{signal, wait_exit, Children, Env};
use std::time::Duration;

/// Publishes `records` (audit payloads) to a scratch topic of one partition
/// and verifies it with the public keys alone: exit code and JSON report.
fn verify_copy(
    env: &Env,
    name: &str,
    records: &[Vec<u8>],
    public: &str,
) -> (i32, serde_json::Value) {
    let admin: AdminClient<DefaultClientContext> = env.conn.admin().create().expect("admin");
    futures_executor::block_on(admin.create_topics(
        &[NewTopic::new(
            &env.physical(name),
            1,
            TopicReplication::Fixed(1),
        )],
        &AdminOptions::new(),
    ))
    .expect("scratch topic");
    let keyed: Vec<(Option<&str>, &[u8])> =
        records.iter().map(|p| (Some("w"), p.as_slice())).collect();
    env.publish(name, &keyed);
    verify(env, &["--topic", name], public)
}

fn verify(env: &Env, extra: &[&str], public: &str) -> (i32, serde_json::Value) {
    let out = env
        .cmd()
        // Nothing that could forge a record: no key ring at all.
        .env_remove("CONSENTRY_KEY_FILE")
        .args(["audit", "verify", "--public-key", public, "--json"])
        .args(extra)
        .output()
        .expect("runs");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// Every break of the report as (kind, writer, sequence).
fn breaks(report: &serde_json::Value) -> Vec<(String, String, i64)> {
    let top = report["breaks"].as_array().cloned().unwrap_or_default();
    let writers = report["writers"].as_array().cloned().unwrap_or_default();
    let per_writer = writers.iter().flat_map(|w| {
        w["breaks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|b| (b, w["writer"].as_str().unwrap_or("").to_string()))
    });
    top.into_iter()
        .map(|b| {
            let w = b["writer"].as_str().unwrap_or("").to_string();
            (b, w)
        })
        .chain(per_writer)
        .map(|(b, w)| {
            (
                b["kind"].as_str().unwrap_or("").to_string(),
                w,
                b["sequence"].as_i64().or(b["from"].as_i64()).unwrap_or(-1),
            )
        })
        .collect()
}

#[test]
fn checkpoints_are_signed_cover_every_writer_and_verify_with_the_public_key_alone() {
    let env = Env::new("checkpoints");
    let feed = generate(&SynthConfig::new(5, 3));
    env.publish_synth(&feed);
    // One stage per process, as the shipped deployment runs them.
    for stage in ["normalize", "consent-gate"] {
        env.run_ok(&[
            "run",
            stage,
            "--exit-when-idle",
            "3",
            "--checkpoint-secs",
            "1",
        ]);
    }
    // The vault, a few calls, then a clean stop (its final checkpoint).
    let token = env.issue_token("crm", "subject-a", b"urn:mrn|CS0000042");
    let credential = env.add_caller(
        "desk",
        &["--domains", "crm", "--purposes", "patient-support"],
    );
    let served = env.serve_vault_with(&["--checkpoint-secs", "0.5"], &[]);
    let port = served.port;
    let mut vault = Children(vec![served.child]);
    for _ in 0..3 {
        let status = ureq::post(&format!("http://127.0.0.1:{port}/v1/resolve"))
            .header("Authorization", &format!("Bearer {credential}"))
            .send_json(serde_json::json!({
                "token": token, "purpose": "patient-support",
                "justification": "patient called about programme enrolment",
            }))
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(status, 200);
    }
    std::thread::sleep(Duration::from_secs(1));
    signal(&vault.0[0], "TERM");
    assert!(wait_exit(&mut vault.0[0], Duration::from_secs(20)).success());

    // The auditor's file: public keys only.
    let public = env.dir.join("audit-public.json");
    let public = public.to_str().expect("utf-8 path");
    env.run_ok(&["keys", "audit-public-key", "--out", public]);
    let text = std::fs::read_to_string(public).expect("public keys");
    assert!(text.contains("ed25519") && !text.contains("secret"));

    let (code, report) = verify(&env, &[], public);
    assert_eq!((code, breaks(&report)), (0, vec![]), "{report}");
    let writers: Vec<String> = report["writers"]
        .as_array()
        .expect("writers")
        .iter()
        .map(|w| w["writer"].as_str().unwrap_or("").to_string())
        .collect();
    for w in ["consent-ledger/0", "normalize/0", "consent-gate/0"] {
        assert!(writers.contains(&w.to_string()), "{w} in {writers:?}");
    }
    let vault_writer = writers
        .iter()
        .find(|w| w.starts_with("vault/"))
        .expect("the vault's chain")
        .clone();

    let audit = env.read("audit");
    let mut cache = consentry_runtime::codec::SchemaCache::new(&env.conn.registry_url);
    let decoded: Vec<_> = audit
        .iter()
        .map(|m| {
            cache
                .decode_audit(m.payload().expect("payload"))
                .expect("decodes")
        })
        .collect();
    let payloads: Vec<Vec<u8>> = audit
        .iter()
        .map(|m| m.payload().expect("payload").to_vec())
        .collect();
    let last_of = |writer: &str| {
        decoded
            .iter()
            .filter(|r| r.writer_id == writer)
            .map(|r| r.sequence)
            .max()
            .expect("records")
    };

    // 1. The tail of normalize/0's chain cut (its last three records,
    //    final checkpoint included): the heads topic still names it.
    let cut_from = last_of("normalize/0") - 2;
    let cut: Vec<Vec<u8>> = payloads
        .iter()
        .zip(&decoded)
        .filter(|(_, r)| !(r.writer_id == "normalize/0" && r.sequence >= cut_from))
        .map(|(p, _)| p.clone())
        .collect();
    let (code, report) = verify_copy(&env, "audit-cut", &cut, public);
    assert_eq!(code, 1);
    let found = breaks(&report);
    assert!(
        found.contains(&(
            "checkpoint_mismatch".into(),
            "normalize/0".into(),
            last_of("normalize/0")
        )),
        "{found:?}"
    );
    assert!(
        found.iter().all(|(_, w, _)| w == "normalize/0"),
        "nothing else blamed: {found:?}"
    );

    // 2. The vault's chain deleted.
    let no_vault: Vec<Vec<u8>> = payloads
        .iter()
        .zip(&decoded)
        .filter(|(_, r)| !r.writer_id.starts_with("vault/"))
        .map(|(p, _)| p.clone())
        .collect();
    let (code, report) = verify_copy(&env, "audit-no-vault", &no_vault, public);
    assert_eq!(code, 1);
    let found = breaks(&report);
    assert!(
        found
            .iter()
            .any(|(k, w, _)| k == "checkpoint_mismatch" && *w == vault_writer),
        "{found:?}"
    );

    // 3. A record altered in place (its hash left as it was): without the
    //    chain key, the signed checkpoint after it gives it away.
    let victim = decoded
        .iter()
        .position(|r| {
            r.writer_id == "consent-gate/0" && r.decision != "checkpoint" && r.sequence > 0
        })
        .expect("a gate record");
    let schema_id = split_wire(&payloads[victim]).expect("wire").0;
    let mut altered = decoded[victim].clone();
    altered.reason_code = if altered.reason_code == "consent_active" {
        "consent_revoked".into()
    } else {
        "consent_active".into()
    };
    let mut copy = payloads.clone();
    copy[victim] = avro::encode_audit(&altered, schema_id).expect("encodes");
    let (code, report) = verify_copy(&env, "audit-altered", &copy, public);
    assert_eq!(code, 1);
    let found = breaks(&report);
    assert!(
        found.iter().any(|(k, w, s)| k == "segment_mismatch"
            && w == "consent-gate/0"
            && *s > decoded[victim].sequence),
        "{found:?}"
    );

    // 4. A checkpoint rewritten by someone holding the chain key (a
    //    verifier) but not the signing key: linked and hashed correctly,
    //    signed by another ring.
    let ring: KeyRing = KeyFile::new(env.dir.join("keys.json"))
        .key_ring()
        .expect("ring");
    let real = AuditKeys::new(&ring).expect("keys");
    let forger = AuditKeys::new(
        &KeyRing::generate(consentry_crypto::Environment::NonProduction).expect("ring"),
    )
    .expect("keys");
    let target = decoded
        .iter()
        .rposition(|r| {
            r.writer_id == "consent-gate/0" && r.decision == "checkpoint" && r.sequence > 0
        })
        .expect("a gate checkpoint");
    let original = &decoded[target];
    let previous = decoded
        .iter()
        .find(|r| r.writer_id == "consent-gate/0" && r.sequence == original.sequence - 1)
        .expect("the record before it");
    let mut writer = ChainWriter::new(
        "consent-gate/0",
        Some((previous.sequence, previous.hash.as_str())),
    );
    let mut forged = original.clone();
    forged.checkpoint.clear();
    let bytes = writer
        .link_checkpoint(
            &mut forged,
            split_wire(&payloads[target]).expect("wire").0,
            real.active_version(),
            |b| real.chain_mac_active(b),
            |m| forger.sign_checkpoint(m),
        )
        .expect("links");
    let mut copy = payloads.clone();
    copy[target] = bytes;
    let (code, report) = verify_copy(&env, "audit-forged", &copy, public);
    assert_eq!(code, 1);
    let found = breaks(&report);
    assert!(
        found.contains(&(
            "checkpoint_forged".into(),
            "consent-gate/0".into(),
            original.sequence
        )),
        "{found:?}"
    );
}
