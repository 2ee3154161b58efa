//! Each category of the plan, and the writes that carry it out.

use super::*;
use crate::consent_gate::CONSENT_NEEDED;

fn disclosure(purpose: &str, event: &str, fields: &[&str], profile: &str) -> Disclosure {
    Disclosure {
        disclosure_id: format!("{purpose}/{event}/{}/{profile}", fields.join("+")).into(),
        purpose: purpose.into(),
        event_id: Some(event.into()),
        event_type: "ADT^A01".into(),
        correlation_id: format!("c-{event}").into(),
        topic: format!("out.{purpose}").into(),
        fields: fields.iter().map(|f| (*f).into()).collect(),
        profile: profile.into(),
        ..Default::default()
    }
}

/// Values that follow from the fields and the profile, as in a record.
fn values(fields: &BTreeSet<String>, profile: &str) -> [u8; 32] {
    let mut d = consentry_core::keys::ContentDigest::new();
    for f in fields {
        d.update(f.as_bytes());
    }
    d.update(profile.as_bytes());
    d.finish()
}

fn record(purpose: &str, event: &str, fields: &[&str], profile: &str) -> Record {
    let d = disclosure(purpose, event, fields, profile);
    let fields: BTreeSet<String> = fields.iter().map(|f| f.to_string()).collect();
    Record {
        values: Some(values(&fields, profile)),
        fields,
        disclosure: d,
    }
}

/// What destinations hold: each disclosure's record as written (its
/// fields as listed unless `carried` says otherwise), except `gone`.
fn held(
    ledger: Vec<Disclosure>,
    carried: &[(&str, &[&str])],
    gone: &[&str],
) -> BTreeMap<RecordKey, Record> {
    let mut fields = HashMap::new();
    let mut vals = HashMap::new();
    for d in &ledger {
        let id = d.disclosure_id.to_string();
        if gone.contains(&id.as_str()) {
            continue;
        }
        let f: BTreeSet<String> = match carried.iter().find(|(c, _)| *c == id) {
            Some((_, f)) => f.iter().map(|x| x.to_string()).collect(),
            None => d.fields.iter().map(|x| x.to_string()).collect(),
        };
        vals.insert(id.clone(), values(&f, &d.profile));
        fields.insert(id, f);
    }
    let held = held_records(ledger, &Lineage::default(), &fields, &vals);
    assert!(held.unmatched.is_empty());
    held.records
}

fn key(p: &str, e: &str) -> RecordKey {
    (p.to_string(), e.to_string())
}

fn replayed(records: Vec<Record>, events: &[&str], purposes: &[&str]) -> Replayed {
    let mut r = Replayed {
        policy_version: "v2".into(),
        ..Default::default()
    };
    for p in purposes {
        for e in events {
            r.history.insert(key(p, e));
        }
    }
    for rec in records {
        let k = key(
            &rec.disclosure.purpose,
            rec.disclosure.event_id.as_deref().unwrap_or_default(),
        );
        r.records.insert(k, rec);
    }
    r
}

