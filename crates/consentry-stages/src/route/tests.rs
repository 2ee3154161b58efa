//! route against the shipped topology: allowlists, keyed ids, the
//! disclosure ledger, the consent re-check and revocation notices.

use super::*;
use consentry_core::audit::DISCLOSED_AFTER_REVOCATION;
use consentry_core::consent::ConsentEntry;
use consentry_core::consent::ConsentReason;
use consentry_core::consent::{ConsentChange, ConsentStatus, Transition};
use consentry_core::stage::{apply_writes, Body, InputMeta, NoState};
use consentry_core::CanonicalEvent;

const SUBJECT: &str = "tok:subject:v1:BBBB";

fn ring() -> KeyRing {
    KeyRing::from_key(consentry_crypto::Environment::NonProduction, [7; 32])
}

fn make(t: &Topology) -> Route {
    Route::new(t, Some(&ring())).expect("route builds")
}

/// Every id-like value on a destination record is keyed: the patient-
/// support record keeps `event_id` and `correlation_id` on its
/// allowlist, and neither is the internal (source-derived) value; a
/// second key ring gives other ids for the same record.
#[test]
fn ids_that_leave_are_keyed_per_purpose_and_ring() {
    let t = topology();
    let active = table(&t, ConsentStatus::Active, 1);
    let run = |ring: &KeyRing| {
        Route::new(&t, Some(ring))
            .unwrap()
            .process(&input(event("patient-support"), Some("ik1-in")), &active)
            .remove(0)
            .outputs
            .remove(0)
    };
    let a = run(&ring());
    assert_eq!(a.topic, "out.patient-support");
    let ev = &a.event;
    assert!(ev.event_id.starts_with("ev1-") && ev.event_id != "e1");
    assert_eq!(ev.correlation_id, a.correlation_id);
    assert_ne!(ev.correlation_id, "c1");
    let b = run(&KeyRing::from_key(
        consentry_crypto::Environment::NonProduction,
        [8; 32],
    ));
    for (x, y) in [
        (&a.key, &b.key),
        (&a.idempotency_key, &b.idempotency_key),
        (&a.event.event_id, &b.event.event_id),
        (&a.event.correlation_id, &b.event.correlation_id),
    ] {
        assert_ne!(x, y);
    }
    assert_eq!(run(&ring()), a, "the same ring: the same ids (replays)");
    // The audit record names both destination ids, for `audit trace`.
    let o = make(&t)
        .process(&input(event("patient-support"), Some("ik1-in")), &active)
        .remove(0);
    let noted = &o.audit.outputs[0];
    assert_eq!(noted.event_id.as_deref(), Some(a.event.event_id.as_str()));
    assert_eq!(
        noted.correlation_id.as_deref(),
        Some(a.correlation_id.as_str())
    );
    assert!(Route::new(&t, None).is_err(), "no ring, no route");
}

/// A consent table where the subject has consented to every code.
fn table(t: &Topology, status: ConsentStatus, version: i64) -> BTreeMap<String, Vec<u8>> {
    t.purposes
        .values()
        .map(|p| {
            let change = ConsentChange {
                status: ConsentStatus::Active,
                version: Some(version),
                updated_ms: None,
                issued_ms: None,
                dated: true,
                reference: "Consent/c1".into(),
                permit: true,
                effective_ms: 10,
                period_start_ms: None,
                period_end_ms: None,
                provisions: Vec::new(),
                source: "ehr".into(),
                captured_by: None,
                notice_version: None,
                received_ms: 20,
            };
            let Transition::Apply(e) = consent::transition(None, &change) else {
                panic!("applies")
            };
            let e = ConsentEntry { status, ..*e };
            (
                consent::table_key(SUBJECT, &p.consent_code, "*"),
                e.encode(),
            )
        })
        .collect()
}

/// The subject's HRESCH consent (trial recruitment and registry research)
/// revoked as its version 2; returns its table key.
fn revoke_research(state: &mut BTreeMap<String, Vec<u8>>) -> String {
    let key = consent::table_key(SUBJECT, "HRESCH", "*");
    let revoked = ConsentEntry {
        status: ConsentStatus::Revoked,
        version: Some(2),
        ..ConsentEntry::decode(&state[&key]).unwrap()
    };
    state.insert(key.clone(), revoked.encode());
    key
}

fn topology() -> Topology {
    crate::test_fixtures::topology()
}

