//! Consent on the real stack: the ledger, the gate, route's re-check and
//! revocation fan-out, through tansu, the registry and librdkafka.
//!
//! - a revocation appended in the middle of a burst: after its notice, no
//!   record of the subject reaches the revoked purposes' destinations (read
//!   from the destination topics), another subject's records go on, the
//!   notices name the subject as each destination knows it, the vault has
//!   shredded its keys for those purposes, and the latency is measured;
//! - a restart: the gate reads the whole table before its first event;
//! - events already past the gate when the revocation arrives are stopped
//!   (by tokenize where the vault shredded the subject, else by route);
//!   `tests/shred.rs` follows the vault through such a race.

use consentry_core::stage::StageName;
use consentry_core::CanonicalEvent;
use consentry_runtime::rdkafka::message::{Message, OwnedMessage};
use consentry_testkit::consent_feed::{adt, capture, mrn, publish_all, publish_burst};
use consentry_testkit::{free_port, metric_value, scrape, Children, Env};
use std::collections::BTreeSet;
use std::time::Duration;

/// HRESCH: trial-recruitment and registry-research.
const REVOKED_TOPICS: [&str; 2] = ["out.trial-recruitment", "out.research-registry"];

fn decode_all(env: &Env, topic: &str) -> Vec<(OwnedMessage, CanonicalEvent)> {
    let events = env.events(topic);
    env.read(topic)
        .into_iter()
        .zip(events)
        .map(|(m, (_, e))| (m, e))
        .collect()
}

fn ts(m: &OwnedMessage) -> i64 {
    m.timestamp().to_millis().unwrap_or(0)
}

