use super::*;
use crate::test_fixtures::{services, topology, MemoryVault};
use consentry_core::stage::{apply_writes, InputMeta, Stage};
use serde_json::json;
use std::collections::BTreeMap;

const SYSTEM: &str = "urn:oid:2.16.840.1.113883.3.7777.1";
const MRN: &str = "CS1234567";
const ARRIVAL_MS: i64 = 1_796_500_000_000;

fn ledger(vault: Arc<MemoryVault>) -> ConsentLedger {
    let s = services(vault);
    ConsentLedger::new(&topology(), s.keys.as_deref(), s.vault).expect("builds")
}

fn input(bytes: Vec<u8>, offset: i64) -> StageInput {
    StageInput {
        meta: InputMeta {
            topic: "consent.events".into(),
            offset,
            // Arrival: now (2026-12), as the broker stamps it; a document's
            // own times are never taken to be later than this.
            timestamp_ms: Some(ARRIVAL_MS + offset),
            now_ms: ARRIVAL_MS + 1_000,
            ..Default::default()
        },
        body: Body::Raw(bytes),
    }
}

fn capture(purpose: &str, channel: &str, state: &str, version: i64) -> Vec<u8> {
    let c = ConsentEvent {
        consent_id: "cap-1".into(),
        subject_system: SYSTEM.into(),
        subject_value: MRN.into(),
        purpose: purpose.into(),
        channel: channel.into(),
        state: state.into(),
        version,
        effective_ms: 500,
        expires_ms: None,
        source: "portal".into(),
        captured_by: Some("role:front-desk".into()),
        notice_version: Some("np-2026".into()),
    };
    avro::encode_consent_event(&c, 7).expect("encodes")
}

/// Feeds inputs in order, applying each unit's writes, like the runtime.
fn feed(
    l: &ConsentLedger,
    table: &mut BTreeMap<String, Vec<u8>>,
    inputs: Vec<Vec<u8>>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (i, bytes) in inputs.into_iter().enumerate() {
        for o in l.process(&input(bytes, i as i64), table) {
            apply_writes(table, &o.state);
            out.push(o);
        }
    }
    out
}

fn reasons(outs: &[Outcome]) -> Vec<String> {
    outs.iter()
        .map(|o| match &o.quarantine {
            Some(q) => format!("{}: {}", q.reason, q.detail),
            None => o.audit.decision.to_string(),
        })
        .collect()
}

#[test]
fn captures_walk_the_state_machine_and_refusals_are_quarantined() {
    let vault = Arc::new(MemoryVault::default());
    let l = ledger(Arc::clone(&vault));
    let mut table = BTreeMap::new();
    let outs = feed(
        &l,
        &mut table,
        vec![
            capture("HMARKT", "email", "captured", 1),
            capture("HMARKT", "email", "active", 1),
            capture("HMARKT", "email", "validated", 1),
            capture("HMARKT", "email", "validated", 1),
            capture("HMARKT", "email", "active", 1),
            capture("HMARKT", "email", "captured", 1),
        ],
    );
    assert_eq!(
        reasons(&outs),
        [
            "consent_apply",
            "invalid_transition: consent/HMARKT/email: captured -> active",
            "consent_apply",
            "consent_duplicate",
            "consent_apply",
            "invalid_transition: consent/HMARKT/email: active -> captured",
        ]
    );
    // Every unit is audited with the consent it concerns.
    for o in &outs {
        assert_eq!(o.audit.consent_reference.as_deref(), Some("capture/cap-1"));
        assert_eq!(o.audit.consent_version.as_deref(), Some("v1"));
    }
    // Keyed by the pseudonym; no identifier in the table.
    assert_eq!(table.len(), 1);
    let (key, value) = table.iter().next().unwrap();
    let pseudonym = l.subjects.of(&keys::subject_key(SYSTEM, MRN));
    assert_eq!(*key, consent::table_key(&pseudonym, "HMARKT", "email"));
    let text = String::from_utf8_lossy(value);
    assert!(!key.contains(MRN) && !text.contains(MRN), "{text}");
    let e = ConsentEntry::decode(value).unwrap();
    assert_eq!(
        (e.status, e.version, e.received_ms),
        (ConsentStatus::Active, Some(1), ARRIVAL_MS + 4)
    );
    assert_eq!(e.notice_version.as_deref(), Some("np-2026"));

    // Out of order: an older version is stale; revocation as a new version
    // shreds the marketing domain; a re-grant is a new version again.
    let outs = feed(
        &l,
        &mut table,
        vec![
            capture("HMARKT", "email", "revoked", 3),
            capture("HMARKT", "email", "active", 2),
            capture("HMARKT", "email", "revoked", 3),
            capture("HMARKT", "email", "active", 4),
        ],
    );
    assert_eq!(
        reasons(&outs),
        [
            "consent_apply",
            "stale_version: consent/HMARKT/email: v2 is older than the table's v3",
            "consent_duplicate",
            "consent_apply",
        ]
    );
    let subject = keys::subject_key(SYSTEM, MRN).to_string();
    assert_eq!(
        *vault.shredded.lock().unwrap(),
        [(subject.clone(), "marketing".to_string())]
    );
    assert!(outs[0]
        .audit
        .transformations
        .iter()
        .any(|s| s.method == "shred" && s.params == "domain=marketing"));
    let e = ConsentEntry::decode(table.values().next().unwrap()).unwrap();
    assert_eq!(
        (e.status, e.version, e.previous_revision.as_deref()),
        (ConsentStatus::Active, Some(4), Some("v3"))
    );

    // Erasure: a tombstone, and the keys shredded again.
    let outs = feed(
        &l,
        &mut table,
        vec![capture("HMARKT", "email", "erased", 5)],
    );
    assert_eq!(outs[0].state[0].value, None);
    assert!(table.is_empty());
    assert_eq!(vault.shredded.lock().unwrap().len(), 2);
}

