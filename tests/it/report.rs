//! `consentry report` on a known feed, its numbers worked out here from
//! what the test published and from what the destinations hold, not from
//! the audit trail the report reads: alice and bob consent to research
//! and care management, a third patient to nothing; alice then revokes
//! research; a vault caller resolves, is refused once and breaks glass
//! once, and another asks for alice's shredded research token. Checked: consent validated per purpose, denials by reason, the
//! fields each destination holds beyond operational ones (by walking the
//! records themselves), the revocation's notices and their latency
//! against the records' own timestamps, detokenizations, completeness,
//! and k over the Safe Harbor destinations' quasi-identifiers; the HTML
//! form is one self-contained file.

use crate::vault_api::{post, resolve, EMERGENCY, WHY};
use consentry_core::CanonicalEvent;
use consentry_runtime::rdkafka::message::Message;
use consentry_testkit::consent_feed::{capture, mrn, publish_all, publish_burst};
use consentry_testkit::{wait_exit, Children, Env};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const NOTICES: [&str; 2] = ["consent:revoked", "consent:needed"];

/// The dotted paths of a record that hold a value (array items share
/// their array's path), walked over its JSON form.
fn carried(ev: &CanonicalEvent) -> BTreeSet<String> {
    fn walk(v: &Value, path: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, &p, out);
                }
            }
            Value::Array(items) => {
                for i in items {
                    walk(i, path, out);
                }
                if !items.is_empty() && !items.iter().any(Value::is_object) {
                    out.insert(path.to_string());
                }
            }
            Value::Null => {}
            Value::String(s) if s.is_empty() => {}
            _ => {
                out.insert(path.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&serde_json::to_value(ev).expect("JSON"), "", &mut out);
    out
}

/// Each record of a destination once (a retried batch writes it again).
fn distinct(env: &Env, topic: &str) -> Vec<(i64, CanonicalEvent)> {
    let mut seen = BTreeSet::new();
    env.read(topic)
        .iter()
        .zip(env.events(topic))
        .filter(|(_, (key, _))| seen.insert(key.clone()))
        .map(|(m, (_, ev))| (m.timestamp().to_millis().unwrap_or(0), ev))
        .collect()
}

