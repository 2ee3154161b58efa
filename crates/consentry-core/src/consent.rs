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

use crate::envelope::{ConsentProvision, Text};
use serde::{Deserialize, Serialize};

/// The channel of a consent that covers every channel.
pub const ANY_CHANNEL: &str = "*";

/// Key prefix of the consent table's entries.
pub const KEY_PREFIX: &str = "consent/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    Captured,
    Validated,
    Active,
    Expired,
    Revoked,
    Superseded,
}

impl ConsentStatus {
    pub const ALL: [ConsentStatus; 6] = [
        ConsentStatus::Captured,
        ConsentStatus::Validated,
        ConsentStatus::Active,
        ConsentStatus::Expired,
        ConsentStatus::Revoked,
        ConsentStatus::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Captured => "captured",
            ConsentStatus::Validated => "validated",
            ConsentStatus::Active => "active",
            ConsentStatus::Expired => "expired",
            ConsentStatus::Revoked => "revoked",
            ConsentStatus::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<ConsentStatus> {
        ConsentStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The states a new version may start in.
    pub fn is_entry(self) -> bool {
        matches!(
            self,
            ConsentStatus::Captured | ConsentStatus::Validated | ConsentStatus::Active
        )
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            ConsentStatus::Expired | ConsentStatus::Revoked | ConsentStatus::Superseded
        )
    }

    /// A FHIR Consent's `status`, most restrictive where R4 is vague:
    /// `inactive`, `rejected` and `entered-in-error` all stop the consent.
    pub fn from_fhir(status: &str) -> Option<ConsentStatus> {
        Some(match status {
            "draft" => ConsentStatus::Captured,
            "proposed" => ConsentStatus::Validated,
            "active" => ConsentStatus::Active,
            "inactive" | "rejected" | "entered-in-error" => ConsentStatus::Revoked,
            _ => return None,
        })
    }
}

/// A portal's or CRM's consent capture (`schemas/consent_event.avsc`).
/// Carries the subject's identifier: `consent.events` is an input of the
/// boundary, like the EHR feeds; the table holds only the pseudonym.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConsentEvent {
    pub consent_id: String,
    pub subject_system: String,
    pub subject_value: String,
    pub purpose: String,
    pub channel: String,
    /// A `ConsentStatus`, or `erased`.
    pub state: String,
    pub version: i64,
    pub effective_ms: i64,
    pub expires_ms: Option<i64>,
    pub source: String,
    pub captured_by: Option<String>,
    pub notice_version: Option<String>,
}

impl std::fmt::Debug for ConsentEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The subject's identifier never reaches a log or a test's output.
        f.debug_struct("ConsentEvent")
            .field("consent_id", &self.consent_id)
            .field("purpose", &self.purpose)
            .field("channel", &self.channel)
            .field("state", &self.state)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The state a capture asks for that removes the entry (a tombstone).
pub const ERASED: &str = "erased";

/// Whether one version may move from `from` to `to`.
pub fn same_version_step(from: ConsentStatus, to: ConsentStatus) -> bool {
    use ConsentStatus::*;
    matches!(
        (from, to),
        (Captured, Validated)
            | (Validated, Active)
            | (Captured | Validated, Revoked)
            | (Active, Expired | Revoked | Superseded)
            // Withdrawing a consent that has lapsed or been replaced still
            // withdraws it: keys shredded, destinations told.
            | (Expired | Superseded, Revoked)
    )
}

