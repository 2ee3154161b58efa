//! normalize: HL7 v2 ADT and FHIR R4 into one canonical, classified
//! envelope. The front door of the boundary: strict about what it does not
//! know (schema drift, by path), about what it cannot read (malformed), and
//! about whose record it is (unresolved subjects are held, never guessed);
//! never able to panic: every input yields outcomes.
//!
//! State (a compacted topic): the patient index, FHIR `Patient/<id>` to the
//! patient's mapped identifiers, so a resource that names its patient only
//! by reference can be resolved; and records held because their Patient
//! has not arrived yet, re-driven when it does.

pub mod fhir;
pub mod hl7;

use consentry_core::audit::{Decision, Transformation};
use consentry_core::envelope::{self, Identifier, Text};
use consentry_core::keys;
use consentry_core::stage::StageName;
use consentry_core::stage::{
    Body, Decided, InputMeta, Outcome, Output, Owns, Stage, StageInput, StateView, StateWrite,
};
use consentry_core::topology::{Identity, SourceFormat, Topology};
use consentry_core::{CanonicalEvent, ReasonCode};
use std::collections::{BTreeMap, BTreeSet};

pub use fhir::patient_id;

pub const NAME: StageName = StageName::Normalize;
/// Larger records are quarantined unparsed (`too_large`).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Larger records are not held for re-drive: a held record is a state
/// record, and must fit the broker's message size limit.
pub const MAX_HELD_RECORD_BYTES: usize = 512 * 1024;

/// The audit reason of a record that yields no event (`skip`).
pub const NOT_ABOUT_A_PATIENT: &str = "not_about_a_patient";

const INDEX_PREFIX: &str = "idx/";
const HELD_PREFIX: &str = "held/";

pub struct Normalize {
    policy_version: Text,
    output_topic: Text,
    identity: Identity,
    /// Identifier systems topology.yaml maps: the subject's identity.
    mapped: BTreeSet<String>,
    /// HL7 assigning authority -> its identifier system, interned (copied
    /// into every identifier of every message without an allocation).
    authority_systems: BTreeMap<String, Text>,
    hl7_topics: Vec<String>,
    allow_hl7: BTreeSet<String>,
    allow_fhir: BTreeSet<String>,
    hold_bytes: usize,
    max_record_bytes: usize,
}

/// What a mapping needs besides the record.
pub(crate) struct Ctx<'a> {
    pub identity: &'a Identity,
    pub mapped: &'a BTreeSet<String>,
    pub authority_systems: &'a BTreeMap<String, Text>,
    pub allow_hl7: &'a BTreeSet<String>,
    pub allow_fhir: &'a BTreeSet<String>,
    pub state: &'a dyn StateView,
}

/// One mapped event; a Patient also yields its patient-index entry.
pub(crate) struct Mapped {
    pub ev: Box<CanonicalEvent>,
    pub index: Option<(String, Vec<Identifier>)>,
}

/// A reason to quarantine, with the PHI-free path it concerns.
#[derive(Debug)]
pub(crate) struct Reject {
    pub reason: ReasonCode,
    pub detail: String,
    pub event_id: Option<Text>,
    /// The `Patient/<id>` whose arrival would let the record through.
    pub hold: Option<String>,
}

pub(crate) fn reject(reason: ReasonCode, detail: impl Into<String>) -> Reject {
    Reject {
        reason,
        detail: detail.into(),
        event_id: None,
        hold: None,
    }
}

fn index_key(patient: &str) -> String {
    format!("{INDEX_PREFIX}{patient}")
}

fn held_key(patient: &str, record: &str) -> String {
    format!("{HELD_PREFIX}{patient}/{record}")
}

/// A record waiting for its patient: where it came from, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    topic: String,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

impl Held {
    const MAGIC: &'static [u8; 2] = b"H1";

