//! Development placeholder for consent-gate, until its issue replaces it.
//! It obeys the runtime contract (idempotency keys, correlation ids, one
//! audit record per input, marked `placeholder`) so the stages after it
//! work on real (event, purpose) records: it fans every event out to every
//! purpose (no consent check yet), and gives each the subject's internal
//! pseudonym (`subject_token`, see `subject`) that the disclosure ledger
//! and the consent table key on.

use crate::forward::{event_id, Forwarder};
use crate::subject::SubjectPseudonyms;
use consentry_core::audit::decision;
use consentry_core::stage::{Outcome, Stage, StageInput, StateView};
use consentry_core::topology::Topology;
use consentry_crypto::KeyRing;

pub const CONSENT_GATE: &str = "consent-gate";

/// Placeholder consent-gate: fans each event out into one record per purpose.
pub struct ConsentGate {
    fwd: Forwarder,
    purposes: Vec<String>,
    subjects: SubjectPseudonyms,
}

impl ConsentGate {
    pub fn new(topology: &Topology, keys: Option<&KeyRing>) -> Result<ConsentGate, String> {
        let ring = keys
            .ok_or("consent-gate needs the key ring (the subject's pseudonym is a keyed token)")?;
        Ok(ConsentGate {
            fwd: Forwarder::new(CONSENT_GATE, topology, true),
            purposes: topology.purposes.keys().cloned().collect(),
            subjects: SubjectPseudonyms::new(ring)?,
        })
    }
}

impl Stage for ConsentGate {
    fn name(&self) -> &'static str {
        CONSENT_GATE
    }

    fn process(&self, input: &StageInput, _: &dyn StateView) -> Vec<Outcome> {
        let (ev, dedup) = match self.fwd.accept(input) {
            Ok(v) => v,
            Err(q) => return vec![*q],
        };
        let subject_token = (!ev.subject_key.is_empty()).then(|| self.subjects.of(&ev.subject_key));
        let outputs = self
            .purposes
            .iter()
            .map(|p| {
                let mut e = ev.clone();
                e.purpose = Some(p.as_str().into());
                e.subject_token = subject_token.clone();
                self.fwd
                    .output(&self.fwd.output_topic, ev.subject_key.clone(), &dedup, e)
            })
            .collect();
        vec![self
            .fwd
            .decided(decision::FAN_OUT, None, Vec::new())
            .outcome(
                &input.meta,
                dedup,
                event_id(ev),
                ev.correlation_id.clone(),
                outputs,
            )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consentry_core::stage::{Body, InputMeta, NoState};
    use consentry_core::CanonicalEvent;

    fn topology() -> Topology {
        Topology::parse("topology.yaml", include_str!("../../../topology.yaml"))
            .expect("shipped topology")
    }

    fn meta(topic: &str, key: Option<&str>) -> InputMeta {
        InputMeta {
            topic: topic.into(),
            partition: 0,
            offset: 7,
            key: Some("subject-digest".into()),
            idempotency_key: key.map(String::from),
            correlation_id: Some("corr".into()),
        }
    }

    #[test]
    fn gate_fans_out_one_record_per_purpose() {
        let t = topology();
        let ev = CanonicalEvent {
            event_id: "e1".into(),
            correlation_id: "c1".into(),
            subject_key: "0123456789abcdef0123456789abcdef".into(),
            ..Default::default()
        };
        let ring = consentry_crypto::KeyRing::from_key(
            consentry_crypto::Environment::NonProduction,
            [3; 32],
        );
        let o = ConsentGate::new(&t, Some(&ring))
            .expect("builds")
            .process(
                &StageInput {
                    meta: meta("events.normalized", Some("ik1-in")),
                    body: Body::Event(Box::new(ev)),
                },
                &NoState,
            )
            .remove(0);
        let purposes: Vec<_> = o
            .outputs
            .iter()
            .map(|x| x.event.purpose.clone().unwrap())
            .collect();
        assert_eq!(
            purposes,
            [
                "marketing",
                "outcomes-analytics",
                "patient-support",
                "registry-research",
                "trial-recruitment"
            ]
        );
        let keys: std::collections::BTreeSet<_> =
            o.outputs.iter().map(|x| &x.idempotency_key).collect();
        assert_eq!(keys.len(), 5);
        assert_eq!(o.dedup_key, "ik1-in");
        assert!(o.audit.placeholder);
        assert_eq!(o.audit.decision, "fan_out");
        assert_eq!(o.audit.outputs.len(), 5);
        // One pseudonym, the same for every purpose, and what the ledger
        // lookup computes from the subject key.
        let tokens: std::collections::BTreeSet<_> = o
            .outputs
            .iter()
            .map(|x| x.event.subject_token.clone())
            .collect();
        let expected = SubjectPseudonyms::new(&ring)
            .unwrap()
            .all_versions(&ring, "0123456789abcdef0123456789abcdef");
        assert_eq!(tokens.len(), 1);
        assert_eq!(
            tokens.first().cloned().flatten().as_deref(),
            Some(expected[0].as_str())
        );
        assert!(expected[0].starts_with("tok:subject:v1:"));
        assert!(ConsentGate::new(&t, None).is_err());
    }
}
