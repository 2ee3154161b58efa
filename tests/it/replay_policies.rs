//! `replay plan` and `apply` on the real stack, one kind of policy change
//! each:
//! - a new purpose: backfilled for the subjects whose consent allows it,
//!   and route learns the destination holds them (for later revocations);
//! - a segment the policy now accepts, replayed from the raw source: the
//!   drifted admissions backfilled, nothing else touched;
//! - a profile tightened to Safe Harbor, with one subject who revoked
//!   after delivery: the other's records corrected to Safe Harbor values,
//!   the revoked subject's left alone; `audit trace` shows disclosure and
//!   correction;
//! - a purpose retired: a retraction notice (ids only) for each record its
//!   destination holds, once.

use super::replay::{deliver, plan_json, policy_file};
use consentry_runtime::codec::SchemaCache;
use consentry_runtime::inspect::header;
use consentry_runtime::rdkafka::Message;
use consentry_synth::{generate, SynthConfig};
use consentry_testkit::Env;
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn a_new_purpose_is_backfilled_for_consented_subjects_only() {
    let env = Env::new("replaybackfill");
    deliver(&env, 23, 30);
    // A second analytics purpose on the same consent code, at a new
    // destination: the events outcomes-analytics received are exactly the
    // ones whose subjects consented to it.
    let policy = policy_file(
        &env,
        "2026.12-analytics-copy",
        &[
            (
                "  out.marketing:",
                "  out.analytics-copy:  { role: destination, partitions: 3, schema: destination }\n  out.marketing:",
            ),
            (
                "  crm-marketing:",
                "  analytics-copy:       { topic: out.analytics-copy, system: \"Second warehouse\" }\n  crm-marketing:",
            ),
            (
                "  marketing:\n",
                "  analytics-copy:\n    consent_code: HOPERAT\n    destination: analytics-copy\n    profile: safe-harbor\n    token_domain: analytics-copy\n    allow: [event_id, event_type, correlation_id, policy_version, purpose, codes.system, codes.code]\n  marketing:\n",
            ),
            (
                "out.marketing, disclosures]",
                "out.marketing, out.analytics-copy, disclosures]",
            ),
        ],
    );
    let policy = policy.as_str();
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

    let (code, plan) = plan_json(&env, policy, &["--purpose", "analytics-copy"]);
    assert_eq!(code, Some(3));
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

    let policy = policy_file(
        &env,
        "2026.12-zpd",
        &[(
            "    hl7v2: []   # e.g. ZPD",
            "    hl7v2: [ZPD]   # e.g. ZPD",
        )],
    );
    let policy = policy.as_str();
    let plan = |extra: &[&str]| plan_json(&env, policy, extra);
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
/// set to Safe Harbor (no dates, no ZIP, no city): its path.
fn registry_safe_harbor(env: &Env) -> String {
    policy_file(
        env,
        "2026.12-registry-safe-harbor",
        &[(
            "    profile: limited-data-set\n    token_domain: registry\n    deidentify: { age: years }\n    allow: [event_type, event_time_ms, correlation_id, policy_version, purpose, subject_key, codes.system, codes.code, demographics.sex, demographics.birth_date, demographics.postal_code, demographics.city, demographics.state, demographics.age]",
            "    profile: safe-harbor\n    token_domain: registry\n    deidentify: { age: years }\n    allow: [event_type, correlation_id, policy_version, purpose, subject_key, codes.system, codes.code, demographics.sex, demographics.state, demographics.age]",
        )],
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

    let policy = registry_safe_harbor(&env);
    let policy = policy.as_str();
    let (code, plan) = plan_json(&env, policy, &["--purpose", "registry-research"]);
    assert_eq!(code, Some(3));
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

#[test]
fn a_retired_purpose_gets_one_retraction_per_record_it_holds() {
    let env = Env::new("replayretire");
    deliver(&env, 37, 20);
    let topic = "out.marketing";
    let held: BTreeSet<String> = env
        .read(topic)
        .iter()
        .map(|m| header(m, "idempotency-key").expect("key").to_string())
        .collect();
    assert!(held.len() >= 5, "{} marketing records", held.len());

    let block = "  marketing:\n    consent_code: HMARKT\n    destination: crm-marketing\n    profile: aggregate-only\n    channel: email\n    on_missing_consent: notify\n    allow: [event_type, policy_version, purpose]\n";
    let policy = policy_file(&env, "2026.12-no-marketing", &[(block, "")]);
    let policy = policy.as_str();
    let (code, plan) = plan_json(&env, policy, &[]);
    assert_eq!(code, Some(3));
    assert_eq!(
        plan["changes"],
        held.len(),
        "only marketing changes: {plan}"
    );
    let first = &plan["destinations"][0];
    assert_eq!(first["purpose"], "marketing");
    assert_eq!(first["retract"]["records"], held.len());

    env.run_ok(&["replay", "apply", "--policy", policy]);
    let mut cache = SchemaCache::for_connection(&env.conn).expect("registry");
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
        assert_eq!(ev.event_type, "record:retracted");
        // What the retired purpose allowed, and no more: no subject, no
        // codes, no dates.
        assert!(ev.subject_key.is_empty() && ev.codes.is_empty() && ev.event_time_ms.is_none());
    }
    assert_eq!(superseded, held, "one retraction per record held");
    let ledger = env
        .read("disclosures")
        .iter()
        .filter(|m| header(m, "replay-id").is_some())
        .filter_map(|m| cache.decode_disclosure(m.payload()?).ok())
        .filter(|d| d.event_type == "record:retracted" && !d.phi)
        .count();
    assert_eq!(ledger, held.len());
    // Retracted once: the plan now counts them as retracted.
    let (code, plan) = plan_json(&env, policy, &[]);
    assert_eq!(code, Some(0));
    let marketing = plan["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .find(|d| d["purpose"] == "marketing")
        .expect("marketing")
        .clone();
    assert_eq!(marketing["retracted"], held.len(), "{marketing}");
}

#[test]
fn a_revocation_while_applying_stops_the_job_and_nothing_follows_it() {
    use consentry_testkit::consent_feed::{capture, mrn, publish_all, publish_burst};
    let env = Env::new("replayrevoke");
    // The live consent ledger runs while apply does: a vault both reach.
    env.set_env(
        "CONSENTRY_VAULT",
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
    );
    let schema = format!(
        "it_{}",
        env.prefix.trim_end_matches('.').replace(['-', '.'], "_")
    );
    env.set_env("CONSENTRY_VAULT_SCHEMA", &schema);
    let bob = mrn(2);
    publish_all(
        &env,
        "consent.events",
        &[capture(&env, &bob, "HRESCH", "active", 1)],
    );
    env.run_ok(&["run", "consent-ledger", "--exit-when-idle", "2"]);
    publish_burst(&env, &bob, "B", 12);
    env.run_ok(&["run", "all", "--exit-when-idle", "4"]);
    let topic = "out.research-registry";
    let before = env.watermark(topic);
    let policy = registry_safe_harbor(&env);
    let policy = policy.as_str();

    // Slowly: one correction per transaction, two a second.
    let args = [
        "replay",
        "apply",
        "--policy",
        policy,
        "--batch-size",
        "1",
        "--max-rate",
        "2",
    ];
    let mut guard = consentry_testkit::Children(vec![env.spawn(&args)]);
    let started = std::time::Instant::now();
    while env.watermark(topic) < before + 2 {
        assert!(started.elapsed() < std::time::Duration::from_secs(120));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // bob revokes; the consent ledger applies it to the table.
    publish_all(
        &env,
        "consent.events",
        &[capture(&env, &bob, "HRESCH", "revoked", 2)],
    );
    env.run_ok(&["run", "consent-ledger", "--exit-when-idle", "2"]);
    let status = consentry_testkit::wait_exit(&mut guard.0[0], std::time::Duration::from_secs(120));
    assert_eq!(
        status.code(),
        Some(1),
        "apply stopped on the consent change"
    );
    let written = || {
        env.read(topic)
            .iter()
            .filter(|m| header(m, "replay-id").is_some())
            .count()
    };
    let at_stop = written();
    assert!(
        at_stop > 0 && at_stop < 12,
        "stopped midway: {at_stop} corrections"
    );
    // Run again: planned with today's consent, nothing more of bob's goes.
    let again = env.run_ok(&["replay", "apply", "--policy", policy]);
    assert!(again.contains("nothing to apply"), "{again}");
    assert_eq!(written(), at_stop, "nothing followed the revocation");
}
