//! Replay planning after a policy change: what each destination would
//! receive under a new policy, compared with what it did receive.
//!
//! The history (normalized events) runs through the stages after normalize
//! in process under the new topology, with today's consent table. Route's
//! disclosures are what each destination would receive; the disclosure
//! ledger is what it did receive. The two meet on (purpose, keyed event
//! id): the destination's event id is keyed per purpose (route), so the
//! plan keys every history event the same way. The plan's `Action`s, with
//! the records route would write (`Replayed::written`) and the
//! retraction notices of `apply`, are what `replay apply` writes. Pure:
//! the caller reads the topics, prints the plan and writes its actions.
//!
//! A record the new run withholds for consent (a deny by the gate,
//! tokenize or route's re-check) is no retraction: revocation notices
//! already told the destination, and replay never re-discloses.

mod compare;

mod apply;

pub use apply::{replay_id, retraction_notice, write_key, RECORD_RETRACTED, WRITER};
pub use compare::{compare, held_records, Action, Category, DestinationPlan, Held, Plan};

use crate::{run_from, BuildError, Services};
use consentry_core::audit::{AuditRecord, Decision};
use consentry_core::disclosure::Disclosure;
use consentry_core::envelope::{retain_fields, CanonicalEvent};
use consentry_core::stage::{Body, Output, StageInput, StageName, StateWrite};
use consentry_core::topology::Topology;
use consentry_crypto::token::{self, random_token, Token, VaultRefusal};
use consentry_crypto::{TokenVault, VaultUnavailable};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// (purpose, event id): where a record meets its disclosure.
pub type RecordKey = (String, String);

/// The audit trail as a map from each output back to its input: which
/// event a record written anywhere in the pipeline came from.
#[derive(Debug, Default)]
pub struct Lineage {
    /// Output idempotency key → (the input's key, the event id if the
    /// record names it).
    up: HashMap<String, (String, Option<String>)>,
}

/// Stages between normalize and a destination, plus slack: a walk longer
/// than this is a loop in hostile data, not a lineage.
const MAX_HOPS: usize = 8;

impl Lineage {
    pub fn add(&mut self, a: &AuditRecord) {
        let event = a.event_id.as_deref().filter(|e| !e.is_empty());
        for o in &a.outputs {
            self.up.insert(
                o.idempotency_key.to_string(),
                (a.idempotency_key.to_string(), event.map(String::from)),
            );
        }
    }

    /// The internal event id of the record written under `key`.
    pub fn event_of(&self, key: &str) -> Option<&str> {
        let mut key = key;
        for _ in 0..MAX_HOPS {
            let (input, event) = self.up.get(key)?;
            if let Some(e) = event {
                return Some(e);
            }
            key = input;
        }
        None
    }

    /// The internal event id an audit record decided on: its own, else
    /// its input's.
    pub fn event_of_decision<'a>(&'a self, a: &'a AuditRecord) -> Option<&'a str> {
        a.event_id
            .as_deref()
            .filter(|e| !e.is_empty())
            .or_else(|| self.event_of(&a.idempotency_key))
    }
}

/// One record at a destination: its disclosure, the fields it carries and
/// a fingerprint of their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub disclosure: Disclosure,
    pub fields: BTreeSet<String>,
    /// [`values_of`] the record, if it was read (`None`: only the ledger
    /// knows it, and only its fields are compared).
    pub values: Option<[u8; 32]>,
}

/// A digest of what a record says, for comparing a record with what a new
/// policy would make of it: its values as JSON, less what differs between
/// two runs without saying anything different (the policy version, token
/// bodies: a planning run issues no real linkage tokens).
pub fn values_of(ev: &CanonicalEvent) -> [u8; 32] {
    fn mask(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) if Token::parse(s).is_ok() => *s = token::PREFIX.into(),
            serde_json::Value::Array(items) => items.iter_mut().for_each(mask),
            serde_json::Value::Object(map) => map.values_mut().for_each(mask),
            _ => {}
        }
    }
    let mut ev = ev.clone();
    ev.policy_version = Default::default();
    let mut json = serde_json::to_value(&ev).unwrap_or_default();
    mask(&mut json);
    let mut d = consentry_core::keys::ContentDigest::new();
    d.update(json.to_string().as_bytes());
    d.finish()
}

/// The dotted paths `ev` carries a value at (`codes.code`: array items
/// share their array's path).
pub fn fields_of(ev: &CanonicalEvent) -> BTreeSet<String> {
    retain_fields(ev, |_| false).1.into_iter().collect()
}

/// What the new policy does with the history.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The new policy's version: a record already disclosed under it was
    /// processed by stages running the new policy, and replay leaves it.
    pub policy_version: String,
    /// What route would write under the new policy, by record.
    pub records: BTreeMap<RecordKey, Record>,
    /// Records the new run withholds for consent, or sends only as a
    /// "consent needed" notice.
    pub consent_withheld: BTreeSet<RecordKey>,
    /// Records the new run quarantines (none of them is a retraction).
    pub quarantined: BTreeSet<RecordKey>,
    /// Every record the history could yield: each event under each purpose
    /// of either policy.
    pub history: BTreeSet<RecordKey>,
    /// What route would write for each record: the destination record and
    /// route's state writes (which destination knows which subject), for
    /// `replay apply`.
    pub written: BTreeMap<RecordKey, Written>,
}

