//! Consent as a state machine per subject × purpose × channel (DESIGN.md,
//! principle 3): the consent table's entries, the transitions the ledger
//! accepts, and the decision the gate and route take from them.
//!
//! A key of the table is `consent/<subject pseudonym>/<purpose code>/<channel>`
//! (the purpose as its v3 ActReason code, the channel `*` for consents that
//! cover every channel, as an EHR's FHIR Consent does), so the table holds no
//! identifier. Its value is the newest valid version's `ConsentEntry`.
//!
//! States: `unknown` (no entry) → `captured` → `validated` → `active` →
//! `expired | revoked | superseded`. Within one version a state only moves
//! forward one step (`captured → active` skips validation and is refused),
//! and the end states are final, except that a revocation is always taken:
//! revoking an expired or superseded consent still withdraws it (its keys
//! are shredded, its destinations notified). A newer version starts again
//! at `captured`, `validated` or `active` (it supersedes the one before, or
//! re-grants after a revocation), or records that the current one was
//! revoked or expired. An older one than the table's is stale. Whatever is
//! refused goes to quarantine and the audit trail; the table keeps the
//! newest valid version.
//!
//! "Newer" (`order`): within one document (the same reference) by its
//! version where both have one, else by when each was last updated; across
//! documents for the same key by effective time, a refusal winning a tie,
//! so a new opt-out document supersedes an older opt-in whatever their
//! version numbers.
//!
//! `table` holds the table's entries and keys, `transition` the ledger's
//! state machine, `decide` the gate's and route's decision.

mod decide;
mod table;
mod transition;

pub use decide::*;
pub use table::*;
pub use transition::*;

#[cfg(test)]
mod tests;
