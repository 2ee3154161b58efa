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
//!   reported by `plan` and refused by `apply` before anything is written.

use consentry_runtime::codec::SchemaCache;
use consentry_runtime::inspect::header;
use consentry_runtime::rdkafka::Message;
use consentry_synth::{generate, SynthConfig};
use consentry_testkit::{shipped_topology_text, wait_exit, Env};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const TOPIC: &str = "out.outcomes-analytics";
const NEW_VERSION: &str = "2026.12-analytics-no-class";

fn policy_without_class() -> String {
    let p = shipped_topology_text()
        .replacen(
            "demographics.state, encounter.encounter_class]",
            "demographics.state]",
            1,
        )
        .replacen(
            "policy_version: \"2026.11-deidentify.1\"",
            &format!("policy_version: \"{NEW_VERSION}\""),
            1,
        );
    assert!(p.contains(NEW_VERSION) && !p.contains("state, encounter.encounter_class]"));
    p
}

#[test]
fn apply_corrects_each_record_once_across_a_kill_and_never_twice() {
    let env = Env::new("replayapply");
    env.publish_synth(&generate(&SynthConfig::new(17, 40)));
    env.run_ok(&["run", "all", "--exit-when-idle", "4"]);

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
    let policy = env.dir.join("no-class.yaml");
    std::fs::write(&policy, policy_without_class()).expect("write");
    let policy = policy.to_str().unwrap();

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
        assert_eq!(
            a.previous_policy_version.as_deref(),
            Some("2026.11-deidentify.1")
        );
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
    let out = env.run(&["replay", "plan", "--policy", policy, "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(out.status.code(), Some(0), "{plan}");
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
    env.publish_synth(&generate(&SynthConfig::new(5, 6)));
    env.run_ok(&["run", "all", "--exit-when-idle", "4"]);
    // source_system is a required field of the envelope: added to a
    // destination schema without a default, old records cannot be read
    // with the new one (not BACKWARD-compatible).
    let text = shipped_topology_text()
        .replacen(
            "demographics.state, encounter.encounter_class]",
            "demographics.state, encounter.encounter_class, source_system]",
            1,
        )
        .replacen(
            "policy_version: \"2026.11-deidentify.1\"",
            "policy_version: \"2026.12-analytics-source\"",
            1,
        );
    let policy = env.dir.join("source.yaml");
    std::fs::write(&policy, text).expect("write");
    let policy = policy.to_str().unwrap();
    let out = env.run(&["replay", "plan", "--policy", policy, "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
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

#[test]
fn a_new_purpose_is_backfilled_for_consented_subjects_only() {
    let env = Env::new("replaybackfill");
    env.publish_synth(&generate(&SynthConfig::new(23, 30)));
    env.run_ok(&["run", "all", "--exit-when-idle", "4"]);
    // A second analytics purpose on the same consent code, at a new
    // destination: the events outcomes-analytics received are exactly the
    // ones whose subjects consented to it.
    let text = shipped_topology_text()
        .replacen(
            "  out.marketing:",
            "  out.analytics-copy:  { role: destination, partitions: 3, schema: destination }\n  out.marketing:",
            1,
        )
        .replacen(
            "  crm-marketing:",
            "  analytics-copy:       { topic: out.analytics-copy, system: \"Second warehouse\" }\n  crm-marketing:",
            1,
        )
        .replacen(
            "  marketing:\n",
            "  analytics-copy:\n    consent_code: HOPERAT\n    destination: analytics-copy\n    profile: safe-harbor\n    token_domain: analytics-copy\n    allow: [event_id, event_type, correlation_id, policy_version, purpose, codes.system, codes.code]\n  marketing:\n",
            1,
        )
        .replacen(
            "out.marketing, disclosures]",
            "out.marketing, out.analytics-copy, disclosures]",
            1,
        )
        .replacen(
            "policy_version: \"2026.11-deidentify.1\"",
            "policy_version: \"2026.12-analytics-copy\"",
            1,
        );
    assert!(text.contains("analytics-copy:\n    consent_code"));
    let policy = env.dir.join("copy.yaml");
    std::fs::write(&policy, text).expect("write");
    let policy = policy.to_str().unwrap();
    // The operator creates the new destination's topic first.
    env.run_ok(&["--topology", policy, "topics", "apply"]);

    let mut cache = SchemaCache::for_connection(&env.conn).expect("registry");
    let disclosed_events = |purpose: &str, cache: &mut SchemaCache| -> BTreeSet<String> {
        env.read("disclosures")
            .iter()
            .filter_map(|m| cache.decode_disclosure(m.payload()?).ok())
            .filter(|d| d.purpose == purpose)
            // The internal correlation id: one per event.
            .map(|d| d.correlation_id.to_string())
            .collect()
    };
    let consented = disclosed_events("outcomes-analytics", &mut cache);
    assert!(consented.len() >= 5);

    let out = env.run(&[
        "replay",
        "plan",
        "--policy",
        policy,
        "--purpose",
        "analytics-copy",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let copy = &plan["destinations"][0];
    assert_eq!(copy["purpose"], "analytics-copy");
    assert_eq!(copy["backfill"]["records"], consented.len(), "{copy}");
    assert!(
        copy["backfill_consent_withheld"].as_u64() > Some(0),
        "some subjects did not consent: {copy}"
    );
    assert_eq!(
        (&copy["correct"]["records"], &copy["retract"]["records"]),
        (&serde_json::json!(0), &serde_json::json!(0))
    );

    let done = env.run_ok(&[
        "replay",
        "apply",
        "--policy",
        policy,
        "--purpose",
        "analytics-copy",
    ]);
    assert!(
        done.contains(&format!("{} backfills written", consented.len())),
        "{done}"
    );
    assert_eq!(disclosed_events("analytics-copy", &mut cache), consented);
    let written = env.read("out.analytics-copy");
    assert_eq!(written.len(), consented.len());
    for m in &written {
        assert!(header(m, "replay-id").is_some() && header(m, "supersedes").is_none());
        let ev = cache
            .decode_event(m.payload().expect("payload"))
            .expect("decodes");
        assert_eq!(ev.purpose.as_deref(), Some("analytics-copy"));
        assert!(ev.demographics.is_none(), "only the allowlist");
    }
    // A revocation after the backfill reaches the new destination: route
    // knows the subject is there.
    let states = env.read("route.disclosed");
    assert!(
        states.iter().any(|m| m
            .key()
            .is_some_and(|k| String::from_utf8_lossy(k).contains("/analytics-copy/"))),
        "route's record of the backfill"
    );
}

#[test]
fn from_the_source_a_segment_now_accepted_is_backfilled_once() {
    let env = Env::new("replaysource");
    let cfg = SynthConfig::new(29, 20);
    env.publish_synth(&generate(&cfg));
    // Admissions carrying a site segment the policy does not list yet:
    // normalize quarantines them as schema drift.
    let people = consentry_synth::patients(&cfg);
    let drift: Vec<String> = people
        .iter()
        .take(8)
        .map(|p| {
            let adt = consentry_synth::hl7_adt(&cfg, p, "A01", 3).replacen(
                &format!("|CS{:08}A01|", p.index),
                &format!("|ZP{:08}A01|", p.index),
                1,
            );
            format!("{}\rZPD|1|x", adt.trim_end_matches('\r'))
        })
        .collect();
    assert!(drift.iter().all(|m| m.contains("|ZP")));
    let records: Vec<(Option<&str>, &[u8])> = drift.iter().map(|m| (None, m.as_bytes())).collect();
    env.publish("ehr.hl7v2", &records);
    env.run_ok(&["run", "all", "--exit-when-idle", "4"]);
    let drifted = env
        .read("quarantine")
        .iter()
        .filter(|m| header(m, "reason-code") == Some("schema_drift"))
        .count();
    assert_eq!(drifted, 8);

    let text = shipped_topology_text()
        .replacen(
            "    hl7v2: []   # e.g. ZPD",
            "    hl7v2: [ZPD]   # e.g. ZPD",
            1,
        )
        .replacen(
            "policy_version: \"2026.11-deidentify.1\"",
            "policy_version: \"2026.12-zpd\"",
            1,
        );
    assert!(text.contains("hl7v2: [ZPD]"));
    let policy = env.dir.join("zpd.yaml");
    std::fs::write(&policy, text).expect("write");
    let policy = policy.to_str().unwrap();
    let plan = |extra: &[&str]| {
        let mut args = vec!["replay", "plan", "--policy", policy, "--json"];
        args.extend(extra);
        let out = env.run(&args);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), json)
    };
    let sum = |plan: &serde_json::Value, what: &str| -> u64 {
        plan["destinations"]
            .as_array()
            .expect("destinations")
            .iter()
            .map(|d| d[what]["records"].as_u64().expect("count"))
            .sum()
    };
    // The normalized history never held them: nothing to do from there.
    let (code, normalized) = plan(&[]);
    assert_eq!(
        (code, &normalized["changes"]),
        (Some(0), &serde_json::json!(0))
    );
    // From the source, normalized again under the new policy: the drifted
    // admissions are new records for every purpose their consent allows,
    // and nothing else changes.
    let (code, from_source) = plan(&["--from-source"]);
    assert_eq!(code, Some(3), "{from_source}");
    assert_eq!(from_source["history"], "source records");
    let backfill = sum(&from_source, "backfill");
    assert!(backfill >= 8, "{from_source}");
    assert_eq!(
        (sum(&from_source, "correct"), sum(&from_source, "retract")),
        (0, 0),
        "{from_source}"
    );

    let mut cache = SchemaCache::for_connection(&env.conn).expect("registry");
    let correlations = |cache: &mut SchemaCache, replayed: bool| -> BTreeSet<String> {
        env.read("disclosures")
            .iter()
            .filter(|m| header(m, "replay-id").is_some() == replayed)
            .filter_map(|m| cache.decode_disclosure(m.payload()?).ok())
            .map(|d| d.correlation_id.to_string())
            .collect()
    };
    let before = correlations(&mut cache, false);
    let done = env.run_ok(&["replay", "apply", "--policy", policy, "--from-source"]);
    assert!(
        done.contains(&format!("{backfill} backfills written")),
        "{done}"
    );
    // Eight admissions, each a new event no destination had.
    let added = correlations(&mut cache, true);
    assert_eq!(added.len(), 8, "one correlation per drifted admission");
    assert!(added.is_disjoint(&before));
    let (code, again) = plan(&["--from-source"]);
    assert_eq!(
        (code, &again["changes"]),
        (Some(0), &serde_json::json!(0)),
        "{again}"
    );
}

/// The shipped policy with registry-research tightened from a limited data
/// set to Safe Harbor (no dates, no ZIP, no city).
fn registry_safe_harbor() -> String {
    let old = "    profile: limited-data-set\n    token_domain: registry\n    deidentify: { age: years }\n    allow: [event_type, event_time_ms, correlation_id, policy_version, purpose, subject_key, codes.system, codes.code, demographics.sex, demographics.birth_date, demographics.postal_code, demographics.city, demographics.state, demographics.age]";
    let text = shipped_topology_text();
    assert!(text.contains(old));
    text.replacen(
        old,
        "    profile: safe-harbor\n    token_domain: registry\n    deidentify: { age: years }\n    allow: [event_type, correlation_id, policy_version, purpose, subject_key, codes.system, codes.code, demographics.sex, demographics.state, demographics.age]",
        1,
    )
    .replacen(
        "policy_version: \"2026.11-deidentify.1\"",
        "policy_version: \"2026.12-registry-safe-harbor\"",
        1,
    )
}

#[test]
fn a_tightened_profile_corrects_the_consented_and_leaves_the_revoked_alone() {
    use consentry_testkit::consent_feed::{capture, mrn, publish_all, publish_burst};
    let env = Env::new("replayprofile");
    let (alice, bob) = (mrn(1), mrn(2));
    let grants: Vec<Vec<u8>> = [&alice, &bob]
        .iter()
        .map(|m| capture(&env, m, "HRESCH", "active", 1))
        .collect();
    publish_all(&env, "consent.events", &grants);
    env.run_ok(&["run", "consent-ledger", "--exit-when-idle", "2"]);
    publish_burst(&env, &alice, "A", 10);
    publish_burst(&env, &bob, "B", 10);
    env.run_ok(&["run", "all", "--exit-when-idle", "4"]);
    let topic = "out.research-registry";
    let delivered = env.read(topic);
    assert_eq!(delivered.len(), 20);
    assert!(delivered.iter().all(|m| header(m, "phi") == Some("true")));
    // alice revokes after delivery: route tells the registry and forgets
    // that it holds her records.
    publish_all(
        &env,
        "consent.events",
        &[capture(&env, &alice, "HRESCH", "revoked", 2)],
    );
    env.run_ok(&["run", "all", "--exit-when-idle", "4"]);
    let mut cache = SchemaCache::for_connection(&env.conn).expect("registry");
    let registry_disclosures: Vec<_> = env
        .read("disclosures")
        .iter()
        .filter_map(|m| cache.decode_disclosure(m.payload()?).ok())
        .filter(|d| d.purpose == "registry-research")
        .collect();
    // route's table of who it disclosed to: alice's entry deleted.
    let mut last: BTreeMap<String, bool> = BTreeMap::new();
    for m in env.read("route.disclosed") {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        if key.contains("/registry-research/") {
            last.insert(key, m.payload().is_some());
        }
    }
    let revoked: Vec<&String> = last
        .iter()
        .filter(|(_, live)| !**live)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(revoked.len(), 1, "{last:?}");
    let (alices, bobs): (Vec<_>, Vec<_>) = registry_disclosures
        .iter()
        .filter(|d| d.event_type != "consent:revoked")
        .partition(|d| revoked[0].contains(d.subject_token.as_str()));
    assert_eq!((alices.len(), bobs.len()), (10, 10));

    let policy = env.dir.join("safe-harbor.yaml");
    std::fs::write(&policy, registry_safe_harbor()).expect("write");
    let policy = policy.to_str().unwrap();
    let out = env.run(&[
        "replay",
        "plan",
        "--policy",
        policy,
        "--purpose",
        "registry-research",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let d = &plan["destinations"][0];
    assert_eq!(d["correct"]["records"], 10, "{d}");
    assert_eq!(d["consent_withheld"], 10, "{d}");
    assert_eq!(
        (&d["retract"]["records"], &d["backfill"]["records"]),
        (&serde_json::json!(0), &serde_json::json!(0))
    );
    assert_eq!(
        d["profile_changes"].as_object().map(|o| o.len()),
        Some(1),
        "{d}"
    );
    for f in ["demographics.birth_date", "event_time_ms"] {
        assert_eq!(d["fields_withheld"][f], 10, "{d}");
    }

    env.run_ok(&[
        "replay",
        "apply",
        "--policy",
        policy,
        "--purpose",
        "registry-research",
    ]);
    let bob_ids: BTreeSet<String> = bobs.iter().map(|d| d.disclosure_id.to_string()).collect();
    let mut superseded = BTreeSet::new();
    for m in env
        .read(topic)
        .iter()
        .filter(|m| header(m, "replay-id").is_some())
    {
        assert_eq!(header(m, "phi"), Some("false"));
        superseded.insert(header(m, "supersedes").expect("supersedes").to_string());
        let ev = cache
            .decode_event(m.payload().expect("payload"))
            .expect("decodes");
        let demo = ev.demographics.expect("demographics");
        assert!(demo.birth_date.is_none() && demo.postal_code.is_none() && demo.city.is_none());
        assert!(ev.event_time_ms.is_none());
    }
    assert_eq!(
        superseded, bob_ids,
        "bob's records corrected, none of alice's"
    );
    // audit trace of one corrected event: the disclosure, then its correction.
    let corr = bobs[0].correlation_id.to_string();
    let trace = env.run_ok(&["audit", "trace", &corr]);
    let route_at = trace
        .find("route")
        .expect("route's disclosure in the trace");
    let fix_at = trace
        .find("correction")
        .expect("the correction in the trace");
    assert!(route_at < fix_at, "{trace}");
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
    let policy = env.dir.join("no-class.yaml");
    std::fs::write(&policy, policy_without_class()).expect("write");
    let policy = policy.to_str().unwrap();
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
    let out = env.run(&[
        "replay",
        "plan",
        "--policy",
        policy,
        "--purpose",
        "outcomes-analytics",
        "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
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
