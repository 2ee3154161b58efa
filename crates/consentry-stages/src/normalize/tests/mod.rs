use super::*;
use consentry_core::envelope::identifier_kind;
use consentry_core::stage::{apply_writes, InputMeta, NoState};
use consentry_synth::{
    fhir_appointment, fhir_condition, fhir_encounter, fhir_medication_bundle, fhir_observation,
    fhir_patient, hl7_adt, patients, Patient, SynthConfig,
};
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;

fn topology() -> Topology {
    Topology::parse("topology.yaml", crate::test_fixtures::SHIPPED_TOPOLOGY)
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
            ..Default::default()
        },
        body: Body::Raw(bytes.to_vec()),
    }
}

/// One record through a fresh stage with no state: exactly one outcome.
fn run(topic: &str, bytes: &[u8]) -> Outcome {
    let mut o = Normalize::new(&topology()).process(&input(topic, bytes), &NoState);
    assert_eq!(o.len(), 1, "one outcome expected");
    o.remove(0)
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

fn patient(seed: u64, index: usize) -> (SynthConfig, Patient) {
    let cfg = SynthConfig::new(seed, index + 1);
    let p = patients(&cfg).remove(index);
    (cfg, p)
}

fn ms(epoch_s: i64) -> Option<i64> {
    Some(epoch_s * 1000)
}

#[test]
fn adt_a01_maps_every_segment() {
    let (cfg, p) = patient(11, 0);
    let o = run("ehr.hl7v2", hl7_adt(&cfg, &p, "A01", 0).as_bytes());
    let ev = event(&o);
    let policy = topology().policy_version;
    assert_eq!(ev.event_type, "ADT^A01");
    assert_eq!(ev.event_id, "hl7v2:CSEHR:CS00000000A01");
    assert_eq!(ev.source_system, "CSEHR");
    assert_eq!(ev.policy_version, policy);
    assert_eq!(ev.event_time_ms, ms(p.admit));
    assert_eq!(
        ev.subject_key,
        keys::subject_key(&cfg.subject_system, &p.mrn)
    );
    assert_eq!(o.outputs[0].key, ev.subject_key);
    assert_eq!(o.outputs[0].topic, "events.normalized");
    assert_eq!(
        o.outputs[0].idempotency_key,
        keys::idempotency_key("normalize", &policy, &ev.event_id, None)
    );
    assert_eq!(o.dedup_key, o.outputs[0].idempotency_key);

    let ids: Vec<(&str, &str, &str, Option<&str>)> = ev
        .identifiers
        .iter()
        .map(|i| {
            (
                i.kind.as_str(),
                i.system.as_str(),
                i.value.as_str(),
                i.authority.as_deref(),
            )
        })
        .collect();
    let dl = identifier_kind::drivers_license_system(Some(p.state));
    assert_eq!(
        ids,
        [
            (
                "mrn",
                cfg.subject_system.as_str(),
                p.mrn.as_str(),
                Some("CSHOSP")
            ),
            (
                "account",
                cfg.account_system.as_str(),
                p.account.as_str(),
                Some("CSACCT")
            ),
            (
                "ssn",
                "http://hl7.org/fhir/sid/us-ssn",
                p.ssn.as_str(),
                None
            ),
            (
                "drivers_license",
                dl.as_str(),
                p.drivers_license.as_str(),
                None
            ),
            (
                "visit",
                cfg.visit_system.as_str(),
                p.visit.as_str(),
                Some("CSVISIT")
            ),
            (
                "health_plan",
                "urn:hl7v2:insurance-policy:CSPAYER",
                p.plan_beneficiary.as_str(),
                Some("CSPAYER")
            ),
        ],
        "in order, the account once although PID-3 and PID-18 both carry it"
    );

    let d = ev.demographics.as_ref().unwrap();
    assert_eq!(d.family_name.as_deref(), Some(p.family.as_str()));
    assert_eq!(d.given_name.as_deref(), Some(p.given.as_str()));
    let b = &p.birth_date;
    assert_eq!(
        d.birth_date.as_deref(),
        Some(format!("{}-{}-{}", &b[..4], &b[4..6], &b[6..8]).as_str())
    );
    assert_eq!(d.sex.as_deref(), Some(p.sex));
    assert_eq!(d.birth_sex.as_deref(), Some(p.sex), "from OBX 76689-9");
    assert_eq!(d.race, [p.race.0]);
    assert_eq!(d.ethnicity, [p.ethnicity.0]);
    assert_eq!(d.marital_status.as_deref(), Some(p.marital.0));
    assert_eq!(d.language.as_deref(), Some(p.language));
    assert_eq!(d.address_line.as_deref(), Some(p.street.as_str()));
    assert_eq!(d.postal_code.as_deref(), Some(p.zip.as_str()));
    assert_eq!(d.country.as_deref(), Some("US"));
    assert_eq!(d.phone.as_deref(), Some(p.phone.as_str()));
    assert_eq!(d.fax.as_deref(), Some(p.fax.as_str()));
    assert_eq!(d.email.as_deref(), Some(p.email.as_str()));
    assert_eq!(d.url.as_deref(), Some(p.portal_url.as_str()));
    assert_eq!(ev.contacts.len(), 1);
    assert_eq!(ev.contacts[0].relationship.as_deref(), Some(p.kin.2 .0));
    assert_eq!(
        ev.contacts[0].family_name.as_deref(),
        Some(p.kin.0.as_str())
    );
    assert_eq!(ev.contacts[0].phone.as_deref(), Some(p.kin.3.as_str()));

    let e = ev.encounter.as_ref().unwrap();
    assert_eq!(e.encounter_class.as_deref(), Some("IMP"));
    assert_eq!(e.status.as_deref(), Some("in-progress"));
    assert_eq!(e.start_ms, ms(p.admit));
    assert_eq!(e.end_ms, None);
    assert_eq!(
        e.location.as_deref(),
        Some(format!("{} {} {}", p.location.0, p.location.1, p.location.2).as_str())
    );
    assert_eq!(e.hospital_service.as_deref(), Some(p.service));
    assert_eq!(e.admit_source.as_deref(), Some("7"));
    assert_eq!(
        e.attending.as_deref(),
        Some(format!("{} {}", p.attending.2, p.attending.1).as_str())
    );

    let dx = &ev.codes[0];
    assert_eq!(
        (
            dx.system.as_str(),
            dx.code.as_str(),
            dx.kind.as_deref(),
            dx.display.as_deref()
        ),
        (
            "http://hl7.org/fhir/sid/icd-10-cm",
            p.diagnosis.0,
            Some("diagnosis"),
            Some(p.diagnosis.1)
        )
    );
    assert_eq!(dx.recorded_ms, ms(p.admit + 3_600));
    let obs = &ev.codes[1];
    assert_eq!(obs.code, p.observation.0);
    assert_eq!(
        obs.value.as_deref(),
        Some(p.observation.3.to_string().as_str())
    );
    assert_eq!(obs.value_type.as_deref(), Some("quantity"));
    assert_eq!(obs.unit.as_deref(), Some(p.observation.2));
    assert_eq!(ev.codes.len(), 2, "birth sex is a demographic, not a code");
    assert_eq!(ev.coverages.len(), 1);
    assert_eq!(
        ev.coverages[0].payer.as_deref(),
        Some("Synthetic Health Plan")
    );
    // The note was escaped in HL7 and comes back as written.
    assert!(ev.note.as_deref().unwrap().contains(&p.device_id));
    assert_eq!(o.audit.stage, "normalize");
    assert!(!o.audit.placeholder);
    assert!(o.state.is_empty(), "HL7 needs no patient index");
}

#[test]
fn every_adt_event_type_maps_with_its_status() {
    let (cfg, p) = patient(3, 3);
    assert!(p.merged_mrn.is_some(), "patient 3 has a merge");
    for (trigger, status) in [
        ("A01", Some("in-progress")),
        ("A02", Some("in-progress")),
        ("A03", Some("finished")),
        ("A04", Some("arrived")),
        ("A08", None),
        ("A11", Some("cancelled")),
        ("A13", Some("in-progress")),
    ] {
        let msg = hl7_adt(&cfg, &p, "A01", 0)
            .replace("ADT^A01^ADT_A01", &format!("ADT^{trigger}^ADT_A01"));
        let ev = event(&run("ehr.hl7v2", msg.as_bytes())).clone();
        assert_eq!(ev.event_type, format!("ADT^{trigger}"));
        assert_eq!(ev.encounter.unwrap().status.as_deref(), status, "{trigger}");
    }
    let a31 = event(&run("ehr.hl7v2", hl7_adt(&cfg, &p, "A31", 0).as_bytes())).clone();
    assert!(a31.encounter.is_none() && a31.codes.is_empty());
    // A40: the merged-away identifier travels as a link.
    let a40 = event(&run("ehr.hl7v2", hl7_adt(&cfg, &p, "A40", 3).as_bytes())).clone();
    assert_eq!(a40.event_type, "ADT^A40");
    assert_eq!(a40.links.len(), 1);
    assert_eq!(a40.links[0].relation, "replaces");
    assert_eq!(a40.links[0].system, cfg.subject_system);
    assert_eq!(Some(a40.links[0].value.as_str()), p.merged_mrn.as_deref());
    let no_mrg = hl7_adt(&cfg, &p, "A40", 3)
        .replace(&format!("\rMRG|{}^^^CSHOSP^MR", p.merged_mrn.unwrap()), "");
    assert_eq!(
        reason(&run("ehr.hl7v2", no_mrg.as_bytes())),
        (ReasonCode::MissingField, "MRG".into())
    );
}

#[test]
fn versions_framing_and_encoding_characters() {
    let (cfg, p) = patient(4, 0);
    let msg = hl7_adt(&cfg, &p, "A08", 1);
    let base = event(&run("ehr.hl7v2", msg.as_bytes())).clone();
    for v in [
        "2.3", "2.3.1", "2.4", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.2",
    ] {
        let m = msg.replace("|P|2.5", &format!("|P|{v}"));
        assert_eq!(
            event(&run("ehr.hl7v2", m.as_bytes())).identifiers,
            base.identifiers,
            "{v}"
        );
    }
    // MLLP framing and LF line ends read the same.
    let framed = [
        &[0x0b][..],
        msg.replace('\r', "\n").as_bytes(),
        &[0x1c, 0x0d],
    ]
    .concat();
    assert_eq!(
        event(&run("ehr.hl7v2", &framed)).demographics,
        base.demographics
    );
    // Other encoding characters, declared in MSH-2, read the same.
    let other = msg.replace('^', "$").replace('~', "!");
    let ev = event(&run("ehr.hl7v2", other.as_bytes())).clone();
    assert_eq!(ev.demographics, base.demographics);
    assert_eq!(ev.identifiers, base.identifiers);
}

#[test]
fn escapes_and_sub_components() {
    let msg = "MSH|^~\\&|EHR|H|R|F|20260101120000||ADT^A08^ADT_A01|M1|P|2.5\r\
               PID|1||X1^^^CSHOSP&2.16.840.1.113883.3.7777&ISO^MR||O\\XE28099\\Brien&Van^Jo\\T\\Ann\r\
               NTE|1||line one\\.br\\line two\r";
    let ev = event(&run("ehr.hl7v2", msg.as_bytes())).clone();
    let d = ev.demographics.unwrap();
    assert_eq!(
        d.family_name.as_deref(),
        Some("O\u{2019}Brien"),
        "FN.1 surname only"
    );
    assert_eq!(d.given_name.as_deref(), Some("Jo&Ann"));
    assert_eq!(ev.note.as_deref(), Some("line one\nline two"));
    assert_eq!(ev.identifiers[0].authority.as_deref(), Some("CSHOSP"));
}

#[test]
fn fhir_resources_map_to_the_same_subject() {
    let (cfg, p) = patient(5, 1);
    let subject = keys::subject_key(&cfg.subject_system, &p.mrn);
    let mut state = BTreeMap::new();
    let n = Normalize::new(&topology());
    for (rt, r) in [
        ("Patient", fhir_patient(&cfg, &p)),
        ("Encounter", fhir_encounter(&cfg, &p)),
        ("Condition", fhir_condition(&cfg, &p)),
        ("Observation", fhir_observation(&cfg, &p)),
        ("Appointment", fhir_appointment(&cfg, &p)),
    ] {
        let o = n.process(&input("ehr.fhir", r.to_string().as_bytes()), &state);
        assert_eq!(o.len(), 1);
        apply_writes(&mut state, &o[0].state);
        let ev = event(&o[0]);
        assert_eq!(ev.event_type, format!("fhir:{rt}"));
        assert!(ev.event_id.starts_with(&format!("fhir:{rt}/")));
        assert!(ev.event_id.ends_with("/_history/1"));
        assert_eq!(ev.subject_key, subject, "{rt}");
    }
    // The Patient was indexed by its id, under its mapped identifiers only.
    let idx: Vec<Identifier> =
        serde_json::from_slice(state.get("idx/Patient/pat-1").expect("indexed")).unwrap();
    let systems: Vec<&str> = idx.iter().map(|i| i.system.as_str()).collect();
    assert_eq!(
        systems,
        [cfg.subject_system.as_str(), cfg.account_system.as_str()]
    );
}

#[test]
fn fhir_details_of_each_resource() {
    let (cfg, p) = patient(6, 2);
    let patient_ev = event(&run(
        "ehr.fhir",
        fhir_patient(&cfg, &p).to_string().as_bytes(),
    ))
    .clone();
    assert!(patient_ev.note.is_none());
    let enc = event(&run(
        "ehr.fhir",
        fhir_encounter(&cfg, &p).to_string().as_bytes(),
    ))
    .clone();
    let e = enc.encounter.unwrap();
    assert_eq!((e.start_ms, e.end_ms), (ms(p.admit), ms(p.discharge)));
    assert_eq!(e.discharge_disposition.as_deref(), Some("01"));
    assert!(enc
        .identifiers
        .iter()
        .any(|i| i.kind == "visit" && i.value == p.visit));
    let cond = event(&run(
        "ehr.fhir",
        fhir_condition(&cfg, &p).to_string().as_bytes(),
    ))
    .clone();
    assert_eq!(cond.codes[0].status.as_deref(), Some("active"));
    assert!(
        cond.note.unwrap().contains(&p.mrn),
        "free text travels as note, classified"
    );

    // A bundle resolves its urn:uuid links and names versionless entries
    // by the Bundle's identity.
    let mut state = BTreeMap::new();
    let n = Normalize::new(&topology());
    let pat = n.process(
        &input("ehr.fhir", fhir_patient(&cfg, &p).to_string().as_bytes()),
        &state,
    );
    apply_writes(&mut state, &pat[0].state);
    let bundle = fhir_medication_bundle(&cfg, &p);
    let o = n.process(&input("ehr.fhir", bundle.to_string().as_bytes()), &state);
    assert_eq!(o.len(), 2);
    let med = event(&o[0]);
    assert_eq!(med.event_type, "fhir:MedicationRequest");
    assert!(med
        .event_id
        .starts_with("fhir:Bundle?identifier=urn:ietf:rfc:3986|urn:uuid:"));
    assert_eq!(med.codes[0].code, p.medication.0);
    assert_eq!(med.codes[0].kind.as_deref(), Some("medication"));
    assert_eq!(
        med.medication.as_ref().unwrap().intent.as_deref(),
        Some("order")
    );
    assert_eq!(med.note.as_deref(), Some("1 tablet by mouth daily"));
    let prov = event(&o[1]);
    assert_eq!(prov.event_type, "fhir:Provenance");
    assert_eq!(prov.subject_key, med.subject_key);
    assert_eq!(
        prov.provenance.as_ref().unwrap().activity.as_deref(),
        Some("CREATE")
    );
    assert_ne!(
        o[0].dedup_key, o[1].dedup_key,
        "each event is deduplicated on its own"
    );
}

#[test]
fn consent_provisions_nest_and_flatten() {
    let consent = json!({"resourceType": "Consent", "id": "c1", "meta": {"versionId": "3"},
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": "urn:oid:2.16.840.1.113883.3.7777.1", "value": "M1"}},
        "provision": {"type": "permit",
            "period": {"start": "2026-01-01", "end": "2027-01-01"},
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}],
            "provision": [{"type": "deny", "class": [{"code": "psychiatric"}],
                "provision": [{"type": "permit", "purpose": [{"code": "TREAT"}]}]}]}});
    let ev = event(&run("ehr.fhir", consent.to_string().as_bytes())).clone();
    let c = ev.consent.unwrap();
    assert_eq!(c.reference, "Consent/c1/_history/3");
    assert_eq!(
        (c.decision.as_deref(), &c.purposes[..]),
        (Some("permit"), &[Text::from("HRESCH")][..])
    );
    assert_eq!(c.categories, ["59284-0"]);
    assert_eq!(c.provisions.len(), 2);
    assert_eq!(
        (c.provisions[0].decision.as_deref(), c.provisions[0].depth),
        (Some("deny"), 1)
    );
    assert_eq!(c.provisions[0].data_classes, ["psychiatric"]);
    assert_eq!(
        (c.provisions[1].purposes.clone(), c.provisions[1].depth),
        (vec![Text::from("TREAT")], 2)
    );
    assert!(c.period_start_ms.is_some() && c.period_end_ms > c.period_start_ms);
}

