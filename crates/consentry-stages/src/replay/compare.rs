//! The plan: per destination, the records a new policy would newly send,
//! no longer send (to retract) and change, with the fields released or
//! withheld, and a few correlation ids per category (never a value).

use super::{Lineage, Record, RecordKey, Replayed};
use consentry_core::disclosure::Disclosure;
use serde::Serialize;
use std::collections::HashMap;
use std::collections::{BTreeMap, BTreeSet};

/// How many correlation ids a category names, for follow-up.
const SAMPLES: usize = 3;

/// One kind of change at one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Category {
    pub records: u64,
    /// Internal correlation ids of the first few records, for `consentry
    /// audit trace` (never to be handed to a destination: theirs are keyed).
    pub samples: Vec<String>,
}

impl Category {
    fn add(&mut self, d: &Disclosure) {
        self.records += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(d.correlation_id.to_string());
        }
    }
}

/// What would change at one destination (one purpose).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DestinationPlan {
    pub purpose: String,
    /// Records the destination would newly receive (a new or newly allowed
    /// purpose, a newly allowed event), subject to today's consent.
    pub backfill: Category,
    /// Records it holds that the new policy no longer sends it.
    pub retract: Category,
    /// Records it holds that the new policy shapes differently.
    pub correct: Category,
    /// Records it holds that stay as they are.
    pub unchanged: u64,
    /// Records an earlier replay retracted, which the new policy still
    /// does not send: nothing to do.
    pub retracted: u64,
    /// Records it holds whose subject's consent now withholds them: no
    /// correction and no retraction (revocation notices told it already).
    pub consent_withheld: u64,
    /// Records it never received that the new policy would send but
    /// today's consent withholds: no backfill.
    pub backfill_consent_withheld: u64,
    /// Records it holds as the new policy shapes them, normalized under
    /// the new policy version (a rolling switch-over): nothing to do.
    pub already_current: u64,
    /// Records it holds that the new policy would quarantine: neither
    /// corrected nor retracted; look at them first.
    pub would_quarantine: u64,
    /// Corrected records whose fields stay but whose values change (a
    /// de-identification setting, a token domain).
    pub values_changed: u64,
    /// Records the ledger names but the destination topic no longer holds
    /// (past its retention): their shape is unknown, so they are neither
    /// corrected nor sent again.
    pub shape_unknown: u64,
    /// Field → corrected records that would newly carry it.
    pub fields_released: BTreeMap<String, u64>,
    /// Field → corrected records that would no longer carry it.
    pub fields_withheld: BTreeMap<String, u64>,
    /// (profile before, profile after) → corrected records.
    pub profile_changes: BTreeMap<String, u64>,
}

impl DestinationPlan {
    /// Records that would be written: corrections, retractions, backfills.
    pub fn changes(&self) -> u64 {
        self.backfill.records + self.retract.records + self.correct.records
    }
}

/// One write `replay apply` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The record as the new policy shapes it, in place of `supersedes`.
    Correct {
        key: RecordKey,
        supersedes: Box<Disclosure>,
    },
    /// A notice that the record `supersedes` names is no longer sent.
    Retract {
        key: RecordKey,
        supersedes: Box<Disclosure>,
    },
    /// The record, newly sent.
    Backfill { key: RecordKey },
}

impl Action {
    pub fn key(&self) -> &RecordKey {
        match self {
            Action::Correct { key, .. }
            | Action::Retract { key, .. }
            | Action::Backfill { key } => key,
        }
    }
}

/// Every destination's plan, the biggest change first, and the writes
/// that would carry it out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub destinations: Vec<DestinationPlan>,
    /// In (purpose, event id) order.
    #[serde(skip)]
    pub actions: Vec<Action>,
}

impl Plan {
    pub fn changes(&self) -> u64 {
        self.destinations.iter().map(DestinationPlan::changes).sum()
    }
}

/// What destinations hold, by record.
#[derive(Debug, Default)]
pub struct Held {
    pub records: BTreeMap<RecordKey, Record>,
    /// Disclosures whose event neither the audit trail nor the disclosure
    /// names, by purpose. The plan cannot say what becomes of them (a
    /// record planned as new might be one of them), so a plan with any is
    /// no plan.
    pub unmatched: BTreeMap<String, u64>,
}

/// What destinations hold, from the disclosure ledger (the latest
/// disclosure of a record, a correction, stands for what the destination
/// holds now), each finding its event through `lineage` (else its own
/// event id), with the fields and values of the records written (`fields`
/// and `values`, by disclosure id). A record no longer on its topic keeps
/// its place (so it is never planned as new) with its shape unknown.
pub fn held_records(
    ledger: impl IntoIterator<Item = Disclosure>,
    lineage: &Lineage,
    fields: &HashMap<String, BTreeSet<String>>,
    values: &HashMap<String, [u8; 32]>,
) -> Held {
    let mut held = Held::default();
    for d in ledger {
        let Some(event) = lineage
            .event_of(&d.disclosure_id)
            .map(String::from)
            .or_else(|| d.event_id.as_deref().map(String::from))
        else {
            *held.unmatched.entry(d.purpose.to_string()).or_default() += 1;
            continue;
        };
        let key = (d.purpose.to_string(), event);
        if held
            .records
            .get(&key)
            .is_some_and(|r| r.disclosure.disclosed_at_ms > d.disclosed_at_ms)
        {
            continue;
        }
        let record = Record {
            fields: fields
                .get(d.disclosure_id.as_str())
                .cloned()
                .unwrap_or_default(),
            values: values.get(d.disclosure_id.as_str()).copied(),
            disclosure: d,
        };
        held.records.insert(key, record);
    }
    held
}

