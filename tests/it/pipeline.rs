//! End to end on the real local stack: a synthetic feed through all six
//! stages in one child process; expected records at every destination, an
//! audit record for every stage and event, an Observation that arrived
//! before its Patient held and re-driven, metrics served, SIGTERM honoured,
//! and a replay of the same feed producing nothing new.

use consentry_runtime::rdkafka::Message;
use consentry_synth::{events_in, generate, patients, Feed, SynthConfig};
use consentry_testkit::{free_port, signal, wait_exit, Env};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const PATIENTS: usize = 10;

fn metric(text: &str, line_prefix: &str) -> f64 {
    consentry_testkit::metric_value(text, line_prefix)
        .unwrap_or_else(|| panic!("metric {line_prefix} missing"))
}

#[test]
fn synthetic_feed_flows_through_every_stage() {
    let env = Env::new("e2e");
    let cfg = SynthConfig::new(7, PATIENTS);
    let feed = generate(&cfg);
    env.publish_synth(&feed);
    let expected = env.expected_outputs(&feed);
    let count = |f: Feed| feed.iter().filter(|r| r.feed == f).count();
    let (hl7_records, fhir_records) = (count(Feed::Hl7v2), count(Feed::Fhir));
    let events: usize = feed
        .iter()
        .filter(|r| r.feed != Feed::Consent)
        .map(events_in)
        .sum();
    // Patient 9's Observation comes before its Patient: held, then re-driven.
    let held = PATIENTS / 10;
    assert_eq!(held, 1);
    assert_eq!(expected["events.normalized"].len(), events);

    let port = free_port();
    let mut children = consentry_testkit::Children(vec![env.spawn(&[
        "run",
        "all",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ])]);
    let child = &mut children.0[0];
    let destinations: Vec<(String, String)> = env
        .topology
        .purposes
        .values()
        .map(|p| (p.name.clone(), p.topic.clone()))
        .collect();
    env.wait_for(
        "every destination to hold its events",
        Duration::from_secs(120),
        || {
            destinations
                .iter()
                .all(|(_, t)| env.read(t).len() >= expected[t].len())
        },
    );

    // Metrics, scraped from the running process. Consumer lag comes from
    // librdkafka statistics every 5 s: wait for the first report.
    let scrape = || -> String {
        ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .expect("metrics endpoint")
            .into_body()
            .read_to_string()
            .expect("body")
    };
    env.wait_for(
        "consumer lag to be reported",
        Duration::from_secs(30),
        || {
            let text = scrape();
            ["normalize", "route"].iter().all(|s| {
                text.contains(&format!("stage=\"{s}\""))
                    && text.lines().any(|l| {
                        l.starts_with("consentry_consumer_lag_records{")
                            && l.contains(&format!("stage=\"{s}\""))
                    })
            })
        },
    );
    let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .expect("metrics endpoint")
        .into_body()
        .read_to_string()
        .expect("body");
    assert_eq!(
        metric(
            &text,
            "consentry_records_in_total{stage=\"normalize\",topic=\"ehr.hl7v2\"}"
        ),
        hl7_records as f64
    );
    assert_eq!(
        metric(
            &text,
            "consentry_records_in_total{stage=\"normalize\",topic=\"ehr.fhir\"}"
        ),
        fhir_records as f64
    );
    assert_eq!(
        metric(
            &text,
            "consentry_records_out_total{stage=\"route\",topic=\"out.marketing\"}"
        ),
        expected["out.marketing"].len() as f64
    );
    // Consent: one decision (and audit record) per event and purpose.
    let purposes = env.topology.purposes.len();
    assert_eq!(
        metric(
            &text,
            "consentry_audit_records_total{stage=\"consent-gate\"}"
        ),
        (events * purposes) as f64
    );
    let decisions: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("consentry_consent_decisions_total{")
                && l.contains("stage=\"consent-gate\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(decisions, (events * purposes) as f64);
    assert!(text.contains("consentry_consent_decisions_total{decision=\"downgrade\",purpose=\"marketing\",reason=\"consent_unknown\",stage=\"consent-gate\"}"));
    assert_eq!(
        metric(&text, "consentry_redriven_total{stage=\"normalize\"}"),
        held as f64
    );
    assert!(metric(&text, "consentry_state_entries{stage=\"normalize\"}") >= PATIENTS as f64);
    assert!(
        metric(
            &text,
            "consentry_transactions_total{outcome=\"committed\",stage=\"route\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "consentry_batch_duration_seconds_count{stage=\"tokenize\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "consentry_commit_duration_seconds_count{stage=\"normalize\"}"
        ) >= 1.0
    );
    // The only quarantine: the Observation held until its Patient came.
    let quarantined: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("consentry_records_quarantined_total{"))
        .collect();
    assert_eq!(
        quarantined,
        [format!(
            "consentry_records_quarantined_total{{reason=\"unresolved_subject\",stage=\"normalize\"}} {held}"
        )]
    );

    // SIGTERM: finish, leave the group, exit 0, print the summary.
    signal(child, "TERM");
    let status = wait_exit(child, Duration::from_secs(60));
    assert!(status.success(), "run exited with {status:?}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut stdout)
        .expect("stdout");
    let route = consentry_testkit::stage_row(&stdout, "route");
    let n4 = expected["events.tokenized"].len().to_string();
    assert_eq!(
        route[1..4],
        [n4.as_str(), n4.as_str(), "0"],
        "route in/out/quarantined"
    );

    // Every destination holds exactly the expected records, once each.
    for (purpose, topic) in &destinations {
        let got = env.events(topic);
        let keys: BTreeSet<&String> = got.iter().map(|(k, _)| k).collect();
        let want = &expected[topic];
        assert_eq!(got.len(), want.len(), "{topic}");
        assert_eq!(keys.len(), want.len(), "{topic} holds a key twice");
        for (k, ev) in &got {
            assert_eq!(ev.purpose.as_deref(), Some(purpose.as_str()));
            assert_eq!(
                want.get(k),
                Some(ev),
                "{topic} record differs from the pure pipeline's"
            );
        }
    }

    // An audit record for every stage and event, found by correlation id
    // (after de-identification a record no longer carries its source
    // event id; the audit trail links stages by correlation id and keys).
    let audits = env.audits();
    let mut per_stage: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut held_trail: Vec<(String, String)> = Vec::new();
    let mut checkpoints: BTreeSet<String> = BTreeSet::new();
    for a in &audits {
        if a.stage == "consent-ledger" && a.decision != "checkpoint" {
            // The consents, read before the feed (tests/consent.rs).
            assert_eq!(a.decision, "consent_apply");
            continue;
        }
        if a.decision == "checkpoint" {
            // A clean stop writes each stage's chain heads.
            assert!(!a.checkpoint.is_empty());
            checkpoints.insert(a.stage.to_string());
        } else if a.decision == "forward"
            || a.stage == "consent-gate"
                && ["allow", "deny", "downgrade"].contains(&a.decision.as_str())
        {
            let corr = a
                .correlation_id
                .as_deref()
                .map(String::from)
                .expect("correlation id");
            // The gate's and route's reasons are consent's; the others' ok.
            if ["consent-gate", "route"].contains(&a.stage.as_str()) {
                assert!(a.reason_code.starts_with("consent_"), "{}", a.reason_code);
            } else {
                assert_eq!(a.reason_code, "ok");
            }
            *per_stage.entry((a.stage.to_string(), corr)).or_default() += 1;
        } else {
            held_trail.push((a.decision.to_string(), a.reason_code.to_string()));
            let id = a.event_id.as_deref().unwrap_or_default();
            assert!(id.starts_with("fhir:Observation/obs-9/"), "{id}");
        }
    }
    assert_eq!(checkpoints.len(), 6, "{checkpoints:?}");
    // The held record's evidence: held with a reason, then re-driven.
    held_trail.sort();
    assert_eq!(
        held_trail,
        [
            ("quarantine".to_string(), "unresolved_subject".to_string()),
            ("redrive".to_string(), "ok".to_string())
        ]
    );
    let correlation_ids: BTreeSet<&str> = expected["events.normalized"]
        .values()
        .map(|e| e.correlation_id.as_str())
        .collect();
    assert_eq!(correlation_ids.len(), events);
    // Per event: one gate decision per purpose, and the later stages once
    // per purpose the gate let through.
    let mut passed: BTreeMap<&str, usize> = BTreeMap::new();
    for e in expected["events.gated"].values() {
        *passed.entry(e.correlation_id.as_str()).or_default() += 1;
    }
    for id in &correlation_ids {
        let n = passed.get(id).copied().unwrap_or(0);
        assert!(n >= 1, "marketing gets at least a notice");
        for (stage, n) in [
            ("normalize", 1),
            ("consent-gate", purposes),
            ("de-identify", n),
            ("tokenize", n),
            ("route", n),
        ] {
            assert_eq!(
                per_stage.get(&(stage.to_string(), id.to_string())),
                Some(&n),
                "{stage} audits for an event"
            );
        }
    }
    let audit_ids: BTreeSet<&str> = audits.iter().map(|a| a.audit_id.as_str()).collect();
    assert_eq!(audit_ids.len(), audits.len(), "audit ids are unique");

    // No direct identifier reaches any destination's bytes (what a limited
    // data set may keep, it may keep; tests/deidentify.rs checks the rest).
    let direct: Vec<(&str, String)> = patients(&cfg)
        .iter()
        .flat_map(|p| p.direct_identifiers())
        .collect();
    let limited: Vec<(&str, String)> = patients(&cfg)
        .iter()
        .flat_map(|p| p.limited_identifiers())
        .collect();
    for (_, topic) in &destinations {
        for m in env.read(topic) {
            let bytes = m.payload().unwrap_or_default();
            let leak = consentry_testkit::find_leak(bytes, &direct, &limited);
            assert!(leak.is_none(), "a {:?} reached {topic}", leak.map(|l| l.0));
        }
    }

    // The quarantine topic holds the held record once, with its reason.
    let quarantine = env.read("quarantine");
    assert_eq!(quarantine.len(), held);
    assert_eq!(
        consentry_runtime::inspect::header(&quarantine[0], "reason-code"),
        Some("unresolved_subject")
    );

    // Replaying the same feed yields nothing new: every event, the held
    // Observation included (its Patient is now known), is a duplicate.
    env.publish_synth(&feed);
    let stdout = env.run_ok(&["run", "all", "--exit-when-idle", "3"]);
    let normalize_row = consentry_testkit::stage_row(&stdout, "normalize");
    assert_eq!(
        normalize_row[1..6],
        [
            (hl7_records + fhir_records).to_string(),
            "0".into(),
            "0".into(),
            events.to_string(),
            "0".into()
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()[..],
        "in, out, quarantined, duplicates, audit"
    );
    for (_, topic) in &destinations {
        assert_eq!(
            env.read(topic).len(),
            expected[topic].len(),
            "{topic} after replay"
        );
    }
    assert_eq!(env.read("quarantine").len(), held);
}
