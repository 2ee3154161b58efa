//! Consentry's pure stage logic. Each stage is a plain struct built from the
//! validated topology, with `process(&self, input, &state) -> Vec<Outcome>`.
//!
//! Architecture invariant: no Kafka, no threads, no clock, no I/O. A stage
//! is tested with a `Vec` of inputs and exact expected outcomes.
//!
//! One module per stage, a folder where the stage has helpers of its own:
//! `normalize` (`hl7`: the HL7 v2 reader and ADT mapping; `fhir`: the FHIR
//! mapping and its element tables), `consent_ledger`, `consent_gate`,
//! `deidentify` (`profiles`, `values`, `scrub`), `tokenize`, `route`
//! (`revocation`, `disclosure`). Shared by several stages: `forward`
//! (accepting an event, keying outputs), `subject` (the subject's
//! pseudonym), `time` (date parsing). `build` makes a stage from the
//! topology and `Services`, or says why it cannot (`BuildError`).

pub mod consent_gate;
pub mod consent_ledger;
pub mod deidentify;
mod error;
mod forward;
pub mod normalize;
#[cfg(test)]
mod pipeline_tests;
pub mod replay;
pub mod route;
pub mod subject;
#[cfg(test)]
mod test_fixtures;
pub mod time;
pub mod tokenize;

/// The scrubber is de-identify's, and the vault also runs it over the
/// free text of the call records it keeps.
pub use deidentify::scrub;

pub use error::BuildError;

use consentry_core::stage::StageName;
use consentry_core::stage::{apply_writes, Outcome, Stage, StageInput};
use consentry_core::topology::Topology;
use consentry_crypto::{KeyRing, TokenVault};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What stages need besides the topology: the key ring (date shifts,
/// deterministic tokens) and the token vault (random tokens, registered
/// deterministic ones). A stage that needs one it is not given refuses to
/// build, saying which purpose needs it.
#[derive(Default, Clone)]
pub struct Services {
    pub keys: Option<Arc<KeyRing>>,
    pub vault: Option<Arc<dyn TokenVault>>,
}

/// Builds the stage `name` from the topology.
pub fn build(
    name: StageName,
    topology: &Topology,
    services: &Services,
) -> Result<Box<dyn Stage>, BuildError> {
    let keys = services.keys.as_deref();
    Ok(match name {
        StageName::ConsentLedger => Box::new(consent_ledger::ConsentLedger::new(
            topology,
            keys,
            services.vault.clone(),
        )?),
        StageName::Normalize => Box::new(normalize::Normalize::new(topology)),
        StageName::ConsentGate => Box::new(consent_gate::ConsentGate::new(topology, keys)?),
        StageName::DeIdentify => Box::new(deidentify::DeIdentify::new(topology, keys)?),
        StageName::Tokenize => Box::new(tokenize::Tokenize::new(
            topology,
            keys,
            services.vault.clone(),
        )?),
        StageName::Route => Box::new(route::Route::new(topology, keys)?),
    })
}

/// Every stage, in pipeline order.
pub fn build_all(
    topology: &Topology,
    services: &Services,
) -> Result<Vec<Box<dyn Stage>>, BuildError> {
    StageName::ALL
        .into_iter()
        .map(|n| build(n, topology, services))
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

/// Runs the whole pipeline in process, as the runtime would: the consent
/// records through the consent ledger first (its table is what the gate
/// and route read), then the source records stage by stage, each stage's
/// outputs the next one's inputs, every input judged at `now_ms`. Returns
/// each stage's outcomes, in pipeline order. For tests and tools.
pub fn run_in_process(
    topology: &Topology,
    services: &Services,
    consents: Vec<StageInput>,
    sources: Vec<StageInput>,
    now_ms: i64,
) -> Result<Vec<(String, Vec<Outcome>)>, BuildError> {
    let ledger = build(StageName::ConsentLedger, topology, services)?;
    let mut consent_table = BTreeMap::new();
    let outcomes = drive(ledger.as_ref(), &at(consents, now_ms), &mut consent_table);
    let mut out = vec![(StageName::ConsentLedger.to_string(), outcomes)];
    out.extend(run_from(
        topology,
        services,
        &consent_table,
        StageName::Normalize,
        sources,
        now_ms,
    )?);
    Ok(out)
}

/// Runs `inputs` through the stages from `first` to route in process, each
/// stage's outputs the next one's inputs, with `consent_table` as the
/// consent ledger left it, every input judged at `now_ms`. Returns each
/// stage's outcomes, in pipeline order. Replay starts here at consent-gate
/// with what normalize wrote.
pub fn run_from(
    topology: &Topology,
    services: &Services,
    consent_table: &BTreeMap<String, Vec<u8>>,
    first: StageName,
    inputs: Vec<StageInput>,
    now_ms: i64,
) -> Result<Vec<(String, Vec<Outcome>)>, BuildError> {
    let mut out = Vec::new();
    let mut inputs = inputs;
    for name in StageName::topic_chain().iter().filter(|n| **n >= first) {
        let stage = build(*name, topology, services)?;
        let reads_consent = topology
            .stage(name.as_str())
            .is_some_and(|s| s.reads.is_some());
        let mut state = if reads_consent {
            consent_table.clone()
        } else {
            BTreeMap::new()
        };
        let outcomes = drive(
            stage.as_ref(),
            &at(std::mem::take(&mut inputs), now_ms),
            &mut state,
        );
        inputs = outcomes
            .iter()
            .flat_map(|o| &o.outputs)
            .filter(|o| {
                !topology
                    .topic(&o.topic)
                    .is_some_and(|t| t.role == consentry_core::topology::TopicRole::Destination)
            })
            .map(|o| StageInput {
                meta: consentry_core::stage::InputMeta {
                    topic: o.topic.to_string(),
                    key: Some(o.key.to_string()),
                    idempotency_key: Some(o.idempotency_key.to_string()),
                    correlation_id: Some(o.correlation_id.to_string()),
                    ..Default::default()
                },
                body: consentry_core::stage::Body::Event(o.event.clone()),
            })
            .collect();
        out.push((name.to_string(), outcomes));
    }
    Ok(out)
}

/// `inputs`, each judged at `now_ms`.
fn at(inputs: Vec<StageInput>, now_ms: i64) -> Vec<StageInput> {
    inputs
        .into_iter()
        .map(|mut i| {
            i.meta.now_ms = now_ms;
            i
        })
        .collect()
}
