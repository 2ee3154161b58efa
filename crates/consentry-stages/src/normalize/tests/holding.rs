//! Records held until their Patient arrives: re-driven then, bounded, and
//! refused when the held bytes are not a held record.

use super::*;

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
