//! FHIR resources into the envelope: each resource's details, consent
//! provisions, identity without `meta`, US Core extensions.

use super::*;

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
