//! `replay apply` on the real stack, after a live run, with a policy that
//! takes one field from outcomes-analytics:
//! - killed with SIGKILL mid-run and run again, it writes one correction
//!   per record that carried the field, each without it, each naming the
//!   disclosure it supersedes and the replay, with a disclosure-ledger
//!   entry and an audit record in a chain that verifies;
//! - `audit trace` of a corrected event shows the disclosure and its
//!   correction; a plan afterwards finds nothing to do; a second apply
//!   writes nothing;
//! - a policy whose destination schema the registry would refuse is
//!   reported by `plan` and refused by `apply` before anything is written;
//! - during a rolling switch-over (stages restarted on the new policy
//!   midway), replay corrects exactly what the old policy wrote.

use super::replay::{deliver, plan_json, policy_file, SHIPPED_VERSION, WITHOUT_CLASS};
use consentry_runtime::codec::SchemaCache;
use consentry_runtime::inspect::header;
use consentry_runtime::rdkafka::Message;
use consentry_synth::{generate, SynthConfig};
use consentry_testkit::{wait_exit, Env};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const TOPIC: &str = "out.outcomes-analytics";
const NEW_VERSION: &str = "2026.12-analytics-no-class";

#[test]
fn apply_corrects_each_record_once_across_a_kill_and_never_twice() {
    let env = Env::new("replayapply");
    deliver(&env, 17, 40);

    let mut cache = SchemaCache::for_connection(&env.conn).expect("registry");
    let held = env.read(TOPIC);
    // The idempotency keys of the records that carried the field.
    let carried: BTreeSet<String> = held
        .iter()
        .filter(|m| {
            let ev = cache
                .decode_event(m.payload().expect("payload"))
                .expect("decodes");
            ev.encounter.is_some_and(|e| e.encounter_class.is_some())
        })
        .map(|m| header(m, "idempotency-key").expect("key").to_string())
        .collect();
    assert!(
        carried.len() >= 8,
        "{} records carry the field",
        carried.len()
    );
    let policy = policy_file(&env, NEW_VERSION, &[WITHOUT_CLASS]);
    let policy = policy.as_str();

    // Killed mid-run: slow enough (4 units a second, one per transaction)
    // that the kill lands between the first corrections and the last.
    let before = env.watermark(TOPIC);
    let args = [
        "replay",
        "apply",
        "--policy",
        policy,
        "--batch-size",
        "1",
        "--max-rate",
        "4",
    ];
    let mut guard = consentry_testkit::Children(vec![env.spawn(&args)]);
    let victim = &mut guard.0[0];
    let started = Instant::now();
    while env.watermark(TOPIC) < before + 6 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "apply wrote nothing"
        );
        assert!(
            victim.try_wait().expect("try_wait").is_none(),
            "apply exited before it was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    victim.kill().expect("SIGKILL");
    assert!(!victim.wait().expect("wait").success());
    let at_kill = env.watermark(TOPIC);

    // The same command resumes (at full speed now).
    guard
        .0
        .push(env.spawn(&["replay", "apply", "--policy", policy, "--json"]));
    let status = wait_exit(&mut guard.0[1], Duration::from_secs(180));
    assert!(status.success(), "resumed apply failed: {status:?}");
    assert!(
        env.watermark(TOPIC) > at_kill,
        "the resumed run wrote the rest"
    );

    // Every correction once by its key; a key written twice (an aborted
    // transaction tansu still shows) carries the same bytes.
    let after = env.read(TOPIC);
    let mut corrections: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut replay_ids = BTreeSet::new();
    let mut superseded = BTreeSet::new();
    for m in &after {
        let Some(id) = header(m, "replay-id") else {
            continue;
        };
        replay_ids.insert(id.to_string());
        let key = header(m, "idempotency-key").expect("key").to_string();
        let payload = m.payload().expect("payload").to_vec();
        if let Some(prev) = corrections.insert(key.clone(), payload.clone()) {
            assert_eq!(prev, payload, "{key} written twice with different bytes");
        } else {
            superseded.insert(header(m, "supersedes").expect("supersedes").to_string());
        }
        let ev = cache.decode_event(&payload).expect("decodes");
        assert!(
            ev.encounter
                .as_ref()
                .is_none_or(|e| e.encounter_class.is_none()),
            "a correction carries the withheld field"
        );
        assert_eq!(ev.policy_version, NEW_VERSION);
        assert_eq!(header(m, "phi"), Some("false"));
    }
    assert_eq!(replay_ids.len(), 1, "one replay: {replay_ids:?}");
    assert_eq!(
        corrections.len(),
        carried.len(),
        "one correction per record"
    );
    assert_eq!(
        superseded, carried,
        "each supersedes a record that carried it"
    );
    assert!(corrections.keys().all(|k| !carried.contains(k)));

    // Each correction in the disclosure ledger, under the new version.
    let ledger: Vec<_> = env
        .read("disclosures")
        .into_iter()
        .filter(|m| header(m, "replay-id").is_some())
        .collect();
    let ledger_keys: BTreeSet<String> = ledger
        .iter()
        .map(|m| header(m, "idempotency-key").expect("key").to_string())
        .collect();
    assert_eq!(ledger_keys, corrections.keys().cloned().collect());

    // Audit: one correction record per unit, chained, verifying.
    let audits = env.audits();
    let mine: Vec<_> = audits
        .iter()
        .filter(|a| a.stage == "replay" && a.decision == "correction")
        .collect();
    let distinct: BTreeSet<_> = mine.iter().map(|a| a.audit_id.to_string()).collect();
    assert_eq!(distinct.len(), carried.len());
    for a in &mine {
        assert_eq!(a.policy_version, NEW_VERSION);
        assert_eq!(a.previous_policy_version.as_deref(), Some(SHIPPED_VERSION));
        assert!(a
            .replay_id
            .as_deref()
            .is_some_and(|r| replay_ids.contains(r)));
        assert!(a.supersedes.as_deref().is_some_and(|s| carried.contains(s)));
    }
    assert!(
        audits
            .iter()
            .any(|a| a.stage == "replay" && a.decision == "checkpoint"),
        "the replay's chain closes with a signed checkpoint"
    );
    let verify = env.run(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // audit trace of one corrected event: route's disclosure and replay's
    // correction.
    let one = mine[0].correlation_id.clone().expect("correlation id");
    let trace = env.run_ok(&["audit", "trace", &one]);
    assert!(
        trace.contains("route") && trace.contains("correction"),
        "{trace}"
    );

    // Nothing left to do: a plan finds the corrections current, and a
    // second apply writes nothing anywhere.
    let (code, plan) = plan_json(&env, policy, &[]);
    assert_eq!(code, Some(0), "{plan}");
    let analytics = plan["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .find(|d| d["purpose"] == "outcomes-analytics")
        .expect("analytics")
        .clone();
    assert_eq!(analytics["already_current"], carried.len(), "{analytics}");
    let marks =
        |env: &Env| ["disclosures", "audit", TOPIC, "ledger.replay"].map(|t| env.watermark(t));
    let before_again = marks(&env);
    let again = env.run_ok(&["replay", "apply", "--policy", policy]);
    assert!(again.contains("nothing to apply"), "{again}");
    assert_eq!(marks(&env), before_again, "a second apply wrote something");
}

#[test]
fn a_destination_schema_the_registry_refuses_stops_apply_before_any_write() {
    let env = Env::new("replayschema");
    deliver(&env, 5, 6);
    // source_system is a required field of the envelope: added to a
    // destination schema without a default, old records cannot be read
    // with the new one (not BACKWARD-compatible).
    let policy = policy_file(
        &env,
        "2026.12-analytics-source",
        &[(
            "demographics.state, encounter.encounter_class]",
            "demographics.state, encounter.encounter_class, source_system]",
        )],
    );
    let policy = policy.as_str();
    let (code, plan) = plan_json(&env, policy, &[]);
    assert_eq!(code, Some(3));
    let refusals = plan["schema_refusals"].as_array().expect("refusals");
    assert_eq!(refusals.len(), 1, "{plan}");
    assert_eq!(refusals[0]["topic"], TOPIC);
    assert!(
        refusals[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("source_system")),
        "the reason names the field: {}",
        refusals[0]
    );
    let marks = |env: &Env| {
        [
            "disclosures",
            "audit",
            TOPIC,
            "ledger.replay",
            "audit.heads",
        ]
        .map(|t| env.watermark(t))
    };
    let before = marks(&env);
    let out = env.run(&["replay", "apply", "--policy", policy]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("source_system"));
    assert_eq!(marks(&env), before, "apply wrote before refusing");
}

/// Whether an analytics record carries the field the new policy withholds.
fn carries_class(
    cache: &mut SchemaCache,
    m: &consentry_runtime::rdkafka::message::OwnedMessage,
) -> bool {
    let ev = cache
        .decode_event(m.payload().expect("payload"))
        .expect("decodes");
    ev.encounter.is_some_and(|e| e.encounter_class.is_some())
}

#[test]
fn a_rolling_switch_over_is_corrected_exactly_where_the_old_policy_wrote() {
    let env = Env::new("replayswitch");
    let feed = generate(&SynthConfig::new(31, 30));
    let (consents, records): (Vec<_>, Vec<_>) = feed
        .into_iter()
        .partition(|r| r.feed == consentry_synth::Feed::Consent);
    let half = records.len() / 2;
    let mut first = consents;
    first.extend_from_slice(&records[..half]);
    env.publish_synth(&first);
    env.run_ok(&["run", "all", "--exit-when-idle", "4"]);
    let mut cache = SchemaCache::for_connection(&env.conn).expect("registry");
    let old_records = env.read(TOPIC);
    let key = |m: &consentry_runtime::rdkafka::message::OwnedMessage| {
        header(m, "idempotency-key").expect("key").to_string()
    };
    let old_keys: BTreeSet<String> = old_records.iter().map(key).collect();
    let carriers: BTreeSet<String> = old_records
        .iter()
        .filter(|m| carries_class(&mut cache, m))
        .map(key)
        .collect();
    assert!(!carriers.is_empty() && carriers.len() < old_keys.len());

    // The rolling restart: the new policy's schemas, then every stage on
    // it while the second half of the feed arrives.
    let policy = policy_file(&env, NEW_VERSION, &[WITHOUT_CLASS]);
    let policy = policy.as_str();
    env.run_ok(&["--topology", policy, "topics", "apply"]);
    env.publish_synth(&records[half..]);
    env.run_ok(&["--topology", policy, "run", "all", "--exit-when-idle", "4"]);
    let new_records: Vec<_> = env
        .read(TOPIC)
        .into_iter()
        .filter(|m| !old_keys.contains(&key(m)))
        .collect();
    assert!(!new_records.is_empty());
    assert!(
        new_records.iter().all(|m| !carries_class(&mut cache, m)),
        "the stages on the new policy withhold the field"
    );

    // The plan covers exactly what the old policy wrote.
    let (_, plan) = plan_json(&env, policy, &["--purpose", "outcomes-analytics"]);
    let d = &plan["destinations"][0];
    assert_eq!(d["correct"]["records"], carriers.len(), "{d}");
    assert_eq!(d["already_current"], new_records.len(), "{d}");
    assert_eq!(d["unchanged"], old_keys.len() - carriers.len(), "{d}");
    env.run_ok(&["replay", "apply", "--policy", policy]);
    let superseded: BTreeSet<String> = env
        .read(TOPIC)
        .iter()
        .filter(|m| header(m, "replay-id").is_some())
        .map(|m| header(m, "supersedes").expect("supersedes").to_string())
        .collect();
    assert_eq!(
        superseded, carriers,
        "each old record that carried it, once"
    );
    let out = env.run(&["replay", "plan", "--policy", policy, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