#[test]
fn each_record_lands_in_exactly_one_category() {
    let purposes: BTreeSet<String> = ["a", "b"].map(String::from).into();
    let mut later = disclosure("b", "e1", &["x", "z"], "limited_data_set");
    later.disclosed_at_ms = 2;
    let ledger = vec![
        disclosure("a", "e1", &["x", "y"], "safe_harbor"),
        disclosure("a", "e2", &["x", "y"], "safe_harbor"),
        disclosure("a", "e3", &["x"], "safe_harbor"),
        disclosure("a", "e4", &["x"], "safe_harbor"),
        disclosure("a", "e6", &["x"], "safe_harbor"),
        // Outside the replayed history: not counted.
        disclosure("a", "e9", &["x"], "safe_harbor"),
        // The latest disclosure (a correction) stands for what the
        // destination holds, whatever the order read.
        later,
        disclosure("b", "e1", &["x"], "limited_data_set"),
    ];
    // e2's record had no `y`.
    let held = held(ledger, &[("a/e2/x+y/safe_harbor", &["x"])], &[]);
    let mut r = replayed(
        vec![
            record("a", "e1", &["x"], "safe_harbor"),
            record("a", "e2", &["x"], "safe_harbor"),
            record("a", "e5", &["x"], "safe_harbor"),
            record("b", "e1", &["x", "z"], "safe_harbor"),
        ],
        &["e1", "e2", "e3", "e4", "e5", "e6"],
        &["a", "b"],
    );
    r.consent_withheld.insert(key("a", "e4"));
    r.quarantined.insert(key("a", "e6"));

    let plan = compare(&held, &r, &purposes);
    let a = plan.destinations.iter().find(|d| d.purpose == "a").unwrap();
    assert_eq!((a.correct.records, a.unchanged), (1, 1));
    assert_eq!(a.correct.samples, ["c-e1"]);
    assert_eq!(a.fields_withheld, BTreeMap::from([("y".to_string(), 1)]));
    assert!(a.fields_released.is_empty());
    assert_eq!(
        (a.retract.records, a.retract.samples.clone()),
        (1, vec!["c-e3".to_string()])
    );
    assert_eq!(
        (a.consent_withheld, a.would_quarantine, a.backfill.records),
        (1, 1, 1)
    );
    assert_eq!(a.backfill_consent_withheld, 0);
    let b = plan.destinations.iter().find(|d| d.purpose == "b").unwrap();
    assert_eq!((b.correct.records, b.values_changed), (1, 1));
    assert!(b.fields_withheld.is_empty() && b.fields_released.is_empty());
    assert_eq!(
        b.profile_changes,
        BTreeMap::from([("limited_data_set -> safe_harbor".to_string(), 1)])
    );
    assert_eq!(plan.changes(), 4);
    // The writes that carry it out: one per change, in record order,
    // each correction and retraction naming what it supersedes.
    let writes: Vec<(&str, &RecordKey, Option<&str>)> = plan
        .actions
        .iter()
        .map(|a| match a {
            Action::Correct { key, supersedes } => {
                ("correct", key, Some(supersedes.disclosure_id.as_str()))
            }
            Action::Retract { key, supersedes } => {
                ("retract", key, Some(supersedes.disclosure_id.as_str()))
            }
            Action::Backfill { key, supersedes } => (
                "backfill",
                key,
                supersedes.as_ref().map(|d| d.disclosure_id.as_str()),
            ),
        })
        .collect();
    assert_eq!(
        writes,
        [
            ("correct", &key("a", "e1"), Some("a/e1/x+y/safe_harbor")),
            ("retract", &key("a", "e3"), Some("a/e3/x/safe_harbor")),
            ("backfill", &key("a", "e5"), None),
            (
                "correct",
                &key("b", "e1"),
                Some("b/e1/x+z/limited_data_set")
            ),
        ]
    );
    assert_eq!(
        plan.destinations[0].purpose, "a",
        "the biggest change first"
    );
}

#[test]
fn a_retracted_record_stays_retracted_until_the_policy_sends_it_again() {
    let purposes: BTreeSet<String> = ["a".to_string()].into();
    let mut notice = disclosure("a", "e1", &[], "safe_harbor");
    notice.event_type = super::super::RECORD_RETRACTED.into();
    notice.disclosed_at_ms = 2;
    let held = held(
        vec![disclosure("a", "e1", &["x"], "safe_harbor"), notice],
        &[],
        &[],
    );
    let plan = compare(&held, &replayed(vec![], &["e1"], &["a"]), &purposes);
    assert_eq!(
        (plan.destinations[0].retracted, plan.changes()),
        (1, 0),
        "retracted once, not again"
    );
    assert!(plan.actions.is_empty());
    let back = replayed(
        vec![record("a", "e1", &["x"], "safe_harbor")],
        &["e1"],
        &["a"],
    );
    let plan = compare(&held, &back, &purposes);
    assert!(matches!(
        &plan.actions[..],
        [Action::Backfill { key: k, supersedes: Some(d) }]
            if *k == key("a", "e1") && d.event_type == super::super::RECORD_RETRACTED
    ));
}

