//! route: writes each (event, purpose) record to its purpose's destination
//! topic with only the fields of the purpose's allowlist (the minimum
//! necessary), and records the disclosure in the disclosure ledger.
//!
//! Three lines keep a field off a destination: this stage removes every
//! field the allowlist does not name (each removal is a `withhold` step of
//! the audit record), the runtime writes the record with the destination's
//! own Avro schema, which has no other fields (`consentry_core::destination`),
//! and the subject's internal pseudonym (`subject_token`) can be on no
//! allowlist (the topology refuses it). The disclosure-ledger record names
//! the subject by that pseudonym only.

use crate::forward::{event_id, Forwarder};
use consentry_core::audit::{decision, Transformation};
use consentry_core::destination::is_phi;
use consentry_core::disclosure::Disclosure;
use consentry_core::envelope::{retain_fields, Text};
use consentry_core::stage::{Outcome, Stage, StageInput, StateView};
use consentry_core::topology::{Profile, Topology};
use consentry_core::ReasonCode;
use std::collections::{BTreeMap, BTreeSet};

pub const NAME: &str = "route";

/// Where one purpose's records go and what they may carry.
struct Plan {
    topic: String,
    destination: String,
    profile: Profile,
    allow: BTreeSet<String>,
    /// The allowlist as the ledger records it.
    fields: Vec<Text>,
}

pub struct Route {
    fwd: Forwarder,
    plans: BTreeMap<String, Plan>,
}

impl Route {
    pub fn new(topology: &Topology) -> Route {
        Route {
            fwd: Forwarder::new(NAME, topology, false),
            plans: topology
                .purposes
                .values()
                .map(|p| {
                    (
                        p.name.clone(),
                        Plan {
                            topic: p.topic.clone(),
                            destination: p.destination.clone(),
                            profile: p.profile,
                            allow: p.allow.clone(),
                            fields: p.allow.iter().map(|f| Text::from(f.as_str())).collect(),
                        },
                    )
                })
                .collect(),
        }
    }
}

