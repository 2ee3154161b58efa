//! Shredding on the real stack (issue 16): events already past the gate
//! when consent is withdrawn are stopped (by tokenize where the vault
//! shredded the subject, else by route), and the vault re-creates nothing
//! of the subject: with tokenize restarted, and with tokenize running all
//! along on a warm cache (a PostgreSQL vault, shared by the processes). A
//! newer grant reinstates the subject, as a new one.
//!
//! (A file of its own: beside `tests/consent.rs`'s heavy bursts, on two
//! cores, the stages' idle windows would not be idle windows.)

use consentry_core::{AuditRecord, CanonicalEvent};
use consentry_testkit::consent_feed::{capture, mrn, publish_all, publish_burst, SYSTEM};
use consentry_testkit::{Children, Env};
use std::collections::BTreeSet;
use std::time::Duration;

/// Distinct records of a topic, by idempotency key: tansu shows a retried
/// batch's aborted records to `read_committed` readers, so records are no
/// count of what was decided (the idempotency keys are what makes results
/// right on every broker).
fn distinct(env: &Env, topic: &str, keep: impl Fn(&CanonicalEvent) -> bool) -> usize {
    env.events(topic)
        .into_iter()
        .filter(|(_, e)| keep(e))
        .map(|(k, _)| k)
        .collect::<BTreeSet<_>>()
        .len()
}

/// Distinct decisions (by audit id) that `keep` keeps.
fn decisions(env: &Env, keep: impl Fn(&AuditRecord) -> bool) -> usize {
    env.audits()
        .into_iter()
        .filter(|a| keep(a))
        .map(|a| a.audit_id.to_string())
        .collect::<BTreeSet<_>>()
        .len()
}

/// The consent changes the ledger has applied.
fn applied(env: &Env) -> usize {
    decisions(env, |a| {
        a.stage == "consent-ledger" && a.decision == "consent_apply"
    })
}

/// Runs `args` until `done` holds, for up to three minutes. The stages are
/// idempotent and resume from their committed offsets, so a rerun only
/// finishes what the last one left. On tansu a stage's transaction now and
/// then stays open after its commit returned (its readers see nothing past
/// it, the stage after it waits); the next run of that stage, on the same
/// transactional id, fences and aborts it, and does the work again, which
/// the idempotency keys make the same work.
/// `Err` (with what the runs saw) if it does not hold in time: at times a
/// tansu transaction stays open whatever its producer does next, and the
/// stage after it waits for good (see the test).
fn settle(env: &Env, args: &[&str], what: &str, done: impl Fn() -> bool) -> Result<(), String> {
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while std::time::Instant::now() < deadline {
        last = env.run_ok(args);
        if done() {
            return Ok(());
        }
    }
    let ledger: Vec<String> = env
        .audits()
        .iter()
        .filter(|a| a.stage == "consent-ledger")
        .map(|a| {
            format!(
                "{} {} {}",
                a.decision,
                a.reason_code,
                a.consent_version.as_deref().unwrap_or("-")
            )
        })
        .collect();
    Err(format!("{what}: not done in three minutes of {args:?}; the ledger decided {ledger:?}; the last run:\n{last}"))
}

/// Shredding holds against records in flight (issue 16): a subject's first
/// events reach every destination (the vault issues its trial linkage
/// token); more of its events pass the gate; then consent for research is
/// withdrawn and the ledger shreds. The records already past the gate are
/// stopped (tokenize, for the vaulted domain; route, for the rest), and
/// after it all the vault holds nothing of the subject in the shredded
/// domain: no data key, no identity, no linkage token, only the tombstone.
/// A newer grant then lifts it.
#[test]
fn a_shred_holds_against_records_already_past_the_gate() {
    // A run that never settles is the broker's (a transaction tansu keeps
    // open for good, which no rerun fences): a fresh deployment, with new
    // topics and transactional ids, tries once more. A wrong result fails
    // at once, on the first try.
    if let Err(first) = shred_race("shred-race") {
        eprintln!("a broker stall; once more on a fresh deployment:\n{first}");
        if let Err(second) = shred_race("shred-race2") {
            panic!("{first}\n\nand on a fresh deployment:\n{second}");
        }
    }
}

