//! Checks of `stages:`: every stage present, its topics of the roles its
//! contract (`StageName`) allows, its own ledger, state table and consumer
//! group, the consent table where it reads one, and each stage's outputs
//! feeding the next.

use std::collections::BTreeMap;

use super::{raw, Validator};
use crate::stage::{StageName, StateNeed};
use crate::topology::model::*;

impl Validator<'_> {
    pub(super) fn stages(
        &mut self,
        raw: &BTreeMap<String, raw::Stage>,
        topics: &BTreeMap<String, TopicSpec>,
        purposes: &BTreeMap<String, Purpose>,
    ) -> BTreeMap<String, StageSpec> {
        let mut out = BTreeMap::new();
        for stage in StageName::ALL {
            if !raw.contains_key(stage.as_str()) {
                self.error(
                    "stages",
                    format!("stage '{stage}' is missing"),
                    format!("add `{stage}:` under `stages:`"),
                );
            }
        }
        let mut groups: BTreeMap<&str, &str> = BTreeMap::new();
        let mut ledgers: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, s) in raw {
            let path = format!("stages.{name}");
            let Some(stage) = StageName::parse(name) else {
                self.error(
                    &path,
                    format!("unknown stage '{name}'"),
                    format!("use one of: {}", StageName::joined()),
                );
                continue;
            };
            if s.inputs.is_empty() {
                self.error(
                    &format!("{path}.inputs"),
                    format!("stage '{name}' has no inputs"),
                    "list at least one input topic",
                );
            }
            for (i, t) in s.inputs.iter().enumerate() {
                self.stage_topic(
                    &format!("{path}.inputs[{i}]"),
                    name,
                    "input",
                    t,
                    topics,
                    stage.input_roles(),
                );
            }
            for (i, t) in s.outputs.iter().enumerate() {
                self.stage_topic(
                    &format!("{path}.outputs[{i}]"),
                    name,
                    "output",
                    t,
                    topics,
                    stage.output_roles(),
                );
            }
            self.stage_topic(
                &format!("{path}.ledger"),
                name,
                "ledger",
                &s.ledger,
                topics,
                &[TopicRole::Ledger],
            );
            if let Some(r) = &s.reads {
                self.stage_topic(
                    &format!("{path}.reads"),
                    name,
                    "table",
                    r,
                    topics,
                    &[TopicRole::ConsentState],
                );
            }
            match &s.state {
                Some(st) => {
                    self.stage_topic(
                        &format!("{path}.state"),
                        name,
                        "state",
                        st,
                        topics,
                        &[stage.state_role()],
                    );
                    if let Some(other) = ledgers.insert(st, name) {
                        self.error(
                            &format!("{path}.state"),
                            format!("stages '{other}' and '{name}' share table topic '{st}'"),
                            "give each stage its own ledger and state topics",
                        );
                    }
                }
                None => {
                    if let Some((what, fix)) = missing_state_fix(stage) {
                        self.error(
                            &path,
                            format!("stage '{name}' has no state topic for {what}"),
                            fix,
                        );
                    }
                }
            }
            if let Some(what) = stage.consent_table_use() {
                if s.reads.is_none() {
                    self.error(
                        &path,
                        format!("stage '{name}' does not read the consent table it {what}"),
                        "add `reads: consent.state`",
                    );
                }
            }
            if let Some(other) = ledgers.insert(&s.ledger, name) {
                self.error(
                    &format!("{path}.ledger"),
                    format!(
                        "stages '{other}' and '{name}' share ledger topic '{}'",
                        s.ledger
                    ),
                    "give each stage its own ledger topic",
                );
            }
            if s.consumer_group.trim().is_empty() {
                self.error(
                    &format!("{path}.consumer_group"),
                    format!("stage '{name}' has an empty consumer group"),
                    "set a consumer group name",
                );
            } else if let Some(other) = groups.insert(&s.consumer_group, name) {
                self.error(
                    &format!("{path}.consumer_group"),
                    format!(
                        "stages '{other}' and '{name}' share consumer group '{}'",
                        s.consumer_group
                    ),
                    "give each stage its own consumer group",
                );
            }
            if stage == StageName::Route {
                for p in purposes.values() {
                    if !p.topic.is_empty() && !s.outputs.contains(&p.topic) {
                        self.error(
                            &format!("{path}.outputs"),
                            format!(
                                "route does not write purpose '{}''s destination topic '{}'",
                                p.name, p.topic
                            ),
                            format!("add '{}' to route's outputs", p.topic),
                        );
                    }
                }
            }
            out.insert(
                name.clone(),
                StageSpec {
                    name: name.clone(),
                    inputs: s.inputs.clone(),
                    outputs: s.outputs.clone(),
                    consumer_group: s.consumer_group.clone(),
                    ledger: s.ledger.clone(),
                    state: s.state.clone(),
                    reads: s.reads.clone(),
                },
            );
        }
        // Each stage's output must be the next stage's input: a gap would
        // strand records in a topic nobody reads.
        // The consent ledger feeds the gate through its table, not a topic.
        let ledger = raw.get(StageName::ConsentLedger.as_str());
        let gate = raw.get(StageName::ConsentGate.as_str());
        if let (Some(l), Some(g)) = (ledger, gate) {
            if l.state.is_some() && g.reads != l.state {
                self.error(
                    &format!("stages.{}.reads", StageName::ConsentGate),
                    "consent-gate does not read the table the consent ledger writes",
                    format!("set `reads: {}`", l.state.as_deref().unwrap_or_default()),
                );
            }
        }
        for pair in StageName::topic_chain().windows(2) {
            if let (Some(a), Some(b)) = (raw.get(pair[0].as_str()), raw.get(pair[1].as_str())) {
                if !a.outputs.iter().any(|t| b.inputs.contains(t)) {
                    self.error(
                        &format!("stages.{}.inputs", pair[1]),
                        format!(
                            "stage '{}' reads none of the topics stage '{}' writes",
                            pair[1], pair[0]
                        ),
                        format!("make one of {:?} an input of '{}'", a.outputs, pair[1]),
                    );
                }
            }
        }
        out
    }

    fn stage_topic(
        &mut self,
        path: &str,
        stage: &str,
        what: &str,
        topic: &str,
        topics: &BTreeMap<String, TopicSpec>,
        roles: &[TopicRole],
    ) {
        match topics.get(topic) {
            None => {
                self.error(
                    path,
                    format!("stage '{stage}' {what} '{topic}' is not a defined topic"),
                    "add it under `topics:` or correct the name",
                );
            }
            Some(t) if !roles.contains(&t.role) => {
                self.error(
                    path,
                    format!("stage '{stage}' {what} '{topic}' has role {:?}", t.role),
                    format!("a {stage} {what} must have a role among {roles:?}"),
                );
            }
            Some(_) => {}
        }
    }
}

/// For a stage that cannot work without a state table: what the table is
/// for, and how to add it.
fn missing_state_fix(stage: StageName) -> Option<(&'static str, &'static str)> {
    if stage.state_need() == StateNeed::Optional {
        return None;
    }
    match stage {
        StageName::Normalize => Some((
            "its patient index",
            "add `state: normalize.patient-index` and define that topic with `role: state, cleanup: compact`",
        )),
        StageName::ConsentLedger => Some((
            "the consent table",
            "add `state: consent.state` and define that topic with `role: consent-state, cleanup: compact`",
        )),
        _ => None,
    }
}