fn input(ev: CanonicalEvent, key: Option<&str>) -> StageInput {
    StageInput {
        meta: InputMeta {
            topic: "events.tokenized".into(),
            partition: 0,
            offset: 7,
            key: None,
            idempotency_key: key.map(String::from),
            correlation_id: Some("corr".into()),
            ..Default::default()
        },
        body: Body::Event(Box::new(ev)),
    }
}

fn event(purpose: &str) -> CanonicalEvent {
    CanonicalEvent {
        event_id: "e1".into(),
        event_type: "ADT^A01".into(),
        correlation_id: "c1".into(),
        policy_version: "p1".into(),
        purpose: Some(purpose.into()),
        subject_key: "tok:crm:v1:AAAA".into(),
        subject_token: Some(SUBJECT.into()),
        consent_basis: Some("Consent/c1@v1/*".into()),
        note: Some("free text".into()),
        ..Default::default()
    }
}

#[test]
fn keeps_only_the_allowlist_and_records_the_disclosure() {
    let t = topology();
    let active = table(&t, ConsentStatus::Active, 1);
    let o = make(&t)
        .process(&input(event("marketing"), Some("ik1-in")), &active)
        .remove(0);
    assert_eq!(o.quarantine, None);
    let out = &o.outputs[0];
    assert_eq!(out.topic, "out.marketing");
    // Keyed ids: the internal correlation id "c1" never leaves.
    let ids = DestinationIds::new(&ring(), ["marketing"]).unwrap();
    let keyed = ids.id("marketing", IdKind::Correlation, "c1").unwrap();
    assert_eq!(
        (out.key.as_str(), out.correlation_id.as_str()),
        (keyed.as_str(), keyed.as_str())
    );
    assert!(out.idempotency_key.starts_with("ik2-"));
    // The audit record maps the destination's id back to the internal one.
    assert_eq!(o.audit.correlation_id.as_deref(), Some("c1"));
    assert_eq!(
        o.audit.outputs[0].correlation_id.as_deref(),
        Some(keyed.as_str())
    );
    assert_eq!(o.audit.outputs[0].idempotency_key, out.idempotency_key);
    assert_eq!(
        o.audit.outputs[0].event_id, None,
        "marketing keeps no event_id"
    );
    let ev = &out.event;
    assert_eq!(
        (
            ev.event_type.as_str(),
            ev.policy_version.as_str(),
            ev.purpose.as_deref()
        ),
        ("ADT^A01", "p1", Some("marketing"))
    );
    assert!(ev.event_id.is_empty() && ev.subject_key.is_empty());
    assert_eq!((ev.note.as_ref(), ev.subject_token.as_ref()), (None, None));
    let withheld: Vec<_> = o
        .audit
        .transformations
        .iter()
        .filter(|s| s.method == "withhold")
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(
        withheld,
        [
            "consent_basis",
            "correlation_id",
            "event_id",
            "note",
            "subject_key",
            "subject_token"
        ]
    );
    // What the record carries, by class, for the footprint metrics.
    assert_eq!(o.released.len(), 1);
    assert_eq!(o.released[0].purpose, "marketing");
    // event_type, policy_version and purpose: the allowlisted fields that
    // hold a value (the allowlist names more).
    assert_eq!(
        o.released[0].fields,
        [(consentry_core::topology::FieldClass::Operational, 3)].into()
    );
    let d = &o.disclosures[0];
    assert_eq!(d.subject_token, "tok:subject:v1:BBBB");
    assert_eq!(
        (d.purpose.as_str(), d.destination.as_str()),
        ("marketing", "crm-marketing")
    );
    assert_eq!(d.disclosure_id, out.idempotency_key);
    assert!(!d.phi);
    assert_eq!(o.audit.profile.as_deref(), Some("aggregate-only"));
    assert_eq!(
        (d.consent_reference.as_deref(), d.consent_version.as_deref()),
        (Some("Consent/c1"), Some("v1"))
    );
    assert_eq!(
        (
            o.audit.consent_reference.as_deref(),
            o.audit.consent_version.as_deref()
        ),
        (Some("Consent/c1"), Some("v1"))
    );
    // The first disclosure to a destination is remembered for fan-out.
    assert_eq!(o.state.len(), 1);
    assert_eq!(
        o.state[0].key,
        format!("disclosed/{SUBJECT}/marketing/crm-marketing")
    );
}

