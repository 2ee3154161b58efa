//! The contract between a pure stage and the runtime that drives it.
//!
//! A stage sees one decoded input at a time, plus a read-only view of its
//! state table, and returns `Outcome`s: the records to write, the audit
//! record of its decision, a quarantine verdict if the input cannot go on,
//! and the state writes its decision implies. It never sees Kafka, a clock
//! or a network, so it can be tested with a `Vec` of inputs and a map.

pub mod name;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use name::{StageName, StateNeed, UnknownStage};

use crate::audit::{AuditOutput, AuditRecord, Decision, Transformation};
use crate::disclosure::Disclosure;
use crate::envelope::Text;
use crate::keys;
use crate::reason::ReasonCode;
use crate::topology::FieldClass;
use crate::CanonicalEvent;

/// Where an input came from and the identity headers it carried.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InputMeta {
    /// Logical topic name, as in topology.yaml (without a deployment prefix).
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka record key, if any (a digest, never PHI).
    pub key: Option<String>,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    /// When the broker appended the input (ms since the epoch), if known.
    pub timestamp_ms: Option<i64>,
    /// The batch's processing time, from the runtime (stages have no
    /// clock): consent expiry is judged at it.
    pub now_ms: i64,
}

/// An input's body, decoded by the runtime according to its topic's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Bytes from a source feed (HL7 v2, FHIR JSON).
    Raw(Vec<u8>),
    /// A canonical envelope from an earlier stage (boxed: it is large).
    Event(Box<CanonicalEvent>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageInput {
    pub meta: InputMeta,
    pub body: Body,
}

/// One record a stage asks the runtime to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Logical topic name.
    pub topic: Text,
    /// Kafka record key (a subject digest or a correlation id; never PHI).
    pub key: Text,
    pub idempotency_key: Text,
    pub correlation_id: Text,
    /// Boxed: an envelope is over a kilobyte, and an output is moved
    /// several times on its way to the producer.
    pub event: Box<CanonicalEvent>,
}

/// Why an input cannot go on. `detail` names a path or a limit, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub reason: ReasonCode,
    pub detail: String,
}

/// Everything a stage decided about one unit of work: an input, one event
/// of an input that carries several (a FHIR Bundle), or a held record that
/// a state change lets go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The key under which the runtime remembers that this unit was handled,
    /// so that a second delivery of it produces nothing.
    pub dedup_key: Text,
    pub correlation_id: Option<Text>,
    pub outputs: Vec<Output>,
    pub audit: AuditRecord,
    pub quarantine: Option<Quarantine>,
    /// Writes to the stage's state table, applied only if the unit is
    /// written (not if it is a conflicting duplicate).
    pub state: Vec<StateWrite>,
    /// For a quarantined unit: the payload to hold in quarantine instead of
    /// the input's own bytes (`None`: the input as it arrived).
    pub held_payload: Option<Vec<u8>>,
    /// Disclosure-ledger records (route): one per output to a destination,
    /// written in the same transaction.
    pub disclosures: Vec<Disclosure>,
    /// What each record to a destination carries, by disclosure class
    /// (route): the PHI footprint metrics, counted once the batch commits.
    pub released: Vec<Released>,
}

/// The fields one record released to a destination holds, counted by
/// disclosure class; never the fields' values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Released {
    pub purpose: Text,
    pub fields: std::collections::BTreeMap<FieldClass, u32>,
}

/// One write to a stage's state table; `value: None` deletes the key.
#[derive(Clone, PartialEq, Eq)]
pub struct StateWrite {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

impl std::fmt::Debug for StateWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // State values may hold PHI (a held record); keys never do.
        f.debug_struct("StateWrite")
            .field("key", &self.key)
            .field("bytes", &self.value.as_ref().map(Vec::len))
            .finish()
    }
}

/// Read access to a stage's state table: a compacted topic the runtime
/// keeps in memory, caught up before the stage sees any input.
pub trait StateView {
    fn get(&self, key: &str) -> Option<&[u8]>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &str) -> Vec<(&str, &[u8])>;
    /// Bytes held in values, to bound what a stage adds.
    fn value_bytes(&self) -> usize;
}

/// The state of a stage that keeps none.
pub struct NoState;

impl StateView for NoState {
    fn get(&self, _: &str) -> Option<&[u8]> {
        None
    }
    fn scan(&self, _: &str) -> Vec<(&str, &[u8])> {
        Vec::new()
    }
    fn value_bytes(&self) -> usize {
        0
    }
}

/// An in-memory state table, for tests and for tools that replay a stage.
impl StateView for std::collections::BTreeMap<String, Vec<u8>> {
    fn get(&self, key: &str) -> Option<&[u8]> {
        std::collections::BTreeMap::get(self, key).map(Vec::as_slice)
    }
    fn scan(&self, prefix: &str) -> Vec<(&str, &[u8])> {
        self.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect()
    }
    fn value_bytes(&self) -> usize {
        self.values().map(Vec::len).sum()
    }
}