/// One record route would write under the new policy.
#[derive(Clone)]
pub struct Written {
    pub output: Output,
    pub state: Vec<StateWrite>,
}

impl std::fmt::Debug for Written {
    // State values are route's own records of subjects: not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Written")
            .field("output", &self.output.idempotency_key)
            .field("state_writes", &self.state.len())
            .finish()
    }
}

/// Where a replay's history starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryFrom {
    /// What normalize wrote (`Body::Event`s): the input of consent-gate.
    Normalized,
    /// The raw source records (`Body::Raw`), normalized again under the
    /// new policy: for a change to the mapping itself.
    Source,
}

/// Runs `inputs` (see [`HistoryFrom`]) to route under `topology`, judging
/// consent by `consent_table` at `now_ms`. `purposes` names every purpose
/// of the old and the new policy, so a record of a retired purpose is
/// still recognized in the ledger.
pub fn replay(
    topology: &Topology,
    services: &Services,
    consent_table: &BTreeMap<String, Vec<u8>>,
    (from, mut inputs): (HistoryFrom, Vec<StageInput>),
    purposes: &BTreeSet<String>,
    now_ms: i64,
) -> Result<Replayed, ReplayError> {
    let key = |purpose: &str, event_id: &str| (purpose.to_string(), event_id.to_string());
    let mut out = Replayed {
        policy_version: topology.policy_version.clone(),
        ..Default::default()
    };
    for input in &mut inputs {
        if let Body::Event(ev) = &mut input.body {
            out.history
                .extend(purposes.iter().map(|p| key(p, &ev.event_id)));
            // As normalize would stamp it under the new policy: what the
            // new policy sends says which policy shaped it.
            if !ev.policy_version.is_empty() {
                ev.policy_version = topology.policy_version.as_str().into();
            }
        }
    }
    let first = match from {
        HistoryFrom::Normalized => StageName::ConsentGate,
        HistoryFrom::Source => StageName::Normalize,
    };
    let stages = run_from(topology, services, consent_table, first, inputs, now_ms)?;
    // From the source, the history is what normalize makes of it now.
    let normalized = stages
        .iter()
        .filter(|(name, _)| name == StageName::Normalize.as_str())
        .flat_map(|(_, outcomes)| outcomes.iter().flat_map(|o| &o.outputs));
    for o in normalized {
        out.history
            .extend(purposes.iter().map(|p| key(p, &o.event.event_id)));
    }
    let outcomes: Vec<_> = stages
        .into_iter()
        .flat_map(|(_, outcomes)| outcomes)
        .collect();
    let mut lineage = Lineage::default();
    for o in &outcomes {
        lineage.add(&o.audit);
    }
    for o in &outcomes {
        if let Some(q) = &o.quarantine {
            // A dependency that did not answer is no verdict: no plan.
            if q.reason == consentry_core::ReasonCode::Unavailable {
                return Err(ReplayError::Unavailable(o.audit.stage.to_string()));
            }
        }
        let withheld = matches!(o.audit.decision, Decision::Deny | Decision::Downgrade);
        if withheld || o.quarantine.is_some() {
            if let (Some(purpose), Some(event)) =
                (&o.audit.purpose, lineage.event_of_decision(&o.audit))
            {
                if withheld {
                    out.consent_withheld.insert(key(purpose, event));
                } else {
                    out.quarantined.insert(key(purpose, event));
                }
            }
        }
        for d in &o.disclosures {
            let Some(event) = lineage.event_of(&d.disclosure_id) else {
                continue;
            };
            let Some(written) = o
                .outputs
                .iter()
                .find(|w| w.idempotency_key == d.disclosure_id)
            else {
                continue;
            };
            let record = Record {
                fields: fields_of(&written.event),
                values: Some(values_of(&written.event)),
                disclosure: d.clone(),
            };
            out.written.insert(
                key(&d.purpose, event),
                Written {
                    output: written.clone(),
                    state: o.state.clone(),
                },
            );
            out.records.insert(key(&d.purpose, event), record);
        }
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("{0} could not reach a dependency while planning; nothing planned")]
    Unavailable(String),
}

/// A token vault for planning: it answers without remembering, so a plan
/// writes nothing to the vault either. Its tokens are well formed and
/// never compared: a plan compares which fields leave, not token values.
#[derive(Debug, Default)]
pub struct PlanningVault;

impl TokenVault for PlanningVault {
    fn subject_token(&self, domain: &str, _: &str, _: &[u8]) -> Result<String, VaultRefusal> {
        random_token(domain, 1)
            .map_err(|e| VaultRefusal::Unavailable(VaultUnavailable(e.to_string())))
    }

    fn register(&self, _: &str, _: &str, _: &str, _: &[u8]) -> Result<(), VaultRefusal> {
        Ok(())
    }

    fn shred(&self, _: &str, _: &str) -> Result<usize, VaultUnavailable> {
        Ok(0)
    }

    fn reinstate(&self, _: &str, _: &str) -> Result<(), VaultUnavailable> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