fn shred_race(name: &str) -> Result<(), String> {
    let env = Env::new(name);
    let subject = mrn(7);
    let env = &env;
    // (consent.state is compacted: its records are no count of changes.)
    let table_writes = |n: usize| move || applied(env) >= n;
    let ledger = ["run", "consent-ledger", "--exit-when-idle", "2"];
    publish_all(
        env,
        "consent.events",
        &[capture(env, &subject, "HRESCH", "active", 1)],
    );
    settle(env, &ledger, "the grant", table_writes(1))?;
    publish_burst(env, &subject, "EARLY", 3);
    let all = ["run", "all", "--exit-when-idle", "6"];
    settle(env, &all, "the early records", || {
        distinct(env, "out.trial-recruitment", |_| true) == 3
    })?;
    let key = consentry_core::keys::subject_key(SYSTEM, &subject);
    let held = |env: &Env| {
        env.open_vault()
            .1
            .holdings(&key, "trial")
            .expect("holdings")
    };
    let before = held(env);
    assert!(
        before.data_keys == 1 && before.linkage_tokens == 1 && before.tokens == 1,
        "{before:?}"
    );

    // In flight: past the gate (three purposes each), not yet tokenized.
    publish_burst(env, &subject, "LATE", 5);
    settle(
        env,
        &["run", "normalize", "consent-gate", "--exit-when-idle", "6"],
        "the late records through the gate",
        || distinct(env, "events.gated", |_| true) == 3 * 3 + 5 * 3,
    )?;
    publish_all(
        env,
        "consent.events",
        &[capture(env, &subject, "HRESCH", "revoked", 2)],
    );
    settle(env, &ledger, "the revocation", table_writes(2))?;
    let stopped = |stage: &str, reason: &str| {
        decisions(env, |a| {
            a.stage == stage && a.decision == "deny" && a.reason_code == reason
        })
    };
    settle(
        env,
        &[
            "run",
            "de-identify",
            "tokenize",
            "route",
            "--exit-when-idle",
            "6",
        ],
        "the late records stopped",
        || stopped("tokenize", "subject_shredded") + stopped("route", "consent_revoked") >= 10,
    )?;
    let after = held(env);
    assert_eq!(
        after,
        consentry_vault::Holdings {
            data_keys: 0,
            tokens: 0,
            linkage_tokens: 0,
            tombstoned: true
        },
        "nothing of the subject re-created by the records in flight"
    );
    assert_eq!(stopped("tokenize", "subject_shredded"), 5, "trial's five");
    assert_eq!(
        stopped("route", "consent_revoked"),
        5,
        "the registry's five"
    );
    // Nothing of the late events left; the early ones got a notice.
    let not_notice = |e: &CanonicalEvent| e.event_type != "consent:revoked";
    assert_eq!(distinct(env, "out.trial-recruitment", not_notice), 3);
    assert!(distinct(env, "out.trial-recruitment", |e| !not_notice(e)) >= 1);

    // A newer grant reinstates the subject: a new linkage token, unlinkable
    // to the old one.
    publish_all(
        env,
        "consent.events",
        &[capture(env, &subject, "HRESCH", "active", 3)],
    );
    settle(env, &ledger, "the re-grant", table_writes(3))?;
    assert!(!held(env).tombstoned);
    publish_burst(env, &subject, "AGAIN", 1);
    settle(env, &all, "the record after the re-grant", || {
        held(env).linkage_tokens == 1
    })?;
    let again = held(env);
    assert_eq!((again.data_keys, again.tokens), (1, 1));
    let tokens: BTreeSet<String> = env
        .events("out.trial-recruitment")
        .into_iter()
        .filter(|(_, e)| e.event_type != "consent:revoked")
        .map(|(_, e)| e.subject_key.to_string())
        .collect();
    assert_eq!(tokens.len(), 2, "a new subject after the re-grant");
    Ok(())
}

