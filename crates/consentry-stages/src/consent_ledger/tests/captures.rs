//! The internal capture form: the consent state machine, and refusals
//! quarantined by field.

use super::*;

#[test]
fn captures_walk_the_state_machine_and_refusals_are_quarantined() {
    let (vault, l, mut table) = fresh();
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