#[test]
fn revocation_mid_burst_reaches_every_destination_and_nothing_follows_it() {
    let env = Env::new("revoke");
    let (alice, bob) = (mrn(1), mrn(2));
    let grants: Vec<Vec<u8>> = [&alice, &bob]
        .iter()
        .flat_map(|m| ["HRESCH", "CAREMGT"].map(|p| capture(&env, m, p, "active", 1)))
        .collect();
    publish_all(&env, "consent.events", &grants);
    let port = free_port();
    let mut children = Children(vec![env.spawn(&[
        "run",
        "all",
        "--exit-when-idle",
        "5",
        "--batch-max",
        "50",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ])]);
    env.wait_for(
        "the grants in the consent table",
        Duration::from_secs(60),
        || env.read("consent.state").len() >= 4,
    );

    // The burst, with the revocation appended in its middle (once some of
    // alice's records have left, so there is something to revoke).
    publish_burst(&env, &alice, "A", 150);
    publish_burst(&env, &bob, "B", 150);
    env.wait_for(
        "the first records to leave",
        Duration::from_secs(90),
        || env.read("out.trial-recruitment").len() >= 20,
    );
    let revocation = capture(&env, &alice, "HRESCH", "revoked", 2);
    publish_all(&env, "consent.events", &[revocation]);
    publish_burst(&env, &alice, "C", 150);
    publish_burst(&env, &bob, "D", 150);
    env.wait_for("the revocation notices", Duration::from_secs(90), || {
        REVOKED_TOPICS.iter().all(|t| {
            env.events(t)
                .iter()
                .any(|(_, e)| e.event_type == "consent:revoked")
        })
    });
    // After the notice: more of both subjects' events.
    std::thread::sleep(Duration::from_secs(1));
    publish_burst(&env, &alice, "E", 50);
    publish_burst(&env, &bob, "F", 50);
    env.wait_for("every event through route", Duration::from_secs(90), || {
        env.read("out.patient-support").len() >= 700
    });
    let metrics = scrape(port);
    consentry_testkit::wait_exit(&mut children.0[0], Duration::from_secs(120));
    children.0.clear();

    for topic in REVOKED_TOPICS {
        let records = decode_all(&env, topic);
        let notices: Vec<_> = records
            .iter()
            .filter(|(_, e)| e.event_type == "consent:revoked")
            .collect();
        assert_eq!(notices.len(), 1, "one notice to {topic}");
        let (notice_msg, notice) = notices[0];
        // The destination knows alice by her token of its domain.
        let alice_ref = notice.subject_key.clone();
        assert!(alice_ref.starts_with("tok:"), "{topic}: {alice_ref}");
        let (after, before): (Vec<_>, Vec<_>) = records
            .iter()
            .filter(|(_, e)| e.event_type != "consent:revoked")
            .partition(|(m, _)| ts(m) > ts(notice_msg));
        let alice_after = after
            .iter()
            .filter(|(_, e)| e.subject_key == alice_ref)
            .count();
        assert_eq!(alice_after, 0, "{topic}: alice's records after the notice");
        let alice_before = before
            .iter()
            .filter(|(_, e)| e.subject_key == alice_ref)
            .count();
        assert!(
            alice_before > 0,
            "{topic}: alice's data was disclosed before"
        );
        assert!(
            alice_before < 350,
            "{topic}: some of alice's events were stopped"
        );
        // Not vacuous: bob's records kept coming after the notice.
        assert!(
            after.len() >= 50 && after.iter().all(|(_, e)| e.subject_key != alice_ref),
            "{topic}: {} records after the notice",
            after.len()
        );
    }
    // CAREMGT was not revoked: patient-support has all of alice's events.
    let ps = env.events("out.patient-support");
    assert_eq!(ps.len(), 2 * 350, "patient-support keeps both subjects");

    // Every consent decision is audited with the consent it used.
    let audits = env.audits();
    let stopped: Vec<_> = audits
        .iter()
        .filter(|a| {
            a.decision == "deny"
                && a.reason_code == "consent_revoked"
                && matches!(
                    a.purpose.as_deref(),
                    Some("trial-recruitment" | "registry-research")
                )
        })
        .collect();
    assert!(
        stopped.len() >= 100,
        "alice's later events denied: {}",
        stopped.len()
    );
    for a in &stopped {
        assert_eq!(a.consent_version.as_deref(), Some("v2"));
        assert!(a
            .consent_reference
            .as_deref()
            .is_some_and(|r| r.starts_with("capture/portal-")));
    }
    let allowed = audits
        .iter()
        .find(|a| a.stage == "consent-gate" && a.decision == "allow")
        .expect("an allow");
    assert_eq!(allowed.consent_version.as_deref(), Some("v1"));
    // Decisions and latency in the metrics.
    let gate_denied = metric_value(
        &metrics,
        "consentry_consent_decisions_total{decision=\"deny\",purpose=\"trial-recruitment\",reason=\"consent_revoked\",stage=\"consent-gate\"}",
    )
    .unwrap_or(0.0);
    assert!(gate_denied >= 50.0, "{gate_denied}");
    let latency = metric_value(
        &metrics,
        "consentry_revocation_latency_seconds_count{purpose=\"trial-recruitment\"}",
    );
    assert_eq!(latency, Some(1.0));
    // Disclosures by the policy they were shaped under.
    let disclosed = format!(
        "consentry_disclosures_total{{policy_version=\"{}\",purpose=\"patient-support\"}}",
        env.topology.policy_version
    );
    assert!(
        metric_value(&metrics, &disclosed) > Some(0.0),
        "{disclosed}"
    );
    // Each running stage says which policy it enforces.
    for stage in StageName::ALL {
        let info = format!(
            "consentry_policy_info{{policy_version=\"{}\",stage=\"{}\"}}",
            env.topology.policy_version,
            stage.as_str()
        );
        assert_eq!(metric_value(&metrics, &info), Some(1.0), "{info}");
    }

    // The vault shredded alice's keys for both HRESCH domains: her trial
    // linkage token no longer resolves; bob's still does.
    let trial = decode_all(&env, "out.trial-recruitment");
    let notice_ref = trial
        .iter()
        .find(|(_, e)| e.event_type == "consent:revoked")
        .map(|(_, e)| e.subject_key.to_string())
        .expect("notice");
    let bob_ref = trial
        .iter()
        .map(|(_, e)| e.subject_key.to_string())
        .find(|k| *k != notice_ref)
        .expect("bob's token");
    let (_, vault) = env.open_vault();
    assert!(
        vault.resolve(&notice_ref).is_err(),
        "alice's token is shredded"
    );
    assert!(vault.resolve(&bob_ref).is_ok(), "bob's still resolves");
    let domains: BTreeSet<String> = env
        .audits()
        .iter()
        .filter(|a| a.stage == "consent-ledger")
        .flat_map(|a| a.transformations.iter())
        .filter(|t| t.method == "shred")
        .map(|t| t.params.to_string())
        .collect();
    assert_eq!(
        domains,
        BTreeSet::from(["domain=registry".to_string(), "domain=trial".to_string()])
    );
}