/// The same race with tokenize running all along, its cache warm (a
/// PostgreSQL vault, which several processes share): the consent table's
/// change reaches the running stage, which forgets the subject's cached
/// linkage token, so the records already past the gate ask the vault, are
/// refused and denied at tokenize, not handed the old token.
#[test]
fn a_running_tokenize_forgets_a_shredded_subject() {
    let env = Env::new("shred-warm");
    let pg = std::env::var("CONSENTRY_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into());
    let schema = format!(
        "vault_{}",
        env.prefix
            .trim_end_matches('.')
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            .to_ascii_lowercase()
    );
    let with_pg = |mut c: std::process::Command| {
        c.env("CONSENTRY_VAULT", &pg)
            .env("CONSENTRY_VAULT_SCHEMA", &schema);
        c
    };
    let run = |args: &[&str]| {
        let out = with_pg(env.cmd()).args(args).output().expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // As `settle`: rerun until done.
    let run_until = |args: &[&str], what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        let mut last = String::new();
        while std::time::Instant::now() < deadline {
            last = run(args);
            if done() {
                return;
            }
        }
        let counts: Vec<(&str, usize)> = [
            "events.normalized",
            "events.gated",
            "events.deidentified",
            "events.tokenized",
            "out.trial-recruitment",
        ]
        .iter()
        .map(|t| (*t, distinct(&env, t, |_| true)))
        .collect();
        panic!("{what}: not done in three minutes of {args:?}; distinct records {counts:?}; the last run:\n{last}");
    };
    let count = |topic: &str| distinct(&env, topic, |_| true);
    let subject = mrn(8);
    publish_all(
        &env,
        "consent.events",
        &[capture(&env, &subject, "HRESCH", "active", 1)],
    );
    run_until(
        &["run", "consent-ledger", "--exit-when-idle", "2"],
        "the grant",
        &|| applied(&env) >= 1,
    );
    let log = std::fs::File::create(env.dir.join("tokenize-route.log")).expect("log");
    let child = with_pg(env.cmd())
        .args(["run", "tokenize", "route"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starts");
    let mut children = Children(vec![child]);

    publish_burst(&env, &subject, "EARLY", 3);
    run_until(
        &[
            "run",
            "normalize",
            "consent-gate",
            "de-identify",
            "--exit-when-idle",
            "6",
        ],
        "the early records de-identified",
        &|| count("events.deidentified") == 3 * 3,
    );
    env.wait_for("the early records", Duration::from_secs(60), || {
        count("out.trial-recruitment") == 3
    });
    publish_burst(&env, &subject, "LATE", 5);
    run_until(
        &["run", "normalize", "consent-gate", "--exit-when-idle", "6"],
        "the late records through the gate",
        &|| count("events.gated") == 3 * 3 + 5 * 3,
    );
    publish_all(
        &env,
        "consent.events",
        &[capture(&env, &subject, "HRESCH", "revoked", 2)],
    );
    run_until(
        &["run", "consent-ledger", "--exit-when-idle", "2"],
        "the revocation",
        &|| applied(&env) >= 2,
    );
    // The revocation's notice shows the running route (and so tokenize,
    // which tails the same table before each batch) has read the change.
    env.wait_for("the revocation notice", Duration::from_secs(60), || {
        env.events("out.trial-recruitment")
            .iter()
            .any(|(_, e)| e.event_type == "consent:revoked")
    });
    std::thread::sleep(Duration::from_secs(2));
    run_until(
        &["run", "de-identify", "--exit-when-idle", "6"],
        "the late records de-identified",
        &|| count("events.deidentified") == 3 * 3 + 5 * 3,
    );
    let denied = || {
        decisions(&env, |a| {
            a.stage == "tokenize" && a.decision == "deny" && a.reason_code == "subject_shredded"
        })
    };
    env.wait_for(
        "tokenize to deny the late records",
        Duration::from_secs(60),
        || denied() == 5,
    );
    consentry_testkit::signal(&children.0[0], "TERM");
    consentry_testkit::wait_exit(&mut children.0[0], Duration::from_secs(60));
    // Nothing of the late records left for trial recruitment.
    assert_eq!(
        distinct(&env, "out.trial-recruitment", |e| e.event_type
            != "consent:revoked"),
        3
    );
    // And the vault holds nothing of the subject in the domain.
    let ring = consentry_crypto::KeyProvider::key_ring(&consentry_crypto::KeyFile::new(
        env.dir.join("keys.json"),
    ))
    .expect("key ring");
    let vault = consentry_vault::Vault::new(
        &ring,
        consentry_crypto::Environment::NonProduction,
        Box::new(consentry_vault::PgStore::connect(&pg, &schema).expect("vault")),
    )
    .expect("vault");
    let held = vault
        .holdings(
            &consentry_core::keys::subject_key(SYSTEM, &subject),
            "trial",
        )
        .expect("holdings");
    assert_eq!(
        (
            held.data_keys,
            held.tokens,
            held.linkage_tokens,
            held.tombstoned
        ),
        (0, 0, 0, true)
    );
}
