use super::*;
use consentry_core::stage::InputMeta;
use consentry_synth::{
    fhir_condition, fhir_encounter, fhir_patient, hl7_adt, patients, SynthConfig,
};
use proptest::prelude::*;

fn topology() -> Topology {
    Topology::parse("topology.yaml", include_str!("../../../../topology.yaml"))
        .expect("shipped topology")
}

fn input(topic: &str, bytes: &[u8]) -> StageInput {
    StageInput {
        meta: InputMeta {
            topic: topic.into(),
            partition: 1,
            offset: 42,
            key: None,
            idempotency_key: None,
            correlation_id: None,
        },
        body: Body::Raw(bytes.to_vec()),
    }
}

fn run(topic: &str, bytes: &[u8]) -> Outcome {
    Normalize::new(&topology()).process(&input(topic, bytes))
}

fn event(o: &Outcome) -> &CanonicalEvent {
    assert!(
        o.quarantine.is_none(),
        "unexpected quarantine: {:?}",
        o.quarantine
    );
    assert_eq!(o.outputs.len(), 1);
    &o.outputs[0].event
}

fn reason(o: &Outcome) -> (ReasonCode, String) {
    let q = o.quarantine.as_ref().expect("quarantined");
    assert!(o.outputs.is_empty());
    assert_eq!(o.audit.decision, "quarantine");
    assert_eq!(o.audit.reason_code, q.reason.as_str());
    (q.reason, q.detail.clone())
}

#[test]
fn adt_a01_maps_to_the_envelope() {
    let cfg = SynthConfig::new(11, 1);
    let p = &patients(&cfg)[0];
    let o = run("ehr.hl7v2", hl7_adt(&cfg, p, "A01", 0).as_bytes());
    let ev = event(&o);
    assert_eq!(ev.event_type, "ADT^A01");
    assert_eq!(ev.event_id, "hl7v2:CSEHR:CS00000000A01");
    assert_eq!(ev.source_system, "CSEHR");
    assert_eq!(ev.policy_version, "2026.11-foundation.1");
    assert_eq!(
        ev.subject_key,
        keys::subject_key(&cfg.subject_system, &p.mrn)
    );
    assert_eq!(o.outputs[0].key, ev.subject_key);
    assert_eq!(o.outputs[0].topic, "events.normalized");
    assert_eq!(
        o.outputs[0].idempotency_key,
        keys::idempotency_key("normalize", "2026.11-foundation.1", &ev.event_id, None)
    );
    assert_eq!(o.dedup_key, o.outputs[0].idempotency_key);
    let kinds: Vec<_> = ev
        .identifiers
        .iter()
        .map(|i| (i.kind.as_str(), i.value.as_str()))
        .collect();
    assert!(kinds.contains(&("mrn", p.mrn.as_str())));
    assert!(kinds.contains(&("account", p.account.as_str())));
    assert!(kinds.contains(&("ssn", p.ssn.as_str())));
    assert!(kinds.contains(&("drivers_license", p.drivers_license.as_str())));
    let d = ev.demographics.as_ref().unwrap();
    assert_eq!(d.family_name.as_deref(), Some(p.family.as_str()));
    assert_eq!(d.postal_code.as_deref(), Some(p.zip.as_str()));
    assert_eq!(d.phone.as_deref(), Some(p.phone.as_str()));
    assert_eq!(d.email.as_deref(), Some(p.email.as_str()));
    assert_eq!(ev.codes[0].code, p.diagnosis.0);
    assert_eq!(ev.codes[0].system, "http://hl7.org/fhir/sid/icd-10-cm");
    // The note was escaped in HL7 and comes back as written.
    assert!(ev.note.as_deref().unwrap().contains(&p.device_id));
    assert_eq!(
        ev.encounter.as_ref().unwrap().start_ms,
        Some(p.admit * 1000)
    );
    assert_eq!(o.audit.stage, "normalize");
    assert!(!o.audit.placeholder);
}

