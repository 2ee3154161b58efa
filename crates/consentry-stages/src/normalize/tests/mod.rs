//! normalize's tests, by theme: HL7 v2 mapping, FHIR mapping, what is
//! quarantined and why, holding records for their patient, and
//! properties over generated and mutated input. The helpers here run one
//! record through a fresh stage.

mod adt_messages;
mod fhir_records;
mod holding;
mod properties;
mod refusals;

use super::*;
use consentry_core::envelope::identifier_kind;
use consentry_core::stage::{apply_writes, InputMeta, NoState};
use consentry_synth::{
    fhir_appointment, fhir_condition, fhir_encounter, fhir_medication_bundle, fhir_observation,
    fhir_patient, hl7_adt, patients, Patient, SynthConfig,
};
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;

fn topology() -> Topology {
    crate::test_fixtures::topology()
}

fn input(topic: &str, bytes: &[u8]) -> StageInput {
    StageInput {
        meta: InputMeta {
            topic: topic.into(),
            partition: 1,
            offset: 42,
            key: None,
            idempotency_key: None,
            correlation_id: None,
            ..Default::default()
        },
        body: Body::Raw(bytes.to_vec()),
    }
}

/// One record through a fresh stage with no state: exactly one outcome.
fn run(topic: &str, bytes: &[u8]) -> Outcome {
    let mut o = Normalize::new(&topology()).process(&input(topic, bytes), &NoState);
    assert_eq!(o.len(), 1, "one outcome expected");
    o.remove(0)
}

fn event(o: &Outcome) -> &CanonicalEvent {
    assert!(
        o.quarantine.is_none(),
        "unexpected quarantine: {:?}",
        o.quarantine
    );
    assert_eq!(o.outputs.len(), 1);
    &o.outputs[0].event
}

fn reason(o: &Outcome) -> (ReasonCode, String) {
    let q = o.quarantine.as_ref().expect("quarantined");
    assert!(o.outputs.is_empty());
    assert_eq!(o.audit.decision, "quarantine");
    assert_eq!(o.audit.reason_code, q.reason.as_str());
    (q.reason, q.detail.clone())
}

fn patient(seed: u64, index: usize) -> (SynthConfig, Patient) {
    let cfg = SynthConfig::new(seed, index + 1);
    let p = patients(&cfg).remove(index);
    (cfg, p)
}

fn ms(epoch_s: i64) -> Option<i64> {
    Some(epoch_s * 1000)
}
