//! What normalize quarantines and why: malformed and drifting input,
//! allow-listed paths, oversized records, reserved labels, and stable
//! quarantine keys.

use super::*;

#[test]
fn bad_inputs_are_quarantined_with_reasons() {
    let (cfg, p) = patient(2, 0);
    let adt = hl7_adt(&cfg, &p, "A01", 0);
    let obs = |v: serde_json::Value| v.to_string().into_bytes();
    let cases: Vec<(&str, Vec<u8>, ReasonCode, &str)> = vec![
        ("ehr.hl7v2", b"".to_vec(), ReasonCode::Empty, "record"),
        ("ehr.fhir", b"  \n".to_vec(), ReasonCode::Empty, "record"),
        (
            "ehr.hl7v2",
            b"this is not hl7".to_vec(),
            ReasonCode::Malformed,
            "hl7: message does not start with an MSH segment",
        ),
        (
            "ehr.fhir",
            b"{\"resourceType\": \"Patient\",".to_vec(),
            ReasonCode::Malformed,
            "json: line 1 column 27",
        ),
        (
            "ehr.hl7v2",
            adt.replace("ADT^A01^ADT_A01", "ADT^A99").into_bytes(),
            ReasonCode::UnsupportedType,
            "MSH-9",
        ),
        (
            "ehr.hl7v2",
            adt.replace("ADT^A01^ADT_A01", "ORU^R01").into_bytes(),
            ReasonCode::UnsupportedType,
            "MSH-9",
        ),
        (
            "ehr.hl7v2",
            adt.replace("|P|2.5", "|P|2.1").into_bytes(),
            ReasonCode::UnsupportedType,
            "MSH-12",
        ),
        (
            "ehr.hl7v2",
            format!("{adt}ZPI|1|secret\r").into_bytes(),
            ReasonCode::SchemaDrift,
            "segment ZPI",
        ),
        (
            "ehr.hl7v2",
            format!("{adt}GT1|1|x\r").into_bytes(),
            ReasonCode::SchemaDrift,
            "segment GT1",
        ),
        (
            "ehr.hl7v2",
            adt.replace("\rNTE|1||", "\rNTE|1||x|y|z|a|b|c|d|e|")
                .into_bytes(),
            ReasonCode::SchemaDrift,
            "NTE-9",
        ),
        (
            "ehr.hl7v2",
            format!("{adt}{}", adt.lines().next().unwrap_or_default()).into_bytes(),
            ReasonCode::Malformed,
            "hl7: more than one message (MSH) in one record",
        ),
        (
            "ehr.hl7v2",
            adt.replace(&format!("CS{:08}A01|", 0), "|").into_bytes(),
            ReasonCode::MissingField,
            "MSH-10",
        ),
        (
            "ehr.hl7v2",
            adt.replace("^^^CSHOSP^MR", "^^^OTHER^MR").into_bytes(),
            ReasonCode::UnresolvedSubject,
            "PID-3",
        ),
        (
            "ehr.hl7v2",
            adt.replace(
                &format!("|{}|{}|", p.birth_date, p.sex),
                &format!("|1999-13-45|{}|", p.sex),
            )
            .into_bytes(),
            ReasonCode::Malformed,
            "PID-7",
        ),
        (
            "ehr.fhir",
            obs(json!({"resourceType":"Basic","id":"o1","meta":{"versionId":"1"}})),
            ReasonCode::UnsupportedType,
            "resourceType",
        ),
        (
            "ehr.fhir",
            obs(json!({"resourceType":"Patient","id":"p1"})),
            ReasonCode::UnresolvedSubject,
            "Patient.identifier",
        ),
        (
            "ehr.fhir",
            obs(
                json!({"resourceType":"Encounter","id":"e1","meta":{"versionId":"1"},"subject":{"identifier":{"system":"urn:other","value":"1"}}}),
            ),
            ReasonCode::UnresolvedSubject,
            "Encounter.subject.identifier.system",
        ),
        (
            "ehr.fhir",
            obs(json!({"resourceType":"Encounter","id":"e1","meta":{"versionId":"1"}})),
            ReasonCode::MissingField,
            "Encounter.subject",
        ),
        (
            "ehr.fhir",
            obs(
                json!({"resourceType":"Condition","id":"c1","meta":{"versionId":"1"},"subject":{"reference":"urn:uuid:123"}}),
            ),
            ReasonCode::UnresolvedSubject,
            "Condition.subject.reference (not in the Bundle)",
        ),
        (
            "ehr.fhir",
            obs(
                json!({"resourceType":"Condition","id":"c1","meta":{"versionId":"1"},"subject":{"reference":"Group/9"}}),
            ),
            ReasonCode::UnresolvedSubject,
            "Condition.subject.reference (not a Patient)",
        ),
        (
            "ehr.fhir",
            obs(
                json!({"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"yesterday"}}),
            ),
            ReasonCode::Malformed,
            "Patient.meta.lastUpdated",
        ),
        (
            "ehr.fhir",
            obs(
                json!({"resourceType":"Patient","id":"p1","meta":{"versionId":"1"},"identifier":[{"system":"urn:other","value":"x"}]}),
            ),
            ReasonCode::UnresolvedSubject,
            "Patient.identifier",
        ),
        (
            "ehr.fhir",
            obs(
                json!({"resourceType":"Patient","id":"p1","meta":{"versionId":"1"},"hairColour":"brown"}),
            ),
            ReasonCode::SchemaDrift,
            "Patient.hairColour",
        ),
        (
            "ehr.fhir",
            obs(
                json!({"resourceType":"Patient","id":"p1","meta":{"versionId":"1"},"gender":["female"]}),
            ),
            ReasonCode::Malformed,
            "Patient.gender: an array where one value belongs",
        ),
        (
            "ehr.fhir",
            obs(json!({"resourceType":"Bundle","type":"searchset","entry":[]})),
            ReasonCode::UnsupportedType,
            "Bundle.type",
        ),
        (
            "ehr.fhir",
            obs(
                json!({"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient/1"}}]}),
            ),
            ReasonCode::UnsupportedType,
            "Bundle.entry.request.method",
        ),
        (
            "ehr.fhir",
            obs(
                json!({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient"}}]}),
            ),
            ReasonCode::UnresolvedSubject,
            "Patient.identifier",
        ),
    ];
    for (topic, bytes, want, detail) in cases {
        let (got, got_detail) = reason(&run(topic, &bytes));
        assert_eq!(
            (got, got_detail.as_str()),
            (want, detail),
            "input starting {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        );
        for v in [&p.family, &p.given, &p.mrn, &p.ssn, &p.birth_date] {
            assert!(!got_detail.contains(v.as_str()));
        }
    }
}

#[test]
fn allow_listed_extra_paths_pass_and_are_not_carried() {
    let (cfg, p) = patient(8, 0);
    let adt = format!("{}ZPD|1|VIP\r", hl7_adt(&cfg, &p, "A08", 1));
    let mut fhir = fhir_patient(&cfg, &p);
    fhir["extension"]
        .as_array_mut()
        .unwrap()
        .push(json!({"url": "http://example.org/fhir/vip", "valueBoolean": true}));
    assert_eq!(
        reason(&run("ehr.hl7v2", adt.as_bytes())).0,
        ReasonCode::SchemaDrift
    );
    assert_eq!(
        reason(&run("ehr.fhir", fhir.to_string().as_bytes())),
        (
            ReasonCode::SchemaDrift,
            "Patient.extension(http://example.org/fhir/vip)".into()
        )
    );
    let text = crate::test_fixtures::SHIPPED_TOPOLOGY.replace(
        "    hl7v2: []   # e.g. ZPD (a Z-segment), PID-40 (a field)\n    fhir: []",
        "    hl7v2: [ZPD]\n    fhir: [\"Patient.extension(http://example.org/fhir/vip)\"]",
    );
    let t = Topology::parse("topology.yaml", &text).expect("topology with allow-list");
    let n = Normalize::new(&t);
    let a = n.process(&input("ehr.hl7v2", adt.as_bytes()), &NoState);
    let f = n.process(&input("ehr.fhir", fhir.to_string().as_bytes()), &NoState);
    let (a, f) = (event(&a[0]), event(&f[0]));
    let printed = serde_json::to_string(&(a, f)).unwrap();
    assert!(!printed.contains("VIP") && !printed.contains("example.org/fhir/vip"));
}

#[test]
fn oversized_record_is_too_large() {
    let n = Normalize::new(&topology()).with_max_record_bytes(1000);
    let o = n.process(&input("ehr.fhir", &vec![b'{'; 1001]), &NoState);
    assert_eq!(
        reason(&o[0]),
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
        Normalize::new(&topology()).process(&other, &NoState)[0].dedup_key,
        a.dedup_key
    );
    // A quarantined event and the same event once it is fixed do not collide.
    let (cfg, p) = patient(2, 0);
    let adt = hl7_adt(&cfg, &p, "A01", 0);
    let drift = run("ehr.hl7v2", format!("{adt}ZPI|1\r").as_bytes());
    let good = run("ehr.hl7v2", adt.as_bytes());
    assert_ne!(drift.dedup_key, good.dedup_key);
    assert_eq!(drift.audit.event_id, good.audit.event_id);
}

/// A source cannot label its own record de-identified (or anything else
/// only de-identify may say): the reserved labels are dropped, others kept.
#[test]
fn a_source_cannot_claim_a_reserved_security_label() {
    let v = json!({"resourceType": "Patient", "id": "lbl-1",
        "meta": {"security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"},
            {"system": "urn:example", "code": "de-identified"},
            {"system": "urn:example", "code": "phi"},
            {"system": "urn:example", "code": "De-Identified"}]},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.7777.1", "value": "L1"}]});
    let o = run("ehr.fhir", v.to_string().as_bytes());
    assert_eq!(event(&o).security_labels, ["R"]);
}