/// Events already past the gate are stopped when the consent they were
/// allowed on has changed; a record without a basis never leaves.
#[test]
fn route_rechecks_the_consent_the_gate_used() {
    let t = topology();
    let route = make(&t);
    let ps = |table: &BTreeMap<String, Vec<u8>>, ev: CanonicalEvent| {
        route.process(&input(ev, Some("ik1-in")), table).remove(0)
    };
    for (table, why) in [
        (table(&t, ConsentStatus::Revoked, 1), ConsentReason::Revoked),
        (table(&t, ConsentStatus::Active, 2), ConsentReason::Changed),
        (table(&t, ConsentStatus::Expired, 1), ConsentReason::Expired),
        (BTreeMap::new(), ConsentReason::Unknown),
    ] {
        let o = ps(&table, event("patient-support"));
        assert!(o.outputs.is_empty() && o.disclosures.is_empty(), "{why}");
        assert_eq!(
            (o.audit.decision.as_str(), o.audit.reason_code.as_str()),
            ("deny", why.as_str())
        );
        assert!(o.quarantine.is_none() && o.state.is_empty());
    }
    let mut no_basis = event("patient-support");
    no_basis.consent_basis = None;
    let o = ps(&table(&t, ConsentStatus::Active, 1), no_basis);
    assert_eq!(
        (o.audit.decision.as_str(), o.audit.reason_code.as_str()),
        ("deny", ConsentReason::Unknown.as_str())
    );
    // A "consent needed" notice has no basis, and goes unless refused.
    let mut notice = event("marketing");
    notice.consent_basis = None;
    notice.event_type = crate::consent_gate::CONSENT_NEEDED.into();
    let sent = ps(&BTreeMap::new(), notice.clone());
    assert_eq!(sent.outputs.len(), 1);
    assert!(sent.state.is_empty(), "a notice is no disclosure to revoke");
    assert!(ps(&table(&t, ConsentStatus::Revoked, 1), notice)
        .outputs
        .is_empty());
}

/// A revocation reaches every destination that received the subject's
/// data under the code's purposes, once, naming the subject as the
/// destination knows it.
#[test]
fn revocations_fan_out_to_every_destination_that_received_data() {
    let t = topology();
    let route = make(&t);
    let mut state = table(&t, ConsentStatus::Active, 1);
    for purpose in [
        "patient-support",
        "trial-recruitment",
        "registry-research",
        "marketing",
    ] {
        let mut ev = event(purpose);
        ev.subject_key = format!("tok:{purpose}:v1:AAAA").into();
        let o = route
            .process(&input(ev.clone(), Some(&format!("ik-{purpose}"))), &state)
            .remove(0);
        assert_eq!(o.outputs.len(), 1, "{purpose}");
        apply_writes(&mut state, &o.state);
        // A later record of the subject: trial-recruitment's at 30 ms,
        // after the revocation arrived (20 ms) but before route's table
        // showed it; the registry's at 15 ms, before.
        let later = match purpose {
            "trial-recruitment" => 30,
            "registry-research" => 15,
            _ => continue,
        };
        let mut second = input(ev, Some(&format!("ik-{purpose}-2")));
        second.meta.now_ms = later;
        let o = route.process(&second, &state).remove(0);
        assert_eq!(o.outputs.len(), 1, "{purpose}");
        apply_writes(&mut state, &o.state);
    }
    let all = |_: &str, _: i32| true;
    assert!(
        route.on_state_change(None, &state, &all).is_empty(),
        "nothing revoked yet"
    );
    // HRESCH covers trial-recruitment and registry-research.
    let key = revoke_research(&mut state);
    let notices = route.on_state_change(Some(std::slice::from_ref(&key)), &state, &all);
    let mut topics: Vec<_> = notices
        .iter()
        .map(|o| o.outputs[0].topic.to_string())
        .collect();
    topics.sort();
    assert_eq!(topics, ["out.research-registry", "out.trial-recruitment"]);
    for o in &notices {
        let n = &o.outputs[0].event;
        assert_eq!(n.event_type, CONSENT_REVOKED);
        assert_eq!(o.audit.decision, Decision::RevocationNotice);
        assert_eq!(o.audit.consent_version.as_deref(), Some("v2"));
        assert_eq!(
            o.audit.event_time_ms,
            Some(20),
            "from the revocation's arrival"
        );
        // The trial destination knows the subject by its linkage token;
        // the registry's allowlist has subject_key too.
        assert!(n.subject_key.ends_with(":v1:AAAA"), "{}", n.subject_key);
        assert!(n.subject_token.is_none() && n.consent_basis.is_none());
        let flagged = o
            .audit
            .transformations
            .iter()
            .any(|t| t.method == "flag" && t.params == DISCLOSED_AFTER_REVOCATION);
        assert_eq!(
            flagged,
            o.outputs[0].topic == "out.trial-recruitment",
            "only data disclosed after the revocation arrived is flagged"
        );
        apply_writes(&mut state, &o.state);
    }
    // Sent once: the disclosures on record are cleared.
    assert!(route.on_state_change(None, &state, &all).is_empty());
    // Not this instance's subject: another instance writes the notice.
    let none = |_: &str, _: i32| false;
    let key = consent::table_key(SUBJECT, "CAREMGT", "*");
    state.remove(&key);
    assert!(route
        .on_state_change(Some(std::slice::from_ref(&key)), &state, &none)
        .is_empty());
    // An erasure is a revocation too.
    let erased = route.on_state_change(Some(&[key]), &state, &all);
    assert_eq!(erased.len(), 1);
    assert_eq!(erased[0].outputs[0].topic, "out.patient-support");
    assert_eq!(erased[0].audit.reason_code, "consent_erased");
}

