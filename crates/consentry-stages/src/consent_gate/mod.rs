//! consent-gate: for every event and every purpose, allow, deny or
//! downgrade by the subject's consent (`consentry_core::consent::decide`),
//! read from the consent table (`consent.state`, kept by the consent
//! ledger) under the subject's pseudonym. The runtime reads the whole table
//! before the gate sees an event, so no decision is taken on part of it.
//!
//! Each (event, purpose) is a unit of its own with one audit record: the
//! decision, its reason, and the consent reference and version it relied on.
//! An allowed record carries `consent_basis` (the entry it was allowed on)
//! for route's re-check; a downgraded one becomes a "consent needed" notice
//! (event type `consent:needed`) with no clinical or demographic content.
//! Unknown consent means deny.

use crate::forward::{event_id, Forwarder};
use crate::subject::SubjectPseudonyms;
use crate::BuildError;
use consentry_core::consent::{self, Ask, ConsentEntry, Verdict};
use consentry_core::envelope::Text;
use consentry_core::keys;
use consentry_core::stage::StageName;
use consentry_core::stage::{Outcome, Stage, StageInput, StateView};
use consentry_core::topology::{MissingConsent, Topology};
use consentry_core::{CanonicalEvent, ReasonCode};
use consentry_crypto::KeyRing;

pub const NAME: StageName = StageName::ConsentGate;

/// The event type of a "consent needed" notice.
pub const CONSENT_NEEDED: &str = "consent:needed";

/// What the gate needs of one purpose.
pub(crate) struct PurposeConsent {
    pub purpose: Text,
    pub code: String,
    pub channel: String,
    pub notify: bool,
}

pub(crate) fn purposes(topology: &Topology) -> Vec<PurposeConsent> {
    topology
        .purposes
        .values()
        .map(|p| PurposeConsent {
            purpose: p.name.as_str().into(),
            code: p.consent_code.clone(),
            channel: p.channel.clone(),
            notify: p.on_missing_consent == MissingConsent::Notify,
        })
        .collect()
}

/// The table's entries for a subject, a consent code and a channel: the
/// channel's own and the all-channel one, `None` for one that is there but
/// does not decode (which `consent::decide_table` turns into a refusal).
pub(crate) fn entries<'a>(
    state: &dyn StateView,
    subject_token: &str,
    code: &str,
    channel: &'a str,
) -> Vec<(&'a str, Option<ConsentEntry>)> {
    let mut channels = vec![channel];
    if channel != consent::ANY_CHANNEL {
        channels.push(consent::ANY_CHANNEL);
    }
    channels
        .into_iter()
        .filter_map(|c| {
            let v = state.get(&consent::table_key(subject_token, code, c))?;
            Some((c, ConsentEntry::decode(v)))
        })
        .collect()
}

pub struct ConsentGate {
    fwd: Forwarder,
    purposes: Vec<PurposeConsent>,
    subjects: SubjectPseudonyms,
}

impl ConsentGate {
    pub fn new(topology: &Topology, keys: Option<&KeyRing>) -> Result<ConsentGate, BuildError> {
        let ring = keys.ok_or(BuildError::StageNeedsKeys {
            stage: NAME,
            why: "the consent table is keyed by the subject's pseudonym",
        })?;
        Ok(ConsentGate {
            fwd: Forwarder::new(NAME, topology),
            purposes: purposes(topology),
            subjects: SubjectPseudonyms::new(ring)?,
        })
    }
}

/// A "consent needed" notice: who, for what purpose, and nothing else.
fn notice(ev: &CanonicalEvent) -> CanonicalEvent {
    CanonicalEvent {
        event_id: ev.event_id.clone(),
        event_type: Text::const_new(CONSENT_NEEDED),
        event_time_ms: ev.event_time_ms,
        source_system: ev.source_system.clone(),
        source_format: ev.source_format.clone(),
        correlation_id: ev.correlation_id.clone(),
        policy_version: ev.policy_version.clone(),
        subject_key: ev.subject_key.clone(),
        ..Default::default()
    }
}

impl Stage for ConsentGate {
    fn name(&self) -> StageName {
        NAME
    }

    fn process(&self, input: &StageInput, state: &dyn StateView) -> Vec<Outcome> {
        let (ev, input_key) = match self.fwd.accept(input) {
            Ok(v) => v,
            Err(q) => return vec![*q],
        };
        if ev.subject_key.is_empty() {
            // No subject, no consent to look up: nothing may go on.
            return vec![self.fwd.quarantine(
                input,
                event_id(ev),
                ReasonCode::MissingField,
                "subject_key",
            )];
        }
        let token = self.subjects.of(&ev.subject_key);
        let classes = consent::event_classes(&ev.event_type);
        self.purposes
            .iter()
            .map(|p| {
                let found = entries(state, &token, &p.code, &p.channel);
                let d = consent::decide_table(
                    &found,
                    &Ask {
                        code: &p.code,
                        classes: &classes,
                        event_time_ms: ev.event_time_ms,
                        judge_period: true,
                        now_ms: input.meta.now_ms,
                        notify_when_missing: p.notify,
                    },
                );
                let record = match d.verdict {
                    Verdict::Allow => Some(ev.clone()),
                    Verdict::Downgrade => Some(notice(ev)),
                    Verdict::Deny => None,
                };
                let outputs = record
                    .map(|mut e| {
                        e.purpose = Some(p.purpose.clone());
                        e.subject_token = Some(token.clone());
                        e.consent_basis = d.basis.clone();
                        self.fwd.output(
                            &self.fwd.output_topic,
                            ev.subject_key.clone(),
                            &input_key,
                            e,
                        )
                    })
                    .into_iter()
                    .collect();
                let unit = keys::idempotency_key(
                    NAME.as_str(),
                    &self.fwd.policy_version,
                    &input_key,
                    Some(&format!("decision/{}", p.purpose)),
                );
                let mut o = self
                    .fwd
                    .decided(d.verdict.decision(), Some(p.purpose.clone()), Vec::new())
                    .outcome(
                        &input.meta,
                        unit,
                        event_id(ev),
                        ev.correlation_id.clone(),
                        outputs,
                    );
                o.audit.reason_code = Text::const_new(d.reason.as_str());
                o.audit.consent_reference = d.reference;
                o.audit.consent_version = d.version;
                o
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