/// One key's value in the consent table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEntry {
    pub status: ConsentStatus,
    /// The document's own version (FHIR `meta.versionId`, a capture's
    /// version), where the source gives one.
    #[serde(default)]
    pub version: Option<i64>,
    /// When the document was last updated (FHIR `meta.lastUpdated`): its
    /// order among its own versions when they carry no version number.
    #[serde(default)]
    pub updated_ms: Option<i64>,
    /// When the document was issued (FHIR `dateTime`): the order among its
    /// own versions when they carry neither version nor update time.
    #[serde(default)]
    pub issued_ms: Option<i64>,
    /// The consent document or capture (`Consent/<id>`, a portal's id).
    pub reference: Text,
    /// The root decision: `false` for a consent that refuses the purpose.
    pub permit: bool,
    /// When the source says this state took effect (never after it
    /// arrived): the order among documents.
    pub effective_ms: i64,
    /// Whether `effective_ms` is the document's own (else its arrival).
    #[serde(default = "dated_by_default")]
    pub dated: bool,
    pub period_start_ms: Option<i64>,
    /// Expiry: no event processed after it is allowed.
    pub period_end_ms: Option<i64>,
    /// Nested provisions (FHIR), in document order with their depth.
    #[serde(default)]
    pub provisions: Vec<ConsentProvision>,
    pub source: Text,
    #[serde(default)]
    pub captured_by: Option<Text>,
    #[serde(default)]
    pub notice_version: Option<Text>,
    /// The revision this one replaced, if any (superseded or re-granted).
    #[serde(default)]
    pub previous_revision: Option<Text>,
    /// When the change was appended to `consent.events` (its broker time):
    /// the start of the revocation latency.
    pub received_ms: i64,
}

impl ConsentEntry {
    pub fn encode(&self) -> Vec<u8> {
        // A struct of plain fields: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<ConsentEntry> {
        serde_json::from_slice(bytes).ok()
    }

    /// `<reference>@<revision>/<channel>`, as audit and disclosure records
    /// name it, and as route's re-check compares it.
    pub fn basis(&self, channel: &str) -> Text {
        Text::from(format!(
            "{}@{}/{}",
            self.reference,
            self.revision(),
            channel
        ))
    }

    /// How this version is named: `v<version>`, else `t<updated ms>`,
    /// else `d<issued ms>`, else `e<effective ms>`.
    pub fn revision(&self) -> Text {
        revision_label(
            self.version,
            self.updated_ms,
            self.issued_ms,
            self.effective_ms,
        )
    }

    /// Whether this entry refuses outright: revoked, or a consent that
    /// denies at its root.
    pub fn is_refusal(&self) -> bool {
        self.status == ConsentStatus::Revoked || !self.permit
    }

    /// Whether this entry withdraws consent for `code` altogether: a
    /// refusal, or a provision that denies the purpose whatever the data
    /// (a class-limited deny narrows, it does not withdraw).
    pub fn refuses(&self, code: &str) -> bool {
        self.is_refusal() || !provision_decision(self.permit, &self.provisions, code, &[]).0
    }
}

fn dated_by_default() -> bool {
    true
}

fn revision_label(
    version: Option<i64>,
    updated_ms: Option<i64>,
    issued_ms: Option<i64>,
    effective_ms: i64,
) -> Text {
    Text::from(match (version, updated_ms, issued_ms) {
        (Some(v), _, _) => format!("v{v}"),
        (None, Some(t), _) => format!("t{t}"),
        (None, None, Some(t)) => format!("d{t}"),
        (None, None, None) => format!("e{effective_ms}"),
    })
}

pub fn table_key(subject_token: &str, code: &str, channel: &str) -> String {
    format!("{KEY_PREFIX}{subject_token}/{code}/{channel}")
}

/// `(subject pseudonym, code, channel)` of a table key.
pub fn parse_key(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let mut it = rest.rsplitn(3, '/');
    let channel = it.next()?;
    let code = it.next()?;
    let subject = it.next()?;
    Some((subject, code, channel))
}

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
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::InvalidTransition { .. } => "invalid_transition",
            Refusal::StaleVersion { .. } => "stale_version",
            Refusal::LooserSameRevision { .. } => "invalid_transition",
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

/// The gate's verdict for one (event, purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// A non-PHI "consent needed" notification instead of the event.
    Downgrade,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Downgrade => "downgrade",
        }
    }
}

