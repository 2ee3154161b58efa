//! consent-ledger: turns `consent.events` (FHIR R4 Consent resources and
//! Avro `ConsentEvent` captures) into the consent table `consent.state`,
//! enforcing the state machine of `consentry_core::consent`.
//!
//! A FHIR Consent is one change per purpose code it names (root and nested
//! provisions), on the all-channel key; a purpose the previous version of
//! the same document granted and this one no longer names is revoked. A
//! capture is one change for its purpose and channel. Versions are ordered
//! as `consent::order` says: a document's own versions by `meta.versionId`
//! (or, without one, by `meta.lastUpdated`, else `dateTime`), different
//! documents by effective time (`dateTime`, else `meta.lastUpdated`, else
//! the provision's start, else arrival), so `meta` may be absent. Each change is a unit
//! of its own: applied (a state write and an audit record with the consent
//! reference and version), a duplicate (audited, nothing written), or
//! refused (`invalid_transition`, `stale_version`: quarantined and audited).
//! Erasure writes a tombstone. A revocation or erasure has the token vault
//! shred the subject's keys in the domain of every purpose it covers;
//! route's revocation fan-out follows from the table change.
//!
//! The table is keyed by the subject's pseudonym; the subject key (a digest)
//! is only used to name the subject to the vault.

use crate::normalize::Normalize;
use crate::subject::SubjectPseudonyms;
use crate::BuildError;
use consentry_core::audit::{Decision, Transformation};
use consentry_core::avro;
use consentry_core::consent::{
    self, ConsentChange, ConsentEntry, ConsentEvent, ConsentStatus, Transition,
};
use consentry_core::envelope::{ConsentInfo, Text};
use consentry_core::keys;
use consentry_core::stage::StageName;
use consentry_core::stage::{Body, Decided, Outcome, StageInput, StateView, StateWrite};
use consentry_core::topology::Topology;
use consentry_core::{CanonicalEvent, ReasonCode};
use consentry_crypto::{KeyRing, TokenVault};
use std::collections::BTreeSet;
use std::sync::Arc;

pub const NAME: StageName = StageName::ConsentLedger;

/// One change the input asks for, on one key.
struct Asked {
    code: String,
    channel: String,
    /// `None`: erase the entry.
    change: Option<ConsentChange>,
    /// `<reference>@v<version>/<code>/<channel>/<state>`: the unit's identity.
    identity: String,
}

/// Who the input is about.
struct Subject {
    key: Text,
    token: Text,
}

pub struct ConsentLedger {
    policy_version: Text,
    subject_system: String,
    normalize: Normalize,
    subjects: SubjectPseudonyms,
    vault: Arc<dyn TokenVault>,
    /// (consent code, channel, token domain) of every purpose: what a
    /// revocation shreds.
    domains: Vec<(String, String, String)>,
}

impl ConsentLedger {
    pub fn new(
        topology: &Topology,
        keys: Option<&KeyRing>,
        vault: Option<Arc<dyn TokenVault>>,
    ) -> Result<ConsentLedger, BuildError> {
        let ring = keys.ok_or(BuildError::StageNeedsKeys {
            stage: NAME,
            why: "the table is keyed by pseudonyms",
        })?;
        let vault = vault.ok_or(BuildError::StageNeedsVault {
            stage: NAME,
            why: "revocations shred subjects' keys",
        })?;
        Ok(ConsentLedger {
            policy_version: topology.policy_version.as_str().into(),
            subject_system: topology.identity.subject_system.clone(),
            normalize: Normalize::new(topology),
            subjects: SubjectPseudonyms::new(ring)?,
            vault,
            domains: topology
                .purposes
                .values()
                .map(|p| {
                    (
                        p.consent_code.clone(),
                        p.channel.clone(),
                        p.token_domain.clone(),
                    )
                })
                .collect(),
        })
    }

