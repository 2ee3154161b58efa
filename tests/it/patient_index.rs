//! normalize's patient index and held records live in a compacted topic:
//! a record that names its patient only by reference waits, across a
//! restart, for its Patient, and is re-driven by the process that sees the
//! Patient arrive; a Patient seen before a restart still resolves
//! references after it; with two instances, the one that owns the held
//! record re-drives it when the other indexes the Patient. Schema drift is
//! counted by source and path.

use consentry_core::keys;
use consentry_runtime::inspect::header;
use consentry_runtime::rdkafka::Message;
use consentry_synth::{fhir_observation, fhir_patient, hl7_adt, patients, SynthConfig};
use consentry_testkit::{free_port, scrape, signal, wait_exit, Env};
use std::collections::BTreeMap;
use std::time::Duration;

/// The latest value of every key of the state topic (`None`: deleted).
fn state_table(env: &Env) -> BTreeMap<String, Option<usize>> {
    let mut table = BTreeMap::new();
    for m in env.read("normalize.patient-index") {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
        table.insert(key, m.payload().map(<[u8]>::len));
    }
    table
}

#[test]
fn held_records_and_the_index_survive_restarts() {
    let env = Env::new("index");
    let cfg = SynthConfig::new(31, 1);
    let p = &patients(&cfg)[0];
    let key = keys::subject_key(&cfg.subject_system, &p.mrn);
    let observation = fhir_observation(&cfg, p).to_string();

    // 1. The Observation arrives first: quarantined and held.
    env.publish("ehr.fhir", &[(Some(&key), observation.as_bytes())]);
    let out = env.run_ok(&["run", "normalize", "--exit-when-idle", "3"]);
    let row = consentry_testkit::stage_row(&out, "normalize");
    assert_eq!(row[1..4], ["1", "0", "1"], "in, out, quarantined:\n{out}");
    let quarantine = env.read("quarantine");
    assert_eq!(quarantine.len(), 1);
    assert_eq!(
        header(&quarantine[0], "reason-detail"),
        Some("Observation.subject.reference; held until the Patient arrives")
    );
    let held: Vec<String> = state_table(&env)
        .into_iter()
        .filter(|(k, v)| k.starts_with("held/Patient/pat-0/") && v.is_some())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(held.len(), 1, "the record is held in the state topic");

    // 2. A new process sees the Patient arrive and re-drives the held record.
    env.publish(
        "ehr.fhir",
        &[(Some(&key), fhir_patient(&cfg, p).to_string().as_bytes())],
    );
    let out = env.run_ok(&["run", "normalize", "--exit-when-idle", "3"]);
    let row = consentry_testkit::stage_row(&out, "normalize");
    assert_eq!(
        (
            row[1].as_str(),
            row[2].as_str(),
            row[3].as_str(),
            row[8].as_str()
        ),
        ("1", "2", "0", "1"),
        "in, out, quarantined, redriven:\n{out}"
    );
    let events = env.events("events.normalized");
    let types: Vec<&str> = events.iter().map(|(_, e)| e.event_type.as_str()).collect();
    assert_eq!(types.len(), 2);
    assert!(types.contains(&"fhir:Patient") && types.contains(&"fhir:Observation"));
    assert!(events.iter().all(|(_, e)| e.subject_key == key));
    let table = state_table(&env);
    assert_eq!(table.get(&held[0]), Some(&None), "the hold was released");
    assert!(matches!(table.get("idx/Patient/pat-0"), Some(Some(_))));
    let trail: Vec<String> = env
        .audits()
        .iter()
        .map(|a| format!("{} {}", a.decision, a.reason_code))
        .collect();
    assert!(trail.contains(&"quarantine unresolved_subject".to_string()));
    assert!(trail.contains(&"redrive ok".to_string()));

    // 3. After another restart, a reference to the same Patient resolves
    //    at once from the index the topic kept.
    let second = observation.replace("\"obs-0\"", "\"obs-0-b\"");
    assert_ne!(second, observation);
    env.publish("ehr.fhir", &[(Some(&key), second.as_bytes())]);
    let out = env.run_ok(&["run", "normalize", "--exit-when-idle", "3"]);
    let row = consentry_testkit::stage_row(&out, "normalize");
    assert_eq!(row[1..4], ["1", "1", "0"], "in, out, quarantined:\n{out}");
    assert_eq!(env.read("quarantine").len(), 1, "nothing new held");
}

/// The value of a metric line, 0 if absent.
fn value(text: &str, line_prefix: &str) -> f64 {
    consentry_testkit::metric_value(text, line_prefix).unwrap_or(0.0)
}