/// Why: the metric label and the audit record's reason code.
pub mod reason {
    pub const ACTIVE: &str = "consent_active";
    pub const UNKNOWN: &str = "consent_unknown";
    pub const PENDING: &str = "consent_pending";
    pub const EXPIRED: &str = "consent_expired";
    pub const SUPERSEDED: &str = "consent_superseded";
    pub const REVOKED: &str = "consent_revoked";
    pub const REFUSED: &str = "consent_refused";
    pub const PROVISION_DENY: &str = "provision_deny";
    pub const OUTSIDE_PERIOD: &str = "outside_period";
    /// Route: the entry the gate relied on has changed since.
    pub const CHANGED: &str = "consent_changed";
    /// The table's entry for the subject and purpose does not decode
    /// (corrupted, tampered with, or written by another version): deny.
    pub const UNREADABLE: &str = "consent_unreadable";
    /// tokenize: the vault shredded the subject in the purpose's domain
    /// (consent withdrawn) while the record was on its way.
    pub const SHREDDED: &str = "subject_shredded";
    pub const ALL: [&str; 12] = [
        ACTIVE,
        UNKNOWN,
        PENDING,
        EXPIRED,
        SUPERSEDED,
        REVOKED,
        REFUSED,
        PROVISION_DENY,
        OUTSIDE_PERIOD,
        CHANGED,
        UNREADABLE,
        SHREDDED,
    ];
}

/// A decision and what it relied on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: &'static str,
    /// `<reference>@v<version>/<channel>` of the entry decided on.
    pub basis: Option<Text>,
    pub reference: Option<Text>,
    /// The entry's revision (`ConsentEntry::revision`).
    pub version: Option<Text>,
}

/// What the gate knows about one event for one purpose.
pub struct Ask<'a> {
    pub code: &'a str,
    /// The data classes of the event (FHIR resource types).
    pub classes: &'a [&'a str],
    /// The event's time; `None` judges the period at `now_ms`.
    pub event_time_ms: Option<i64>,
    /// Whether to judge the consent period against the event (the gate);
    /// route's re-check sees generalized times and relies on the gate's.
    pub judge_period: bool,
    /// The batch's processing time: expiry is judged at it.
    pub now_ms: i64,
    /// Whether the purpose takes a "consent needed" notice when there is no
    /// consent to act on.
    pub notify_when_missing: bool,
}

/// How one entry judges the ask: `Ok` allows, `Err((refusal, reason))`
/// says whether it is an explicit refusal (which beats any permit of
/// another channel) and why.
fn judge(e: &ConsentEntry, ask: &Ask<'_>) -> Result<(), (bool, &'static str)> {
    match e.status {
        ConsentStatus::Captured | ConsentStatus::Validated => return Err((false, reason::PENDING)),
        ConsentStatus::Expired => return Err((false, reason::EXPIRED)),
        ConsentStatus::Superseded => return Err((false, reason::SUPERSEDED)),
        ConsentStatus::Revoked => return Err((true, reason::REVOKED)),
        ConsentStatus::Active => {}
    }
    if e.period_end_ms.is_some_and(|end| ask.now_ms > end) {
        return Err((false, reason::EXPIRED));
    }
    // An event without a time of its own is judged at the processing time,
    // never let through unchecked.
    let t = ask.event_time_ms.unwrap_or(ask.now_ms);
    let outside =
        e.period_start_ms.is_some_and(|s| t < s) || e.period_end_ms.is_some_and(|end| t > end);
    if ask.judge_period && outside {
        return Err((false, reason::OUTSIDE_PERIOD));
    }
    match provision_decision(e.permit, &e.provisions, ask.code, ask.classes) {
        (true, _) => Ok(()),
        (false, 0) => Err((true, reason::REFUSED)),
        (false, _) => Err((true, reason::PROVISION_DENY)),
    }
}

/// Nested provisions deeper than this are refused (JSON nesting bounds what
/// the ledger writes well below it).
pub const MAX_PROVISION_DEPTH: i32 = 64;

