//! Development placeholders for the stages after normalize, until their own
//! issues replace them. Each obeys the runtime contract (idempotency keys,
//! correlation ids, one audit record per input, marked `placeholder`) so
//! later stages can be built on (event, purpose) records now.
//!
//! They fail closed: the placeholder de-identify suppresses every field
//! that is not classified `operational`, so nothing identifying reaches a
//! destination before the real de-identification exists.

use consentry_core::audit::{decision, Transformation};
use consentry_core::envelope::{retain_fields, Text};
use consentry_core::keys;
use consentry_core::stage::{Body, Decided, Outcome, Output, Stage, StageInput, StateView};
use consentry_core::topology::{FieldClass, Topology};
use consentry_core::{CanonicalEvent, ReasonCode};
use std::collections::BTreeMap;

pub const CONSENT_GATE: &str = "consent-gate";
pub const DE_IDENTIFY: &str = "de-identify";
pub const TOKENIZE: &str = "tokenize";
pub const ROUTE: &str = "route";

/// What every placeholder shares: checking its input and keying its outputs.
struct Forwarder {
    stage: &'static str,
    policy_version: Text,
    output_topic: Text,
}

impl Forwarder {
    fn new(stage: &'static str, topology: &Topology) -> Forwarder {
        Forwarder {
            stage,
            policy_version: topology.policy_version.as_str().into(),
            output_topic: topology
                .stage(stage)
                .and_then(|s| s.outputs.first().map(|t| Text::from(t.as_str())))
                .unwrap_or_default(),
        }
    }

    /// The input's event and idempotency key, or the quarantine outcome.
    fn accept<'a>(
        &self,
        input: &'a StageInput,
    ) -> Result<(&'a CanonicalEvent, Text), Box<Outcome>> {
        let ev = match &input.body {
            Body::Event(ev) => ev,
            Body::Raw(_) => {
                return Err(Box::new(Outcome::quarantined(
                    self.stage,
                    &self.policy_version,
                    &input.meta,
                    None,
                    ReasonCode::SchemaMismatch,
                    "expected a canonical event",
                )));
            }
        };
        match &input.meta.idempotency_key {
            Some(k) => Ok((ev, k.as_str().into())),
            None => Err(Box::new(Outcome::quarantined(
                self.stage,
                &self.policy_version,
                &input.meta,
                Some(ev.event_id.clone()),
                ReasonCode::MissingHeader,
                keys::HEADER_IDEMPOTENCY_KEY,
            ))),
        }
    }

    fn output(&self, topic: &str, key: Text, ev: CanonicalEvent) -> Output {
        Output {
            topic: topic.into(),
            key,
            idempotency_key: keys::idempotency_key(
                self.stage,
                &self.policy_version,
                &ev.event_id,
                ev.purpose.as_deref(),
            ),
            correlation_id: ev.correlation_id.clone(),
            event: Box::new(ev),
        }
    }

    fn decided(
        &self,
        decision: &'static str,
        purpose: Option<Text>,
        transformations: Vec<Transformation>,
    ) -> Decided<'_> {
        Decided {
            stage: self.stage,
            policy_version: &self.policy_version,
            placeholder: true,
            decision,
            purpose,
            transformations,
        }
    }

    /// Forwards `ev` (possibly changed) to the stage's output topic.
    fn forward(
        &self,
        input: &StageInput,
        dedup_key: Text,
        ev: CanonicalEvent,
        transformations: Vec<Transformation>,
    ) -> Outcome {
        let (event_id, corr, purpose) = (
            ev.event_id.clone(),
            ev.correlation_id.clone(),
            ev.purpose.clone(),
        );
        // Keep the input's partitioning key: the subject's records stay in order.
        let key = input
            .meta
            .key
            .as_deref()
            .map_or_else(|| corr.clone(), Text::from);
        let out = self.output(&self.output_topic, key, ev);
        self.decided(decision::FORWARD, purpose, transformations)
            .outcome(&input.meta, dedup_key, Some(event_id), corr, vec![out])
    }
}

/// Placeholder consent-gate: fans each event out into one record per purpose.
pub struct ConsentGate {
    fwd: Forwarder,
    purposes: Vec<String>,
}

impl ConsentGate {
    pub fn new(topology: &Topology) -> ConsentGate {
        ConsentGate {
            fwd: Forwarder::new(CONSENT_GATE, topology),
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
                    .output(&self.fwd.output_topic, ev.subject_key.clone(), e)
            })
            .collect();
        vec![self
            .fwd
            .decided(decision::FAN_OUT, None, Vec::new())
            .outcome(
                &input.meta,
                dedup,
                Some(ev.event_id.clone()),
                ev.correlation_id.clone(),
                outputs,
            )]
    }
}

/// Placeholder de-identify: suppresses every field not classified operational.
pub struct DeIdentify {
    fwd: Forwarder,
    classes: BTreeMap<String, FieldClass>,
}

