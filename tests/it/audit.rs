//! The audit trail and route on the real stack: destinations hold exactly
//! their allowlist under their own registered (PHI-labelled) schema; the
//! hash chains verify, and a tampered copy has each break named; a trace
//! shows an event's five stages, and a rejected one where it stopped; the
//! disclosure ledger answers for one subject; with the audit topic gone
//! (and stages never creating topics), no record of any stage appears.

use consentry_core::avro::{self, split_wire};
use consentry_core::topology::field_paths;
use consentry_runtime::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use consentry_runtime::rdkafka::client::DefaultClientContext;
use consentry_runtime::rdkafka::Message;
use consentry_synth::{generate, patients, SynthConfig};
use consentry_testkit::Env;
use std::collections::BTreeSet;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn destinations_chains_traces_and_disclosures() {
    let env = Env::new("audit");
    let cfg = SynthConfig::new(11, 3);
    let feed = generate(&cfg);
    env.publish_synth(&feed);
    // One Z-segment message: rejected at normalize.
    let drift = b"MSH|^~\\&|CSEHR|CSHOSP|X|Y|20260101120000||ADT^A01^ADT_A01|ZDRIFT1|P|2.5\rEVN|A01|20260101120000\rPID|1||CS9999^^^CSHOSP^MR||Doe^Jo||19800101|F\rZPD|1|x\r";
    env.publish("ehr.hl7v2", &[(Some("k"), drift.as_slice())]);
    env.run_ok(&[
        "run",
        "all",
        "--exit-when-idle",
        "4",
        "--checkpoint-secs",
        "1",
    ]);

    // Allowlist: every destination record decodes with its topic's
    // registered schema, whose fields are exactly the purpose's allowlist
    // and which says whether the records are PHI.
    let registry = consentry_runtime::registry::RegistryClient::new(&env.conn.registry_url);
    for p in env.topology.purposes.values() {
        let records = env.read(&p.topic);
        assert!(!records.is_empty(), "{} is empty", p.topic);
        let mut ids = BTreeSet::new();
        for m in &records {
            let (id, body) = split_wire(m.payload().expect("payload")).expect("wire format");
            ids.insert(id);
            let text = registry.schema_by_id(id).expect("schema in the registry");
            let schema = apache_avro::Schema::parse_str(&text).expect("parses");
            let allowed: BTreeSet<String> = p.allow.iter().cloned().collect();
            assert_eq!(field_paths(&schema), allowed, "{}", p.name);
            let label: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                label["consentry.phi"],
                serde_json::json!(p.profile.is_phi()),
                "{}: the schema's PHI label",
                p.name
            );
            let apache_avro::types::Value::Record(fields) =
                avro::decode_generic(body, &schema).expect("decodes")
            else {
                panic!("a record")
            };
            for (name, _) in &fields {
                assert!(
                    p.allow
                        .iter()
                        .any(|a| a == name || a.starts_with(&format!("{name}."))),
                    "{}: field {name} is not allowed",
                    p.name
                );
            }
        }
        assert_eq!(ids.len(), 1, "one schema per destination");
    }

    // The chains verify clean.
    let out = env.run(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let report = stdout(&out);
    assert!(
        report.contains("verified: every chain is intact"),
        "{report}"
    );
    for w in [
        "normalize/0",
        "consent-gate/0",
        "de-identify/0",
        "tokenize/0",
        "route/0",
    ] {
        assert!(report.contains(w), "{w} missing from {report}");
    }

    // A tampered copy: one record altered, one deleted, two swapped, one
    // injected, all of route/0's chain. Each is named.
    let audit = env.read("audit");
    let mut cache = consentry_runtime::codec::SchemaCache::new(&env.conn.registry_url);
    let decoded: Vec<_> = audit
        .iter()
        .map(|m| cache.decode_audit(m.payload().unwrap()).expect("decodes"))
        .collect();
    let route: Vec<usize> = (0..audit.len())
        .filter(|&i| decoded[i].writer_id == "route/0")
        .collect();
    assert!(route.len() > 30, "route wrote {}", route.len());
    let schema_id = split_wire(audit[route[0]].payload().unwrap()).unwrap().0;
    let mut copy: Vec<Vec<u8>> = audit
        .iter()
        .map(|m| m.payload().unwrap().to_vec())
        .collect();
    let (altered, deleted, swapped, injected) = (route[5], route[10], route[15], route[20]);
    let mut rec = decoded[altered].clone();
    rec.decision = consentry_core::audit::Decision::Deny;
    copy[altered] = avro::encode_audit(&rec, schema_id).unwrap();
    let mut fake = decoded[injected].clone();
    fake.audit_id = "forged".into();
    fake.reason_code = "ok".into();
    fake.purpose = Some("marketing".into());
    let fake = avro::encode_audit(&fake, schema_id).unwrap();
    copy.swap(swapped, route[16]);
    copy.insert(route[21], fake);
    copy.remove(deleted);
    let scratch = env.physical("audit-tampered");
    let admin: AdminClient<DefaultClientContext> = env.conn.admin().create().unwrap();
    futures_executor::block_on(admin.create_topics(
        &[NewTopic::new(&scratch, 1, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .expect("scratch topic");
    let records: Vec<(Option<&str>, &[u8])> =
        copy.iter().map(|p| (Some("w"), p.as_slice())).collect();
    env.publish("audit-tampered", &records);
    let out = env.run(&["audit", "verify", "--topic", "audit-tampered", "--json"]);
    assert_eq!(out.status.code(), Some(1), "a tampered trail fails");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let route_report = v["writers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["writer"] == "route/0")
        .expect("route/0 reported");
    let breaks: Vec<(String, i64)> = route_report["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let seq = b["sequence"].as_i64().or(b["from"].as_i64()).unwrap_or(-1);
            (b["kind"].as_str().unwrap().to_string(), seq)
        })
        .collect();
    let seq = |i: usize| decoded[i].sequence;
    let mut want = vec![
        ("modified".to_string(), seq(altered)),
        ("missing".to_string(), seq(deleted)),
        ("reordered".to_string(), seq(swapped)),
        ("injected".to_string(), seq(injected)),
    ];
    // The signed checkpoint after the altered record vouches for its
    // bytes: it no longer matches (unless the deleted record is in the
    // same segment, which then cannot be recomputed and is reported
    // missing instead).
    let covering = |s: i64| {
        decoded
            .iter()
            .filter(|r| r.writer_id == "route/0" && r.decision == "checkpoint")
            .find(|r| r.segment_from <= s && s < r.sequence)
            .map(|r| r.sequence)
    };
    if let Some(c) = covering(seq(altered)) {
        if covering(seq(deleted)) != Some(c) {
            want.push(("segment_mismatch".to_string(), c));
        }
    }
    want.sort_by_key(|(_, s)| *s);
    assert_eq!(breaks, want, "{route_report}");
    // Nothing else is blamed: the other writers' chains are intact.
    for w in v["writers"].as_array().unwrap() {
        if w["writer"] != "route/0" {
            assert!(w["breaks"].as_array().unwrap().is_empty(), "{w}");
        }
    }

    // Trace: an event that passed every stage.
    let a01 = decoded
        .iter()
        .find(|r| r.stage == "normalize" && r.decision == "forward")
        .expect("a normalized event");
    let event_id = a01.event_id.clone().expect("event id").to_string();
    let out = env.run(&["audit", "trace", &event_id, "--json"]);
    assert!(out.status.success());
    let path: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let stages: Vec<&str> = path.iter().map(|r| r["stage"].as_str().unwrap()).collect();
    // One gate decision per purpose, each with its consent; the stages
    // after it once per purpose the gate let through (or notified).
    let purposes = env.topology.purposes.len();
    let gate: Vec<_> = path
        .iter()
        .filter(|r| r["stage"] == "consent-gate")
        .collect();
    assert_eq!(gate.len(), purposes);
    let passed = gate
        .iter()
        .filter(|r| r["decision"] == "allow" || r["decision"] == "downgrade")
        .count();
    assert!(passed >= 2, "{gate:?}");
    for r in gate.iter().filter(|r| r["decision"] == "allow") {
        assert_eq!(r["reason_code"], "consent_active", "{r}");
        assert!(
            r["consent_reference"]
                .as_str()
                .is_some_and(|c| c.starts_with("Consent/")),
            "{r}"
        );
    }
    let mut expected = vec!["normalize"];
    expected.extend(std::iter::repeat_n("consent-gate", purposes));
    for s in ["de-identify", "tokenize", "route"] {
        expected.extend(std::iter::repeat_n(s, passed));
    }
    assert_eq!(stages, expected);
    for r in path.iter().filter(|r| r["stage"] == "route") {
        let methods: BTreeSet<&str> = r["transformations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["method"].as_str().unwrap())
            .collect();
        assert!(
            methods.contains("allowlist") && methods.contains("withhold"),
            "{r}"
        );
    }
    let table = stdout(&env.run(&["audit", "trace", &event_id]));
    assert!(table.contains("delivered to: out."), "{table}");
    // ... and the rejected one: where and why it stopped.
    let table = stdout(&env.run(&["audit", "trace", "hl7v2:CSEHR:ZDRIFT1"]));
    assert!(
        table.contains("stopped at normalize: schema_drift"),
        "{table}"
    );
    assert!(!table.contains("Doe"));

    // Disclosures: one subject's accounting, found by its pseudonym.
    let person = &patients(&cfg)[0];
    let out = env.run(&["audit", "disclosures", "--subject", &person.mrn, "--json"]);
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let destinations: BTreeSet<&str> = rows.iter().map(|r| r["topic"].as_str().unwrap()).collect();
    // The purposes the subject consented to, and marketing (which gets a
    // "consent needed" notice where there is no consent).
    let all: BTreeSet<&str> = env
        .topology
        .purposes
        .values()
        .filter(|p| p.name == "marketing" || person.consented.contains(&p.consent_code.as_str()))
        .map(|p| p.topic.as_str())
        .collect();
    assert_eq!(destinations, all);
    let per_purpose = rows.iter().filter(|r| r["purpose"] == "marketing").count();
    assert!(per_purpose >= 2, "{rows:?}");
    assert_eq!(rows.len(), per_purpose * all.len());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(&person.mrn) && !text.contains(&person.family));
    // Another subject has its own, disjoint accounting.
    let other = &patients(&cfg)[1];
    let rows2: Vec<serde_json::Value> = serde_json::from_slice(
        &env.run(&["audit", "disclosures", "--subject", &other.mrn, "--json"])
            .stdout,
    )
    .unwrap();
    let ids = |rows: &[serde_json::Value]| -> BTreeSet<String> {
        rows.iter()
            .map(|r| r["correlation_id"].to_string())
            .collect()
    };
    assert!(ids(&rows).is_disjoint(&ids(&rows2)));
}

#[test]
fn no_audit_topic_means_no_destination_record() {
    let env = Env::new("failclosed");
    let cfg = SynthConfig::new(5, 2);
    env.publish_synth(&generate(&cfg));
    let admin: AdminClient<DefaultClientContext> = env.conn.admin().create().unwrap();
    futures_executor::block_on(
        admin.delete_topics(&[&env.physical("audit")], &AdminOptions::new()),
    )
    .expect("delete the audit topic");
    let out = env.run(&["run", "all", "--exit-when-idle", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the stages stop");
    assert!(
        stderr.contains("audit records not acknowledged"),
        "{stderr}"
    );
    for p in env.topology.purposes.values() {
        assert_eq!(env.watermark(&p.topic), 0, "{} got records", p.topic);
    }
    for t in ["events.normalized", "disclosures"] {
        assert_eq!(env.watermark(t), 0, "{t} got records");
    }
}