/// The event ids of every event a FHIR record yields.
fn fhir_event_ids(v: &serde_json::Value) -> Vec<String> {
    Normalize::new(&topology())
        .process(&input("ehr.fhir", v.to_string().as_bytes()), &NoState)
        .iter()
        .map(|o| event(o).event_id.to_string())
        .collect()
}

#[test]
fn fhir_without_meta_is_identified_by_update_time_or_content() {
    // FHIR R4's `meta`, `versionId` and `lastUpdated` are all optional;
    // Bulk Data exports and generated data sets carry none.
    let system = "urn:oid:2.16.840.1.113883.3.7777.1";
    let bare = json!({"resourceType": "Patient", "id": "p1",
        "identifier": [{"system": system, "value": "MRN-1"}], "gender": "female"});
    let ids = fhir_event_ids(&bare);
    assert_eq!(ids.len(), 1);
    assert!(
        ids[0].starts_with("fhir:Patient/p1/_content/"),
        "{}",
        ids[0]
    );
    // An identical re-send, keys reordered and spaced: the same event.
    let resent = r#"{ "gender": "female", "identifier": [{"value": "MRN-1", "system": "urn:oid:2.16.840.1.113883.3.7777.1"}],
        "id": "p1", "resourceType": "Patient" }"#;
    let o = run("ehr.fhir", resent.as_bytes());
    assert_eq!(event(&o).event_id, ids[0]);
    // A changed resource: a new event.
    let mut changed = bare.clone();
    changed["gender"] = json!("male");
    assert_ne!(fhir_event_ids(&changed), ids);
    // lastUpdated names the version where there is no versionId ...
    let mut updated = bare.clone();
    updated["meta"] = json!({"lastUpdated": "2026-11-01T08:30:00Z"});
    assert_eq!(
        fhir_event_ids(&updated),
        [format!(
            "fhir:Patient/p1/_updated/{}",
            crate::time::parse_fhir_datetime("2026-11-01T08:30:00Z").unwrap()
        )]
    );
    // ... and versionId wherever it is given.
    updated["meta"]["versionId"] = json!("4");
    assert_eq!(fhir_event_ids(&updated), ["fhir:Patient/p1/_history/4"]);

    // A transaction Bundle with neither id nor identifier, whose entries
    // have no id, only `urn:uuid:` fullUrls (what generators send): each
    // entry by its fullUrl and content.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b5a8c54-1f2e-4a55-9a1e-3f6d1c2b7e10", "resource": {
            "resourceType": "Patient", "identifier": [{"system": system, "value": "MRN-2"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:6f1d4c3a-8b7e-4f2a-9c1d-2e3f4a5b6c7d", "resource": {
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "urn:uuid:0b5a8c54-1f2e-4a55-9a1e-3f6d1c2b7e10"}},
         "request": {"method": "POST", "url": "Encounter"}}]});
    let ids = fhir_event_ids(&bundle);
    assert_eq!(ids.len(), 2);
    assert!(
        ids[0].starts_with("fhir:Patient/urn:uuid:0b5a8c54-1f2e-4a55-9a1e-3f6d1c2b7e10/_content/"),
        "{}",
        ids[0]
    );
    assert!(
        ids[1].starts_with("fhir:Encounter/urn:uuid:6f1d4c3a-"),
        "{}",
        ids[1]
    );
    assert_eq!(
        fhir_event_ids(&bundle),
        ids,
        "a re-sent Bundle: the same events"
    );
    // A Bundle the sender names keeps the Bundle-and-place rule.
    let mut named = bundle.clone();
    named["identifier"] = json!({"system": "urn:example:batch", "value": "B-7"});
    assert_eq!(
        fhir_event_ids(&named)[0],
        "fhir:Bundle?identifier=urn:example:batch|B-7#urn:uuid:0b5a8c54-1f2e-4a55-9a1e-3f6d1c2b7e10"
    );
    // No fullUrl at all: the Bundle's own identity and the place.
    let mut placeless = bundle.clone();
    placeless["entry"][0]
        .as_object_mut()
        .unwrap()
        .remove("fullUrl");
    placeless["entry"][1]["resource"]["subject"] =
        json!({"identifier": {"system": system, "value": "MRN-2"}});
    let ids = fhir_event_ids(&placeless);
    assert!(
        ids[0].starts_with("fhir:Bundle/_content/") && ids[0].contains("#0/_content/"),
        "{}",
        ids[0]
    );
    // Without an id, an update time names nothing: two patients' id-less
    // resources of one export instant are two events.
    let idless = |mrn: &str| {
        json!({"resourceType": "Patient", "meta": {"lastUpdated": "2026-11-01T08:30:00Z"},
            "identifier": [{"system": system, "value": mrn}]})
    };
    let (a, b) = (
        fhir_event_ids(&idless("MRN-7")),
        fhir_event_ids(&idless("MRN-8")),
    );
    assert_ne!(a, b);
    assert!(a[0].starts_with("fhir:Patient/_content/"), "{}", a[0]);
    // Ids never carry long input text: a huge id is named by its digest.
    let mut long = bare.clone();
    long["id"] = json!("x".repeat(5000));
    let ids = fhir_event_ids(&long);
    assert!(
        ids[0].len() < 200 && ids[0].starts_with("fhir:Patient/~"),
        "{}",
        ids[0].len()
    );
}

