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

use crate::forward::{event_id, Forwarder};
use consentry_core::audit::{decision, Transformation};
use consentry_core::consent::{self, Ask, ConsentEntry, Verdict};
use consentry_core::destination::is_phi;
use consentry_core::disclosure::Disclosure;
use consentry_core::envelope::{retain_fields, Text};
use consentry_core::keys;
use consentry_core::stage::Output;
use consentry_core::stage::{Outcome, Stage, StageInput, StateView};
use consentry_core::stage::{Owns, StateWrite};
use consentry_core::topology::{Profile, Topology};
use consentry_core::{CanonicalEvent, ReasonCode};
use consentry_crypto::{DestinationIds, IdKind, KeyRing};
use serde::{Deserialize, Serialize};
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
    code: String,
    channel: String,
}

/// The event type of a revocation notice.
pub const CONSENT_REVOKED: &str = "consent:revoked";

/// Key prefix of route's own table.
pub const DISCLOSED_PREFIX: &str = "disclosed/";

/// What route remembers of a (subject, purpose, destination) it wrote to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disclosed {
    pub topic: String,
    /// The destination's name for the subject, if its records carry one.
    pub subject_reference: Option<String>,
    /// Names the destination got later (a deterministic token changes with
    /// a key rotation): a notice goes out under each.
    #[serde(default)]
    pub later_references: Vec<String>,
    pub first_ms: i64,
}

/// Notes on the audit record the keyed event id each destination record
/// carries, beside its keyed correlation id, so `audit trace` can start
/// from either.
fn note_destination_ids(o: &mut Outcome) {
    for (a, out) in o.audit.outputs.iter_mut().zip(&o.outputs) {
        if !out.event.event_id.is_empty() {
            a.event_id = Some(out.event.event_id.clone());
        }
    }
}

/// At most this many names per destination are remembered (one per key
/// version a destination's tokens were made under, as a rule).
const MAX_REFERENCES: usize = 16;

impl Disclosed {
    fn references(&self) -> impl Iterator<Item = Option<&str>> {
        std::iter::once(self.subject_reference.as_deref())
            .chain(self.later_references.iter().map(|r| Some(r.as_str())))
    }
}

fn disclosed_key(subject_token: &str, purpose: &str, destination: &str) -> String {
    format!("{DISCLOSED_PREFIX}{subject_token}/{purpose}/{destination}")
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
}

