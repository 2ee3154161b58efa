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
    /// The destination's correlation ids of the first few records.
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
    /// Records it holds whose subject's consent now withholds them: no
    /// correction and no retraction (revocation notices told it already).
    pub consent_withheld: u64,
    /// Records it holds as the new policy shapes them, written by stages
    /// already running it (a rolling switch-over): nothing to do.
    pub already_current: u64,
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

/// Every destination's plan, the biggest change first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub destinations: Vec<DestinationPlan>,
}

impl Plan {
    pub fn changes(&self) -> u64 {
        self.destinations.iter().map(DestinationPlan::changes).sum()
    }
}

/// What destinations hold, from the disclosure ledger (in the order
/// written: a later disclosure of a record, a correction, stands for what
/// the destination holds now), each finding its event through `lineage`
/// (else its own event id), and the fields of the records written
/// (`fields`, by disclosure id; a record not found counts with the fields
/// its disclosure lists). A disclosure whose event neither names is left
/// out.
pub fn held_records(
    ledger: impl IntoIterator<Item = Disclosure>,
    lineage: &Lineage,
    fields: &HashMap<String, BTreeSet<String>>,
) -> BTreeMap<RecordKey, Record> {
    let mut held = BTreeMap::new();
    for d in ledger {
        let Some(event) = lineage
            .event_of(&d.disclosure_id)
            .map(String::from)
            .or_else(|| d.event_id.as_deref().map(String::from))
        else {
            continue;
        };
        let carried = fields
            .get(d.disclosure_id.as_str())
            .cloned()
            .unwrap_or_else(|| d.fields.iter().map(|f| f.to_string()).collect());
        held.insert(
            (d.purpose.to_string(), event.to_string()),
            Record {
                disclosure: d,
                fields: carried,
            },
        );
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
    for (key, old) in &held {
        let Some(plan) = plans.get_mut(key.0.as_str()) else {
            continue;
        };
        let current = old.disclosure.policy_version == replayed.policy_version.as_str();
        match replayed.records.get(*key) {
            Some(new) if same_shape(old, new) && current => plan.already_current += 1,
            Some(new) if same_shape(old, new) => plan.unchanged += 1,
            Some(new) => {
                plan.correct.add(&old.disclosure);
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
            None if replayed.consent_withheld.contains(*key) => plan.consent_withheld += 1,
            None => plan.retract.add(&old.disclosure),
        }
    }
    for (key, new) in &replayed.records {
        if held.contains_key(key) {
            continue;
        }
        if let Some(plan) = plans.get_mut(key.0.as_str()) {
            plan.backfill.add(&new.disclosure);
        }
    }
    let mut destinations: Vec<DestinationPlan> = plans.into_values().collect();
    destinations.sort_by(|a, b| {
        b.changes()
            .cmp(&a.changes())
            .then(a.purpose.cmp(&b.purpose))
    });
    Plan { destinations }
}

/// Whether a record would reach its destination as it did: the same
/// fields under the same profile at the same topic (values follow from
/// the profile; tokens are not compared).
fn same_shape(old: &Record, new: &Record) -> bool {
    old.fields == new.fields
        && old.disclosure.profile == new.disclosure.profile
        && old.disclosure.topic == new.disclosure.topic
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disclosure(purpose: &str, event: &str, fields: &[&str], profile: &str) -> Disclosure {
        Disclosure {
            disclosure_id: format!("{purpose}/{event}/{}", fields.join("+")).into(),
            purpose: purpose.into(),
            event_id: Some(event.into()),
            correlation_id: format!("c-{event}").into(),
            topic: format!("out.{purpose}").into(),
            fields: fields.iter().map(|f| (*f).into()).collect(),
            profile: profile.into(),
            ..Default::default()
        }
    }

    fn record(purpose: &str, event: &str, fields: &[&str], profile: &str) -> Record {
        Record {
            disclosure: disclosure(purpose, event, fields, profile),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    fn key(p: &str, e: &str) -> RecordKey {
        (p.to_string(), e.to_string())
    }

    #[test]
    fn each_record_lands_in_exactly_one_category() {
        let purposes: BTreeSet<String> = ["a", "b"].map(String::from).into();
        let ledger = vec![
            disclosure("a", "e1", &["x", "y"], "safe_harbor"),
            disclosure("a", "e2", &["x", "y"], "safe_harbor"),
            disclosure("a", "e3", &["x"], "safe_harbor"),
            disclosure("a", "e4", &["x"], "safe_harbor"),
            // Outside the replayed history: not counted.
            disclosure("a", "e9", &["x"], "safe_harbor"),
            // A later correction stands for what the destination holds.
            disclosure("b", "e1", &["x"], "limited_data_set"),
            disclosure("b", "e1", &["x", "z"], "limited_data_set"),
        ];
        // What the destination records carried, where it differs from the
        // ledger's list: e2's record had no `y`.
        let carried = HashMap::from([("a/e2/x+y".to_string(), BTreeSet::from(["x".to_string()]))]);
        let held = held_records(ledger, &Lineage::default(), &carried);
        let mut replayed = Replayed {
            policy_version: "v2".into(),
            ..Default::default()
        };
        for p in ["a", "b"] {
            for e in ["e1", "e2", "e3", "e4", "e5"] {
                replayed.history.insert(key(p, e));
            }
        }
        for r in [
            record("a", "e1", &["x"], "safe_harbor"),
            record("a", "e2", &["x"], "safe_harbor"),
            record("a", "e5", &["x"], "safe_harbor"),
            record("b", "e1", &["x", "z"], "safe_harbor"),
        ] {
            let k = key(
                &r.disclosure.purpose,
                r.disclosure.event_id.as_deref().unwrap_or_default(),
            );
            replayed.records.insert(k, r);
        }
        replayed.consent_withheld.insert(key("a", "e4"));

        let plan = compare(&held, &replayed, &purposes);
        let a = plan.destinations.iter().find(|d| d.purpose == "a").unwrap();
        assert_eq!((a.correct.records, a.unchanged), (1, 1));
        assert_eq!(a.correct.samples, ["c-e1"]);
        assert_eq!(a.fields_withheld, BTreeMap::from([("y".to_string(), 1)]));
        assert!(a.fields_released.is_empty());
        assert_eq!(
            (a.retract.records, a.retract.samples.clone()),
            (1, vec!["c-e3".to_string()])
        );
        assert_eq!(a.consent_withheld, 1);
        assert_eq!(a.backfill.records, 1);
        let b = plan.destinations.iter().find(|d| d.purpose == "b").unwrap();
        assert_eq!(b.correct.records, 1);
        assert!(b.fields_withheld.is_empty() && b.fields_released.is_empty());
        assert_eq!(
            b.profile_changes,
            BTreeMap::from([("limited_data_set -> safe_harbor".to_string(), 1)])
        );
        assert_eq!(plan.changes(), 4);
        assert_eq!(
            plan.destinations[0].purpose, "a",
            "the biggest change first"
        );
    }

    #[test]
    fn records_written_under_the_new_policy_are_left_as_they_are() {
        let purposes: BTreeSet<String> = ["a".to_string()].into();
        let mut current = disclosure("a", "e1", &["x"], "safe_harbor");
        current.policy_version = "v2".into();
        let mut older = disclosure("a", "e2", &["x", "y"], "safe_harbor");
        older.policy_version = "v1".into();
        let held = held_records([current, older], &Lineage::default(), &HashMap::new());
        let mut replayed = Replayed {
            policy_version: "v2".into(),
            ..Default::default()
        };
        for e in ["e1", "e2"] {
            replayed.history.insert(key("a", e));
            replayed
                .records
                .insert(key("a", e), record("a", e, &["x"], "safe_harbor"));
        }
        let plan = compare(&held, &replayed, &purposes);
        let a = &plan.destinations[0];
        assert_eq!(
            (a.already_current, a.unchanged, a.correct.records),
            (1, 0, 1)
        );
        assert_eq!(a.correct.samples, ["c-e2"]);
    }

    #[test]
    fn nothing_changes_when_the_new_run_sends_what_was_sent() {
        let purposes: BTreeSet<String> = ["a".to_string()].into();
        let held = held_records(
            [disclosure("a", "e1", &["x"], "safe_harbor")],
            &Lineage::default(),
            &HashMap::new(),
        );
        let mut replayed = Replayed {
            policy_version: "v2".into(),
            ..Default::default()
        };
        replayed.history.insert(key("a", "e1"));
        replayed
            .records
            .insert(key("a", "e1"), record("a", "e1", &["x"], "safe_harbor"));
        let plan = compare(&held, &replayed, &purposes);
        assert_eq!(plan.changes(), 0);
        assert_eq!(plan.destinations[0].unchanged, 1);
    }
}
