//! normalize turns any bytes on either source topic into an Outcome: an
//! output or a quarantine verdict, never a panic.
#![no_main]
use consentry_core::stage::{Body, InputMeta, Stage, StageInput};
use consentry_core::topology::Topology;
use consentry_stages::normalize::Normalize;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn stage() -> &'static Normalize {
    static S: OnceLock<Normalize> = OnceLock::new();
    S.get_or_init(|| {
        let t = Topology::parse("topology.yaml", include_str!("../../topology.yaml")).expect("shipped topology");
        Normalize::new(&t)
    })
}

fuzz_target!(|data: &[u8]| {
    let (topic, bytes) = match data.split_first() {
        Some((b, rest)) if b % 2 == 0 => ("ehr.hl7v2", rest),
        Some((_, rest)) => ("ehr.fhir", rest),
        None => ("ehr.fhir", data),
    };
    let input = StageInput {
        meta: InputMeta { topic: topic.into(), partition: 0, offset: 0, key: None, idempotency_key: None, correlation_id: None },
        body: Body::Raw(bytes.to_vec()),
    };
    let o = stage().process(&input);
    assert!(o.quarantine.is_some() != (o.outputs.len() == 1));
});