#[test]
fn bad_captures_are_quarantined_by_field() {
    let l = ledger(Arc::default());
    let mut table = BTreeMap::new();
    let mut wrong_system = capture("HMARKT", "*", "active", 1);
    // Another system: the subject cannot be named.
    let c = ConsentEvent {
        subject_system: "urn:other".into(),
        ..avro::decode_consent_event(&wrong_system[5..]).unwrap()
    };
    wrong_system = avro::encode_consent_event(&c, 7).unwrap();
    let outs = feed(
        &l,
        &mut table,
        vec![
            wrong_system,
            capture("hmarkt", "*", "active", 1),
            capture("HMARKT", "E MAIL", "active", 1),
            capture("HMARKT", "*", "maybe", 1),
            capture("HMARKT", "*", "active", 0),
            capture("HMARKT", "*", "revoked", 1),
            vec![0, 0, 0, 0, 7, 0xff],
            Vec::new(),
        ],
    );
    assert_eq!(
        reasons(&outs)
            .iter()
            .map(|r| r.split(':').next().unwrap_or_default())
            .collect::<Vec<_>>(),
        [
            "unresolved_subject",
            "malformed",
            "malformed",
            "malformed",
            "malformed",
            "invalid_transition",
            "malformed",
            "empty",
        ]
    );
    assert!(table.is_empty());
    for o in &outs {
        assert!(!format!("{:?}", o.quarantine).contains(MRN));
    }
}

