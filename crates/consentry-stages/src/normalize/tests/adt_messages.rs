//! HL7 v2 ADT messages into the envelope: every segment, event type,
//! version, framing and escape.

use super::*;

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