#[test]
fn fhir_resources_map_to_the_same_subject() {
    let cfg = SynthConfig::new(5, 1);
    let p = &patients(&cfg)[0];
    let subject = keys::subject_key(&cfg.subject_system, &p.mrn);
    for (rt, r) in [
        ("Patient", fhir_patient(&cfg, p)),
        ("Encounter", fhir_encounter(&cfg, p)),
        ("Condition", fhir_condition(&cfg, p)),
    ] {
        let o = run("ehr.fhir", r.to_string().as_bytes());
        let ev = event(&o);
        assert_eq!(ev.event_type, format!("fhir:{rt}"));
        assert!(ev.event_id.starts_with(&format!("fhir:{rt}/")));
        assert!(ev.event_id.ends_with("/_history/1"));
        assert_eq!(ev.subject_key, subject);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// One patient, one subject: the HL7 A08 and the FHIR Patient of a
    /// generated patient normalize to the same demographics and subject.
    #[test]
    fn hl7_and_fhir_agree(seed in any::<u64>()) {
        let cfg = SynthConfig::new(seed, 1);
        let p = &patients(&cfg)[0];
        let a = run("ehr.hl7v2", hl7_adt(&cfg, p, "A08", 1).as_bytes());
        let b = run("ehr.fhir", fhir_patient(&cfg, p).to_string().as_bytes());
        let (a, b) = (event(&a), event(&b));
        prop_assert_eq!(&a.subject_key, &b.subject_key);
        prop_assert_eq!(&a.demographics, &b.demographics);
        let ids = |e: &CanonicalEvent| {
            let mut v: Vec<_> = e.identifiers.iter().filter(|i| i.kind != "account" && i.kind != "drivers_license").map(|i| (i.kind.clone(), i.value.clone())).collect();
            v.sort();
            v
        };
        prop_assert_eq!(ids(a), ids(b));
    }

    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600), hl7 in any::<bool>()) {
        let o = run(if hl7 { "ehr.hl7v2" } else { "ehr.fhir" }, &bytes);
        prop_assert!(o.quarantine.is_some() || o.outputs.len() == 1);
    }
}

#[test]
fn bad_inputs_are_quarantined_with_reasons() {
    let cfg = SynthConfig::new(2, 1);
    let p = &patients(&cfg)[0];
    let adt = hl7_adt(&cfg, p, "A01", 0);
    let cases: Vec<(&str, Vec<u8>, ReasonCode, &str)> = vec![
        ("ehr.hl7v2", b"".to_vec(), ReasonCode::Empty, "record"),
        ("ehr.fhir", b"  \n".to_vec(), ReasonCode::Empty, "record"),
        ("ehr.hl7v2", b"this is not hl7".to_vec(), ReasonCode::Malformed, "hl7: message does not start with an MSH segment"),
        ("ehr.fhir", b"{\"resourceType\": \"Patient\",".to_vec(), ReasonCode::Malformed, "json: line 1 column 27"),
        ("ehr.hl7v2", adt.replace("ADT^A01^ADT_A01", "ADT^A99").into_bytes(), ReasonCode::UnsupportedType, "MSH-9"),
        ("ehr.hl7v2", adt.replace("ADT^A01^ADT_A01", "ORU^R01").into_bytes(), ReasonCode::UnsupportedType, "MSH-9"),
        ("ehr.hl7v2", adt.replace("|P|2.5", "|P|2.1").into_bytes(), ReasonCode::UnsupportedType, "MSH-12"),
        ("ehr.hl7v2", format!("{adt}ZPI|1|secret\r").into_bytes(), ReasonCode::SchemaDrift, "segment ZPI"),
        ("ehr.hl7v2", adt.replace(&format!("CS{:08}A01|", 0), "|").into_bytes(), ReasonCode::MissingField, "MSH-10"),
        ("ehr.hl7v2", adt.replace("^^^CSHOSP^MR", "^^^OTHER^MR").into_bytes(), ReasonCode::UnresolvedSubject, "PID-3"),
        ("ehr.fhir", br#"{"resourceType":"Observation","id":"o1","meta":{"versionId":"1"}}"#.to_vec(), ReasonCode::UnsupportedType, "resourceType"),
        ("ehr.fhir", br#"{"resourceType":"Patient","id":"p1"}"#.to_vec(), ReasonCode::MissingField, "meta.versionId"),
        ("ehr.fhir", br#"{"resourceType":"Encounter","id":"e1","meta":{"versionId":"1"},"subject":{"reference":"Patient/p1"}}"#.to_vec(), ReasonCode::UnresolvedSubject, "subject.identifier"),
        ("ehr.fhir", br#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"yesterday"}}"#.to_vec(), ReasonCode::Malformed, "meta.lastUpdated"),
    ];
    for (topic, bytes, want, detail) in cases {
        let (got, got_detail) = reason(&run(topic, &bytes));
        assert_eq!(
            (got, got_detail.as_str()),
            (want, detail),
            "input starting {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(20)])
        );
        for v in [&p.family, &p.given, &p.mrn, &p.ssn] {
            assert!(!got_detail.contains(v.as_str()));
        }
    }
}

#[test]
fn oversized_record_is_too_large() {
    let n = Normalize::new(&topology()).with_max_record_bytes(1000);
    let o = n.process(&input("ehr.fhir", &vec![b'{'; 1001]));
    assert_eq!(
        reason(&o),
        (
            ReasonCode::TooLarge,
            "record exceeds 1000 bytes".to_string()
        )
    );
}

#[test]
fn quarantine_keys_are_stable_per_event_or_position() {
    let bad = b"garbage";
    let a = run("ehr.hl7v2", bad);
    let b = run("ehr.hl7v2", bad);
    assert_eq!(a.dedup_key, b.dedup_key);
    let mut other = input("ehr.hl7v2", bad);
    other.meta.offset = 43;
    assert_ne!(
        Normalize::new(&topology()).process(&other).dedup_key,
        a.dedup_key
    );
}
