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
    /// The record, newly sent; in place of a notice the destination
    /// holds (consent needed, or a retraction), if any.
    Backfill {
        key: RecordKey,
        supersedes: Option<Box<Disclosure>>,
    },
}

impl Action {
    pub fn key(&self) -> &RecordKey {
        match self {
            Action::Correct { key, .. }
            | Action::Retract { key, .. }
            | Action::Backfill { key, .. } => key,
        }
    }

    /// The disclosure this write replaces, if any.
    pub fn supersedes(&self) -> Option<&Disclosure> {
        match self {
            Action::Correct { supersedes, .. } | Action::Retract { supersedes, .. } => {
                Some(supersedes)
            }
            Action::Backfill { supersedes, .. } => supersedes.as_deref(),
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
        let now = replayed.records.get(*key);
        if is_retraction(&old.disclosure) && now.is_none() {
            plan.retracted += 1;
            continue;
        }
        if replayed.consent_withheld.contains(*key)
            && (!is_notice(&old.disclosure) || now.is_none())
        {
            // Denied, or downgraded to a "consent needed" notice: what the
            // destination holds of the subject is never corrected, never
            // retracted (a notice included: consent decides, not policy).
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
                    supersedes: Some(Box::new(old.disclosure.clone())),
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
            actions.push(Action::Backfill {
                key: key.clone(),
                supersedes: None,
            });
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
mod tests;