fn fhir_consent(
    version: u32,
    status: &str,
    purposes: &[&str],
    nested: serde_json::Value,
) -> Vec<u8> {
    json!({
        "resourceType": "Consent",
        "id": "c-77",
        "meta": {"versionId": version.to_string(), "lastUpdated": "2026-10-01T00:00:00Z"},
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": SYSTEM, "value": MRN}},
        "dateTime": "2026-10-01T00:00:00Z",
        "provision": {
            "type": "permit",
            "period": {"start": "2026-09-01T00:00:00Z", "end": "2036-09-01T00:00:00Z"},
            "purpose": purposes.iter().map(|c| json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": c})).collect::<Vec<_>>(),
            "provision": nested
        }
    })
    .to_string()
    .into_bytes()
}

/// A FHIR Consent's versions: purposes dropped from the document are
/// withdrawn; `inactive` withdraws the rest.
#[test]
fn fhir_consent_versions_grant_narrow_and_withdraw() {
    let vault = Arc::new(MemoryVault::default());
    let l = ledger(Arc::clone(&vault));
    let mut table = BTreeMap::new();
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

/// A Consent document as real systems send it: no `meta` at all, ordered
/// by its `dateTime`.
fn document(id: &str, version: Option<u32>, date_time: &str, decision: &str) -> Vec<u8> {
    let mut v = json!({
        "resourceType": "Consent",
        "id": id,
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
        "patient": {"identifier": {"system": SYSTEM, "value": MRN}},
        "dateTime": date_time,
        "provision": {
            "type": decision,
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]
        }
    });
    if let Some(n) = version {
        v["meta"] = json!({"versionId": n.to_string()});
    }
    v.to_string().into_bytes()
}

/// Issue 16: a new opt-out document at its own version 1 was refused as
/// stale against an older opt-in at version 3, and data kept flowing.
#[test]
fn a_newer_opt_out_document_beats_an_older_opt_in_whatever_the_versions() {
    let opt_in = document("opt-in", Some(3), "2026-01-10T09:00:00Z", "permit");
    let opt_out = document("opt-out", Some(1), "2026-06-01T09:00:00Z", "deny");
    for arrival in [
        vec![opt_in.clone(), opt_out.clone()],
        vec![opt_out.clone(), opt_in.clone()],
    ] {
        let vault = Arc::new(MemoryVault::default());
        let l = ledger(Arc::clone(&vault));
        let mut table = BTreeMap::new();
        let outs = feed(&l, &mut table, arrival);
        let e = ConsentEntry::decode(table.values().next().expect("an entry")).unwrap();
        assert_eq!((e.reference.as_str(), e.permit), ("Consent/opt-out", false));
        // The refusal withdraws: the research domains are shredded.
        let shredded: BTreeSet<String> = vault
            .shredded
            .lock()
            .unwrap()
            .iter()
            .map(|(_, d)| d.clone())
            .collect();
        assert_eq!(shredded, ["registry", "trial"].map(String::from).into());
        // Whichever came second: applied, or refused as stale with the
        // revisions named, never a value.
        assert!(outs.iter().all(|o| o.quarantine.is_none()
            || o.quarantine
                .as_ref()
                .is_some_and(|q| q.reason == ReasonCode::StaleVersion
                    && q.detail == "consent/HRESCH/*: v3 is older than the table's v1")));
    }
}

/// No `meta` at all: a document's versions order by `dateTime`, and the
/// revision the table and audit name is that time.
#[test]
fn consents_without_meta_order_by_their_time() {
    let vault = Arc::new(MemoryVault::default());
    let l = ledger(Arc::clone(&vault));
    let mut table = BTreeMap::new();
    let first = document("c-nm", None, "2026-01-10T09:00:00Z", "permit");
    let mut later: serde_json::Value =
        serde_json::from_slice(&document("c-nm", None, "2026-03-10T09:00:00Z", "permit")).unwrap();
    later["status"] = json!("inactive");
    let later = later.to_string().into_bytes();
    let outs = feed(
        &l,
        &mut table,
        vec![first.clone(), later.clone(), first.clone(), later],
    );
    assert_eq!(
        reasons(&outs),
        [
            "consent_apply",
            "consent_apply",
            "stale_version: consent/HRESCH/*: d1768035600000 is older than the table's d1773133200000",
            "consent_duplicate"
        ]
    );
    let e = ConsentEntry::decode(table.values().next().unwrap()).unwrap();
    assert_eq!((e.status, e.version), (ConsentStatus::Revoked, None));
    assert_eq!(
        outs[1].audit.consent_version.as_deref(),
        Some("d1773133200000")
    );
}

/// A revocation after the consent expired (or was superseded) still
/// withdraws it: the table says revoked (route notifies), keys shredded.
#[test]
fn a_revocation_after_expiry_still_shreds() {
    let vault = Arc::new(MemoryVault::default());
    let l = ledger(Arc::clone(&vault));
    let mut table = BTreeMap::new();
    let outs = feed(
        &l,
        &mut table,
        vec![
            capture("HMARKT", "email", "active", 1),
            capture("HMARKT", "email", "expired", 1),
            capture("HMARKT", "email", "revoked", 1),
        ],
    );
    assert_eq!(reasons(&outs), ["consent_apply"; 3]);
    let e = ConsentEntry::decode(table.values().next().unwrap()).unwrap();
    assert_eq!(e.status, ConsentStatus::Revoked);
    assert_eq!(vault.shredded.lock().unwrap().len(), 1);
    // As a newer version too.
    let outs = feed(
        &l,
        &mut table,
        vec![
            capture("HMARKT", "email", "active", 2),
            capture("HMARKT", "email", "expired", 2),
            capture("HMARKT", "email", "revoked", 3),
        ],
    );
    assert_eq!(reasons(&outs), ["consent_apply"; 3]);
    assert_eq!(vault.shredded.lock().unwrap().len(), 2);
    // Each grant after a withdrawal (and the first) lifted the vault's
    // tombstone for the purpose's domain; the steps say so.
    let subject = keys::subject_key(SYSTEM, MRN).to_string();
    assert_eq!(
        *vault.reinstated.lock().unwrap(),
        [
            (subject.clone(), "marketing".to_string()),
            (subject, "marketing".to_string())
        ]
    );
    assert!(outs[0]
        .audit
        .transformations
        .iter()
        .any(|t| t.method == "reinstate" && t.params == "domain=marketing"));
}

/// A Consent document with what a test varies.
fn doc(
    id: &str,
    mrn: &str,
    meta: serde_json::Value,
    date_time: Option<&str>,
    status: &str,
    provision: serde_json::Value,
) -> Vec<u8> {
    let mut v = json!({
        "resourceType": "Consent",
        "id": id,
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
        "patient": {"identifier": {"system": SYSTEM, "value": mrn}},
        "provision": provision
    });
    if !meta.is_null() {
        v["meta"] = meta;
    }
    if let Some(t) = date_time {
        v["dateTime"] = json!(t);
    }
    v.to_string().into_bytes()
}

fn research(decision: &str) -> serde_json::Value {
    json!({"type": decision, "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]})
}

fn entry_of(table: &BTreeMap<String, Vec<u8>>, l: &ConsentLedger, mrn: &str) -> ConsentEntry {
    let pseudonym = l.subjects.of(&keys::subject_key(SYSTEM, mrn));
    ConsentEntry::decode(&table[&consent::table_key(&pseudonym, "HRESCH", "*")]).unwrap()
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

/// A permit whose document gives no time stands in with its arrival; it
/// never supersedes a dated entry. A future-dated permit is taken as of its
/// arrival, so a refusal made after that arrival still beats it.
#[test]
fn undated_and_future_dated_permits_cannot_outrank_a_refusal() {
    let vault = Arc::new(MemoryVault::default());
    let l = ledger(Arc::clone(&vault));
    let mut table = BTreeMap::new();
    let opt_out = doc(
        "out",
        MRN,
        json!(null),
        Some("2026-06-01T09:00:00Z"),
        "active",
        research("deny"),
    );
    let undated_in = doc(
        "old-in",
        MRN,
        json!(null),
        None,
        "active",
        research("permit"),
    );
    feed(&l, &mut table, vec![opt_out.clone(), undated_in]);
    let e = entry_of(&table, &l, MRN);
    assert_eq!((e.reference.as_str(), e.permit), ("Consent/out", false));

    let mut table = BTreeMap::new();
    let future_in = doc(
        "future",
        MRN,
        json!(null),
        Some("2030-01-01T00:00:00Z"),
        "active",
        research("permit"),
    );
    feed(&l, &mut table, vec![future_in]);
    let e = entry_of(&table, &l, MRN);
    assert!(e.effective_ms <= ARRIVAL_MS, "capped at its arrival");
    // A refusal issued after that arrival wins.
    let later_out = doc(
        "later-out",
        MRN,
        json!(null),
        Some("2026-12-06T00:00:00Z"),
        "active",
        research("deny"),
    );
    let mut input_table = table.clone();
    let outs: Vec<Outcome> = l.process(&input(later_out, 10), &input_table);
    for o in &outs {
        apply_writes(&mut input_table, &o.state);
    }
    assert_eq!(reasons(&outs), ["consent_apply"]);
    assert!(!entry_of(&input_table, &l, MRN).permit);
}

/// One document's versions compare like with like: `meta.lastUpdated` with
/// `meta.lastUpdated`, `dateTime` with `dateTime`; a revocation without a
/// comparable time is the same revision's step, never stale.
#[test]
fn a_documents_versions_compare_like_with_like() {
    let l = ledger(Arc::new(MemoryVault::default()));
    let mut table = BTreeMap::new();
    let outs = feed(
        &l,
        &mut table,
        vec![
            doc(
                "c",
                MRN,
                json!({"lastUpdated": "2026-01-10T00:00:00Z"}),
                Some("2026-01-01T00:00:00Z"),
                "active",
                research("permit"),
            ),
            // No meta: only its dateTime (the original's) to go by.
            doc(
                "c",
                MRN,
                json!(null),
                Some("2026-01-01T00:00:00Z"),
                "inactive",
                research("permit"),
            ),
        ],
    );
    assert_eq!(reasons(&outs), ["consent_apply", "consent_apply"]);
    assert_eq!(entry_of(&table, &l, MRN).status, ConsentStatus::Revoked);
}

/// A provision that denies the purpose outright withdraws it like a
/// revocation: the vault shreds; a class-limited deny only narrows.
#[test]
fn a_provision_denying_the_purpose_withdraws_it() {
    let vault = Arc::new(MemoryVault::default());
    let l = ledger(Arc::clone(&vault));
    let mut table = BTreeMap::new();
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

/// The same revision re-sent with other content: taken when it permits no
/// more (a shorter period), held for review when it would permit more.
#[test]
fn a_same_revision_resend_is_taken_only_if_no_looser() {
    let l = ledger(Arc::new(MemoryVault::default()));
    let mut table = BTreeMap::new();
    let with_end = |end: &str| {
        let mut p = research("permit");
        p["period"] = json!({"start": "2026-01-01T00:00:00Z", "end": end});
        doc(
            "p",
            MRN,
            json!(null),
            Some("2026-01-01T00:00:00Z"),
            "active",
            p,
        )
    };
    let outs = feed(
        &l,
        &mut table,
        vec![
            with_end("2030-01-01T00:00:00Z"),
            with_end("2028-01-01T00:00:00Z"),
            with_end("2035-01-01T00:00:00Z"),
            with_end("2028-01-01T00:00:00Z"),
        ],
    );
    assert_eq!(
        reasons(&outs),
        [
            "consent_apply",
            "consent_apply",
            "invalid_transition: consent/HRESCH/*: d1767225600000 again, permitting more: not taken",
            "consent_duplicate"
        ]
    );
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

/// A grant on one channel does not lift the vault's tombstones while the
/// subject's refusal on another channel of the same code stands.
#[test]
fn a_grant_reinstates_only_where_nothing_else_refuses() {
    let vault = Arc::new(MemoryVault::default());
    let l = ledger(Arc::clone(&vault));
    let mut table = BTreeMap::new();
    feed(
        &l,
        &mut table,
        vec![
            capture("HMARKT", "email", "active", 1),
            capture("HMARKT", "email", "revoked", 2),
        ],
    );
    let before = vault.reinstated.lock().unwrap().len();
    // An all-channel grant of marketing: the e-mail refusal stands.
    let all = {
        let c = ConsentEvent {
            consent_id: "cap-all".into(),
            subject_system: SYSTEM.into(),
            subject_value: MRN.into(),
            purpose: "HMARKT".into(),
            channel: "*".into(),
            state: "active".into(),
            version: 1,
            effective_ms: 600,
            expires_ms: None,
            source: "portal".into(),
            captured_by: None,
            notice_version: None,
        };
        avro::encode_consent_event(&c, 7).expect("encodes")
    };
    let outs = feed(&l, &mut table, vec![all]);
    assert_eq!(reasons(&outs), ["consent_apply"]);
    assert_eq!(
        vault.reinstated.lock().unwrap().len(),
        before,
        "still withdrawn on e-mail"
    );
    // A newer e-mail grant: nothing refuses any more.
    feed(
        &l,
        &mut table,
        vec![capture("HMARKT", "email", "active", 3)],
    );
    assert_eq!(vault.reinstated.lock().unwrap().len(), before + 1);
}