#[test]
fn the_owner_of_a_held_record_redrives_it_when_another_instance_indexes_the_patient() {
    let env = Env::new("two");
    let cfg = SynthConfig::new(33, 1);
    let p = &patients(&cfg)[0];
    let ports = [free_port(), free_port()];
    let mut children = consentry_testkit::Children(
        ["a", "b"]
            .iter()
            .zip(ports)
            .map(|(instance, port)| {
                env.spawn(&[
                    "run",
                    "normalize",
                    "--instance",
                    instance,
                    "--metrics-addr",
                    &format!("127.0.0.1:{port}"),
                ])
            })
            .collect(),
    );
    // Both joined: the group's six partitions (two inputs) are split.
    let assigned = |port: u16| {
        value(
            &scrape(port),
            "consentry_assigned_partitions{stage=\"normalize\"}",
        )
    };
    env.wait_for("both instances assigned", Duration::from_secs(90), || {
        let (a, b) = (assigned(ports[0]), assigned(ports[1]));
        a > 0.0 && b > 0.0 && a + b == 6.0
    });
    // Range assignment over three partitions and two members never gives
    // partitions 0 and 2 of a topic to the same member.
    env.publish_to(
        "ehr.fhir",
        0,
        fhir_observation(&cfg, p).to_string().as_bytes(),
    );
    env.wait_for("the observation held", Duration::from_secs(60), || {
        env.read("quarantine").len() == 1
    });
    env.publish_to("ehr.fhir", 2, fhir_patient(&cfg, p).to_string().as_bytes());
    env.wait_for("both events out", Duration::from_secs(60), || {
        env.read("events.normalized").len() == 2
    });
    let held =
        "consentry_records_quarantined_total{reason=\"unresolved_subject\",stage=\"normalize\"}";
    let redriven = "consentry_redriven_total{stage=\"normalize\"}";
    let texts: Vec<String> = ports.iter().map(|p| scrape(*p)).collect();
    let holder = texts
        .iter()
        .position(|t| value(t, held) == 1.0)
        .expect("one instance held the record");
    let other = 1 - holder;
    assert_eq!(
        value(&texts[holder], redriven),
        1.0,
        "the holder re-drove it"
    );
    assert_eq!(value(&texts[other], redriven), 0.0);
    assert_eq!(
        value(
            &texts[other],
            "consentry_records_out_total{stage=\"normalize\",topic=\"events.normalized\"}"
        ),
        1.0,
        "the other instance normalized the Patient"
    );
    for c in &children.0 {
        signal(c, "TERM");
    }
    for c in children.0.iter_mut() {
        assert!(wait_exit(c, Duration::from_secs(60)).success());
    }
    let redrives: Vec<_> = env
        .audits()
        .into_iter()
        .filter(|a| a.decision == "redrive")
        .collect();
    assert_eq!(redrives.len(), 1);
    assert_eq!(redrives[0].source_partition, 0);
}

#[test]
fn schema_drift_is_counted_by_source_and_path() {
    let env = Env::new("drift");
    let cfg = SynthConfig::new(32, 1);
    let p = &patients(&cfg)[0];
    let adt = format!("{}ZPD|1|VIP\r", hl7_adt(&cfg, p, "A08", 1));
    let mut patient = fhir_patient(&cfg, p);
    patient["hairColour"] = serde_json::json!("brown");
    env.publish("ehr.hl7v2", &[(None, adt.as_bytes())]);
    env.publish("ehr.fhir", &[(None, patient.to_string().as_bytes())]);

    let port = free_port();
    let mut children = consentry_testkit::Children(vec![env.spawn(&[
        "run",
        "normalize",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ])]);
    let want = [
        "consentry_schema_drift_total{path=\"segment ZPD\",source=\"hl7v2\"} 1",
        "consentry_schema_drift_total{path=\"Patient.hairColour\",source=\"fhir\"} 1",
    ];
    env.wait_for("drift metrics", Duration::from_secs(60), || {
        let text = scrape(port);
        want.iter().all(|w| text.lines().any(|l| l == *w))
    });
    signal(&children.0[0], "TERM");
    assert!(wait_exit(&mut children.0[0], Duration::from_secs(60)).success());
    let reasons: Vec<(String, String)> = env
        .read("quarantine")
        .iter()
        .map(|m| {
            (
                header(m, "reason-code").unwrap_or_default().to_string(),
                header(m, "reason-detail").unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(reasons.contains(&("schema_drift".into(), "segment ZPD".into())));
    assert!(reasons.contains(&("schema_drift".into(), "Patient.hairColour".into())));
}