    fn quarantine(&self, input: &StageInput, reason: ReasonCode, detail: &str) -> Outcome {
        Outcome::quarantined(
            NAME,
            &self.policy_version,
            &input.meta,
            None,
            reason,
            detail,
        )
    }

    fn subject(&self, key: Text) -> Subject {
        Subject {
            token: self.subjects.of(&key),
            key,
        }
    }

    /// A capture from a portal or CRM.
    fn capture(
        &self,
        input: &StageInput,
        bytes: &[u8],
    ) -> Result<(Subject, Vec<Asked>), (ReasonCode, String)> {
        let (_, body) =
            avro::split_wire(bytes).map_err(|e| (ReasonCode::Malformed, e.to_string()))?;
        let c: ConsentEvent =
            avro::decode_consent_event(body).map_err(|e| (ReasonCode::Malformed, e.to_string()))?;
        if c.subject_system != self.subject_system {
            return Err((ReasonCode::UnresolvedSubject, "subject_system".into()));
        }
        if c.subject_value.trim().is_empty() {
            return Err((ReasonCode::MissingField, "subject_value".into()));
        }
        if c.purpose.is_empty() || !c.purpose.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err((ReasonCode::Malformed, "purpose".into()));
        }
        let channel_ok = |ch: &str| {
            ch == consent::ANY_CHANNEL
                || !ch.is_empty()
                    && ch.len() <= 32
                    && ch.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        };
        if !channel_ok(&c.channel) {
            return Err((ReasonCode::Malformed, "channel".into()));
        }
        if c.consent_id.is_empty() || c.consent_id.len() > 128 || c.consent_id.contains('/') {
            return Err((ReasonCode::Malformed, "consent_id".into()));
        }
        if c.version < 1 {
            return Err((ReasonCode::Malformed, "version".into()));
        }
        let change = if c.state == consent::ERASED {
            None
        } else {
            let status = ConsentStatus::parse(&c.state)
                .ok_or_else(|| (ReasonCode::Malformed, "state".to_string()))?;
            let received_ms = input.meta.timestamp_ms.unwrap_or(input.meta.now_ms);
            Some(ConsentChange {
                status,
                version: Some(c.version),
                updated_ms: None,
                issued_ms: None,
                reference: Text::from(format!("capture/{}", c.consent_id)),
                permit: true,
                // A capture says when it took effect; never after it came.
                effective_ms: c.effective_ms.min(received_ms),
                dated: true,
                period_start_ms: None,
                period_end_ms: c.expires_ms,
                provisions: Vec::new(),
                source: c.source.as_str().into(),
                captured_by: c.captured_by.as_deref().map(Text::from),
                notice_version: c.notice_version.as_deref().map(Text::from),
                received_ms,
            })
        };
        let subject = self.subject(keys::subject_key(&c.subject_system, &c.subject_value));
        // The subject is part of the unit's identity: two subjects' captures
        // may share an id and version, and neither may be taken for the
        // other's duplicate.
        let identity = format!(
            "{}/capture/{}@v{}/{}/{}/{}/{}",
            subject.token,
            c.consent_id,
            c.version,
            c.purpose,
            c.channel,
            c.state,
            c.expires_ms.unwrap_or(i64::MAX)
        );
        Ok((
            subject,
            vec![Asked {
                code: c.purpose,
                channel: c.channel,
                change,
                identity,
            }],
        ))
    }

    /// A FHIR Consent: one change per purpose code, on every channel.
    fn fhir(
        &self,
        input: &StageInput,
        bytes: &[u8],
        state: &dyn StateView,
    ) -> Result<(Subject, Vec<Asked>), (ReasonCode, String)> {
        let mut events = self.normalize.map_fhir(bytes)?;
        if events.len() != 1 {
            return Err((ReasonCode::UnsupportedType, "one Consent per record".into()));
        }
        let ev: CanonicalEvent = events.remove(0);
        let Some(info) = ev
            .consent
            .as_ref()
            .filter(|_| ev.event_type == "fhir:Consent")
        else {
            return Err((ReasonCode::UnsupportedType, "resourceType".into()));
        };
        let head = DocumentHead::read(bytes);
        // The document: `Consent/<id>`; a Consent without an id is a
        // document of its own content (it can never be updated).
        let reference: Text = match &head.id {
            Some(id) if is_fhir_id(id) => Text::from(format!("Consent/{id}")),
            Some(_) => return Err((ReasonCode::Malformed, "Consent.id".into())),
            None => info.reference.clone(),
        };
        let status = info
            .status
            .as_deref()
            .and_then(ConsentStatus::from_fhir)
            .ok_or_else(|| (ReasonCode::Malformed, "status".to_string()))?;
        let codes = codes_of(info);
        if codes.is_empty() {
            return Err((ReasonCode::MissingField, "provision.purpose".into()));
        }
        let subject = self.subject(ev.subject_key.clone());
        let received_ms = input.meta.timestamp_ms.unwrap_or(input.meta.now_ms);
        let permit = info.decision.as_deref() != Some("deny");
        let change = |status: ConsentStatus| {
            let effective = ConsentChange::effective(
                status == ConsentStatus::Revoked || !permit,
                head.date_time_ms,
                head.last_updated_ms,
                received_ms,
            );
            ConsentChange {
                status,
                version: head.version,
                updated_ms: head.last_updated_ms,
                issued_ms: head.date_time_ms,
                reference: reference.clone(),
                permit,
                effective_ms: effective.unwrap_or(received_ms),
                dated: effective.is_some(),
                period_start_ms: info.period_start_ms,
                period_end_ms: info.period_end_ms,
                provisions: info.provisions.clone(),
                source: ev.source_system.clone(),
                captured_by: None,
                notice_version: None,
                received_ms,
            }
        };
        // What the document says besides its state, for the unit's identity:
        // a re-send of the same revision with other content is another unit.
        let content = {
            let mut d = keys::ContentDigest::new();
            d.update(&serde_json::to_vec(&info.provisions).unwrap_or_default());
            for t in [info.period_start_ms, info.period_end_ms] {
                d.update(&t.unwrap_or(i64::MIN).to_be_bytes());
            }
            hex::encode(&d.finish()[..8])
        };
        let asked = |code: &str, status: ConsentStatus| {
            let c = change(status);
            Asked {
                code: code.to_string(),
                channel: consent::ANY_CHANNEL.to_string(),
                identity: format!(
                    "{}/{reference}@{}/{code}/{}/{}{}/{content}",
                    subject.token,
                    c.revision(),
                    consent::ANY_CHANNEL,
                    status.as_str(),
                    if c.permit { "" } else { "/deny" }
                ),
                change: Some(c),
            }
        };
        let mut out: Vec<Asked> = codes.iter().map(|c| asked(c, status)).collect();
        // Purposes an earlier version of this document granted and this
        // one leaves out: withdrawn.
        for (key, value) in state.scan(&format!("{}{}/", consent::KEY_PREFIX, subject.token)) {
            let Some((_, code, channel)) = consent::parse_key(key) else {
                continue;
            };
            let Some(e) = ConsentEntry::decode(value) else {
                continue;
            };
            if channel == consent::ANY_CHANNEL
                && e.reference == reference
                && consent::order(&e, &change(status)) == consent::Order::Newer
                && !e.status.is_final()
                && !codes.contains(code)
            {
                out.push(asked(code, ConsentStatus::Revoked));
            }
        }
        Ok((subject, out))
    }

    fn unit(
        &self,
        input: &StageInput,
        subject: &Subject,
        asked: Asked,
        state: &dyn StateView,
    ) -> Outcome {
        let key = consent::table_key(&subject.token, &asked.code, &asked.channel);
        let key_of_change = key.clone();
        let current = state.get(&key).and_then(ConsentEntry::decode);
        let dedup =
            keys::idempotency_key(NAME.as_str(), &self.policy_version, &asked.identity, None);
        let from = current.as_ref().map_or("unknown", |e| e.status.as_str());
        let path = format!("consent/{}/{}", asked.code, asked.channel);
        // A unit of the ledger: no outputs, its decision and steps, and the
        // write it makes to the table.
        let unit = |decision: Decision, steps, write: Option<StateWrite>| {
            let mut o = Decided {
                stage: NAME,
                policy_version: &self.policy_version,
                placeholder: false,
                decision,
                purpose: None,
                transformations: steps,
            }
            .outcome(
                &input.meta,
                dedup.clone(),
                None,
                Text::default(),
                Vec::new(),
            );
            o.state.extend(write);
            o
        };
        let (mut o, reference, version) = match &asked.change {
            None => {
                let steps = vec![Transformation::new(
                    &path,
                    "erase",
                    &format!("{from}->none"),
                )];
                let o = unit(
                    Decision::ConsentApply,
                    steps,
                    Some(StateWrite { key, value: None }),
                );
                let reference = current.as_ref().map(|e| e.reference.clone());
                (o, reference, current.as_ref().map(ConsentEntry::revision))
            }
            Some(change) => match consent::transition(current.as_ref(), change) {
                Transition::Apply(entry) => {
                    let steps = vec![Transformation::new(
                        &path,
                        "transition",
                        &format!(
                            "{from}->{} {}->{}",
                            entry.status.as_str(),
                            current
                                .as_ref()
                                .map_or_else(|| Text::const_new("none"), ConsentEntry::revision),
                            entry.revision()
                        ),
                    )];
                    let write = StateWrite {
                        key,
                        value: Some(entry.encode()),
                    };
                    let o = unit(Decision::ConsentApply, steps, Some(write));
                    (o, Some(change.reference.clone()), Some(change.revision()))
                }
                Transition::Duplicate => (
                    unit(Decision::ConsentDuplicate, Vec::new(), None),
                    Some(change.reference.clone()),
                    Some(change.revision()),
                ),
                Transition::Refuse(r) => {
                    let reason = match r {
                        consent::Refusal::InvalidTransition { .. }
                        | consent::Refusal::LooserSameRevision { .. } => {
                            ReasonCode::InvalidTransition
                        }
                        consent::Refusal::StaleVersion { .. } => ReasonCode::StaleVersion,
                    };
                    let o = Outcome::quarantined_with_key(
                        NAME,
                        &self.policy_version,
                        &input.meta,
                        dedup,
                        None,
                        reason,
                        format!("{path}: {}", r.detail()),
                    );
                    (o, Some(change.reference.clone()), Some(change.revision()))
                }
            },
        };
        // A withdrawal (revoked, erased, or superseded by a refusal: a newer
        // opt-out document) has the vault forget the subject in every
        // domain the consent covered. Idempotent, so a retried batch does it
        // again harmlessly; an unanswered vault retries the batch.
        let applied = o.quarantine.is_none() && !o.state.is_empty();
        let withdraws = applied && asked.change.as_ref().is_none_or(|c| c.refuses(&asked.code));
        // A grant after a withdrawal (or of a subject the table forgot, as
        // after an erasure) lifts the vault's tombstones: until then no
        // record in flight could bring the subject back.
        let grants = applied
            && asked
                .change
                .as_ref()
                .is_some_and(|c| c.status == ConsentStatus::Active && !c.refuses(&asked.code))
            && !current
                .as_ref()
                .is_some_and(|e| e.status == ConsentStatus::Active && !e.refuses(&asked.code))
            // Not while another channel's entry of the code still refuses:
            // the purpose stays withdrawn there (the gate denies on it).
            && !state
                .scan(&consent::table_key(&subject.token, &asked.code, ""))
                .into_iter()
                .filter(|(k, _)| *k != key_of_change)
                .any(|(_, v)| ConsentEntry::decode(v).is_none_or(|e| e.refuses(&asked.code)));
        if withdraws || grants {
            for (code, channel, domain) in &self.domains {
                let covers = *code == asked.code
                    && (asked.channel == consent::ANY_CHANNEL || *channel == asked.channel);
                if !covers {
                    continue;
                }
                let (done, method) = if withdraws {
                    (self.vault.shred(&subject.key, domain).map(|_| ()), "shred")
                } else {
                    (self.vault.reinstate(&subject.key, domain), "reinstate")
                };
                match done {
                    Ok(()) => o.audit.transformations.push(Transformation::new(
                        &path,
                        method,
                        &format!("domain={domain}"),
                    )),
                    Err(e) => {
                        return Outcome::quarantined(
                            NAME,
                            &self.policy_version,
                            &input.meta,
                            None,
                            ReasonCode::Unavailable,
                            e.to_string(),
                        )
                    }
                }
            }
        }
        o.audit.consent_reference = reference;
        o.audit.consent_version = version;
        o.audit.reason_code = Text::const_new(ReasonCode::Ok.as_str());
        if let Some(q) = &o.quarantine {
            o.audit.reason_code = Text::const_new(q.reason.as_str());
        }
        o
    }
}

