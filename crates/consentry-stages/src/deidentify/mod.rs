//! The de-identify stage: each (event, purpose) record leaves under its
//! purpose's profile from topology.yaml, and its audit record carries the
//! recipe (profile, then every path changed with its method and
//! parameters; the policy version is the audit record's own).
//!
//! - `safe-harbor`: all 18 HIPAA identifier kinds removed or generalized
//!   (ZIP to three digits with the restricted list, dates to their year or
//!   a keyed per-subject shift, ages over 89 as `90+`, free text dropped or
//!   scrubbed). Digests of identifiers (`subject_key`) and source record ids
//!   go too: under 164.514(c) a re-identification code may not be derived
//!   from the individual's information. With `linkage: random` the subject
//!   key and the subject's own identifier stay for tokenize, which replaces
//!   them with a vaulted random token.
//! - `limited-data-set`: the 16 direct identifiers removed (164.514(e)(2));
//!   dates, city, state and 5-digit ZIP kept; the subject key stays for
//!   tokenize's deterministic token.
//! - `identified-tokenized`: what a limited data set keeps, plus the direct
//!   identifiers, which tokenize turns into deterministic tokens.
//! - `aggregate-only`: only operational fields (ids and codes about the
//!   processing).
//!
//! Then the purpose's generalizations: the age at the event (years or
//! bands, `90+` above 89) and ICD-10 roll-up to the three-character
//! category. Tokenize runs after this stage; nothing here makes tokens.
//!
//! This file is the stage; `profiles` the profiles' transformations,
//! `values` the single-value ones (dates, ages, ZIP codes), `scrub` the
//! free-text scrubber.

mod profiles;
pub mod scrub;
#[cfg(test)]
mod tests;
pub mod values;

pub use profiles::{
    age_of, direct_demographics, limited_data_set, roll_up, safe_harbor, Dates, SafeHarborOptions,
    Step,
};

use crate::forward::Forwarder;
use crate::BuildError;
use consentry_core::audit::Transformation;
use consentry_core::envelope::{retain_fields, Text};
use consentry_core::keys;
use consentry_core::stage::StageName;
use consentry_core::stage::{Outcome, Stage, StageInput, StateView};
use consentry_core::topology::INTERNAL_FIELDS;
use consentry_core::topology::{
    AgeMode, DateMode, DeidentifySpec, FieldClass, Linkage, Profile, Topology,
};
use consentry_core::CanonicalEvent;
use consentry_crypto::{DateShifter, KeyRing};
use scrub::Scrubber;
use std::collections::{BTreeMap, BTreeSet};

pub const NAME: StageName = StageName::DeIdentify;

/// One purpose's de-identification, prepared once.
struct Policy {
    profile: Profile,
    spec: DeidentifySpec,
    linkage: Linkage,
    /// For `dates: shift`: the purpose's keyed shifter.
    shifter: Option<DateShifter>,
}

/// The de-identify stage.
pub struct DeIdentify {
    fwd: Forwarder,
    policies: BTreeMap<String, Policy>,
    scrubber: Scrubber,
    /// The fields `aggregate-only` keeps (classed operational).
    operational: BTreeSet<String>,
    subject_system: Text,
}

impl DeIdentify {
    /// Fails when a purpose shifts dates and no key ring is given.
    pub fn new(topology: &Topology, keys: Option<&KeyRing>) -> Result<DeIdentify, BuildError> {
        let mut policies = BTreeMap::new();
        for p in topology.purposes.values() {
            let shifter = match (p.deidentify.dates, p.profile) {
                (DateMode::Shift, Profile::SafeHarbor) => {
                    let ring = keys.ok_or_else(|| BuildError::DateShiftNeedsKeys {
                        purpose: p.name.clone(),
                    })?;
                    Some(
                        DateShifter::new(ring, &p.name, p.deidentify.shift_max_days).map_err(
                            |source| BuildError::PurposeKey {
                                purpose: p.name.clone(),
                                source,
                            },
                        )?,
                    )
                }
                _ => None,
            };
            policies.insert(
                p.name.clone(),
                Policy {
                    profile: p.profile,
                    spec: p.deidentify.clone(),
                    linkage: p.linkage,
                    shifter,
                },
            );
        }
        Ok(DeIdentify {
            fwd: Forwarder::new(NAME, topology),
            policies,
            scrubber: Scrubber::new(),
            operational: topology
                .fields
                .iter()
                .filter(|(_, c)| **c == FieldClass::Operational)
                .map(|(p, _)| p.clone())
                .collect(),
            subject_system: topology.identity.subject_system.as_str().into(),
        })
    }

