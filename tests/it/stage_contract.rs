//! Every stage built from the shipped topology keeps the stage contract
//! (`consentry_testkit::assert_stage_contract`) over a realistic feed: the
//! synthetic feed's consents and EHR records chained through the six
//! stages in process, as `consentry_stages::run_in_process` chains them,
//! plus records normalize quarantines (a segment it does not know, a
//! truncated FHIR resource) carrying a patient's name and record number.

use consentry_core::stage::StageInput;
use consentry_core::stage::StageName;
use consentry_core::topology::TopicRole;
use consentry_crypto::{Environment, KeyRing};
use consentry_stages::Services;
use consentry_synth::{generate, patients, Feed, SynthConfig};
use consentry_testkit::{
    assert_stage_contract, inputs, shipped_topology, ContractInput, MemoryVault,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// After every synthetic admission and inside every consent's period (see
/// the stages crate's pipeline tests).
const NOW_MS: i64 = 1_796_500_000_000;

/// An ADT with a Z segment normalize does not know: quarantined as drift.
const DRIFT_ADT: &[u8] = b"MSH|^~\\&|CSEHR|CSHOSP|X|Y|20260101120000||ADT^A01^ADT_A01|ZCON1|P|2.5\rEVN|A01|20260101120000\rPID|1||CS9999123^^^CSHOSP^MR||Quintanilla^Evangelina||19800101|F\rZPD|1|x\r";

/// A FHIR Patient cut off mid-document.
const TRUNCATED_FHIR: &[u8] =
    br#"{"resourceType":"Patient","id":"p1","identifier":[{"value":"CS9999456"}],"name":[{"family":"Featherstonehaugh","given":["Octavia"#;

#[test]
fn every_stage_keeps_the_contract_over_a_realistic_feed() {
    let topology = shipped_topology();
    let services = Services {
        keys: Some(Arc::new(KeyRing::from_key(
            Environment::NonProduction,
            [5; 32],
        ))),
        vault: Some(Arc::new(MemoryVault::default())),
    };
    let cfg = SynthConfig::new(21, 4);
    // Every patient's direct identifiers, for every input: an input's own
    // are among them.
    let mut phi: Vec<String> = patients(&cfg)
        .iter()
        .flat_map(|p| p.direct_identifiers())
        .map(|(_, v)| v)
        .collect();
    phi.extend(
        [
            "CS9999123",
            "Quintanilla",
            "Evangelina",
            "CS9999456",
            "Featherstonehaugh",
            "Octavia",
        ]
        .map(String::from),
    );
    let case = |input: StageInput| ContractInput {
        input: with_now(input),
        phi: phi.clone(),
    };
    let feed = generate(&cfg);
    let (consents, sources): (Vec<_>, Vec<_>) = feed.iter().partition(|r| r.feed == Feed::Consent);
    let consents: Vec<ContractInput> = consents
        .into_iter()
        .map(|r| case(inputs::synth(r)))
        .collect();
    let mut next: Vec<ContractInput> = sources
        .into_iter()
        .map(|r| case(inputs::synth(r)))
        .chain([
            case(inputs::raw("ehr.hl7v2", Some("k"), DRIFT_ADT)),
            case(inputs::raw("ehr.fhir", Some("k"), TRUNCATED_FHIR)),
        ])
        .collect();

    let stages = consentry_stages::build_all(&topology, &services).expect("stages build");
    assert_eq!(stages.len(), 6, "all six stages");
    let mut consent_table = BTreeMap::new();
    let mut quarantined = 0;
    for stage in &stages {
        let name = stage.name();
        let outcomes = if name == StageName::ConsentLedger {
            assert_stage_contract(stage.as_ref(), &consents, &mut consent_table)
        } else {
            let reads_consent = topology
                .stage(name.as_str())
                .is_some_and(|s| s.reads.is_some());
            let mut state = if reads_consent {
                consent_table.clone()
            } else {
                BTreeMap::new()
            };
            let these = std::mem::take(&mut next);
            assert!(!these.is_empty(), "{name} has inputs");
            let outcomes = assert_stage_contract(stage.as_ref(), &these, &mut state);
            next = outcomes
                .iter()
                .flat_map(|o| &o.outputs)
                .filter(|o| {
                    !topology
                        .topic(&o.topic)
                        .is_some_and(|t| t.role == TopicRole::Destination)
                })
                .map(|o| case(inputs::from_output(o)))
                .collect();
            outcomes
        };
        assert!(!outcomes.is_empty(), "{name} decided something");
        quarantined += outcomes.iter().filter(|o| o.quarantine.is_some()).count();
    }
    assert!(quarantined >= 2, "the malformed records were quarantined");
}

fn with_now(mut input: StageInput) -> StageInput {
    input.meta.now_ms = NOW_MS;
    input
}