#[test]
fn us_core_patient_extensions_and_geolocation() {
    let v = json!({"resourceType": "Patient", "id": "g1", "meta": {"versionId": "1"},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.7777.1", "value": "G1"}],
        "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": "Maidenname"},
            {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race", "extension": [
                {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2028-9"}},
                {"url": "detailed", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2039-6"}},
                {"url": "text", "valueString": "Asian"}]}],
        "name": [{"use": "old", "family": "Before"}, {"use": "official", "family": "Now", "given": ["A", "B", "C"], "suffix": ["Jr"]}],
        "deceasedDateTime": "2026-05-01T10:00:00Z",
        "address": [{"use": "home", "line": ["1 Main St", "Apt 2"], "city": "Springfield", "district": "Sangamon",
            "state": "IL", "postalCode": "62704", "country": "USA",
            "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/geolocation", "extension": [
                {"url": "latitude", "valueDecimal": 39.7817}, {"url": "longitude", "valueDecimal": -89.6501}]}]}],
        "link": [{"other": {"identifier": {"system": "urn:oid:2.16.840.1.113883.3.7777.1", "value": "OLD1"}}, "type": "replaces"}],
        "meta": {"versionId": "1", "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}});
    let ev = event(&run("ehr.fhir", v.to_string().as_bytes())).clone();
    let d = ev.demographics.unwrap();
    assert_eq!(d.family_name.as_deref(), Some("Now"));
    assert_eq!(
        (d.middle_name.as_deref(), d.name_suffix.as_deref()),
        (Some("B C"), Some("Jr"))
    );
    assert_eq!(d.mothers_maiden_name.as_deref(), Some("Maidenname"));
    assert_eq!(d.race, ["2028-9", "2039-6"]);
    assert_eq!(
        (d.deceased, d.deceased_date.as_deref()),
        (Some(true), Some("2026-05-01"))
    );
    assert_eq!(d.address_line.as_deref(), Some("1 Main St, Apt 2"));
    assert_eq!(
        (d.county.as_deref(), d.country.as_deref()),
        (Some("Sangamon"), Some("US"))
    );
    assert_eq!(
        (d.latitude.as_deref(), d.longitude.as_deref()),
        (Some("39.7817"), Some("-89.6501"))
    );
    assert_eq!(ev.links[0].relation, "replaces");
    assert_eq!(ev.links[0].value, "OLD1");
    assert_eq!(ev.security_labels, ["R"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// One patient, one subject: the HL7 A31 and the FHIR Patient of a
    /// generated patient normalize to the same envelope, up to the fields
    /// that say where and when it came from; the A03's visit and the FHIR
    /// Encounter to the same encounter; the DG1 and the Condition to the
    /// same diagnosis.
    #[test]
    fn hl7_and_fhir_normalize_to_the_same_envelope(seed in any::<u64>(), index in 0usize..12) {
        let (cfg, p) = patient(seed, index);
        let source_free = |o: &Outcome| {
            let mut ev = event(o).clone();
            ev.event_id.clear();
            ev.event_type.clear();
            ev.event_time_ms = None;
            ev.source_system.clear();
            ev.source_format.clear();
            ev.correlation_id.clear();
            ev
        };
        let a31 = source_free(&run("ehr.hl7v2", hl7_adt(&cfg, &p, "A31", 0).as_bytes()));
        let fhir = source_free(&run("ehr.fhir", fhir_patient(&cfg, &p).to_string().as_bytes()));
        prop_assert_eq!(&a31, &fhir);

        let a03 = run("ehr.hl7v2", hl7_adt(&cfg, &p, "A03", 2).as_bytes());
        let enc = run("ehr.fhir", fhir_encounter(&cfg, &p).to_string().as_bytes());
        let (a03, enc) = (event(&a03), event(&enc));
        prop_assert_eq!(&a03.encounter, &enc.encounter);
        prop_assert_eq!(&a03.subject_key, &enc.subject_key);
        let visit = |e: &CanonicalEvent| e.identifiers.iter().find(|i| i.kind == "visit").cloned();
        prop_assert_eq!(visit(a03), visit(enc));

        let cond = run("ehr.fhir", fhir_condition(&cfg, &p).to_string().as_bytes());
        let mut dx = event(&cond).codes[0].clone();
        dx.status = None;
        prop_assert_eq!(&a03.codes[0], &dx);
    }

    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600), hl7 in any::<bool>()) {
        let o = Normalize::new(&topology()).process(&input(if hl7 { "ehr.hl7v2" } else { "ehr.fhir" }, &bytes), &NoState);
        prop_assert!(!o.is_empty());
        for u in &o {
            prop_assert!(u.quarantine.is_some() || u.outputs.len() == 1);
        }
    }

    /// Mutating a valid message never panics and never lets an event out
    /// without a subject key.
    #[test]
    fn never_panics_on_mutated_messages(seed in any::<u64>(), cut in 0usize..1500, insert in "[|^~\\\\&\\r{}\\[\\]\",:a-zA-Z0-9]{0,12}", hl7 in any::<bool>()) {
        let (cfg, p) = patient(seed, 0);
        let text = if hl7 { hl7_adt(&cfg, &p, "A01", 0) } else { fhir_patient(&cfg, &p).to_string() };
        let mut b = text.into_bytes();
        let at = cut.min(b.len());
        b.splice(at..at, insert.bytes());
        let o = Normalize::new(&topology()).process(&input(if hl7 { "ehr.hl7v2" } else { "ehr.fhir" }, &b), &NoState);
        for u in &o {
            for out in &u.outputs {
                prop_assert!(!out.event.subject_key.is_empty());
            }
        }
    }
}

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
fn a_reference_waits_for_its_patient_and_is_redriven_when_it_arrives() {
    let (cfg, p) = patient(12, 9);
    let n = Normalize::new(&topology());
    let mut state = BTreeMap::new();
    let obs = fhir_observation(&cfg, &p).to_string();
    let mut meta = input("ehr.fhir", obs.as_bytes());
    meta.meta.partition = 2;
    let held = n.process(&meta, &state);
    assert_eq!(held.len(), 1);
    let (r, detail) = reason(&held[0]);
    assert_eq!(r, ReasonCode::UnresolvedSubject);
    assert_eq!(
        detail,
        "Observation.subject.reference; held until the Patient arrives"
    );
    assert_eq!(held[0].state.len(), 1);
    assert!(held[0].state[0].key.starts_with("held/Patient/pat-9/"));
    apply_writes(&mut state, &held[0].state);
    // Nothing to re-drive while the patient is unknown.
    let all = |_: &str, _: i32| true;
    assert!(n.on_state_change(None, &state, &all).is_empty());

    let pat = n.process(
        &input("ehr.fhir", fhir_patient(&cfg, &p).to_string().as_bytes()),
        &state,
    );
    apply_writes(&mut state, &pat[0].state);
    let changed = vec!["idx/Patient/pat-9".to_string()];
    // Only the instance that owns the held record's partition re-drives it.
    let other = |_: &str, partition: i32| partition != 2;
    assert!(n.on_state_change(Some(&changed), &state, &other).is_empty());
    let redriven = n.on_state_change(Some(&changed), &state, &all);
    assert_eq!(redriven.len(), 2, "a marker and the event");
    assert_eq!(redriven[0].audit.decision, "redrive");
    assert!(redriven[0].outputs.is_empty());
    assert_eq!(redriven[0].state[0].value, None, "the hold is released");
    let ev = event(&redriven[1]);
    assert_eq!(
        ev.subject_key,
        keys::subject_key(&cfg.subject_system, &p.mrn)
    );
    assert_eq!(redriven[1].audit.source_partition, 2);
    // Exactly what the record yields when its patient is already known.
    let direct = n.process(&input("ehr.fhir", obs.as_bytes()), &state);
    assert_eq!(direct[0].outputs, redriven[1].outputs);
    apply_writes(&mut state, &redriven[0].state);
    assert!(n.on_state_change(None, &state, &all).is_empty());
}