#[test]
fn the_report_says_what_the_feed_makes_true() {
    let env = Env::new("report");
    let (alice, bob, carol) = (mrn(11), mrn(12), mrn(13));
    let (crm, trial) = {
        let (_, vault) = env.open_vault();
        let identity = b"urn:oid:2.16.840.1.113883.3.7777.1|CS0000042";
        (
            vault
                .subject_token("crm", "subject-a", identity, 1)
                .expect("issues"),
            vault
                .subject_token("trial", "subject-a", identity, 1)
                .expect("issues"),
        )
    };
    let grants: Vec<Vec<u8>> = [&alice, &bob]
        .iter()
        .flat_map(|m| ["HRESCH", "CAREMGT"].map(|p| capture(&env, m, p, "active", 1)))
        .collect();
    publish_all(&env, "consent.events", &grants);
    let mut children = Children(vec![env.spawn(&[
        "run",
        "all",
        "--exit-when-idle",
        "6",
        "--metrics-addr",
        "127.0.0.1:0",
    ])]);
    env.wait_for("the grants", Duration::from_secs(60), || {
        env.read("consent.state").len() >= 4
    });
    publish_burst(&env, &alice, "A", 10);
    publish_burst(&env, &bob, "B", 10);
    publish_burst(&env, &carol, "C", 5);
    env.wait_for(
        "every record at trial-recruitment",
        Duration::from_secs(90),
        || distinct(&env, "out.trial-recruitment").len() >= 20,
    );
    publish_all(
        &env,
        "consent.events",
        &[capture(&env, &alice, "HRESCH", "revoked", 2)],
    );
    let code = wait_exit(&mut children.0[0], Duration::from_secs(180));
    assert!(code.success(), "the pipeline ran to idleness: {code}");

    // The vault: two resolves, one refused, one by break-glass.
    let desk = env.add_caller(
        "support-desk",
        &[
            "--domains",
            "crm,trial",
            "--purposes",
            "patient-support",
            "--break-glass",
        ],
    );
    let recruiter = env.add_caller(
        "recruiter",
        &["--domains", "trial", "--purposes", "trial-recruitment"],
    );
    let served = env.serve_vault_with(&[], &[]);
    let port = served.port;
    children.0.push(served.child);
    let status = |auth: &str, body: Value| post(port, Some(auth), &body).0;
    assert_eq!(
        status(&desk, resolve(&crm, "patient-support", WHY, false)),
        200
    );
    assert_eq!(
        status(&desk, resolve(&crm, "patient-support", WHY, false)),
        200
    );
    assert_eq!(
        status(&desk, resolve(&trial, "trial-recruitment", WHY, false)),
        403
    );
    assert_eq!(
        status(&desk, resolve(&trial, "trial-recruitment", EMERGENCY, true)),
        200
    );
    // A recruiter still holding alice's trial token (from a record it
    // received before she revoked): shredded, refused as unknown.
    let alice_token = distinct(&env, "out.trial-recruitment")
        .into_iter()
        .find(|(_, e)| e.event_type == "consent:revoked")
        .map(|(_, e)| e.subject_key.to_string())
        .expect("alice's notice names her token");
    assert!(alice_token.starts_with("tok:trial:"), "{alice_token}");
    assert_eq!(
        status(
            &recruiter,
            resolve(&alice_token, "trial-recruitment", WHY, false)
        ),
        404
    );
    // Vault audit records are on the topic before the answer.
    let report: Value = serde_json::from_str(
        &env.run_ok(&["report", "--format", "json", "--since", "1d", "--k", "5"]),
    )
    .expect("JSON");

    // Consent per purpose, from what was granted: alice and bob (20
    // events) consented to research and care management; carol (5) to
    // nothing; nobody to operations. Marketing sends "consent needed".
    let row = |purpose: &str| {
        report["consent"]
            .as_array()
            .expect("consent")
            .iter()
            .find(|r| r["purpose"] == purpose)
            .cloned()
            .unwrap_or_else(|| panic!("no row for {purpose}: {report}"))
    };
    let expect = [
        ("trial-recruitment", 20, 5, 0),
        ("registry-research", 20, 5, 0),
        ("patient-support", 20, 5, 0),
        ("outcomes-analytics", 0, 25, 0),
        ("marketing", 0, 0, 25),
    ];
    for (purpose, allowed, denied, needed) in expect {
        let r = row(purpose);
        assert_eq!(
            (
                r["events"].as_u64(),
                r["allowed"].as_u64(),
                r["denied"].as_u64(),
                r["consent_needed"].as_u64()
            ),
            (Some(25), Some(allowed), Some(denied), Some(needed)),
            "{purpose}: {r}"
        );
        let pct = (allowed as f64 * 10_000.0 / 25.0).round() / 100.0;
        assert_eq!(r["validated_pct"].as_f64(), Some(pct), "{purpose}");
    }
    // The same allows, counted at the destinations.
    let topology = &env.topology;
    for (purpose, allowed, _, needed) in expect {
        let topic = &topology.purposes[purpose].topic;
        let records = distinct(&env, topic);
        let data = records
            .iter()
            .filter(|(_, e)| !NOTICES.contains(&e.event_type.as_str()))
            .count();
        let notices = records
            .iter()
            .filter(|(_, e)| e.event_type == "consent:needed")
            .count();
        assert_eq!(
            (data, notices),
            (allowed as usize, needed as usize),
            "{topic}"
        );
    }

    // Denials: carol's events for every purpose that denies without
    // consent, and everyone's for operations.
    let denials: BTreeMap<(String, String, String), u64> = report["denials"]
        .as_array()
        .expect("denials")
        .iter()
        .map(|d| {
            (
                (
                    d["purpose"].as_str().unwrap_or_default().to_string(),
                    d["stage"].as_str().unwrap_or_default().to_string(),
                    d["reason"].as_str().unwrap_or_default().to_string(),
                ),
                d["events"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let want: BTreeMap<(String, String, String), u64> = expect
        .iter()
        .filter(|(_, _, denied, _)| *denied > 0)
        .map(|(p, _, denied, _)| {
            (
                (
                    p.to_string(),
                    "consent-gate".into(),
                    "consent_unknown".into(),
                ),
                *denied,
            )
        })
        .collect();
    assert_eq!(denials, want);

    // What each destination holds beyond operational fields, by walking
    // its records.
    for f in report["phi_footprint"].as_array().expect("footprint") {
        let purpose = f["purpose"].as_str().expect("purpose");
        let topic = &topology.purposes[purpose].topic;
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        let records: Vec<CanonicalEvent> = distinct(&env, topic)
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.event_type != "consent:revoked")
            .collect();
        for ev in records.iter().filter(|e| e.event_type != "consent:needed") {
            for field in carried(ev) {
                let class = topology.fields.get(&field).map(|c| c.as_str());
                if class != Some("operational") {
                    *want.entry(field).or_default() += 1;
                }
            }
        }
        let got: BTreeMap<String, u64> = f["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|x| {
                (
                    x["field"].as_str().unwrap_or_default().to_string(),
                    x["records"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(got, want, "{purpose}");
        let data = records
            .iter()
            .filter(|e| e.event_type != "consent:needed")
            .count();
        assert_eq!(f["records"].as_u64(), Some(data as u64), "{purpose}");
    }
    assert!(
        report["phi_footprint"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x["purpose"] == "registry-research"
                && x["fields"].as_array().is_some_and(|a| !a.is_empty()))),
        "the limited data set carries dates and places: {report}"
    );

    // The revocation: one notice per destination of research that holds
    // alice's data, timed from its arrival on consent.events.
    let arrived = env
        .read("consent.events")
        .last()
        .and_then(|m| m.timestamp().to_millis())
        .expect("the revocation's time");
    let mut latencies: Vec<i64> = ["out.trial-recruitment", "out.research-registry"]
        .iter()
        .flat_map(|t| distinct(&env, t))
        .filter(|(_, e)| e.event_type == "consent:revoked")
        .map(|(at, _)| at - arrived)
        .collect();
    latencies.sort_unstable();
    let r = &report["revocation"];
    assert_eq!(r["notices"].as_u64(), Some(2), "{r}");
    assert_eq!(latencies.len(), 2);
    let max = r["max_ms"].as_i64().expect("max");
    assert!(
        (max - latencies[1]).abs() <= 500,
        "report {max} ms, destinations {latencies:?}"
    );
    assert!(r["p50_ms"].as_i64() <= r["p99_ms"].as_i64());
    assert_eq!(r["disclosures_after_revocation"].as_u64(), Some(0));

    assert_eq!(r["resolves_after_revocation"].as_u64(), Some(1));

    // Detokenizations this week: support-desk's, and the recruiter's
    // refused one.
    let d = report["detokenizations"]
        .as_array()
        .expect("detokenizations");
    let calls: Vec<(&str, u64, u64, u64)> = d
        .iter()
        .map(|x| {
            (
                x["caller"].as_str().unwrap_or_default(),
                x["resolves"].as_u64().unwrap_or_default(),
                x["break_glass"].as_u64().unwrap_or_default(),
                x["refused"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(calls, [("recruiter", 0, 0, 1), ("support-desk", 3, 1, 1)]);

    // Completeness: every record at a destination but revocation notices
    // is a disclosure, each backed by a verified audit record.
    let disclosed: usize = topology
        .purposes
        .values()
        .map(|p| {
            distinct(&env, &p.topic)
                .iter()
                .filter(|(_, e)| e.event_type != "consent:revoked")
                .count()
        })
        .sum();
    let c = &report["audit_completeness"];
    assert_eq!(c["disclosures"].as_u64(), Some(disclosed as u64), "{c}");
    assert_eq!(c["disclosures_backed"], c["disclosures"]);
    assert_eq!(c["decisions_named_pct"].as_f64(), Some(100.0));
    // 20 allows at the gate and 20 forwards at route for each of the
    // three consented purposes.
    assert_eq!(c["decisions"].as_u64(), Some(120));
    assert_eq!(c["trail"]["intact"], true);

    // k: trial-recruitment carries sex only; alice and bob (both F) are
    // one group of two subjects under k = 5.
    let k = report["k_anonymity"]
        .as_array()
        .expect("k")
        .iter()
        .find(|k| k["purpose"] == "trial-recruitment")
        .cloned()
        .expect("trial-recruitment is Safe Harbor");
    let trial_records: Vec<CanonicalEvent> = distinct(&env, "out.trial-recruitment")
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| !NOTICES.contains(&e.event_type.as_str()))
        .collect();
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in &trial_records {
        let sex = e
            .demographics
            .as_ref()
            .and_then(|d| d.sex.as_deref())
            .unwrap_or("*")
            .to_string();
        groups
            .entry(sex)
            .or_default()
            .insert(e.subject_key.to_string());
    }
    let smallest = groups.values().map(BTreeSet::len).min().unwrap_or(0);
    assert_eq!(
        (
            k["records"].as_u64(),
            k["groups"].as_u64(),
            k["smallest_group"].as_u64()
        ),
        (
            Some(trial_records.len() as u64),
            Some(groups.len() as u64),
            Some(smallest as u64)
        ),
        "{k}"
    );
    assert_eq!(smallest, 2, "{groups:?}");
    assert_eq!(k["records_in_groups_under_k"].as_u64(), Some(20));
    assert_eq!(
        k["quasi_identifiers"],
        serde_json::json!(["demographics.sex"])
    );

    // Text carries the same headline; HTML is one self-contained page.
    let text = env.run_ok(&["report", "--since", "1d"]);
    assert!(text.contains("Headline"), "{text}");
    assert!(text.contains("disclosures after a revocation: 0"), "{text}");
    let html_path = env.dir.join("report.html");
    env.run_ok(&[
        "report",
        "--format",
        "html",
        "--since",
        "1d",
        "--output",
        html_path.to_str().expect("utf-8"),
    ]);
    let html = std::fs::read_to_string(&html_path).expect("html written");
    assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    assert!(html.contains("<svg"), "charts inline");
    for external in ["src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "an external asset: {external}");
    }
    // `summary --ledgers` counts the idempotency ledgers too (the
    // benchmark's records-written-per-source-record reads it).
    let roles = |args: &[&str]| -> BTreeMap<String, u64> {
        let v: Value = serde_json::from_str(&env.run_ok(args)).expect("JSON");
        v["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .filter(|t| t["role"] == "Ledger")
            .map(|t| {
                (
                    t["topic"].as_str().unwrap_or_default().to_string(),
                    t["records"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    };
    assert!(roles(&["summary", "--json"]).is_empty());
    let ledgers = roles(&["summary", "--json", "--ledgers"]);
    // One entry per record route handled, at least (notices too).
    assert!(
        ledgers
            .get("ledger.route")
            .is_some_and(|n| *n >= disclosed as u64),
        "{ledgers:?}"
    );
    // Synthetic identifiers never appear in any form of it.
    for id in [&alice, &bob, &carol] {
        assert!(!html.contains(id.as_str()) && !text.contains(id.as_str()));
    }
}
