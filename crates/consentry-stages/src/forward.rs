//! What every stage after normalize shares: accepting a canonical event
//! with its idempotency key, keying its outputs, and building the outcome
//! that forwards a (possibly changed) event to the stage's output topic.
//!
//! Output idempotency keys derive from the *input's* idempotency key, not
//! from the event's id: de-identification removes the source record id,
//! and every key downstream must still be unique and replay-stable.

use consentry_core::audit::{Decision, Transformation};
use consentry_core::consent::ConsentReason;
use consentry_core::envelope::Text;
use consentry_core::keys;
use consentry_core::stage::{Body, Decided, Outcome, Output, StageInput, StageName};
use consentry_core::topology::Topology;
use consentry_core::{CanonicalEvent, ReasonCode};

pub(crate) struct Forwarder {
    pub stage: StageName,
    pub policy_version: Text,
    pub output_topic: Text,
}

impl Forwarder {
    pub fn new(stage: StageName, topology: &Topology) -> Forwarder {
        Forwarder {
            stage,
            policy_version: topology.policy_version.as_str().into(),
            output_topic: topology
                .stage(stage.as_str())
                .and_then(|s| s.outputs.first().map(|t| Text::from(t.as_str())))
                .unwrap_or_default(),
        }
    }

    /// The input's event and idempotency key, or the quarantine outcome.
    pub fn accept<'a>(
        &self,
        input: &'a StageInput,
    ) -> Result<(&'a CanonicalEvent, Text), Box<Outcome>> {
        let ev = match &input.body {
            Body::Event(ev) => ev,
            Body::Raw(_) => {
                return Err(Box::new(self.quarantine(
                    input,
                    None,
                    ReasonCode::SchemaMismatch,
                    "expected a canonical event",
                )));
            }
        };
        match &input.meta.idempotency_key {
            Some(k) => Ok((ev, k.as_str().into())),
            None => Err(Box::new(self.quarantine(
                input,
                event_id(ev),
                ReasonCode::MissingHeader,
                consentry_core::headers::IDEMPOTENCY_KEY,
            ))),
        }
    }

    /// As `accept`, plus what `lookup` knows of the event's purpose; an
    /// event without a purpose, or with one the topology does not know, is
    /// quarantined (`missing_field`, `purpose`): fail closed.
    pub fn accept_for_purpose<'a, 'b, T>(
        &self,
        input: &'a StageInput,
        lookup: impl Fn(&str) -> Option<&'b T>,
    ) -> Result<(&'a CanonicalEvent, Text, &'b T), Box<Outcome>> {
        let (ev, dedup) = self.accept(input)?;
        match ev.purpose.as_deref().and_then(lookup) {
            Some(found) => Ok((ev, dedup, found)),
            None => Err(Box::new(self.quarantine(
                input,
                event_id(ev),
                ReasonCode::MissingField,
                "purpose",
            ))),
        }
    }

    pub fn quarantine(
        &self,
        input: &StageInput,
        event_id: Option<Text>,
        reason: ReasonCode,
        detail: &str,
    ) -> Outcome {
        Outcome::quarantined(
            self.stage,
            &self.policy_version,
            &input.meta,
            event_id,
            reason,
            detail,
        )
    }

    /// An output of `ev` keyed from the input's idempotency key `basis`.
    pub fn output(&self, topic: &str, key: Text, basis: &str, ev: CanonicalEvent) -> Output {
        Output {
            topic: topic.into(),
            key,
            idempotency_key: keys::idempotency_key(
                self.stage.as_str(),
                &self.policy_version,
                basis,
                ev.purpose.as_deref(),
            ),
            correlation_id: ev.correlation_id.clone(),
            event: Box::new(ev),
        }
    }

    pub fn decided(
        &self,
        decision: Decision,
        purpose: Option<Text>,
        transformations: Vec<Transformation>,
    ) -> Decided<'_> {
        Decided {
            stage: self.stage,
            policy_version: &self.policy_version,
            // Stages after normalize do the real work; none is a placeholder.
            placeholder: false,
            decision,
            purpose,
            transformations,
        }
    }

    /// The outcome of a unit that goes no further by a consent decision
    /// (route's re-check, tokenize after a shred): audited, nothing written.
    pub fn deny(
        &self,
        input: &StageInput,
        ev: &CanonicalEvent,
        dedup_key: Text,
        reason: ConsentReason,
    ) -> Outcome {
        let mut o = self
            .decided(Decision::Deny, ev.purpose.clone(), Vec::new())
            .outcome(
                &input.meta,
                dedup_key,
                event_id(ev),
                ev.correlation_id.clone(),
                Vec::new(),
            );
        o.audit.reason_code = Text::const_new(reason.as_str());
        o
    }

    /// Forwards `ev` (possibly changed from `input`'s) to the stage's
    /// output topic. `source` is the input's event, for the audit record.
    pub fn forward(
        &self,
        input: &StageInput,
        source: &CanonicalEvent,
        dedup_key: Text,
        ev: CanonicalEvent,
        transformations: Vec<Transformation>,
    ) -> Outcome {
        let corr = ev.correlation_id.clone();
        let purpose = ev.purpose.clone();
        // Keep the input's partitioning key: the subject's records stay in order.
        let key = input
            .meta
            .key
            .as_deref()
            .map_or_else(|| corr.clone(), Text::from);
        let out = self.output(&self.output_topic, key, &dedup_key, ev);
        self.decided(Decision::Forward, purpose, transformations)
            .outcome(&input.meta, dedup_key, event_id(source), corr, vec![out])
    }
}

/// The event id for an audit record (absent once de-identified).
pub(crate) fn event_id(ev: &CanonicalEvent) -> Option<Text> {
    (!ev.event_id.is_empty()).then(|| ev.event_id.clone())
}