/// The decision of the deepest provision that applies (the root at depth 0
/// always does); a provision applies if its parent does, its purposes are
/// empty or name `code`, and its classes are empty or name one of the
/// event's. Among the deepest that apply, a deny wins. Returns (permit,
/// depth of the deciding provision).
pub fn provision_decision(
    root_permit: bool,
    provisions: &[ConsentProvision],
    code: &str,
    classes: &[&str],
) -> (bool, i32) {
    let (mut best_depth, mut permit) = (0, root_permit);
    // applies[d]: whether the latest provision at depth d applies.
    let mut applies: Vec<bool> = vec![true];
    for p in provisions {
        if p.depth > MAX_PROVISION_DEPTH {
            // Deeper than any document the ledger writes (a tampered or
            // corrupted entry): refuse rather than trust or allocate for it.
            return (false, p.depth);
        }
        let d = usize::try_from(p.depth.max(1)).unwrap_or(1);
        if d > applies.len() {
            // A malformed depth (a gap): treat the parent as not applying.
            applies.resize(d, false);
        }
        applies.truncate(d);
        let parent = applies[d - 1];
        let here = parent
            && (p.purposes.is_empty() || p.purposes.iter().any(|c| c == code))
            && (p.data_classes.is_empty()
                || p.data_classes.iter().any(|c| classes.contains(&c.as_str())));
        applies.push(here);
        if here {
            let deny = p.decision.as_deref() == Some("deny");
            if p.depth > best_depth {
                best_depth = p.depth;
                permit = !deny;
            } else if p.depth == best_depth && deny {
                permit = false;
            }
        }
    }
    (permit, best_depth)
}

/// The decision for one purpose from the entries of its consent code
/// (the purpose's channel and `*`): an explicit refusal on any of them
/// wins, then a permit, and otherwise there is nothing to act on (deny, or
/// a "consent needed" notice where the purpose takes one and the subject
/// has not refused).
pub fn decide(entries: &[(&str, ConsentEntry)], ask: &Ask<'_>) -> Decision {
    let mut allow = None;
    let mut missing: Option<(&'static str, &str, &ConsentEntry)> = None;
    for (channel, e) in entries {
        match judge(e, ask) {
            Ok(()) => {
                allow.get_or_insert((*channel, e));
            }
            Err((true, why)) => return made(Verdict::Deny, why, Some((channel, e))),
            Err((false, why)) => {
                missing.get_or_insert((why, channel, e));
            }
        }
    }
    if let Some((channel, e)) = allow {
        return made(Verdict::Allow, reason::ACTIVE, Some((channel, e)));
    }
    let (why, on) = match missing {
        Some((why, channel, e)) => (why, Some((channel, e))),
        None => (reason::UNKNOWN, None),
    };
    let verdict = if ask.notify_when_missing && why != reason::OUTSIDE_PERIOD {
        Verdict::Downgrade
    } else {
        Verdict::Deny
    };
    made(verdict, why, on)
}

/// `decide` over the table's entries as read, `None` for one that does
/// not decode: an unreadable entry is a refusal (fail closed), never
/// skipped, since skipping it could leave a permit of another channel to
/// decide.
pub fn decide_table(entries: &[(&str, Option<ConsentEntry>)], ask: &Ask<'_>) -> Decision {
    if entries.iter().any(|(_, e)| e.is_none()) {
        return made(Verdict::Deny, reason::UNREADABLE, None);
    }
    let decoded: Vec<(&str, ConsentEntry)> = entries
        .iter()
        .filter_map(|(c, e)| Some((*c, e.clone()?)))
        .collect();
    decide(&decoded, ask)
}

fn made(verdict: Verdict, reason: &'static str, on: Option<(&str, &ConsentEntry)>) -> Decision {
    Decision {
        verdict,
        reason,
        basis: on.map(|(c, e)| e.basis(c)),
        reference: on.map(|(_, e)| e.reference.clone()),
        version: on.map(|(_, e)| e.revision()),
    }
}

/// The data classes of an event type: a FHIR resource's type, or the
/// Patient and Encounter an ADT message describes.
pub fn event_classes(event_type: &str) -> Vec<&str> {
    match event_type.strip_prefix("fhir:") {
        Some(rt) => vec![rt],
        None if event_type.starts_with("ADT^") => vec!["Patient", "Encounter"],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