/// Compares what destinations hold (`held`, see [`held_records`]) with
/// what the new policy would send (`replayed`), over the records of the
/// replayed history only, for `purposes`.
pub fn compare(
    held: &BTreeMap<RecordKey, Record>,
    replayed: &Replayed,
    purposes: &BTreeSet<String>,
) -> Plan {
    let held: BTreeMap<&RecordKey, &Record> = held
        .iter()
        .filter(|(k, _)| replayed.history.contains(*k) && purposes.contains(&k.0))
        .collect();
    let mut plans: BTreeMap<&str, DestinationPlan> = purposes
        .iter()
        .map(|p| {
            (
                p.as_str(),
                DestinationPlan {
                    purpose: p.clone(),
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut actions = Vec::new();
    for (key, old) in &held {
        let Some(plan) = plans.get_mut(key.0.as_str()) else {
            continue;
        };
        let current = old.disclosure.policy_version == replayed.policy_version.as_str();
        if old.values.is_none() {
            plan.shape_unknown += 1;
            continue;
        }
        if replayed.consent_withheld.contains(*key) && !is_notice(&old.disclosure) {
            // Denied, or downgraded to a "consent needed" notice: a record
            // of the subject's is never corrected, never retracted.
            plan.consent_withheld += 1;
            continue;
        }
        match replayed.records.get(*key) {
            Some(new) if same_shape(old, new) && current => plan.already_current += 1,
            Some(new) if same_shape(old, new) => plan.unchanged += 1,
            // A notice the destination holds (consent needed, or a
            // retraction), where the record itself may now go: a first
            // disclosure, not a correction.
            Some(new)
                if (is_notice(&old.disclosure) || is_retraction(&old.disclosure))
                    && !is_notice(&new.disclosure) =>
            {
                plan.backfill.add(&new.disclosure);
                actions.push(Action::Backfill {
                    key: (*key).clone(),
                });
            }
            Some(new) => {
                plan.correct.add(&old.disclosure);
                actions.push(Action::Correct {
                    key: (*key).clone(),
                    supersedes: Box::new(old.disclosure.clone()),
                });
                if old.fields == new.fields {
                    plan.values_changed += 1;
                }
                for f in new.fields.difference(&old.fields) {
                    *plan.fields_released.entry(f.clone()).or_default() += 1;
                }
                for f in old.fields.difference(&new.fields) {
                    *plan.fields_withheld.entry(f.clone()).or_default() += 1;
                }
                let (before, after) = (&old.disclosure.profile, &new.disclosure.profile);
                if before != after {
                    *plan
                        .profile_changes
                        .entry(format!("{before} -> {after}"))
                        .or_default() += 1;
                }
            }
            None if is_retraction(&old.disclosure) => plan.retracted += 1,
            None if replayed.quarantined.contains(*key) => plan.would_quarantine += 1,
            None => {
                plan.retract.add(&old.disclosure);
                actions.push(Action::Retract {
                    key: (*key).clone(),
                    supersedes: Box::new(old.disclosure.clone()),
                });
            }
        }
    }
    for key in &replayed.consent_withheld {
        if held.contains_key(key) || replayed.records.contains_key(key) {
            continue;
        }
        if let Some(plan) = plans.get_mut(key.0.as_str()) {
            plan.backfill_consent_withheld += 1;
        }
    }
    for (key, new) in &replayed.records {
        if held.contains_key(key) {
            continue;
        }
        if let Some(plan) = plans.get_mut(key.0.as_str()) {
            plan.backfill.add(&new.disclosure);
            actions.push(Action::Backfill { key: key.clone() });
        }
    }
    actions.sort_by(|a, b| a.key().cmp(b.key()));
    let mut destinations: Vec<DestinationPlan> = plans.into_values().collect();
    destinations.sort_by(|a, b| {
        b.changes()
            .cmp(&a.changes())
            .then(a.purpose.cmp(&b.purpose))
    });
    Plan {
        destinations,
        actions,
    }
}

/// Whether a record would reach its destination as it did: the same
/// event type, fields, profile and topic, and the same values where both
/// are known (token bodies and the policy version aside).
fn same_shape(old: &Record, new: &Record) -> bool {
    old.fields == new.fields
        && old.disclosure.event_type == new.disclosure.event_type
        && old.disclosure.profile == new.disclosure.profile
        && old.disclosure.topic == new.disclosure.topic
        && old.values == new.values
}

/// Whether a disclosure is a replay's retraction notice.
fn is_retraction(d: &Disclosure) -> bool {
    d.event_type == super::RECORD_RETRACTED
}

/// Whether a disclosure is a "consent needed" notice rather than data.
fn is_notice(d: &Disclosure) -> bool {
    d.event_type == crate::consent_gate::CONSENT_NEEDED
}

#[cfg(test)]
mod tests {
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
                Action::Backfill { key } => ("backfill", key, None),
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
        assert_eq!(
            plan.actions,
            [Action::Backfill {
                key: key("a", "e1")
            }]
        );
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
}
