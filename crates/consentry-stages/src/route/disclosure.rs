//! Route's own table (`route.disclosed`): which destination received
//! which subject's data under which purpose, and the names the destination
//! knows the subject by, so a revocation can reach every one of them.

use consentry_core::stage::Outcome;
use serde::{Deserialize, Serialize};

/// Key prefix of route's own table.
pub const DISCLOSED_PREFIX: &str = "disclosed/";

/// What route remembers of a (subject, purpose, destination) it wrote to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disclosed {
    pub topic: String,
    /// The destination's name for the subject, if its records carry one.
    pub subject_reference: Option<String>,
    /// Names the destination got later (a deterministic token changes with
    /// a key rotation): a notice goes out under each.
    #[serde(default)]
    pub later_references: Vec<String>,
    pub first_ms: i64,
}

/// Notes on the audit record the keyed event id each destination record
/// carries, beside its keyed correlation id, so `audit trace` can start
/// from either.
pub(super) fn note_destination_ids(o: &mut Outcome) {
    for (a, out) in o.audit.outputs.iter_mut().zip(&o.outputs) {
        if !out.event.event_id.is_empty() {
            a.event_id = Some(out.event.event_id.clone());
        }
    }
}

/// At most this many names per destination are remembered (one per key
/// version a destination's tokens were made under, as a rule).
pub(super) const MAX_REFERENCES: usize = 16;

impl Disclosed {
    pub(super) fn references(&self) -> impl Iterator<Item = Option<&str>> {
        std::iter::once(self.subject_reference.as_deref())
            .chain(self.later_references.iter().map(|r| Some(r.as_str())))
    }
}

pub(super) fn disclosed_key(subject_token: &str, purpose: &str, destination: &str) -> String {
    format!("{DISCLOSED_PREFIX}{subject_token}/{purpose}/{destination}")
}
