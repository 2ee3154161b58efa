//! Revocations reaching the vault: shredding after expiry, and grants
//! that reinstate only where nothing else refuses.

use super::*;

/// A revocation after the consent expired (or was superseded) still
/// withdraws it: the table says revoked (route notifies), keys shredded.
#[test]
fn a_revocation_after_expiry_still_shreds() {
    let (vault, l, mut table) = fresh();
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

/// A grant on one channel does not lift the vault's tombstones while the
/// subject's refusal on another channel of the same code stands.
#[test]
fn a_grant_reinstates_only_where_nothing_else_refuses() {
    let (vault, l, mut table) = fresh();
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
