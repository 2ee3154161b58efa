//! The consent ledger's state machine: what a change does to the table's
//! entry for its key (apply, ignore as a duplicate, or refuse and why), and
//! which of two versions is the newer.

use super::decide::provision_decision;
use super::table::{revision_label, same_version_step, ConsentEntry, ConsentStatus};
use crate::envelope::{ConsentProvision, Text};
use crate::reason::ReasonCode;

/// What a source says about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    pub status: ConsentStatus,
    /// The document's version, where the source gives one.
    pub version: Option<i64>,
    /// When the document was last updated (`meta.lastUpdated`), where known.
    pub updated_ms: Option<i64>,
    /// When the document was issued (`dateTime`), where known.
    pub issued_ms: Option<i64>,
    /// The document (`Consent/<id>`, `capture/<id>`).
    pub reference: Text,
    pub permit: bool,
    /// When the decision took effect, the order among different documents
    /// (see `ConsentChange::effective`); never after its arrival.
    pub effective_ms: i64,
    /// Whether `effective_ms` is the document's own time (else its arrival).
    pub dated: bool,
    pub period_start_ms: Option<i64>,
    pub period_end_ms: Option<i64>,
    pub provisions: Vec<ConsentProvision>,
    pub source: Text,
    pub captured_by: Option<Text>,
    pub notice_version: Option<Text>,
    pub received_ms: i64,
}

/// Why the ledger refused a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a step of the state machine (from `None`: unknown).
    InvalidTransition {
        from: Option<ConsentStatus>,
        to: ConsentStatus,
    },
    /// Older than the version in the table (revisions as `ConsentEntry::
    /// revision` names them).
    StaleVersion { current: Text, got: Text },
    /// The same revision again, saying something that permits more: its
    /// order cannot be told, so the table keeps the stricter one.
    LooserSameRevision { revision: Text },
}

impl Refusal {
    pub fn reason(&self) -> ReasonCode {
        match self {
            Refusal::InvalidTransition { .. } => ReasonCode::InvalidTransition,
            Refusal::StaleVersion { .. } => ReasonCode::StaleVersion,
            Refusal::LooserSameRevision { .. } => ReasonCode::InvalidTransition,
        }
    }

    /// A PHI-free description: states and version numbers only.
    pub fn detail(&self) -> String {
        match self {
            Refusal::InvalidTransition { from, to } => format!(
                "{} -> {}",
                from.map_or("unknown", ConsentStatus::as_str),
                to.as_str()
            ),
            Refusal::StaleVersion { current, got } => {
                format!("{got} is older than the table's {current}")
            }
            Refusal::LooserSameRevision { revision } => {
                format!("{revision} again, permitting more: not taken")
            }
        }
    }
}

/// What the ledger does with a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The table's new value for the key.
    Apply(Box<ConsentEntry>),
    /// The same version in the same state again: nothing to do.
    Duplicate,
    Refuse(Refusal),
}

impl ConsentChange {
    pub fn revision(&self) -> Text {
        revision_label(
            self.version,
            self.updated_ms,
            self.issued_ms,
            self.effective_ms,
        )
    }

    pub fn is_refusal(&self) -> bool {
        self.status == ConsentStatus::Revoked || !self.permit
    }

    pub fn refuses(&self, code: &str) -> bool {
        self.is_refusal() || !provision_decision(self.permit, &self.provisions, code, &[]).0
    }

    /// When a decision took effect, from the document's times: a permit
    /// when it was issued (`dateTime`, else when last updated); a refusal
    /// when it was last made (the later of the two: revoking a document
    /// updates it, its `dateTime` may stay the original's). Never after
    /// `received_ms`: a future date cannot win ahead of its time. `None`
    /// when the document says nothing: the caller uses the arrival, and
    /// marks the change undated.
    pub fn effective(
        refusal: bool,
        issued_ms: Option<i64>,
        updated_ms: Option<i64>,
        received_ms: i64,
    ) -> Option<i64> {
        let t = if refusal {
            issued_ms.max(updated_ms)
        } else {
            issued_ms.or(updated_ms)
        }?;
        Some(t.min(received_ms))
    }

    /// Whether the change says the same as `e` besides its state: the
    /// same period and provisions.
    fn same_content(&self, e: &ConsentEntry) -> bool {
        self.period_start_ms == e.period_start_ms
            && self.period_end_ms == e.period_end_ms
            && self.provisions == e.provisions
    }

    /// Whether the change permits no more than `e`: a period no wider and
    /// every provision `e` had.
    fn no_looser_than(&self, e: &ConsentEntry) -> bool {
        let start_ok = match (self.period_start_ms, e.period_start_ms) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => a >= b,
        };
        let end_ok = match (self.period_end_ms, e.period_end_ms) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => a <= b,
        };
        start_ok && end_ok && e.provisions.iter().all(|p| self.provisions.contains(p))
    }
}

