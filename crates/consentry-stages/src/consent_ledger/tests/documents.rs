//! FHIR Consent documents: versions that grant, narrow and withdraw,
//! provisions that deny, ids, and documents that share an id.

use super::*;

/// A FHIR Consent's versions: purposes dropped from the document are
/// withdrawn; `inactive` withdraws the rest.
#[test]
fn fhir_consent_versions_grant_narrow_and_withdraw() {
    let (vault, l, mut table) = fresh();
    let outs = feed(
        &l,
        &mut table,
        vec![
            fhir_consent(1, "active", &["HRESCH", "HMARKT"], json!([])),
            fhir_consent(2, "active", &["HRESCH"], json!([])),
        ],
    );
    assert_eq!(reasons(&outs), ["consent_apply"; 4]);
    let status = |table: &BTreeMap<String, Vec<u8>>| -> Vec<(String, String, Option<i64>)> {
        table
            .iter()
            .map(|(k, v)| {
                let e = ConsentEntry::decode(v).unwrap();
                let (_, code, _) = consent::parse_key(k).unwrap();
                (code.to_string(), e.status.as_str().to_string(), e.version)
            })
            .collect()
    };
    assert_eq!(
        status(&table),
        [
            ("HMARKT".into(), "revoked".into(), Some(2)),
            ("HRESCH".into(), "active".into(), Some(2))
        ]
    );
    assert_eq!(
        outs[0].audit.consent_reference.as_deref(),
        Some("Consent/c-77")
    );
    // Both HRESCH purposes' domains are untouched; marketing's shredded.
    let shredded: Vec<String> = vault
        .shredded
        .lock()
        .unwrap()
        .iter()
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(shredded, ["marketing"]);
    feed(
        &l,
        &mut table,
        vec![fhir_consent(3, "inactive", &["HRESCH"], json!([]))],
    );
    assert_eq!(
        status(&table)[1],
        ("HRESCH".into(), "revoked".into(), Some(3))
    );
    let shredded: BTreeSet<String> = vault
        .shredded
        .lock()
        .unwrap()
        .iter()
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(
        shredded,
        ["marketing", "registry", "trial"].map(String::from).into()
    );
    // A Consent whose patient is only a reference names no subject.
    let by_ref = String::from_utf8(fhir_consent(4, "active", &["HRESCH"], json!([])))
        .unwrap()
        .replace(
            &format!(r#"{{"identifier":{{"system":"{SYSTEM}","value":"{MRN}"}}}}"#),
            r#"{"reference":"Patient/p1"}"#,
        );
    let outs = feed(&l, &mut table, vec![by_ref.into_bytes()]);
    assert_eq!(
        outs[0].quarantine.as_ref().map(|q| q.reason),
        Some(ReasonCode::UnresolvedSubject)
    );
}

/// Two patients' documents can share an id and a revision (two EHRs'
/// `Consent/1`, or id-less documents of one export time): neither may be
/// taken for the other's duplicate.
#[test]
fn the_same_document_id_for_two_subjects_is_two_units() {
    let l = ledger(Arc::new(MemoryVault::default()));
    let mut table = BTreeMap::new();
    let meta = json!({"versionId": "1"});
    let outs = feed(
        &l,
        &mut table,
        vec![
            doc("1", MRN, meta.clone(), None, "active", research("permit")),
            doc(
                "1",
                "CS7654321",
                meta.clone(),
                None,
                "active",
                research("permit"),
            ),
            doc(
                "1",
                MRN,
                json!({"versionId": "2"}),
                None,
                "inactive",
                research("permit"),
            ),
            doc(
                "1",
                "CS7654321",
                json!({"versionId": "2"}),
                None,
                "inactive",
                research("permit"),
            ),
        ],
    );
    assert_eq!(reasons(&outs), ["consent_apply"; 4]);
    for mrn in [MRN, "CS7654321"] {
        assert_eq!(entry_of(&table, &l, mrn).status, ConsentStatus::Revoked);
    }
}

/// A provision that denies the purpose outright withdraws it like a
/// revocation: the vault shreds; a class-limited deny only narrows.
#[test]
fn a_provision_denying_the_purpose_withdraws_it() {
    let (vault, l, mut table) = fresh();
    let nested = |classes: serde_json::Value| {
        json!({"type": "permit", "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HOPERAT"}],
               "provision": [{"type": "deny", "class": classes,
                              "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]}]})
    };
    feed(
        &l,
        &mut table,
        vec![doc(
            "narrow",
            MRN,
            json!({"versionId": "1"}),
            None,
            "active",
            nested(json!([{"code": "Observation"}])),
        )],
    );
    assert!(
        vault.shredded.lock().unwrap().is_empty(),
        "a class-limited deny only narrows"
    );
    feed(
        &l,
        &mut table,
        vec![doc(
            "narrow",
            MRN,
            json!({"versionId": "2"}),
            None,
            "active",
            nested(json!([])),
        )],
    );
    let shredded: BTreeSet<String> = vault
        .shredded
        .lock()
        .unwrap()
        .iter()
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(shredded, ["registry", "trial"].map(String::from).into());
    assert!(entry_of(&table, &l, MRN).refuses("HRESCH"));
}

/// An id that is not FHIR's (too long, other characters) is refused: it
/// would go into the table and every gated record.
#[test]
fn a_consent_id_must_be_fhirs() {
    let l = ledger(Arc::new(MemoryVault::default()));
    let mut table = BTreeMap::new();
    let long = "x".repeat(65);
    let outs = feed(
        &l,
        &mut table,
        vec![
            doc(&long, MRN, json!(null), None, "active", research("permit")),
            doc("a b", MRN, json!(null), None, "active", research("permit")),
        ],
    );
    assert_eq!(reasons(&outs), ["malformed: Consent.id"; 2]);
}
