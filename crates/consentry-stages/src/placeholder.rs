//! Development placeholders for consent-gate and route, until their own
//! issues replace them. Each obeys the runtime contract (idempotency keys,
//! correlation ids, one audit record per input, marked `placeholder`) so
//! the stages between them work on real (event, purpose) records: the gate
//! fans every event out to every purpose (no consent check yet), route
//! writes each record whole to its purpose's topic (no allowlist yet).

use crate::forward::{event_id, Forwarder};
use consentry_core::audit::decision;
use consentry_core::stage::{Outcome, Stage, StageInput, StateView};
use consentry_core::topology::Topology;
use std::collections::BTreeMap;

pub const CONSENT_GATE: &str = "consent-gate";
pub const ROUTE: &str = "route";

/// Placeholder consent-gate: fans each event out into one record per purpose.
pub struct ConsentGate {
    fwd: Forwarder,
    purposes: Vec<String>,
}

impl ConsentGate {
    pub fn new(topology: &Topology) -> ConsentGate {
        ConsentGate {
            fwd: Forwarder::new(CONSENT_GATE, topology, true),
            purposes: topology.purposes.keys().cloned().collect(),
        }
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
        let outputs = self
            .purposes
            .iter()
            .map(|p| {
                let mut e = ev.clone();
                e.purpose = Some(p.as_str().into());
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

/// Placeholder route: writes each (event, purpose) to its purpose's topic.
pub struct Route {
    fwd: Forwarder,
    topics: BTreeMap<String, String>,
}

impl Route {
    pub fn new(topology: &Topology) -> Route {
        Route {
            fwd: Forwarder::new(ROUTE, topology, true),
            topics: topology
                .purposes
                .values()
                .map(|p| (p.name.clone(), p.topic.clone()))
                .collect(),
        }
    }
}

impl Stage for Route {
    fn name(&self) -> &'static str {
        ROUTE
    }

    fn process(&self, input: &StageInput, _: &dyn StateView) -> Vec<Outcome> {
        let (ev, dedup, topic) = match self.fwd.accept_for_purpose(input, |p| self.topics.get(p)) {
            Ok(v) => v,
            Err(q) => return vec![*q],
        };
        // Destinations are keyed by correlation id, not by a subject digest:
        // a digest of an identifier must not leave the boundary.
        let out = self
            .fwd
            .output(topic, ev.correlation_id.clone(), &dedup, ev.clone());
        vec![self
            .fwd
            .decided(decision::FORWARD, ev.purpose.clone(), Vec::new())
            .outcome(
                &input.meta,
                dedup,
                event_id(ev),
                ev.correlation_id.clone(),
                vec![out],
            )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consentry_core::stage::{Body, InputMeta, NoState};
    use consentry_core::CanonicalEvent;
    use consentry_core::ReasonCode;

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
            ..Default::default()
        };
        let o = ConsentGate::new(&t)
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
    }

    #[test]
    fn missing_idempotency_header_is_quarantined() {
        let t = topology();
        let ev = CanonicalEvent {
            event_id: "e1".into(),
            purpose: Some("marketing".into()),
            ..Default::default()
        };
        let o = Route::new(&t)
            .process(
                &StageInput {
                    meta: meta("events.tokenized", None),
                    body: Body::Event(Box::new(ev)),
                },
                &NoState,
            )
            .remove(0);
        assert_eq!(
            o.quarantine.map(|q| (q.reason, q.detail)),
            Some((ReasonCode::MissingHeader, "idempotency-key".into()))
        );
    }
}
