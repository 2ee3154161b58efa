//! Consent, the second time, and revocation fan-out: a record whose
//! consent has changed since the gate does not leave, and a revocation or
//! erasure sends a notice to every destination that received the subject's
//! data under a purpose of that consent code.

use super::disclosure::{note_destination_ids, Disclosed, DISCLOSED_PREFIX};
use super::{Plan, Route, NAME};
use consentry_core::audit::{Decision, Transformation, DISCLOSED_AFTER_REVOCATION};
use consentry_core::consent::ConsentReason;
use consentry_core::consent::{self, Ask, ConsentEntry, Verdict};
use consentry_core::envelope::{retain_fields, Text};
use consentry_core::keys;
use consentry_core::stage::{Outcome, StateView};
use consentry_core::stage::{Owns, StateWrite};
use consentry_core::CanonicalEvent;

/// The event type of a revocation notice.
pub const CONSENT_REVOKED: &str = "consent:revoked";

impl Route {
    /// Whether the record may still leave: the consent entry the gate
    /// allowed it on must still be the one that allows it now. A "consent
    /// needed" notice (no basis) may leave unless the subject has since
    /// refused or revoked. `Err` holds the reason and the entry decided on.
    pub(super) fn recheck(
        &self,
        ev: &CanonicalEvent,
        subject: &str,
        plan: &Plan,
        now_ms: i64,
        state: &dyn StateView,
    ) -> Result<consent::ConsentDecision, consent::ConsentDecision> {
        let found = crate::consent_gate::entries(state, subject, &plan.code, &plan.channel);
        let classes = consent::event_classes(&ev.event_type);
        let ask = Ask {
            code: &plan.code,
            classes: &classes,
            // The event's own time may be generalized by now; the gate
            // judged the period against it already.
            event_time_ms: None,
            judge_period: false,
            now_ms,
            notify_when_missing: ev.consent_basis.is_none(),
        };
        let d = consent::decide_table(&found, &ask);
        let notice = ev.event_type == crate::consent_gate::CONSENT_NEEDED;
        match (&ev.consent_basis, d.verdict) {
            (Some(basis), Verdict::Allow) if d.basis.as_ref() == Some(basis) => Ok(d),
            (Some(_), Verdict::Allow) => Err(consent::ConsentDecision {
                verdict: Verdict::Deny,
                reason: ConsentReason::Changed,
                ..d
            }),
            // Only a "consent needed" notice goes out without a basis.
            (None, Verdict::Allow | Verdict::Downgrade) if notice => Ok(d),
            (None, _) if !notice => Err(consent::ConsentDecision {
                verdict: Verdict::Deny,
                reason: ConsentReason::Unknown,
                ..d
            }),
            (_, _) => Err(consent::ConsentDecision {
                verdict: Verdict::Deny,
                ..d
            }),
        }
    }