#[test]
fn the_same_fields_with_other_values_are_a_correction() {
    let purposes: BTreeSet<String> = ["a".to_string()].into();
    let held = held(vec![disclosure("a", "e1", &["x"], "safe_harbor")], &[], &[]);
    let mut new = record("a", "e1", &["x"], "safe_harbor");
    new.values = Some([7; 32]);
    let plan = compare(&held, &replayed(vec![new], &["e1"], &["a"]), &purposes);
    let a = &plan.destinations[0];
    assert_eq!(
        (a.correct.records, a.values_changed, a.unchanged),
        (1, 1, 0)
    );
}

#[test]
fn consent_notices_are_never_corrections() {
    let purposes: BTreeSet<String> = ["a".to_string()].into();
    let mut notice = disclosure("a", "e2", &["event_type"], "aggregate_only");
    notice.event_type = CONSENT_NEEDED.into();
    let held = held(
        vec![disclosure("a", "e1", &["x"], "safe_harbor"), notice],
        &[],
        &[],
    );
    // e1's subject now gets only a notice (consent lapsed); e2's
    // consent now allows the record itself.
    let mut now_notice = record("a", "e1", &["event_type"], "aggregate_only");
    now_notice.disclosure.event_type = CONSENT_NEEDED.into();
    let mut r = replayed(
        vec![now_notice, record("a", "e2", &["x"], "safe_harbor")],
        &["e1", "e2"],
        &["a"],
    );
    r.consent_withheld.insert(key("a", "e1"));
    let plan = compare(&held, &r, &purposes);
    let a = &plan.destinations[0];
    assert_eq!(
        (a.consent_withheld, a.backfill.records, a.correct.records),
        (1, 1, 0)
    );
}

#[test]
fn a_notice_whose_subject_now_refuses_is_not_retracted() {
    let purposes: BTreeSet<String> = ["a".to_string()].into();
    let mut notice = disclosure("a", "e1", &["event_type"], "aggregate_only");
    notice.event_type = CONSENT_NEEDED.into();
    let held = held(vec![notice], &[], &[]);
    let mut r = replayed(vec![], &["e1"], &["a"]);
    r.consent_withheld.insert(key("a", "e1"));
    let plan = compare(&held, &r, &purposes);
    let a = &plan.destinations[0];
    assert_eq!((a.consent_withheld, a.retract.records), (1, 0));
    assert!(plan.actions.is_empty());
}

#[test]
fn records_past_their_topic_and_unnamed_events_are_never_planned_as_new() {
    let purposes: BTreeSet<String> = ["a".to_string()].into();
    let gone = disclosure("a", "e1", &["x"], "safe_harbor");
    let id = gone.disclosure_id.to_string();
    let held_now = held(vec![gone], &[], &[id.as_str()]);
    let r = replayed(
        vec![record("a", "e1", &["x", "y"], "safe_harbor")],
        &["e1"],
        &["a"],
    );
    let plan = compare(&held_now, &r, &purposes);
    let a = &plan.destinations[0];
    assert_eq!(
        (a.shape_unknown, a.backfill.records, a.correct.records),
        (1, 0, 0)
    );

    let mut nameless = disclosure("a", "e1", &["x"], "safe_harbor");
    nameless.event_id = None;
    let held = held_records(
        [nameless],
        &Lineage::default(),
        &HashMap::new(),
        &HashMap::new(),
    );
    assert_eq!(held.unmatched, BTreeMap::from([("a".to_string(), 1)]));
}

#[test]
fn records_written_under_the_new_policy_are_left_as_they_are() {
    let purposes: BTreeSet<String> = ["a".to_string()].into();
    let mut current = disclosure("a", "e1", &["x"], "safe_harbor");
    current.policy_version = "v2".into();
    let mut older = disclosure("a", "e2", &["x", "y"], "safe_harbor");
    older.policy_version = "v1".into();
    let held = held(vec![current, older], &[], &[]);
    let r = replayed(
        vec![
            record("a", "e1", &["x"], "safe_harbor"),
            record("a", "e2", &["x"], "safe_harbor"),
        ],
        &["e1", "e2"],
        &["a"],
    );
    let plan = compare(&held, &r, &purposes);
    let a = &plan.destinations[0];
    assert_eq!(
        (a.already_current, a.unchanged, a.correct.records),
        (1, 0, 1)
    );
    assert_eq!(a.correct.samples, ["c-e2"]);
}
