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
//!
//! Consent, the second time: before writing, route re-checks the consent
//! table (`consent.state`, read-only here) for the entry the gate allowed
//! the record on (`consent_basis`). If it has been revoked, refused,
//! replaced by another version or has lapsed since, the record does not
//! leave (`deny`, audited), so events already past the gate when a
//! revocation arrives are stopped too.
//!
//! Revocation fan-out: route keeps its own table (`route.disclosed`) of
//! which destination received which subject's data under which purpose,
//! and how that destination knows the subject (its `subject_key`, a token
//! of the purpose's domain). When the consent table shows a revocation or
//! an erasure, route writes a revocation notice (event type
//! `consent:revoked`, cut to the destination's allowlist like any record)
//! to every destination that received the subject's data under a purpose of
//! that consent code, then forgets those entries.
//!
//! This file is the stage and its release path; `revocation` the consent
//! re-check and the notices; `disclosure` route's own table.

mod disclosure;
mod recent;
mod revocation;
#[cfg(test)]
mod tests;

pub use disclosure::{Disclosed, DISCLOSED_PREFIX};
pub use revocation::CONSENT_REVOKED;

use consentry_core::stage::StageName;
use disclosure::{disclosed_key, note_destination_ids, MAX_REFERENCES};

use crate::forward::{event_id, Forwarder};
use crate::BuildError;
use consentry_core::audit::{Decision, Transformation};
use consentry_core::consent::{self};
use consentry_core::disclosure::Disclosure;
use consentry_core::envelope::{retain_fields_kept, Text};
use consentry_core::stage::Output;
use consentry_core::stage::{Outcome, Stage, StageInput, StateView};
use consentry_core::stage::{Owns, Released, StateWrite};
use consentry_core::topology::{FieldClass, Profile, Topology};
use consentry_core::{CanonicalEvent, ReasonCode};
use consentry_crypto::{DestinationIds, IdKind, KeyRing};
use std::collections::{BTreeMap, BTreeSet};

pub const NAME: StageName = StageName::Route;

/// Where one purpose's records go and what they may carry.
struct Plan {
    topic: String,
    destination: String,
    profile: Profile,
    allow: BTreeSet<String>,
    code: String,
    channel: String,
}

pub struct Route {
    fwd: Forwarder,
    /// Keyed ids for what leaves (record keys, headers, id fields).
    ids: DestinationIds,
    plans: BTreeMap<String, Plan>,
    /// Partitions of route's input: a subject's notices are written by the
    /// instance that owns the partition its pseudonym hashes to.
    input: (String, i32),
    /// The consent table's topic, named as the source of notices.
    consent_table: String,
    /// Each field's disclosure class, to count what a record releases.
    classes: BTreeMap<String, FieldClass>,
    /// When each subject's data last left for each purpose (a window in
    /// memory): a revocation's notice says whether data left after it.
    recent: recent::RecentReleases,
}

impl Route {
    /// Needs the key ring: every id that leaves is keyed with it.
    pub fn new(topology: &Topology, keys: Option<&KeyRing>) -> Result<Route, BuildError> {
        let ring = keys.ok_or(BuildError::StageNeedsKeys {
            stage: NAME,
            why: "ids that leave for destinations are keyed per purpose",
        })?;
        let ids = DestinationIds::new(ring, topology.purposes.keys().map(String::as_str))?;
        Ok(Route {
            fwd: Forwarder::new(NAME, topology),
            ids,
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
                            code: p.consent_code.clone(),
                            channel: p.channel.clone(),
                        },
                    )
                })
                .collect(),
            input: topology
                .stage(NAME.as_str())
                .and_then(|s| s.inputs.first())
                .map(|t| {
                    let partitions = topology.topic(t).map_or(1, |t| t.partitions.max(1));
                    (t.clone(), partitions)
                })
                .unwrap_or_default(),
            consent_table: topology
                .stage(NAME.as_str())
                .and_then(|s| s.reads.clone())
                .unwrap_or_default(),
            classes: topology.fields.clone(),
            recent: recent::RecentReleases::default(),
        })
    }

    /// The record `ev` (already cut to the allowlist) as it leaves for
    /// `topic`: every id-like value keyed for `purpose` (HIPAA
    /// §164.514(c)): the record key and `correlation-id` from the internal
    /// correlation id, the `idempotency-key` from the internal one, and the
    /// `correlation_id` and `event_id` fields where the allowlist keeps
    /// them. `None` for a purpose without a key: nothing leaves.
    fn leave(
        &self,
        purpose: &str,
        topic: &str,
        internal_correlation: &str,
        basis: &str,
        mut ev: CanonicalEvent,
    ) -> Option<Output> {
        let correlation: Text = self
            .ids
            .id(purpose, IdKind::Correlation, internal_correlation)?
            .into();
        if !ev.correlation_id.is_empty() {
            ev.correlation_id = correlation.clone();
        }
        if !ev.event_id.is_empty() {
            ev.event_id = self.ids.id(purpose, IdKind::Event, &ev.event_id)?.into();
        }
        let mut out = self.fwd.output(topic, correlation.clone(), basis, ev);
        out.idempotency_key = self
            .ids
            .id(purpose, IdKind::Idempotency, &out.idempotency_key)?
            .into();
        out.correlation_id = correlation;
        Some(out)
    }
}

impl Stage for Route {
    fn name(&self) -> StageName {
        NAME
    }