/// The gate reads the whole consent table before its first event, after
/// a restart as at first start; events already past the gate when the
/// revocation comes are stopped by route.
#[test]
fn gate_rebuilds_its_table_and_route_stops_what_passed_the_gate() {
    let env = Env::new("restart");
    let subjects = 250;
    let grants: Vec<Vec<u8>> = (0..subjects)
        .map(|i| capture(&env, &mrn(100 + i), "HRESCH", "active", 1))
        .collect();
    publish_all(&env, "consent.events", &grants);
    env.run_ok(&["run", "consent-ledger", "--exit-when-idle", "2"]);
    // Distinct by idempotency key: a transaction tansu left open and the
    // next run aborted shows its records too.
    let allowed = |env: &Env| {
        env.events("events.gated")
            .into_iter()
            .filter(|(_, e)| e.purpose.as_deref() == Some("trial-recruitment"))
            .map(|(k, _)| k)
            .collect::<BTreeSet<_>>()
            .len()
    };
    for (n, round) in ["R1", "R2"].into_iter().enumerate() {
        let msgs: Vec<Vec<u8>> = (0..subjects)
            .map(|i| adt(&mrn(100 + i), &format!("{round}{i:04}")))
            .collect();
        publish_all(&env, "ehr.hl7v2", &msgs);
        // A new process each round: the table is read again before the
        // first event, so no event meets an "unknown" consent. (Run again
        // if a transaction tansu left open held the gate back: the next
        // run fences it and finishes the work.)
        for attempt in 1..=3 {
            let out = env
                .cmd()
                .args(["run", "normalize", "consent-gate", "--exit-when-idle", "5"])
                .env("RUST_LOG", "info")
                .output()
                .expect("runs");
            assert!(out.status.success());
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(
                log.contains(&format!("entries={subjects}"))
                    && log.contains("table read to its end"),
                "{round}: the gate read the whole table first"
            );
            let got = allowed(&env);
            if got == (n + 1) * subjects || attempt == 3 {
                assert_eq!(
                    got,
                    (n + 1) * subjects,
                    "{round}: every event through the gate; the run's log:\n{log}"
                );
                break;
            }
        }
    }
    let unknown = env
        .audits()
        .iter()
        .filter(|a| {
            a.stage == "consent-gate"
                && a.reason_code == "consent_unknown"
                && a.purpose.as_deref() == Some("trial-recruitment")
        })
        .count();
    assert_eq!(unknown, 0, "no decision on a partial table");

    // Revoke one subject after its events passed the gate; only then run
    // the stages after it.
    let revoked = capture(&env, &mrn(100), "HRESCH", "revoked", 2);
    publish_all(&env, "consent.events", &[revoked]);
    env.run_ok(&["run", "consent-ledger", "--exit-when-idle", "2"]);
    env.run_ok(&[
        "run",
        "de-identify",
        "tokenize",
        "route",
        "--exit-when-idle",
        "3",
    ]);
    let audits = env.audits();
    let denied = |stage: &str| -> Vec<_> {
        audits
            .iter()
            .filter(|a| a.stage == stage && a.decision == "deny")
            .collect()
    };
    // Two events, two HRESCH purposes. Trial recruitment's vaulted linkage
    // token was shredded with the revocation, so tokenize stops those (the
    // vault refuses to issue again); the registry's limited data set needs
    // no vault, and route stops those on its re-check.
    let (by_tokenize, by_route) = (denied("tokenize"), denied("route"));
    assert_eq!(
        (by_tokenize.len(), by_route.len()),
        (2, 2),
        "the revoked subject's records were stopped"
    );
    assert!(by_tokenize
        .iter()
        .all(|a| a.reason_code == "subject_shredded"
            && a.purpose.as_deref() == Some("trial-recruitment")));
    assert!(by_route
        .iter()
        .all(|a| a.reason_code == "consent_revoked" && a.consent_version.as_deref() == Some("v2")));
    for topic in REVOKED_TOPICS {
        assert_eq!(env.read(topic).len(), 2 * subjects - 2, "{topic}");
    }
    // Nothing of that subject had left, so there is no one to notify.
    assert!(env
        .events("out.trial-recruitment")
        .iter()
        .all(|(_, e)| e.event_type != "consent:revoked"));
}