impl Stage for Route {
    fn name(&self) -> &'static str {
        NAME
    }

    fn process(&self, input: &StageInput, _: &dyn StateView) -> Vec<Outcome> {
        let (ev, dedup, plan) = match self.fwd.accept_for_purpose(input, |p| self.plans.get(p)) {
            Ok(v) => v,
            Err(q) => return vec![*q],
        };
        // Without the subject's pseudonym the disclosure could not be
        // found again (accounting, revocation): it does not leave.
        let Some(subject) = ev.subject_token.clone().filter(|t| !t.is_empty()) else {
            return vec![self.fwd.quarantine(
                input,
                event_id(ev),
                ReasonCode::MissingField,
                "subject_token",
            )];
        };
        let (out, withheld) = retain_fields(ev, |p| plan.allow.contains(p));
        let mut steps: Vec<Transformation> = withheld
            .iter()
            .map(|p| Transformation::new(p, "withhold", "minimum_necessary"))
            .collect();
        steps.push(Transformation {
            target_path: Some(plan.topic.as_str().into()),
            ..Transformation::new("*", "allowlist", &format!("fields={}", plan.allow.len()))
        });
        // Destinations are keyed by correlation id, not by a subject digest:
        // a digest of an identifier must not leave the boundary.
        let output = self
            .fwd
            .output(&plan.topic, ev.correlation_id.clone(), &dedup, out);
        let disclosure = Disclosure {
            disclosure_id: output.idempotency_key.clone(),
            subject_token: subject,
            purpose: ev.purpose.clone().unwrap_or_default(),
            destination: plan.destination.as_str().into(),
            topic: plan.topic.as_str().into(),
            event_id: event_id(ev),
            event_type: ev.event_type.clone(),
            correlation_id: ev.correlation_id.clone(),
            event_time_ms: ev.event_time_ms,
            policy_version: ev.policy_version.clone(),
            profile: Text::const_new(plan.profile.as_str()),
            phi: is_phi(plan.profile),
            // The consent a decision relied on comes with the consent-gate
            // (issue 6); until then the ledger says none.
            consent_reference: None,
            consent_version: None,
            fields: plan.fields.clone(),
            disclosed_at_ms: 0,
        };
        let mut outcome = self
            .fwd
            .decided(decision::FORWARD, ev.purpose.clone(), steps)
            .outcome(
                &input.meta,
                dedup,
                event_id(ev),
                ev.correlation_id.clone(),
                vec![output],
            );
        outcome.audit.profile = Some(Text::const_new(plan.profile.as_str()));
        outcome.disclosures.push(disclosure);
        vec![outcome]
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

    fn input(ev: CanonicalEvent, key: Option<&str>) -> StageInput {
        StageInput {
            meta: InputMeta {
                topic: "events.tokenized".into(),
                partition: 0,
                offset: 7,
                key: None,
                idempotency_key: key.map(String::from),
                correlation_id: Some("corr".into()),
            },
            body: Body::Event(Box::new(ev)),
        }
    }

    fn event(purpose: &str) -> CanonicalEvent {
        CanonicalEvent {
            event_id: "e1".into(),
            event_type: "ADT^A01".into(),
            correlation_id: "c1".into(),
            policy_version: "p1".into(),
            purpose: Some(purpose.into()),
            subject_key: "tok:crm:v1:AAAA".into(),
            subject_token: Some("tok:subject:v1:BBBB".into()),
            note: Some("free text".into()),
            ..Default::default()
        }
    }

    #[test]
    fn keeps_only_the_allowlist_and_records_the_disclosure() {
        let t = topology();
        let o = Route::new(&t)
            .process(&input(event("marketing"), Some("ik1-in")), &NoState)
            .remove(0);
        assert_eq!(o.quarantine, None);
        let out = &o.outputs[0];
        assert_eq!(out.topic, "out.marketing");
        assert_eq!(out.key, "c1");
        let ev = &out.event;
        assert_eq!(
            (
                ev.event_type.as_str(),
                ev.policy_version.as_str(),
                ev.purpose.as_deref()
            ),
            ("ADT^A01", "p1", Some("marketing"))
        );
        assert!(ev.event_id.is_empty() && ev.subject_key.is_empty());
        assert_eq!((ev.note.as_ref(), ev.subject_token.as_ref()), (None, None));
        let withheld: Vec<_> = o
            .audit
            .transformations
            .iter()
            .filter(|s| s.method == "withhold")
            .map(|s| s.path.as_str())
            .collect();
        assert_eq!(
            withheld,
            [
                "correlation_id",
                "event_id",
                "note",
                "subject_key",
                "subject_token"
            ]
        );
        let d = &o.disclosures[0];
        assert_eq!(d.subject_token, "tok:subject:v1:BBBB");
        assert_eq!(
            (d.purpose.as_str(), d.destination.as_str()),
            ("marketing", "crm-marketing")
        );
        assert_eq!(d.disclosure_id, out.idempotency_key);
        assert!(!d.phi);
        assert_eq!(o.audit.profile.as_deref(), Some("aggregate-only"));
    }

    #[test]
    fn phi_purposes_are_labelled_in_the_ledger() {
        let t = topology();
        let o = Route::new(&t)
            .process(&input(event("patient-support"), Some("ik1-in")), &NoState)
            .remove(0);
        assert!(o.disclosures[0].phi);
        assert_eq!(o.outputs[0].event.subject_key, "tok:crm:v1:AAAA");
    }

    #[test]
    fn no_pseudonym_or_no_key_is_quarantined() {
        let t = topology();
        let mut ev = event("marketing");
        ev.subject_token = None;
        let o = Route::new(&t)
            .process(&input(ev, Some("ik1-in")), &NoState)
            .remove(0);
        assert_eq!(
            o.quarantine.map(|q| (q.reason, q.detail)),
            Some((ReasonCode::MissingField, "subject_token".into()))
        );
        assert!(o.outputs.is_empty() && o.disclosures.is_empty());
        let o = Route::new(&t)
            .process(&input(event("marketing"), None), &NoState)
            .remove(0);
        assert_eq!(
            o.quarantine.map(|q| (q.reason, q.detail)),
            Some((ReasonCode::MissingHeader, "idempotency-key".into()))
        );
    }
}