/// After a key rotation a destination may know the subject by a second
/// token (deterministic tokens follow the active version): route adds
/// it, and the revocation reaches the destination under both names. An
/// unreadable consent entry notifies too, never leaving a destination
/// in the dark.
#[test]
fn notices_reach_every_name_a_destination_knows_the_subject_by() {
    let t = topology();
    let route = make(&t);
    let mut state = table(&t, ConsentStatus::Active, 1);
    for (i, token) in [
        "tok:registry:v1:OLD",
        "tok:registry:v2:NEW",
        "tok:registry:v2:NEW",
    ]
    .into_iter()
    .enumerate()
    {
        let mut ev = event("registry-research");
        ev.subject_key = token.into();
        let o = route
            .process(&input(ev, Some(&format!("ik-{i}"))), &state)
            .remove(0);
        apply_writes(&mut state, &o.state);
        // The third, a name already known, writes nothing.
        assert_eq!(o.state.len(), usize::from(i < 2), "{token}");
    }
    let key = revoke_research(&mut state);
    let all = |_: &str, _: i32| true;
    let notices = route.on_state_change(Some(std::slice::from_ref(&key)), &state, &all);
    assert_eq!(notices.len(), 1);
    let names: Vec<&str> = notices[0]
        .outputs
        .iter()
        .map(|o| o.event.subject_key.as_str())
        .collect();
    assert_eq!(names, ["tok:registry:v1:OLD", "tok:registry:v2:NEW"]);
    assert_ne!(notices[0].outputs[0].key, notices[0].outputs[1].key);

    // An unreadable entry: the destination is told.
    let mut state = table(&t, ConsentStatus::Active, 1);
    let mut ev = event("registry-research");
    ev.subject_key = "tok:registry:v1:OLD".into();
    let o = route.process(&input(ev, Some("ik-x")), &state).remove(0);
    apply_writes(&mut state, &o.state);
    state.insert(key.clone(), b"{not json".to_vec());
    let notices = route.on_state_change(Some(std::slice::from_ref(&key)), &state, &all);
    assert_eq!(notices.len(), 1);
    assert_eq!(
        notices[0].audit.reason_code,
        ConsentReason::Unreadable.as_str()
    );
}

#[test]
fn phi_purposes_are_labelled_in_the_ledger() {
    let t = topology();
    let o = make(&t)
        .process(
            &input(event("patient-support"), Some("ik1-in")),
            &table(&t, ConsentStatus::Active, 1),
        )
        .remove(0);
    assert!(o.disclosures[0].phi);
    assert_eq!(
        o.disclosures[0].subject_reference.as_deref(),
        Some("tok:crm:v1:AAAA")
    );
    assert_eq!(o.outputs[0].event.subject_key, "tok:crm:v1:AAAA");
}

#[test]
fn no_pseudonym_or_no_key_is_quarantined() {
    let t = topology();
    let mut ev = event("marketing");
    ev.subject_token = None;
    let o = make(&t)
        .process(&input(ev, Some("ik1-in")), &NoState)
        .remove(0);
    assert_eq!(
        o.quarantine.map(|q| (q.reason, q.detail)),
        Some((ReasonCode::MissingField, "subject_token".into()))
    );
    assert!(o.outputs.is_empty() && o.disclosures.is_empty());
    let o = make(&t)
        .process(&input(event("marketing"), None), &NoState)
        .remove(0);
    assert_eq!(
        o.quarantine.map(|q| (q.reason, q.detail)),
        Some((ReasonCode::MissingHeader, "idempotency-key".into()))
    );
}