/// What orders a FHIR Consent among its versions and among other
/// documents: its id, `meta.versionId` (when numeric), `meta.lastUpdated`
/// and `dateTime`, each optional. Read from the record normalize has
/// already checked, so a value that does not parse is simply absent.
#[derive(Default)]
struct DocumentHead {
    id: Option<String>,
    version: Option<i64>,
    last_updated_ms: Option<i64>,
    date_time_ms: Option<i64>,
}

impl DocumentHead {
    /// Read as `serde_json::Value`, as normalize read it (a duplicated key:
    /// the last one, for both), never through a struct that would refuse
    /// the whole head over one odd field.
    fn read(bytes: &[u8]) -> DocumentHead {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            return DocumentHead::default();
        };
        let text = |p: &str| v.pointer(p).and_then(serde_json::Value::as_str);
        let time = |p: &str| text(p).and_then(crate::time::parse_fhir_datetime);
        DocumentHead {
            id: text("/id").map(String::from),
            version: text("/meta/versionId")
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|n| *n >= 1),
            last_updated_ms: time("/meta/lastUpdated"),
            date_time_ms: time("/dateTime"),
        }
    }
}

/// FHIR's `id` type: `[A-Za-z0-9\-\.]{1,64}` (it goes into table entries
/// and every gated record's consent basis: never unbounded input).
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Every purpose code a Consent names, at its root or in a provision.
fn codes_of(info: &ConsentInfo) -> BTreeSet<String> {
    info.purposes
        .iter()
        .chain(info.provisions.iter().flat_map(|p| p.purposes.iter()))
        .map(|c| c.to_string())
        .collect()
}

impl consentry_core::stage::Stage for ConsentLedger {
    fn name(&self) -> StageName {
        NAME
    }

    fn process(&self, input: &StageInput, state: &dyn StateView) -> Vec<Outcome> {
        let Body::Raw(bytes) = &input.body else {
            return vec![self.quarantine(
                input,
                ReasonCode::SchemaMismatch,
                "consent-ledger reads raw consent records",
            )];
        };
        let parsed = match bytes.first() {
            // The Confluent wire format's magic byte: an Avro capture.
            Some(0) => self.capture(input, bytes),
            Some(_) => self.fhir(input, bytes, state),
            None => Err((ReasonCode::Empty, "record".into())),
        };
        match parsed {
            Ok((subject, asked)) => asked
                .into_iter()
                .map(|a| self.unit(input, &subject, a, state))
                .collect(),
            Err((reason, detail)) => vec![self.quarantine(input, reason, &detail)],
        }
    }
}

#[cfg(test)]
mod tests;
