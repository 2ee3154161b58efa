//! normalize turns any bytes on either source topic into outcomes (events,
//! a quarantine verdict, or a re-drive marker), never a panic; also with
//! several records sharing state (patient index, held records, re-drive),
//! and with whatever bytes a corrupted state topic might hold.
#![no_main]
use consentry_core::stage::{Body, InputMeta, Stage, StageInput};
use consentry_stages::normalize::Normalize;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::OnceLock;

fn stage() -> &'static Normalize {
    static S: OnceLock<Normalize> = OnceLock::new();
    S.get_or_init(|| {
        let t = consentry_core::topology::shipped::topology();
        Normalize::new(&t)
    })
}

fuzz_target!(|data: &[u8]| {
    // Records are separated by 0xFF (never valid UTF-8); each one's first
    // byte picks its topic. The last chunk also seeds the state.
    let chunks: Vec<&[u8]> = data.split(|b| *b == 0xff).take(8).collect();
    let inputs: Vec<StageInput> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (topic, bytes) = match c.split_first() {
                Some((b, rest)) if b % 2 == 0 => ("ehr.hl7v2", rest),
                Some((_, rest)) => ("ehr.fhir", rest),
                None => ("ehr.fhir", *c),
            };
            StageInput {
                meta: InputMeta { topic: topic.into(), partition: i as i32 % 3, offset: i as i64, ..Default::default() },
                body: Body::Raw(bytes.to_vec()),
            }
        })
        .collect();
    let mut state: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    if let Some(last) = chunks.last() {
        state.insert("idx/Patient/f".into(), last.to_vec());
        state.insert("held/Patient/f/x".into(), last.to_vec());
    }
    let all = |_: &str, _: i32| true;
    let mut outcomes = stage().on_state_change(None, &state, &all);
    outcomes.extend(consentry_stages::drive(stage(), &inputs, &mut state));
    for o in &outcomes {
        match (&o.quarantine, o.audit.decision.as_str()) {
            (Some(_), "quarantine") => assert!(o.outputs.is_empty()),
            (None, "redrive") => assert!(o.outputs.is_empty()),
            (None, "forward") => {
                assert_eq!(o.outputs.len(), 1);
                assert!(!o.outputs[0].event.subject_key.is_empty());
            }
            other => panic!("unexpected outcome shape {other:?}"),
        }
    }
});