    /// `ev` under `policy`, with the recipe's steps.
    fn apply(
        &self,
        ev: &CanonicalEvent,
        policy: &Policy,
        now_ms: i64,
    ) -> (CanonicalEvent, Vec<Step>) {
        let (mut out, mut steps) = match policy.profile {
            Profile::SafeHarbor => {
                let opts = SafeHarborOptions {
                    dates: match &policy.shifter {
                        Some(s) => Dates::Shift(s),
                        None => Dates::Year,
                    },
                    keep_text: policy.spec.keep_text,
                    keep_subject: (policy.linkage == Linkage::Random)
                        .then_some(self.subject_system.as_str()),
                    now_ms,
                };
                safe_harbor(ev, &opts, &self.scrubber)
            }
            Profile::LimitedDataSet => {
                limited_data_set(ev, false, policy.spec.keep_text, &self.scrubber)
            }
            Profile::IdentifiedTokenized => {
                limited_data_set(ev, true, policy.spec.keep_text, &self.scrubber)
            }
            Profile::AggregateOnly => return self.aggregate_only(ev),
        };
        if policy.spec.age != AgeMode::Omit {
            if let Some(d) = out.demographics.as_mut() {
                d.age = age_of(ev, policy.spec.age, now_ms);
                let params = match policy.spec.age {
                    AgeMode::Band(w) => format!("band={w},top=90+"),
                    _ => "years,top=90+".into(),
                };
                steps.push(Step {
                    path: "demographics.age",
                    method: "age_at_event",
                    params,
                });
            }
        }
        if !policy.spec.rollup_codes.is_empty() && roll_up(&mut out, &policy.spec.rollup_codes) {
            steps.push(Step {
                path: "codes.code",
                method: "rollup_icd10_category",
                params: format!("prefixes={}", policy.spec.rollup_codes.join(";")),
            });
            steps.push(Step {
                path: "codes.display",
                method: "suppress",
                params: "rolled_up".into(),
            });
        }
        (out, steps)
    }

    /// Only operational fields; unclassified means not operational (fail
    /// closed).
    fn aggregate_only(&self, ev: &CanonicalEvent) -> (CanonicalEvent, Vec<Step>) {
        let (mut out, removed) = retain_fields(ev, |p| {
            self.operational.contains(p) || INTERNAL_FIELDS.contains(&p)
        });
        out.suppressed = removed.iter().map(|p| Text::from(p.as_str())).collect();
        let steps = vec![Step {
            path: "*",
            method: "suppress",
            params: "class!=operational".into(),
        }];
        (out, steps)
    }
}

impl Stage for DeIdentify {
    fn name(&self) -> StageName {
        NAME
    }

    fn process(&self, input: &StageInput, _: &dyn StateView) -> Vec<Outcome> {
        let (ev, dedup, policy) = match self.fwd.accept_for_purpose(input, |p| self.policies.get(p))
        {
            Ok(v) => v,
            Err(q) => return vec![*q],
        };
        let (mut out, steps) = self.apply(ev, policy, input.meta.now_ms);
        // Said in the record (and, by the runtime, in a header): whether it
        // is still PHI. Only this stage's own label counts.
        out.security_labels.retain(|l| !keys::is_reserved_label(l));
        out.security_labels
            .push(Text::const_new(if policy.profile.is_phi() {
                keys::LABEL_PHI
            } else {
                keys::LABEL_DE_IDENTIFIED
            }));
        let transformations = steps
            .into_iter()
            .map(|s| Transformation::new(s.path, s.method, &s.params))
            .collect();
        let mut o = self.fwd.forward(input, ev, dedup, out, transformations);
        o.audit.profile = Some(Text::const_new(policy.profile.as_str()));
        vec![o]
    }
}