impl DeIdentify {
    pub fn new(topology: &Topology) -> DeIdentify {
        DeIdentify {
            fwd: Forwarder::new(DE_IDENTIFY, topology),
            classes: topology.fields.clone(),
        }
    }

    fn keep(&self, path: &str) -> bool {
        // Unclassified means not operational: fail closed.
        self.classes.get(path) == Some(&FieldClass::Operational)
    }

    /// Returns the suppressed event and the paths it removed.
    pub fn suppress(&self, ev: &CanonicalEvent) -> (CanonicalEvent, Vec<String>) {
        let (mut out, removed) = retain_fields(ev, |p| self.keep(p));
        out.suppressed = removed.iter().map(|p| Text::from(p.as_str())).collect();
        (out, removed)
    }
}

impl Stage for DeIdentify {
    fn name(&self) -> &'static str {
        DE_IDENTIFY
    }

    fn process(&self, input: &StageInput, _: &dyn StateView) -> Vec<Outcome> {
        let (ev, dedup) = match self.fwd.accept(input) {
            Ok(v) => v,
            Err(q) => return vec![*q],
        };
        let (out, removed) = self.suppress(ev);
        let transformations = removed
            .into_iter()
            .map(|path| Transformation {
                path: path.into(),
                method: Text::const_new("suppress"),
            })
            .collect();
        vec![self.fwd.forward(input, dedup, out, transformations)]
    }
}

/// Placeholder tokenize: forwards unchanged (nothing identifying is left
/// after the placeholder de-identify).
pub struct Tokenize {
    fwd: Forwarder,
}

impl Tokenize {
    pub fn new(topology: &Topology) -> Tokenize {
        Tokenize {
            fwd: Forwarder::new(TOKENIZE, topology),
        }
    }
}