    /// Revocation notices for a subject and a consent code: one per
    /// destination that received the subject's data under a purpose of the
    /// code whose consent is now revoked (or refused) or erased.
    pub(super) fn fan_out(
        &self,
        subject: &str,
        code: &str,
        state: &dyn StateView,
        owns: Owns<'_>,
    ) -> Vec<Outcome> {
        let (topic, partitions) = &self.input;
        let owner = keys::stable_hash(subject) % u64::from(partitions.unsigned_abs().max(1));
        if !owns(topic, i32::try_from(owner).unwrap_or(0)) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (purpose, plan) in self.plans.iter().filter(|(_, p)| p.code == code) {
            let read = crate::consent_gate::entries(state, subject, code, &plan.channel);
            // An entry that does not decode is a refusal here as at the
            // gate: the destinations are told, never left in the dark.
            let unreadable = read.iter().any(|(_, e)| e.is_none());
            let found: Vec<(&str, ConsentEntry)> = read
                .into_iter()
                .filter_map(|(c, e)| Some((c, e?)))
                .collect();
            // Withdrawn outright: revoked, refused, or a provision denying
            // the purpose whatever the data.
            let withdrawn = found.iter().find(|(_, e)| e.refuses(code));
            let (why, on) = match (unreadable, found.is_empty(), withdrawn) {
                (true, _, _) => (ConsentReason::Unreadable.as_str(), None),
                (false, true, _) => ("consent_erased", None),
                (false, false, Some((channel, e))) => {
                    (ConsentReason::Revoked.as_str(), Some((*channel, e)))
                }
                (false, false, None) => continue,
            };
            for (dkey, value) in state.scan(&format!("{DISCLOSED_PREFIX}{subject}/{purpose}/")) {
                let Ok(d) = serde_json::from_slice::<Disclosed>(value) else {
                    continue;
                };
                let version_part = on.map_or_else(
                    || if unreadable { "unreadable" } else { "erased" }.to_string(),
                    |(channel, e)| format!("{channel}/{}", e.revision()),
                );
                let basis = format!("revocation/{subject}/{code}/{version_part}/{}", d.first_ms);
                let dedup = keys::idempotency_key(
                    NAME.as_str(),
                    &self.fwd.policy_version,
                    &basis,
                    Some(purpose),
                );
                // One notice per name the destination knows the subject by.
                let mut outputs = Vec::new();
                for (i, reference) in d.references().enumerate() {
                    let basis = match i {
                        0 => basis.clone(),
                        i => format!("{basis}/r{i}"),
                    };
                    let notice = CanonicalEvent {
                        event_id: keys::idempotency_key(
                            NAME.as_str(),
                            &self.fwd.policy_version,
                            &basis,
                            Some(purpose),
                        ),
                        event_type: Text::const_new(CONSENT_REVOKED),
                        event_time_ms: on.map(|(_, e)| e.effective_ms),
                        correlation_id: keys::correlation_id("consent", &basis),
                        policy_version: self.fwd.policy_version.clone(),
                        purpose: Some(purpose.as_str().into()),
                        subject_key: reference.map(Text::from).unwrap_or_default(),
                        ..Default::default()
                    };
                    let internal = notice.correlation_id.clone();
                    let (notice, _) = retain_fields(&notice, |p| plan.allow.contains(p));
                    outputs.extend(self.leave(purpose, &d.topic, &internal, &basis, notice));
                }
                if outputs.is_empty() {
                    continue;
                }
                let internal_correlation = keys::correlation_id("consent", &basis);
                let mut o = self
                    .fwd
                    .decided(
                        Decision::RevocationNotice,
                        Some(purpose.as_str().into()),
                        Vec::new(),
                    )
                    .outcome(
                        &consentry_core::stage::InputMeta {
                            topic: self.consent_table.clone(),
                            ..Default::default()
                        },
                        dedup,
                        None,
                        internal_correlation,
                        outputs,
                    );
                note_destination_ids(&mut o);
                o.audit.reason_code = Text::const_new(why);
                o.audit.consent_reference = on.map(|(_, e)| e.reference.clone());
                o.audit.consent_version = on.map(|(_, e)| e.revision());
                // From the revocation's arrival: the fan-out's latency.
                o.audit.event_time_ms = on.map(|(_, e)| e.received_ms);
                // The subject's data left after the revocation had arrived
                // (route's table lagged): said on the notice's audit
                // record, and counted (must stay 0).
                let last = self
                    .recent
                    .last(subject, purpose)
                    .unwrap_or(d.first_ms)
                    .max(d.first_ms);
                if on.is_some_and(|(_, e)| last > e.received_ms) {
                    o.audit.transformations.push(Transformation::new(
                        "*",
                        "flag",
                        DISCLOSED_AFTER_REVOCATION,
                    ));
                }
                o.state.push(StateWrite {
                    key: dkey.to_string(),
                    value: None,
                });
                out.push(o);
            }
        }
        out
    }
}