#[test]
fn holding_is_bounded() {
    let (cfg, p) = patient(13, 0);
    let text = crate::test_fixtures::SHIPPED_TOPOLOGY.replace(
        "unresolved_hold_bytes: 67108864",
        "unresolved_hold_bytes: 100",
    );
    let n = Normalize::new(&Topology::parse("topology.yaml", &text).unwrap());
    let o = n.process(
        &input(
            "ehr.fhir",
            fhir_observation(&cfg, &p).to_string().as_bytes(),
        ),
        &NoState,
    );
    let (r, detail) = reason(&o[0]);
    assert_eq!(r, ReasonCode::UnresolvedSubject);
    assert!(detail.ends_with("not held: hold is full"), "{detail}");
    assert!(o[0].state.is_empty());
}

#[test]
fn held_records_round_trip_and_garbage_is_refused() {
    let h = Held {
        topic: "ehr.fhir".into(),
        partition: 2,
        offset: 77,
        payload: b"{}".to_vec(),
    };
    assert_eq!(Held::decode(&h.encode()), Some(h.clone()));
    let bytes = h.encode();
    for n in 0..bytes.len() - 2 {
        assert_eq!(Held::decode(&bytes[..n]), None, "{n}");
    }
    assert_eq!(Held::decode(b"XX"), None);
    assert_eq!(held_patient("held/Patient/p-1/abc"), Some("Patient/p-1"));
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

#[test]
fn dates_and_countries() {
    assert_eq!(hl7_date_to_iso("19640312").as_deref(), Some("1964-03-12"));
    assert_eq!(
        hl7_date_to_iso("196403121015-0500").as_deref(),
        Some("1964-03-12")
    );
    assert_eq!(hl7_date_to_iso("196403").as_deref(), Some("1964-03"));
    assert_eq!(hl7_date_to_iso("1964").as_deref(), Some("1964"));
    assert_eq!(hl7_date_to_iso("19641312"), None);
    assert_eq!(hl7_date_to_iso("196"), None);
    assert_eq!(hl7_date_to_iso("1999-13-45"), None);
    assert_eq!(hl7_date_to_iso("19991231xyz"), None);
    assert_eq!(canonical_country("USA"), "US");
    assert_eq!(canonical_country("CAN"), "CAN");
    assert_eq!(
        identifier_kind::drivers_license_system(Some("IL")),
        "urn:oid:2.16.840.1.113883.4.3.17"
    );
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