impl Stage for Tokenize {
    fn name(&self) -> &'static str {
        TOKENIZE
    }

    fn process(&self, input: &StageInput, _: &dyn StateView) -> Vec<Outcome> {
        vec![match self.fwd.accept(input) {
            Ok((ev, dedup)) => self.fwd.forward(input, dedup, ev.clone(), Vec::new()),
            Err(q) => *q,
        }]
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
            fwd: Forwarder::new(ROUTE, topology),
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
        let (ev, dedup) = match self.fwd.accept(input) {
            Ok(v) => v,
            Err(q) => return vec![*q],
        };
        let Some(topic) = ev
            .purpose
            .as_ref()
            .and_then(|p| self.topics.get(p.as_str()))
        else {
            // No purpose, or one the topology does not know: fail closed.
            return vec![Outcome::quarantined(
                ROUTE,
                &self.fwd.policy_version,
                &input.meta,
                Some(ev.event_id.clone()),
                ReasonCode::MissingField,
                "purpose",
            )];
        };
        // Destinations are keyed by correlation id, not by a subject digest:
        // a digest of an identifier must not leave the boundary.
        let out = self
            .fwd
            .output(topic, ev.correlation_id.clone(), ev.clone());
        vec![self
            .fwd
            .decided(decision::FORWARD, ev.purpose.clone(), Vec::new())
            .outcome(
                &input.meta,
                dedup,
                Some(ev.event_id.clone()),
                ev.correlation_id.clone(),
                vec![out],
            )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Normalize;
    use consentry_core::stage::{InputMeta, NoState};
    use consentry_synth::{generate, SynthConfig};

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

    /// Runs the synthetic feed through every stage; returns the route outputs.
    fn through_pipeline(t: &Topology) -> (Vec<Output>, Vec<Outcome>) {
        let stages = crate::build_all(t);
        let feed = generate(&SynthConfig::new(9, 2));
        let mut records: Vec<StageInput> = feed
            .iter()
            .filter(|r| r.feed != consentry_synth::Feed::Consent)
            .map(|r| StageInput {
                meta: meta(
                    if r.feed == consentry_synth::Feed::Hl7v2 {
                        "ehr.hl7v2"
                    } else {
                        "ehr.fhir"
                    },
                    None,
                ),
                body: Body::Raw(r.payload.clone()),
            })
            .collect();
        let mut outcomes = Vec::new();
        for stage in &stages {
            let mut next = Vec::new();
            let mut state = std::collections::BTreeMap::new();
            for o in crate::drive(stage.as_ref(), &records, &mut state) {
                assert!(
                    o.quarantine.is_none(),
                    "{} quarantined {:?}",
                    stage.name(),
                    o.quarantine
                );
                for out in &o.outputs {
                    next.push(StageInput {
                        meta: InputMeta {
                            topic: out.topic.to_string(),
                            partition: 0,
                            offset: 0,
                            key: Some(out.key.to_string()),
                            idempotency_key: Some(out.idempotency_key.to_string()),
                            correlation_id: Some(out.correlation_id.to_string()),
                        },
                        body: Body::Event(out.event.clone()),
                    });
                }
                outcomes.push(o);
            }
            records = next;
        }
        let outs = records
            .into_iter()
            .map(|r| match r.body {
                Body::Event(event) => Output {
                    topic: r.meta.topic.into(),
                    key: r.meta.key.unwrap_or_default().into(),
                    idempotency_key: r.meta.idempotency_key.unwrap_or_default().into(),
                    correlation_id: r.meta.correlation_id.unwrap_or_default().into(),
                    event,
                },
                Body::Raw(_) => unreachable!("stages emit events"),
            })
            .collect();
        (outs, outcomes)
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
                "trial-recruitment"
            ]
        );
        let keys: std::collections::BTreeSet<_> =
            o.outputs.iter().map(|x| &x.idempotency_key).collect();
        assert_eq!(keys.len(), 4);
        assert_eq!(o.dedup_key, "ik1-in");
        assert!(o.audit.placeholder);
        assert_eq!(o.audit.decision, "fan_out");
        assert_eq!(o.audit.outputs.len(), 4);
    }

    #[test]
    fn missing_idempotency_header_is_quarantined() {
        let t = topology();
        let ev = CanonicalEvent {
            event_id: "e1".into(),
            ..Default::default()
        };
        let o = Tokenize::new(&t)
            .process(
                &StageInput {
                    meta: meta("events.deidentified", None),
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

    #[test]
    fn pipeline_delivers_every_event_to_every_purpose_without_phi() {
        let t = topology();
        let (outs, outcomes) = through_pipeline(&t);
        let events: usize = generate(&SynthConfig::new(9, 2))
            .iter()
            .filter(|r| r.feed != consentry_synth::Feed::Consent)
            .map(consentry_synth::events_in)
            .sum();
        assert_eq!(events, 15, "2 patients: 7 and 8 events");
        assert_eq!(outs.len(), events * 4);
        for p in t.purposes.values() {
            assert_eq!(
                outs.iter().filter(|o| o.topic == p.topic).count(),
                events,
                "{}",
                p.name
            );
        }
        // Fail closed: nothing that is not operational survives the placeholder.
        let cfg = SynthConfig::new(9, 2);
        for p in consentry_synth::patients(&cfg) {
            for o in &outs {
                let printed = format!(
                    "{:?} {:?} {:?} {:?} {:?}",
                    o.event
                        .identifiers
                        .iter()
                        .map(|i| &i.value)
                        .collect::<Vec<_>>(),
                    o.event.demographics.as_ref().map(|d| (
                        &d.family_name,
                        &d.postal_code,
                        &d.birth_date
                    )),
                    o.event.note,
                    o.event.encounter,
                    o.event.subject_key
                );
                for v in [&p.family, &p.mrn, &p.zip, &p.ssn, &p.email] {
                    assert!(
                        !printed.contains(v.as_str()),
                        "a {} value reached {}",
                        "patient",
                        o.topic
                    );
                }
            }
        }
        // One audit record per stage per input, all idempotency keys distinct.
        let normalize_audits = outcomes
            .iter()
            .filter(|o| o.audit.stage == "normalize")
            .count();
        assert_eq!(normalize_audits, events);
        assert_eq!(
            outcomes.iter().filter(|o| o.audit.stage == "route").count(),
            events * 4
        );
        let keys: std::collections::BTreeSet<_> = outs.iter().map(|o| &o.idempotency_key).collect();
        assert_eq!(keys.len(), events * 4);
    }

    #[test]
    fn processing_is_deterministic() {
        let t = topology();
        assert_eq!(through_pipeline(&t).0, through_pipeline(&t).0);
    }

    #[test]
    fn de_identify_records_what_it_suppressed() {
        let t = topology();
        let cfg = SynthConfig::new(4, 1);
        let p = &consentry_synth::patients(&cfg)[0];
        let raw = consentry_synth::hl7_adt(&cfg, p, "A01", 0);
        let n = Normalize::new(&t)
            .process(
                &StageInput {
                    meta: meta("ehr.hl7v2", None),
                    body: Body::Raw(raw.into_bytes()),
                },
                &NoState,
            )
            .remove(0);
        let mut ev = n.outputs[0].event.clone();
        ev.purpose = Some("marketing".into());
        let o = DeIdentify::new(&t)
            .process(
                &StageInput {
                    meta: meta("events.gated", Some("ik1-x")),
                    body: Body::Event(ev),
                },
                &NoState,
            )
            .remove(0);
        let out = &o.outputs[0].event;
        assert!(out.identifiers.iter().all(|i| i.value.is_empty()));
        assert!(out.note.is_none() && out.codes.is_empty() && out.demographics.is_none());
        let paths: Vec<_> = o
            .audit
            .transformations
            .iter()
            .map(|t| t.path.as_str())
            .collect();
        for p in [
            "identifiers.value",
            "note",
            "demographics.family_name",
            "demographics.birth_date",
            "codes.code",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        assert!(o
            .audit
            .transformations
            .iter()
            .all(|t| t.method == "suppress"));
        assert_eq!(out.suppressed.len(), paths.len());
    }
}
