//! The decision the gate (and route's re-check) takes from a subject's
//! table entries for one purpose: allow, deny or a "consent needed"
//! notice, with the reason and the entry it relied on.

use super::table::{ConsentEntry, ConsentStatus};
use crate::audit::Decision;
use crate::envelope::{ConsentProvision, Text};

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
        self.decision().as_str()
    }

    /// The audit record's decision for this verdict.
    pub fn decision(self) -> Decision {
        match self {
            Verdict::Allow => Decision::Allow,
            Verdict::Deny => Decision::Deny,
            Verdict::Downgrade => Decision::Downgrade,
        }
    }
}

/// Why the gate (or route's re-check, or tokenize) decided as it did: the
/// metric label and the audit record's reason code, spelled by `as_str`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsentReason {
    Active,
    Unknown,
    Pending,
    Expired,
    Superseded,
    Revoked,
    Refused,
    ProvisionDeny,
    OutsidePeriod,
    /// Route: the entry the gate relied on has changed since.
    Changed,
    /// The table's entry for the subject and purpose does not decode
    /// (corrupted, tampered with, or written by another version): deny.
    Unreadable,
    /// tokenize: the vault shredded the subject in the purpose's domain
    /// (consent withdrawn) while the record was on its way.
    Shredded,
}

impl ConsentReason {
    pub const ALL: [ConsentReason; 12] = [
        ConsentReason::Active,
        ConsentReason::Unknown,
        ConsentReason::Pending,
        ConsentReason::Expired,
        ConsentReason::Superseded,
        ConsentReason::Revoked,
        ConsentReason::Refused,
        ConsentReason::ProvisionDeny,
        ConsentReason::OutsidePeriod,
        ConsentReason::Changed,
        ConsentReason::Unreadable,
        ConsentReason::Shredded,
    ];

    /// The stable spelling: audit records' `reason_code`, metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConsentReason::Active => "consent_active",
            ConsentReason::Unknown => "consent_unknown",
            ConsentReason::Pending => "consent_pending",
            ConsentReason::Expired => "consent_expired",
            ConsentReason::Superseded => "consent_superseded",
            ConsentReason::Revoked => "consent_revoked",
            ConsentReason::Refused => "consent_refused",
            ConsentReason::ProvisionDeny => "provision_deny",
            ConsentReason::OutsidePeriod => "outside_period",
            ConsentReason::Changed => "consent_changed",
            ConsentReason::Unreadable => "consent_unreadable",
            ConsentReason::Shredded => "subject_shredded",
        }
    }

    pub fn parse(s: &str) -> Option<ConsentReason> {
        ConsentReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for ConsentReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: tables print these with widths.
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for ConsentReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A decision and what it relied on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentDecision {
    pub verdict: Verdict,
    pub reason: ConsentReason,
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
fn judge(e: &ConsentEntry, ask: &Ask<'_>) -> Result<(), (bool, ConsentReason)> {
    match e.status {
        ConsentStatus::Captured | ConsentStatus::Validated => {
            return Err((false, ConsentReason::Pending))
        }
        ConsentStatus::Expired => return Err((false, ConsentReason::Expired)),
        ConsentStatus::Superseded => return Err((false, ConsentReason::Superseded)),
        ConsentStatus::Revoked => return Err((true, ConsentReason::Revoked)),
        ConsentStatus::Active => {}
    }
    if e.period_end_ms.is_some_and(|end| ask.now_ms > end) {
        return Err((false, ConsentReason::Expired));
    }
    // An event without a time of its own is judged at the processing time,
    // never let through unchecked.
    let t = ask.event_time_ms.unwrap_or(ask.now_ms);
    let outside =
        e.period_start_ms.is_some_and(|s| t < s) || e.period_end_ms.is_some_and(|end| t > end);
    if ask.judge_period && outside {
        return Err((false, ConsentReason::OutsidePeriod));
    }
    match provision_decision(e.permit, &e.provisions, ask.code, ask.classes) {
        (true, _) => Ok(()),
        (false, 0) => Err((true, ConsentReason::Refused)),
        (false, _) => Err((true, ConsentReason::ProvisionDeny)),
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
pub fn decide(entries: &[(&str, ConsentEntry)], ask: &Ask<'_>) -> ConsentDecision {
    let mut allow = None;
    let mut missing: Option<(ConsentReason, &str, &ConsentEntry)> = None;
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
        return made(Verdict::Allow, ConsentReason::Active, Some((channel, e)));
    }
    let (why, on) = match missing {
        Some((why, channel, e)) => (why, Some((channel, e))),
        None => (ConsentReason::Unknown, None),
    };
    let verdict = if ask.notify_when_missing && why != ConsentReason::OutsidePeriod {
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
pub fn decide_table(entries: &[(&str, Option<ConsentEntry>)], ask: &Ask<'_>) -> ConsentDecision {
    if entries.iter().any(|(_, e)| e.is_none()) {
        return made(Verdict::Deny, ConsentReason::Unreadable, None);
    }
    let decoded: Vec<(&str, ConsentEntry)> = entries
        .iter()
        .filter_map(|(c, e)| Some((*c, e.clone()?)))
        .collect();
    decide(&decoded, ask)
}

fn made(
    verdict: Verdict,
    reason: ConsentReason,
    on: Option<(&str, &ConsentEntry)>,
) -> ConsentDecision {
    ConsentDecision {
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