impl Route {
    /// Needs the key ring: every id that leaves is keyed with it.
    pub fn new(topology: &Topology, keys: Option<&KeyRing>) -> Result<Route, String> {
        let ring = keys.ok_or(
            "route needs the key ring (ids that leave for destinations are keyed per purpose)",
        )?;
        let ids = DestinationIds::new(ring, topology.purposes.keys().map(String::as_str))
            .map_err(|e| e.to_string())?;
        Ok(Route {
            fwd: Forwarder::new(NAME, topology, false),
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
                            fields: p.allow.iter().map(|f| Text::from(f.as_str())).collect(),
                            code: p.consent_code.clone(),
                            channel: p.channel.clone(),
                        },
                    )
                })
                .collect(),
            input: topology
                .stage(NAME)
                .and_then(|s| s.inputs.first())
                .map(|t| {
                    let partitions = topology.topic(t).map_or(1, |t| t.partitions.max(1));
                    (t.clone(), partitions)
                })
                .unwrap_or_default(),
            consent_table: topology
                .stage(NAME)
                .and_then(|s| s.reads.clone())
                .unwrap_or_default(),
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

    /// Whether the record may still leave: the consent entry the gate
    /// allowed it on must still be the one that allows it now. A "consent
    /// needed" notice (no basis) may leave unless the subject has since
    /// refused or revoked. `Err` holds the reason and the entry decided on.
    fn recheck(
        &self,
        ev: &CanonicalEvent,
        subject: &str,
        plan: &Plan,
        now_ms: i64,
        state: &dyn StateView,
    ) -> Result<consent::Decision, consent::Decision> {
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
            (Some(_), Verdict::Allow) => Err(consent::Decision {
                verdict: Verdict::Deny,
                reason: consent::reason::CHANGED,
                ..d
            }),
            // Only a "consent needed" notice goes out without a basis.
            (None, Verdict::Allow | Verdict::Downgrade) if notice => Ok(d),
            (None, _) if !notice => Err(consent::Decision {
                verdict: Verdict::Deny,
                reason: consent::reason::UNKNOWN,
                ..d
            }),
            (_, _) => Err(consent::Decision {
                verdict: Verdict::Deny,
                ..d
            }),
        }
    }

    /// Revocation notices for a subject and a consent code: one per
    /// destination that received the subject's data under a purpose of the
    /// code whose consent is now revoked (or refused) or erased.
    fn fan_out(
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
                (true, _, _) => (consent::reason::UNREADABLE, None),
                (false, true, _) => ("consent_erased", None),
                (false, false, Some((channel, e))) => {
                    (consent::reason::REVOKED, Some((*channel, e)))
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
                let dedup =
                    keys::idempotency_key(NAME, &self.fwd.policy_version, &basis, Some(purpose));
                // One notice per name the destination knows the subject by.
                let mut outputs = Vec::new();
                for (i, reference) in d.references().enumerate() {
                    let basis = match i {
                        0 => basis.clone(),
                        i => format!("{basis}/r{i}"),
                    };
                    let notice = CanonicalEvent {
                        event_id: keys::idempotency_key(
                            NAME,
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
                        decision::REVOCATION_NOTICE,
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

impl Stage for Route {
    fn name(&self) -> &'static str {
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
        let (out, withheld) = retain_fields(ev, |p| plan.allow.contains(p));
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
            phi: is_phi(plan.profile),
            consent_reference: consent.reference.clone(),
            consent_version: consent_version.clone(),
            subject_reference,
            fields: plan.fields.clone(),
            disclosed_at_ms: 0,
        };
        let mut outcome = self
            .fwd
            .decided(decision::FORWARD, Some(purpose), steps)
            .outcome(
                &input.meta,
                dedup,
                event_id(ev),
                ev.correlation_id.clone(),
                vec![output],
            );
        note_destination_ids(&mut outcome);
        outcome.audit.profile = Some(Text::const_new(plan.profile.as_str()));
        outcome.audit.reason_code = Text::const_new(consent.reason);
        outcome.audit.consent_reference = consent.reference;
        outcome.audit.consent_version = consent_version;
        outcome.disclosures.push(disclosure);
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

#[cfg(test)]
mod tests {
    use super::*;
    use consentry_core::consent::{ConsentChange, ConsentStatus, Transition};
    use consentry_core::stage::{apply_writes, Body, InputMeta, NoState};
    use consentry_core::CanonicalEvent;

    const SUBJECT: &str = "tok:subject:v1:BBBB";

    fn ring() -> KeyRing {
        KeyRing::from_key(consentry_crypto::Environment::NonProduction, [7; 32])
    }

    fn make(t: &Topology) -> Route {
        Route::new(t, Some(&ring())).expect("route builds")
    }

    /// Every id-like value on a destination record is keyed: the patient-
    /// support record keeps `event_id` and `correlation_id` on its
    /// allowlist, and neither is the internal (source-derived) value; a
    /// second key ring gives other ids for the same record.
    #[test]
    fn ids_that_leave_are_keyed_per_purpose_and_ring() {
        let t = topology();
        let active = table(&t, ConsentStatus::Active, 1);
        let run = |ring: &KeyRing| {
            Route::new(&t, Some(ring))
                .unwrap()
                .process(&input(event("patient-support"), Some("ik1-in")), &active)
                .remove(0)
                .outputs
                .remove(0)
        };
        let a = run(&ring());
        assert_eq!(a.topic, "out.patient-support");
        let ev = &a.event;
        assert!(ev.event_id.starts_with("ev1-") && ev.event_id != "e1");
        assert_eq!(ev.correlation_id, a.correlation_id);
        assert_ne!(ev.correlation_id, "c1");
        let b = run(&KeyRing::from_key(
            consentry_crypto::Environment::NonProduction,
            [8; 32],
        ));
        for (x, y) in [
            (&a.key, &b.key),
            (&a.idempotency_key, &b.idempotency_key),
            (&a.event.event_id, &b.event.event_id),
            (&a.event.correlation_id, &b.event.correlation_id),
        ] {
            assert_ne!(x, y);
        }
        assert_eq!(run(&ring()), a, "the same ring: the same ids (replays)");
        // The audit record names both destination ids, for `audit trace`.
        let o = make(&t)
            .process(&input(event("patient-support"), Some("ik1-in")), &active)
            .remove(0);
        let noted = &o.audit.outputs[0];
        assert_eq!(noted.event_id.as_deref(), Some(a.event.event_id.as_str()));
        assert_eq!(
            noted.correlation_id.as_deref(),
            Some(a.correlation_id.as_str())
        );
        assert!(Route::new(&t, None).is_err(), "no ring, no route");
    }

    /// A consent table where the subject has consented to every code.
    fn table(t: &Topology, status: ConsentStatus, version: i64) -> BTreeMap<String, Vec<u8>> {
        t.purposes
            .values()
            .map(|p| {
                let change = ConsentChange {
                    status: ConsentStatus::Active,
                    version: Some(version),
                    updated_ms: None,
                    issued_ms: None,
                    dated: true,
                    reference: "Consent/c1".into(),
                    permit: true,
                    effective_ms: 10,
                    period_start_ms: None,
                    period_end_ms: None,
                    provisions: Vec::new(),
                    source: "ehr".into(),
                    captured_by: None,
                    notice_version: None,
                    received_ms: 20,
                };
                let Transition::Apply(e) = consent::transition(None, &change) else {
                    panic!("applies")
                };
                let e = ConsentEntry { status, ..*e };
                (
                    consent::table_key(SUBJECT, &p.consent_code, "*"),
                    e.encode(),
                )
            })
            .collect()
    }

    fn topology() -> Topology {
        Topology::parse("topology.yaml", crate::test_fixtures::SHIPPED_TOPOLOGY)
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
                ..Default::default()
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
            subject_token: Some(SUBJECT.into()),
            consent_basis: Some("Consent/c1@v1/*".into()),
            note: Some("free text".into()),
            ..Default::default()
        }
    }

    #[test]
    fn keeps_only_the_allowlist_and_records_the_disclosure() {
        let t = topology();
        let active = table(&t, ConsentStatus::Active, 1);
        let o = make(&t)
            .process(&input(event("marketing"), Some("ik1-in")), &active)
            .remove(0);
        assert_eq!(o.quarantine, None);
        let out = &o.outputs[0];
        assert_eq!(out.topic, "out.marketing");
        // Keyed ids: the internal correlation id "c1" never leaves.
        let ids = DestinationIds::new(&ring(), ["marketing"]).unwrap();
        let keyed = ids.id("marketing", IdKind::Correlation, "c1").unwrap();
        assert_eq!(
            (out.key.as_str(), out.correlation_id.as_str()),
            (keyed.as_str(), keyed.as_str())
        );
        assert!(out.idempotency_key.starts_with("ik2-"));
        // The audit record maps the destination's id back to the internal one.
        assert_eq!(o.audit.correlation_id.as_deref(), Some("c1"));
        assert_eq!(
            o.audit.outputs[0].correlation_id.as_deref(),
            Some(keyed.as_str())
        );
        assert_eq!(o.audit.outputs[0].idempotency_key, out.idempotency_key);
        assert_eq!(
            o.audit.outputs[0].event_id, None,
            "marketing keeps no event_id"
        );
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
                "consent_basis",
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
        assert_eq!(
            (d.consent_reference.as_deref(), d.consent_version.as_deref()),
            (Some("Consent/c1"), Some("v1"))
        );
        assert_eq!(
            (
                o.audit.consent_reference.as_deref(),
                o.audit.consent_version.as_deref()
            ),
            (Some("Consent/c1"), Some("v1"))
        );
        // The first disclosure to a destination is remembered for fan-out.
        assert_eq!(o.state.len(), 1);
        assert_eq!(
            o.state[0].key,
            format!("disclosed/{SUBJECT}/marketing/crm-marketing")
        );
    }

    /// Events already past the gate are stopped when the consent they were
    /// allowed on has changed; a record without a basis never leaves.
    #[test]
    fn route_rechecks_the_consent_the_gate_used() {
        let t = topology();
        let route = make(&t);
        let ps = |table: &BTreeMap<String, Vec<u8>>, ev: CanonicalEvent| {
            route.process(&input(ev, Some("ik1-in")), table).remove(0)
        };
        for (table, why) in [
            (
                table(&t, ConsentStatus::Revoked, 1),
                consent::reason::REVOKED,
            ),
            (
                table(&t, ConsentStatus::Active, 2),
                consent::reason::CHANGED,
            ),
            (
                table(&t, ConsentStatus::Expired, 1),
                consent::reason::EXPIRED,
            ),
            (BTreeMap::new(), consent::reason::UNKNOWN),
        ] {
            let o = ps(&table, event("patient-support"));
            assert!(o.outputs.is_empty() && o.disclosures.is_empty(), "{why}");
            assert_eq!(
                (o.audit.decision.as_str(), o.audit.reason_code.as_str()),
                ("deny", why)
            );
            assert!(o.quarantine.is_none() && o.state.is_empty());
        }
        let mut no_basis = event("patient-support");
        no_basis.consent_basis = None;
        let o = ps(&table(&t, ConsentStatus::Active, 1), no_basis);
        assert_eq!(
            (o.audit.decision.as_str(), o.audit.reason_code.as_str()),
            ("deny", consent::reason::UNKNOWN)
        );
        // A "consent needed" notice has no basis, and goes unless refused.
        let mut notice = event("marketing");
        notice.consent_basis = None;
        notice.event_type = crate::consent_gate::CONSENT_NEEDED.into();
        let sent = ps(&BTreeMap::new(), notice.clone());
        assert_eq!(sent.outputs.len(), 1);
        assert!(sent.state.is_empty(), "a notice is no disclosure to revoke");
        assert!(ps(&table(&t, ConsentStatus::Revoked, 1), notice)
            .outputs
            .is_empty());
    }

    /// A revocation reaches every destination that received the subject's
    /// data under the code's purposes, once, naming the subject as the
    /// destination knows it.
    #[test]
    fn revocations_fan_out_to_every_destination_that_received_data() {
        let t = topology();
        let route = make(&t);
        let mut state = table(&t, ConsentStatus::Active, 1);
        for purpose in [
            "patient-support",
            "trial-recruitment",
            "registry-research",
            "marketing",
        ] {
            let mut ev = event(purpose);
            ev.subject_key = format!("tok:{purpose}:v1:AAAA").into();
            let o = route
                .process(&input(ev, Some(&format!("ik-{purpose}"))), &state)
                .remove(0);
            assert_eq!(o.outputs.len(), 1, "{purpose}");
            apply_writes(&mut state, &o.state);
        }
        let all = |_: &str, _: i32| true;
        assert!(
            route.on_state_change(None, &state, &all).is_empty(),
            "nothing revoked yet"
        );
        // HRESCH covers trial-recruitment and registry-research.
        let key = consent::table_key(SUBJECT, "HRESCH", "*");
        let revoked = ConsentEntry {
            status: ConsentStatus::Revoked,
            version: Some(2),
            ..ConsentEntry::decode(&state[&key]).unwrap()
        };
        state.insert(key.clone(), revoked.encode());
        let notices = route.on_state_change(Some(std::slice::from_ref(&key)), &state, &all);
        let mut topics: Vec<_> = notices
            .iter()
            .map(|o| o.outputs[0].topic.to_string())
            .collect();
        topics.sort();
        assert_eq!(topics, ["out.research-registry", "out.trial-recruitment"]);
        for o in &notices {
            let n = &o.outputs[0].event;
            assert_eq!(n.event_type, CONSENT_REVOKED);
            assert_eq!(o.audit.decision, decision::REVOCATION_NOTICE);
            assert_eq!(o.audit.consent_version.as_deref(), Some("v2"));
            assert_eq!(
                o.audit.event_time_ms,
                Some(20),
                "from the revocation's arrival"
            );
            // The trial destination knows the subject by its linkage token;
            // the registry's allowlist has subject_key too.
            assert!(n.subject_key.ends_with(":v1:AAAA"), "{}", n.subject_key);
            assert!(n.subject_token.is_none() && n.consent_basis.is_none());
            apply_writes(&mut state, &o.state);
        }
        // Sent once: the disclosures on record are cleared.
        assert!(route.on_state_change(None, &state, &all).is_empty());
        // Not this instance's subject: another instance writes the notice.
        let none = |_: &str, _: i32| false;
        let key = consent::table_key(SUBJECT, "CAREMGT", "*");
        state.remove(&key);
        assert!(route
            .on_state_change(Some(std::slice::from_ref(&key)), &state, &none)
            .is_empty());
        // An erasure is a revocation too.
        let erased = route.on_state_change(Some(&[key]), &state, &all);
        assert_eq!(erased.len(), 1);
        assert_eq!(erased[0].outputs[0].topic, "out.patient-support");
        assert_eq!(erased[0].audit.reason_code, "consent_erased");
    }

    /// After a key rotation a destination may know the subject by a second
    /// token (deterministic tokens follow the active version): route adds
    /// it, and the revocation reaches the destination under both names. An
    /// unreadable consent entry notifies too, never leaving a destination
    /// in the dark.
    #[test]
    fn notices_reach_every_name_a_destination_knows_the_subject_by() {
        let t = topology();
        let route = make(&t);
        let mut state = table(&t, ConsentStatus::Active, 1);
        for (i, token) in [
            "tok:registry:v1:OLD",
            "tok:registry:v2:NEW",
            "tok:registry:v2:NEW",
        ]
        .into_iter()
        .enumerate()
        {
            let mut ev = event("registry-research");
            ev.subject_key = token.into();
            let o = route
                .process(&input(ev, Some(&format!("ik-{i}"))), &state)
                .remove(0);
            apply_writes(&mut state, &o.state);
            // The third, a name already known, writes nothing.
            assert_eq!(o.state.len(), usize::from(i < 2), "{token}");
        }
        let key = consent::table_key(SUBJECT, "HRESCH", "*");
        let revoked = ConsentEntry {
            status: ConsentStatus::Revoked,
            version: Some(2),
            ..ConsentEntry::decode(&state[&key]).unwrap()
        };
        state.insert(key.clone(), revoked.encode());
        let all = |_: &str, _: i32| true;
        let notices = route.on_state_change(Some(std::slice::from_ref(&key)), &state, &all);
        assert_eq!(notices.len(), 1);
        let names: Vec<&str> = notices[0]
            .outputs
            .iter()
            .map(|o| o.event.subject_key.as_str())
            .collect();
        assert_eq!(names, ["tok:registry:v1:OLD", "tok:registry:v2:NEW"]);
        assert_ne!(notices[0].outputs[0].key, notices[0].outputs[1].key);

        // An unreadable entry: the destination is told.
        let mut state = table(&t, ConsentStatus::Active, 1);
        let mut ev = event("registry-research");
        ev.subject_key = "tok:registry:v1:OLD".into();
        let o = route.process(&input(ev, Some("ik-x")), &state).remove(0);
        apply_writes(&mut state, &o.state);
        state.insert(key.clone(), b"{not json".to_vec());
        let notices = route.on_state_change(Some(std::slice::from_ref(&key)), &state, &all);
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].audit.reason_code, consent::reason::UNREADABLE);
    }

    #[test]
    fn phi_purposes_are_labelled_in_the_ledger() {
        let t = topology();
        let o = make(&t)
            .process(
                &input(event("patient-support"), Some("ik1-in")),
                &table(&t, ConsentStatus::Active, 1),
            )
            .remove(0);
        assert!(o.disclosures[0].phi);
        assert_eq!(
            o.disclosures[0].subject_reference.as_deref(),
            Some("tok:crm:v1:AAAA")
        );
        assert_eq!(o.outputs[0].event.subject_key, "tok:crm:v1:AAAA");
    }

    #[test]
    fn no_pseudonym_or_no_key_is_quarantined() {
        let t = topology();
        let mut ev = event("marketing");
        ev.subject_token = None;
        let o = make(&t)
            .process(&input(ev, Some("ik1-in")), &NoState)
            .remove(0);
        assert_eq!(
            o.quarantine.map(|q| (q.reason, q.detail)),
            Some((ReasonCode::MissingField, "subject_token".into()))
        );
        assert!(o.outputs.is_empty() && o.disclosures.is_empty());
        let o = make(&t)
            .process(&input(event("marketing"), None), &NoState)
            .remove(0);
        assert_eq!(
            o.quarantine.map(|q| (q.reason, q.detail)),
            Some((ReasonCode::MissingHeader, "idempotency-key".into()))
        );
    }
}