/// Applies a unit's state writes to an in-memory table.
pub fn apply_writes(
    table: &mut std::collections::BTreeMap<String, Vec<u8>>,
    writes: &[StateWrite],
) {
    for w in writes {
        match &w.value {
            Some(v) => {
                table.insert(w.key.clone(), v.clone());
            }
            None => {
                table.remove(&w.key);
            }
        }
    }
}

/// Which (logical topic, partition) inputs this instance currently owns.
pub type Owns<'a> = &'a dyn Fn(&str, i32) -> bool;

/// A pure stage: `input + state -> outputs + audit + decision + state writes`.
pub trait Stage: Send + Sync {
    /// Which stage this is (its name in topology.yaml, audit records and
    /// metric labels).
    fn name(&self) -> StageName;

    /// Decides about one input. Most stages return one outcome; one that
    /// splits a record into several events returns one per event, each
    /// deduplicated on its own.
    fn process(&self, input: &StageInput, state: &dyn StateView) -> Vec<Outcome>;

    /// Work that changed state keys make possible (held records whose
    /// missing piece has arrived). `changed: None` means "anything may have
    /// changed" (start-up, a new partition assignment, an aborted batch).
    /// Only work for inputs this instance `owns` may be returned.
    fn on_state_change(
        &self,
        _changed: Option<&[String]>,
        _state: &dyn StateView,
        _owns: Owns<'_>,
    ) -> Vec<Outcome> {
        Vec::new()
    }
}

/// Builds the audit record and outcome of a successful decision.
pub struct Decided<'a> {
    pub stage: StageName,
    pub policy_version: &'a str,
    pub placeholder: bool,
    pub decision: Decision,
    pub purpose: Option<Text>,
    pub transformations: Vec<Transformation>,
}

impl Decided<'_> {
    pub fn outcome(
        self,
        meta: &InputMeta,
        dedup_key: Text,
        event_id: Option<Text>,
        correlation_id: Text,
        outputs: Vec<Output>,
    ) -> Outcome {
        let audit = AuditRecord {
            audit_id: keys::audit_id(self.stage.as_str(), self.policy_version, &dedup_key),
            stage: Text::const_new(self.stage.as_str()),
            policy_version: self.policy_version.into(),
            correlation_id: Some(correlation_id.clone()),
            event_id,
            idempotency_key: dedup_key.clone(),
            decision: self.decision,
            reason_code: Text::const_new(ReasonCode::Ok.as_str()),
            placeholder: self.placeholder,
            purpose: self.purpose,
            profile: None,
            source_topic: meta.topic.as_str().into(),
            source_partition: meta.partition,
            source_offset: meta.offset,
            outputs: outputs
                .iter()
                .map(|o| AuditOutput {
                    topic: o.topic.clone(),
                    idempotency_key: o.idempotency_key.clone(),
                    fingerprint: Text::default(),
                    correlation_id: Some(o.correlation_id.clone()),
                    event_id: None,
                })
                .collect(),
            transformations: self.transformations,
            ..Default::default()
        };
        Outcome {
            dedup_key,
            correlation_id: Some(correlation_id),
            outputs,
            audit,
            quarantine: None,
            state: Vec::new(),
            held_payload: None,
            disclosures: Vec::new(),
            released: Vec::new(),
        }
    }
}

impl Outcome {
    /// The outcome of an input that must go to quarantine. The dedup key is
    /// the input's own idempotency key when it has one, else its position.
    pub fn quarantined(
        stage: StageName,
        policy_version: &str,
        meta: &InputMeta,
        event_id: Option<Text>,
        reason: ReasonCode,
        detail: impl Into<String>,
    ) -> Outcome {
        let dedup_key = match &meta.idempotency_key {
            Some(k) => k.as_str().into(),
            None => keys::positional_key(stage.as_str(), &meta.topic, meta.partition, meta.offset),
        };
        Outcome::quarantined_with_key(
            stage,
            policy_version,
            meta,
            dedup_key,
            event_id,
            reason,
            detail,
        )
    }

    pub fn quarantined_with_key(
        stage: StageName,
        policy_version: &str,
        meta: &InputMeta,
        dedup_key: Text,
        event_id: Option<Text>,
        reason: ReasonCode,
        detail: impl Into<String>,
    ) -> Outcome {
        let audit = AuditRecord {
            audit_id: keys::audit_id(stage.as_str(), policy_version, &dedup_key),
            stage: Text::const_new(stage.as_str()),
            policy_version: policy_version.into(),
            correlation_id: meta.correlation_id.as_deref().map(Text::from),
            event_id,
            idempotency_key: dedup_key.clone(),
            decision: Decision::Quarantine,
            reason_code: Text::const_new(reason.as_str()),
            placeholder: false,
            purpose: None,
            profile: None,
            source_topic: meta.topic.as_str().into(),
            source_partition: meta.partition,
            source_offset: meta.offset,
            outputs: Vec::new(),
            transformations: Vec::new(),
            ..Default::default()
        };
        Outcome {
            dedup_key,
            correlation_id: meta.correlation_id.as_deref().map(Text::from),
            outputs: Vec::new(),
            audit,
            quarantine: Some(Quarantine {
                reason,
                detail: detail.into(),
            }),
            state: Vec::new(),
            held_payload: None,
            disclosures: Vec::new(),
            released: Vec::new(),
        }
    }
}
