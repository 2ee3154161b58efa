//! Consentry's pure stage logic. Each stage is a plain struct built from the
//! validated topology, with `process(&self, input, &state) -> Vec<Outcome>`.
//!
//! Architecture invariant: no Kafka, no threads, no clock, no I/O. A stage
//! is tested with a `Vec` of inputs and exact expected outcomes.

pub mod deidentify;
pub mod hl7;
pub mod normalize;
pub mod placeholder;
pub mod safe_harbor;
pub mod scrub;
pub mod time;

use consentry_core::stage::{apply_writes, Outcome, Stage, StageInput};
use consentry_core::topology::{Topology, STAGE_NAMES};
use std::collections::BTreeMap;

/// Builds the stage `name` from the topology; `None` for an unknown name.
pub fn build(name: &str, topology: &Topology) -> Option<Box<dyn Stage>> {
    Some(match name {
        normalize::NAME => Box::new(normalize::Normalize::new(topology)),
        placeholder::CONSENT_GATE => Box::new(placeholder::ConsentGate::new(topology)),
        placeholder::DE_IDENTIFY => Box::new(placeholder::DeIdentify::new(topology)),
        placeholder::TOKENIZE => Box::new(placeholder::Tokenize::new(topology)),
        placeholder::ROUTE => Box::new(placeholder::Route::new(topology)),
        _ => return None,
    })
}

/// Every stage, in pipeline order.
pub fn build_all(topology: &Topology) -> Vec<Box<dyn Stage>> {
    STAGE_NAMES
        .iter()
        .filter_map(|n| build(n, topology))
        .collect()
}

/// Runs `stage` over `inputs` in process, as the runtime would without
/// Kafka: each input's outcomes in order, their state writes applied to
/// `state`, and after each input the work those writes make possible
/// (held records re-driven). No deduplication: feed it distinct inputs.
pub fn drive(
    stage: &dyn Stage,
    inputs: &[StageInput],
    state: &mut BTreeMap<String, Vec<u8>>,
) -> Vec<Outcome> {
    let owns_all = |_: &str, _: i32| true;
    let mut out = Vec::new();
    for input in inputs {
        let mut pending = stage.process(input, state);
        while !pending.is_empty() {
            let mut changed = Vec::new();
            for o in &pending {
                apply_writes(state, &o.state);
                changed.extend(o.state.iter().map(|w| w.key.clone()));
            }
            out.append(&mut pending);
            if !changed.is_empty() {
                pending = stage.on_state_change(Some(&changed), state, &owns_all);
            }
        }
    }
    out
}