    fn encode(&self) -> Vec<u8> {
        let t = self.topic.as_bytes();
        let mut out = Vec::with_capacity(16 + t.len() + self.payload.len());
        out.extend_from_slice(Self::MAGIC);
        out.extend_from_slice(&(t.len() as u16).to_be_bytes());
        out.extend_from_slice(t);
        out.extend_from_slice(&self.partition.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    fn decode(b: &[u8]) -> Option<Held> {
        let rest = b.strip_prefix(Self::MAGIC)?;
        let n = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let topic = std::str::from_utf8(rest.get(2..2 + n)?).ok()?.to_string();
        let rest = rest.get(2 + n..)?;
        Some(Held {
            topic,
            partition: i32::from_be_bytes(rest.get(..4)?.try_into().ok()?),
            offset: i64::from_be_bytes(rest.get(4..12)?.try_into().ok()?),
            payload: rest.get(12..)?.to_vec(),
        })
    }
}

impl Normalize {
    pub fn new(topology: &Topology) -> Normalize {
        let spec = topology.stage(NAME.as_str());
        let inputs = spec.map(|s| s.inputs.clone()).unwrap_or_default();
        let identity = topology.identity.clone();
        let mut mapped: BTreeSet<String> = identity.hl7_authorities.values().cloned().collect();
        mapped.insert(identity.subject_system.clone());
        Normalize {
            policy_version: topology.policy_version.as_str().into(),
            output_topic: spec
                .and_then(|s| s.outputs.first().map(|t| Text::from(t.as_str())))
                .unwrap_or_default(),
            authority_systems: identity
                .hl7_authorities
                .iter()
                .map(|(authority, system)| (authority.clone(), envelope::intern(system)))
                .collect(),
            identity,
            mapped,
            hl7_topics: inputs
                .into_iter()
                .filter(|t| topology.topic(t).and_then(|s| s.format) == Some(SourceFormat::Hl7v2))
                .collect(),
            allow_hl7: topology.normalize.allow_hl7v2.clone(),
            allow_fhir: topology.normalize.allow_fhir.clone(),
            hold_bytes: topology.normalize.unresolved_hold_bytes,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    pub fn with_max_record_bytes(mut self, n: usize) -> Self {
        self.max_record_bytes = n;
        self
    }

    /// Maps one source record to its events, with subject keys set.
    fn map(&self, topic: &str, bytes: &[u8], state: &dyn StateView) -> Result<Vec<Mapped>, Reject> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(reject(ReasonCode::Empty, "record"));
        }
        if bytes.len() > self.max_record_bytes {
            return Err(reject(
                ReasonCode::TooLarge,
                format!("record exceeds {} bytes", self.max_record_bytes),
            ));
        }
        let ctx = Ctx {
            identity: &self.identity,
            mapped: &self.mapped,
            authority_systems: &self.authority_systems,
            allow_hl7: &self.allow_hl7,
            allow_fhir: &self.allow_fhir,
            state,
        };
        let is_hl7 = self.hl7_topics.iter().any(|t| t == topic);
        let mut mapped = if is_hl7 {
            vec![hl7::adt::map(bytes, &ctx)?]
        } else {
            fhir::map(bytes, &ctx)?
        };
        for m in &mut mapped {
            let ev = &mut m.ev;
            // A source may not claim a label de-identify alone sets.
            ev.security_labels.retain(|l| !keys::is_reserved_label(l));
            ev.policy_version = self.policy_version.clone();
            ev.correlation_id = keys::correlation_id(&ev.source_format, &ev.event_id);
            let subject = ev
                .identifiers
                .iter()
                .find(|i| i.system == self.identity.subject_system);
            match subject {
                Some(i) => ev.subject_key = keys::subject_key(&i.system, &i.value),
                None => {
                    let path = if is_hl7 {
                        "PID-3"
                    } else {
                        "subject.identifier"
                    };
                    return Err(Reject {
                        reason: ReasonCode::UnresolvedSubject,
                        detail: path.into(),
                        event_id: Some(ev.event_id.clone()),
                        hold: None,
                    });
                }
            }
        }
        Ok(mapped)
    }

    /// Maps a FHIR record (a Consent on `consent.events`) to its events
    /// without a patient index: a resource must name its patient by a
    /// mapped identifier. The error is a reason code and a PHI-free detail.
    pub fn map_fhir(&self, bytes: &[u8]) -> Result<Vec<CanonicalEvent>, (ReasonCode, String)> {
        // Any topic that is not an HL7 v2 feed maps as FHIR.
        match self.map("", bytes, &consentry_core::stage::NoState) {
            Ok(mapped) => Ok(mapped.into_iter().map(|m| *m.ev).collect()),
            Err(r) => Err((r.reason, r.detail)),
        }
    }

    /// The outcomes of one source record: an event per mapped resource, or
    /// one quarantine outcome (holding the record when its patient may
    /// still arrive).
    fn outcomes(&self, meta: &InputMeta, bytes: &[u8], state: &dyn StateView) -> Vec<Outcome> {
        match self.map(&meta.topic, bytes, state) {
            Ok(mapped) if mapped.is_empty() => vec![self.skip(meta)],
            Ok(mapped) => mapped.into_iter().map(|m| self.forward(meta, m)).collect(),
            Err(r) => vec![self.quarantine(meta, bytes, state, r)],
        }
    }

    /// A record with nothing about a patient in it (a Practitioner, an
    /// Organization): acknowledged and audited, nothing written. Never
    /// silently dropped: the audit trail says it came and why nothing left.
    fn skip(&self, meta: &InputMeta) -> Outcome {
        let key = keys::idempotency_key(
            NAME.as_str(),
            &self.policy_version,
            &keys::positional_key(NAME.as_str(), &meta.topic, meta.partition, meta.offset),
            Some("skip"),
        );
        let mut o = Decided {
            stage: NAME,
            policy_version: &self.policy_version,
            placeholder: false,
            decision: Decision::Skip,
            purpose: None,
            transformations: Vec::new(),
        }
        .outcome(meta, key, None, Text::default(), Vec::new());
        o.audit.reason_code = Text::const_new(NOT_ABOUT_A_PATIENT);
        o
    }

    fn forward(&self, meta: &InputMeta, m: Mapped) -> Outcome {
        let ev = m.ev;
        let key = keys::idempotency_key(NAME.as_str(), &self.policy_version, &ev.event_id, None);
        let state = m
            .index
            .map(|(patient, ids)| StateWrite {
                key: index_key(&patient),
                value: serde_json::to_vec(&ids).ok(),
            })
            .into_iter()
            .collect();
        let (event_id, correlation_id) = (ev.event_id.clone(), ev.correlation_id.clone());
        let transformations = vec![Transformation {
            path: ev.source_format.clone(),
            target_path: None,
            method: Text::const_new("parse_to_canonical"),
            params: Text::default(),
        }];
        let output = Output {
            topic: self.output_topic.clone(),
            key: ev.subject_key.clone(),
            idempotency_key: key.clone(),
            correlation_id: correlation_id.clone(),
            event: ev,
        };
        let mut o = Decided {
            stage: NAME,
            policy_version: &self.policy_version,
            placeholder: false,
            decision: Decision::Forward,
            purpose: None,
            transformations,
        }
        .outcome(meta, key, Some(event_id), correlation_id, vec![output]);
        o.state = state;
        o
    }

    fn quarantine(
        &self,
        meta: &InputMeta,
        bytes: &[u8],
        state: &dyn StateView,
        r: Reject,
    ) -> Outcome {
        // The record's identity: its event id when known (a resent bad
        // record is then quarantined once), else its position.
        let identity = r.event_id.clone().unwrap_or_else(|| {
            keys::positional_key(NAME.as_str(), &meta.topic, meta.partition, meta.offset)
        });
        let key = keys::idempotency_key(
            NAME.as_str(),
            &self.policy_version,
            &format!("quarantine:{}:{identity}", r.reason),
            None,
        );
        let mut detail = r.detail;
        let mut writes = Vec::new();
        if let Some(patient) = &r.hold {
            // Encoded (a copy of the record) only if it may be held.
            let held = (bytes.len() <= MAX_HELD_RECORD_BYTES).then(|| {
                Held {
                    topic: meta.topic.clone(),
                    partition: meta.partition,
                    offset: meta.offset,
                    payload: bytes.to_vec(),
                }
                .encode()
            });
            match held {
                None => detail.push_str("; not held: record too large to hold"),
                Some(h) if state.value_bytes() + h.len() > self.hold_bytes => {
                    detail.push_str("; not held: hold is full")
                }
                Some(h) => {
                    detail.push_str("; held until the Patient arrives");
                    writes.push(StateWrite {
                        key: held_key(patient, &record_digest(&identity)),
                        value: Some(h),
                    });
                }
            }
        }
        let mut o = Outcome::quarantined_with_key(
            NAME,
            &self.policy_version,
            meta,
            key,
            r.event_id,
            r.reason,
            detail,
        );
        o.state = writes;
        o
    }

    /// Re-drives one held record: its outcomes now, and a marker outcome
    /// that releases the hold and says so in the audit trail.
    fn redrive(&self, held_key: &str, held: &Held, state: &dyn StateView) -> Vec<Outcome> {
        let meta = InputMeta {
            topic: held.topic.clone(),
            partition: held.partition,
            offset: held.offset,
            ..Default::default()
        };
        let mut outs = self.outcomes(&meta, &held.payload, state);
        // Held again under the same key: nothing has changed for it yet.
        if outs
            .iter()
            .any(|o| o.state.iter().any(|w| w.key == held_key))
        {
            return Vec::new();
        }
        let events: Vec<&str> = outs
            .iter()
            .filter_map(|o| o.audit.event_id.as_deref())
            .collect();
        let correlation = outs
            .iter()
            .find_map(|o| o.correlation_id.clone())
            .unwrap_or_default();
        let key = keys::idempotency_key(
            NAME.as_str(),
            &self.policy_version,
            &format!("redrive:{held_key}"),
            None,
        );
        let mut marker = Decided {
            stage: NAME,
            policy_version: &self.policy_version,
            placeholder: false,
            decision: Decision::Redrive,
            purpose: None,
            transformations: Vec::new(),
        }
        .outcome(
            &meta,
            key,
            events.first().map(|e| Text::from(*e)),
            correlation,
            Vec::new(),
        );
        marker.state = vec![StateWrite {
            key: held_key.to_string(),
            value: None,
        }];
        let mut all = vec![marker];
        all.append(&mut outs);
        all
    }
}

/// A short, stable name for a held record in its state key.
fn record_digest(identity: &str) -> String {
    let mut d = keys::ContentDigest::new();
    d.update(identity.as_bytes());
    hex::encode(&d.finish()[..12])
}

/// `held/Patient/<id>/<record>` -> `Patient/<id>`.
fn held_patient(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(HELD_PREFIX)?;
    let (patient, _) = rest.rsplit_once('/')?;
    Some(patient)
}

impl Stage for Normalize {
    fn name(&self) -> StageName {
        NAME
    }

    fn process(&self, input: &StageInput, state: &dyn StateView) -> Vec<Outcome> {
        match &input.body {
            Body::Raw(bytes) => self.outcomes(&input.meta, bytes, state),
            Body::Event(_) => vec![Outcome::quarantined(
                NAME,
                &self.policy_version,
                &input.meta,
                None,
                ReasonCode::SchemaMismatch,
                "normalize reads raw source records",
            )],
        }
    }

    fn on_state_change(
        &self,
        changed: Option<&[String]>,
        state: &dyn StateView,
        owns: Owns<'_>,
    ) -> Vec<Outcome> {
        // Held records whose patient may now be known.
        let candidates: BTreeSet<String> = match changed {
            None => state
                .scan(HELD_PREFIX)
                .into_iter()
                .map(|(k, _)| k.to_string())
                .collect(),
            Some(keys) => keys
                .iter()
                .flat_map(|k| {
                    if let Some(patient) = k.strip_prefix(INDEX_PREFIX) {
                        state
                            .scan(&format!("{HELD_PREFIX}{patient}/"))
                            .into_iter()
                            .map(|(k, _)| k.to_string())
                            .collect()
                    } else if k.starts_with(HELD_PREFIX) {
                        vec![k.clone()]
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
        };
        let mut out = Vec::new();
        for key in candidates {
            let (Some(patient), Some(value)) = (held_patient(&key), state.get(&key)) else {
                continue;
            };
            if state.get(&index_key(patient)).is_none() {
                continue;
            }
            let Some(held) = Held::decode(value) else {
                continue;
            };
            if owns(&held.topic, held.partition) {
                out.extend(self.redrive(&key, &held, state));
            }
        }
        out
    }
}

/// FHIR administrative gender as HL7 table 0001.
pub(crate) fn sex_from_fhir(g: &str) -> &'static str {
    match g {
        "male" => "M",
        "female" => "F",
        "other" => "O",
        _ => "U",
    }
}

/// Country as written, except the United States' spellings, which become
/// ISO 3166 `US` (HL7 feeds write `USA`, FHIR `US`).
pub(crate) fn canonical_country(c: &str) -> Text {
    match c {
        "USA" | "US" | "United States" | "840" => Text::const_new("US"),
        other => other.into(),
    }
}

/// An HL7 date or timestamp to a FHIR date as precise as the source:
/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`. `None` if it is not a date.
pub(crate) fn hl7_date_to_iso(d: &str) -> Option<Text> {
    // The whole value must be a valid DT/DTM (digits, fraction, offset),
    // not just start like one; parse_ts also checks the calendar.
    hl7::parse_ts(d)?;
    // A valid value starts with 4 to 14 digits, an even number.
    let digits = d.bytes().take_while(u8::is_ascii_digit).count();
    let b = d.as_bytes();
    let mut iso = [0u8; 10];
    let len = match digits {
        4 => 4,
        6 => 7,
        n if n >= 8 => 10,
        _ => return None,
    };
    iso[..4].copy_from_slice(&b[..4]);
    if len >= 7 {
        iso[4] = b'-';
        iso[5..7].copy_from_slice(&b[4..6]);
    }
    if len == 10 {
        iso[7] = b'-';
        iso[8..10].copy_from_slice(&b[6..8]);
    }
    std::str::from_utf8(&iso[..len]).ok().map(Text::from)
}

#[cfg(test)]
mod tests;