    fn process(&self, input: &StageInput, state: &dyn StateView) -> Vec<Outcome> {
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
        let consent = match self.recheck(ev, &subject, plan, input.meta.now_ms, state) {
            Ok(d) => d,
            Err(d) => {
                let mut o = self.fwd.deny(input, ev, dedup, d.reason);
                o.audit.consent_reference = d.reference;
                o.audit.consent_version = d.version;
                return vec![o];
            }
        };
        let retained = retain_fields_kept(ev, |p| plan.allow.contains(p));
        let (out, withheld, carried) = (retained.event, retained.removed, retained.kept);
        let mut released = Released {
            purpose: ev.purpose.clone().unwrap_or_default(),
            ..Released::default()
        };
        for class in carried.iter().filter_map(|p| self.classes.get(p)) {
            *released.fields.entry(*class).or_default() += 1;
        }
        let mut steps: Vec<Transformation> = withheld
            .iter()
            .map(|p| Transformation::new(p, "withhold", "minimum_necessary"))
            .collect();
        steps.push(Transformation {
            target_path: Some(plan.topic.as_str().into()),
            ..Transformation::new("*", "allowlist", &format!("fields={}", plan.allow.len()))
        });
        let subject_reference = (!out.subject_key.is_empty()).then(|| out.subject_key.clone());
        // Destinations are keyed by a keyed correlation id, not by a
        // subject digest nor an unkeyed digest of the source's ids.
        let purpose = ev.purpose.clone().unwrap_or_default();
        let Some(output) = self.leave(&purpose, &plan.topic, &ev.correlation_id, &dedup, out)
        else {
            return vec![self.fwd.quarantine(
                input,
                event_id(ev),
                ReasonCode::MissingField,
                "purpose",
            )];
        };
        let index_key = disclosed_key(&subject, &purpose, &plan.destination);
        // Only data disclosed under a consent can have its consent
        // withdrawn; a "consent needed" notice is not remembered. A name
        // the destination had not had for the subject (a token of a newer
        // key version) is added, so a notice reaches it under each.
        let reference = subject_reference.as_deref().map(String::from);
        let known = state
            .get(&index_key)
            .and_then(|v| serde_json::from_slice::<Disclosed>(v).ok());
        let remembered = match known {
            _ if ev.consent_basis.is_none() => None,
            None => Some(Disclosed {
                topic: plan.topic.clone(),
                subject_reference: reference,
                later_references: Vec::new(),
                first_ms: input.meta.now_ms,
            }),
            Some(mut d) => match reference {
                Some(r)
                    if d.references().all(|k| k != Some(r.as_str()))
                        && d.later_references.len() < MAX_REFERENCES =>
                {
                    d.later_references.push(r);
                    Some(d)
                }
                _ => None,
            },
        };
        let first = remembered.map(|d| StateWrite {
            value: serde_json::to_vec(&d).ok(),
            key: index_key,
        });
        let consent_version = consent.version.clone();
        let disclosure = Disclosure {
            disclosure_id: output.idempotency_key.clone(),
            subject_token: subject,
            purpose: purpose.clone(),
            destination: plan.destination.as_str().into(),
            topic: plan.topic.as_str().into(),
            event_id: event_id(ev),
            event_type: ev.event_type.clone(),
            correlation_id: ev.correlation_id.clone(),
            event_time_ms: ev.event_time_ms,
            policy_version: ev.policy_version.clone(),
            profile: Text::const_new(plan.profile.as_str()),
            phi: plan.profile.is_phi(),
            consent_reference: consent.reference.clone(),
            consent_version: consent_version.clone(),
            subject_reference,
            // What the record carries, not all the allowlist names: the
            // ledger answers "which of my fields went where".
            fields: carried.iter().map(|f| Text::from(f.as_str())).collect(),
            disclosed_at_ms: 0,
        };
        let mut outcome = self
            .fwd
            .decided(Decision::Forward, Some(purpose), steps)
            .outcome(
                &input.meta,
                dedup,
                event_id(ev),
                ev.correlation_id.clone(),
                vec![output],
            );
        note_destination_ids(&mut outcome);
        outcome.audit.profile = Some(Text::const_new(plan.profile.as_str()));
        outcome.audit.reason_code = Text::const_new(consent.reason.as_str());
        outcome.audit.consent_reference = consent.reference;
        outcome.audit.consent_version = consent_version;
        // Only data released on a consent can leave after its revocation.
        if ev.consent_basis.is_some() {
            self.recent.note(
                &disclosure.subject_token,
                &disclosure.purpose,
                input.meta.now_ms,
            );
        }
        outcome.disclosures.push(disclosure);
        outcome.released.push(released);
        outcome.state.extend(first);
        vec![outcome]
    }

    fn on_state_change(
        &self,
        changed: Option<&[String]>,
        state: &dyn StateView,
        owns: Owns<'_>,
    ) -> Vec<Outcome> {
        // (subject, consent code) pairs whose consent may have been withdrawn.
        let asked: BTreeSet<(String, String)> = match changed {
            // Anything may have changed: every (subject, purpose) with
            // disclosures on record (notices already written removed theirs).
            None => state
                .scan(DISCLOSED_PREFIX)
                .into_iter()
                .filter_map(|(k, _)| {
                    let rest = k.strip_prefix(DISCLOSED_PREFIX)?;
                    let mut it = rest.splitn(3, '/');
                    let (subject, purpose) = (it.next()?, it.next()?);
                    Some((subject.to_string(), self.plans.get(purpose)?.code.clone()))
                })
                .collect(),
            Some(keys) => keys
                .iter()
                .filter_map(|k| consent::parse_key(k))
                .map(|(s, c, _)| (s.to_string(), c.to_string()))
                .collect(),
        };
        asked
            .iter()
            .flat_map(|(subject, code)| self.fan_out(subject, code, state, owns))
            .collect()
    }
}
