//! The contract every stage's outcomes keep, whatever the stage decides:
//! each outcome carries its own audit record (of this stage, with an id no
//! other outcome shares), a non-empty dedup key, and no identifying value
//! of its input in a quarantine detail (details travel in headers, in the
//! clear, beside the sealed payload).

use consentry_core::stage::{Outcome, Stage, StageInput};
use std::collections::{BTreeMap, BTreeSet};

/// One input for [`assert_stage_contract`], with the identifying values it
/// carries (its patient's names and identifiers), none of which may appear
/// in a quarantine detail.
pub struct ContractInput {
    pub input: StageInput,
    pub phi: Vec<String>,
}

/// Drives `stage` over `inputs` in order from `state` (as
/// `consentry_stages::drive` does, so held records re-driven by a later
/// input's state writes count too) and asserts the contract for every
/// outcome of every input. Returns the outcomes, in order.
pub fn assert_stage_contract(
    stage: &dyn Stage,
    inputs: &[ContractInput],
    state: &mut BTreeMap<String, Vec<u8>>,
) -> Vec<Outcome> {
    let name = stage.name().as_str();
    let mut audit_ids = BTreeSet::new();
    let mut all = Vec::new();
    for (n, case) in inputs.iter().enumerate() {
        let outcomes = consentry_stages::drive(stage, std::slice::from_ref(&case.input), state);
        for o in &outcomes {
            assert_eq!(
                o.audit.stage.as_str(),
                name,
                "{name}: input {n}'s outcome carries another stage's audit record"
            );
            assert!(
                !o.audit.audit_id.is_empty(),
                "{name}: input {n}'s audit record has no id"
            );
            assert!(
                audit_ids.insert(o.audit.audit_id.to_string()),
                "{name}: input {n}'s audit record {} is another outcome's too",
                o.audit.audit_id
            );
            assert!(
                !o.dedup_key.is_empty(),
                "{name}: input {n} has an outcome without a dedup key"
            );
            if let Some(q) = &o.quarantine {
                let leaked = case
                    .phi
                    .iter()
                    .find(|v| !v.is_empty() && q.detail.contains(v.as_str()));
                assert!(
                    leaked.is_none(),
                    "{name}: input {n}'s quarantine detail ({:?}) carries one of its identifying values",
                    q.reason
                );
            }
        }
        all.extend(outcomes);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs;
    use consentry_core::stage::{StageName, StateView};
    use consentry_core::ReasonCode;

    /// Quarantines every input as unparseable, with `detail` (the input's
    /// payload when `echo`) and `dedup_key` (the position when `None`).
    struct Quarantining {
        echo: bool,
        dedup_key: Option<&'static str>,
    }

    impl Stage for Quarantining {
        fn name(&self) -> StageName {
            StageName::Normalize
        }

        fn process(&self, input: &StageInput, _: &dyn StateView) -> Vec<Outcome> {
            let detail = match (&input.body, self.echo) {
                (consentry_core::stage::Body::Raw(b), true) => String::from_utf8_lossy(b).into(),
                _ => "PID-5 is not a name".to_string(),
            };
            let o = match self.dedup_key {
                Some(k) => Outcome::quarantined_with_key(
                    StageName::Normalize,
                    "p1",
                    &input.meta,
                    k.into(),
                    None,
                    ReasonCode::Malformed,
                    detail,
                ),
                None => Outcome::quarantined(
                    StageName::Normalize,
                    "p1",
                    &input.meta,
                    None,
                    ReasonCode::Malformed,
                    detail,
                ),
            };
            vec![o]
        }
    }

    fn cases() -> Vec<ContractInput> {
        (0..2)
            .map(|i| {
                let mut input = inputs::raw("ehr.hl7v2", None, b"PID|1||CS1234567||Doe^Jane");
                input.meta.offset = i;
                ContractInput {
                    input,
                    phi: vec!["CS1234567".into(), "Doe".into(), "Jane".into()],
                }
            })
            .collect()
    }

    #[test]
    fn a_stage_that_keeps_identifiers_out_of_details_passes() {
        let stage = Quarantining {
            echo: false,
            dedup_key: None,
        };
        let outcomes = assert_stage_contract(&stage, &cases(), &mut BTreeMap::new());
        assert_eq!(outcomes.len(), 2);
    }

    #[test]
    #[should_panic(expected = "carries one of its identifying values")]
    fn an_identifier_in_a_quarantine_detail_fails() {
        let stage = Quarantining {
            echo: true,
            dedup_key: None,
        };
        assert_stage_contract(&stage, &cases(), &mut BTreeMap::new());
    }

    #[test]
    #[should_panic(expected = "without a dedup key")]
    fn an_empty_dedup_key_fails() {
        let stage = Quarantining {
            echo: false,
            dedup_key: Some(""),
        };
        assert_stage_contract(&stage, &cases(), &mut BTreeMap::new());
    }

    #[test]
    #[should_panic(expected = "is another outcome's too")]
    fn two_outcomes_sharing_an_audit_record_fail() {
        let stage = Quarantining {
            echo: false,
            dedup_key: Some("same"),
        };
        assert_stage_contract(&stage, &cases(), &mut BTreeMap::new());
    }
}
