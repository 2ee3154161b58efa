//! Consentry's pure stage logic. Each stage is a plain struct built from the
//! validated topology, with `process(&self, input) -> Outcome`.
//!
//! Architecture invariant: no Kafka, no threads, no clock, no I/O. A stage
//! is tested with a `Vec` of inputs and exact expected outcomes.

pub mod hl7;
pub mod normalize;
pub mod placeholder;
pub mod time;

use consentry_core::stage::Stage;
use consentry_core::topology::{Topology, STAGE_NAMES};

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