/// Where a change stands against the table's entry for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Older,
    /// The same revision of the same document (or one whose order cannot
    /// be told: a document without versions or times).
    Same,
    Newer,
}

/// Within one document: by version where both have one, else by update
/// time where both have one, else by issue time where both have one
/// (like with like, never one against the other), else the same.
///
/// Across documents, where both are dated: by effective time; at an equal
/// time a refusal wins, and otherwise the greater reference (so the
/// outcome never depends on arrival order). Where either is undated (the
/// document gave no time; its arrival stood in): a refusal wins over a
/// permit, and between two of a kind an undated one never supersedes a
/// dated one; two undated ones go by arrival.
pub fn order(cur: &ConsentEntry, change: &ConsentChange) -> Order {
    use std::cmp::Ordering::*;
    let by = |o: std::cmp::Ordering| match o {
        Less => Order::Older,
        Equal => Order::Same,
        Greater => Order::Newer,
    };
    if cur.reference == change.reference {
        return match (
            (cur.version, change.version),
            (cur.updated_ms, change.updated_ms),
            (cur.issued_ms, change.issued_ms),
        ) {
            ((Some(a), Some(b)), _, _) => by(b.cmp(&a)),
            (_, (Some(a), Some(b)), _) => by(b.cmp(&a)),
            (_, _, (Some(a), Some(b))) => by(b.cmp(&a)),
            _ => Order::Same,
        };
    }
    let refusal = (change.is_refusal(), cur.is_refusal());
    if cur.dated && change.dated {
        return match change.effective_ms.cmp(&cur.effective_ms) {
            Equal => match refusal {
                (true, false) => Order::Newer,
                (false, true) => Order::Older,
                _ => by(change.reference.cmp(&cur.reference)),
            },
            o => by(o),
        };
    }
    match refusal {
        (true, false) => Order::Newer,
        (false, true) => Order::Older,
        _ => match (cur.dated, change.dated) {
            (true, false) => Order::Older,
            (false, true) => Order::Newer,
            _ => match change.received_ms.cmp(&cur.received_ms) {
                Equal => by(change.reference.cmp(&cur.reference)),
                o => by(o),
            },
        },
    }
}

/// The state machine: what `change` does to the key's `current` entry.
pub fn transition(current: Option<&ConsentEntry>, change: &ConsentChange) -> Transition {
    let entry = |previous_revision| {
        Transition::Apply(Box::new(ConsentEntry {
            status: change.status,
            version: change.version,
            updated_ms: change.updated_ms,
            issued_ms: change.issued_ms,
            reference: change.reference.clone(),
            permit: change.permit,
            effective_ms: change.effective_ms,
            dated: change.dated,
            period_start_ms: change.period_start_ms,
            period_end_ms: change.period_end_ms,
            provisions: change.provisions.clone(),
            source: change.source.clone(),
            captured_by: change.captured_by.clone(),
            notice_version: change.notice_version.clone(),
            previous_revision,
            received_ms: change.received_ms,
        }))
    };
    let refuse = |from| {
        Transition::Refuse(Refusal::InvalidTransition {
            from,
            to: change.status,
        })
    };
    let Some(cur) = current else {
        return if change.status.is_entry() {
            entry(None)
        } else {
            refuse(None)
        };
    };
    match order(cur, change) {
        Order::Older => Transition::Refuse(Refusal::StaleVersion {
            current: cur.revision(),
            got: change.revision(),
        }),
        Order::Same
            if change.status == cur.status
                && change.permit == cur.permit
                && change.same_content(cur) =>
        {
            Transition::Duplicate
        }
        // Other content at the same revision (a re-send whose order
        // cannot be told): taken only if it permits no more, the most
        // restrictive reading; otherwise held for review.
        Order::Same if change.status == cur.status && change.permit == cur.permit => {
            if change.no_looser_than(cur) {
                entry(cur.previous_revision.clone())
            } else {
                Transition::Refuse(Refusal::LooserSameRevision {
                    revision: cur.revision(),
                })
            }
        }
        Order::Same => {
            // A refusal of the same revision (a document that turned from
            // permit to deny without a new version) is taken like a
            // revocation: the most restrictive reading.
            let step = same_version_step(cur.status, change.status)
                || (change.status == cur.status && !change.permit);
            if step {
                entry(cur.previous_revision.clone())
            } else {
                refuse(Some(cur.status))
            }
        }
        // A newer revision or document: a new consent (superseding, or
        // re-granting after a revocation), a revocation (always taken, so
        // withdrawing a lapsed consent still shreds and notifies), or the
        // end of the current one (FHIR versions every update).
        Order::Newer => {
            let takes = change.status.is_entry()
                || change.status == ConsentStatus::Revoked
                || (change.status == ConsentStatus::Expired && !cur.status.is_final());
            if takes {
                entry(Some(cur.revision()))
            } else {
                refuse(Some(cur.status))
            }
        }
    }
}
