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

pub mod scrub;
pub mod values;

use crate::forward::Forwarder;
use consentry_core::audit::Transformation;
use consentry_core::envelope::{retain_fields, Demographics, Text};
use consentry_core::keys;
use consentry_core::stage::{Outcome, Stage, StageInput, StateView};
use consentry_core::topology::INTERNAL_FIELDS;
use consentry_core::topology::{
    AgeMode, DateMode, DeidentifySpec, FieldClass, Linkage, Profile, Topology,
};
use consentry_core::CanonicalEvent;
use consentry_crypto::{DateShifter, KeyRing};
use scrub::{Known, Scrubber};
use std::collections::{BTreeMap, BTreeSet};
use values::{age_at, age_band, shift_date, shift_ms, year_only, zip3};

pub const NAME: &str = "de-identify";

/// ICD-10 code systems whose codes roll up to their category.
const ICD10_SYSTEMS: [&str; 2] = [
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/icd-10",
];

/// One transformation: where, how, with what parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub path: &'static str,
    pub method: &'static str,
    pub params: String,
}

/// How dates leave: as their year (the default), or shifted per subject.
pub enum Dates<'a> {
    Year,
    Shift(&'a DateShifter),
}

pub struct SafeHarborOptions<'a> {
    pub dates: Dates<'a>,
    /// Keep free text after scrubbing (the default drops it).
    pub keep_text: bool,
    /// For `linkage: random`: keep the subject key and the identifiers of
    /// this (subject) system, for tokenize to replace with a vaulted random
    /// token. `None`: both go here.
    pub keep_subject: Option<&'a str>,
    /// When the record is disclosed (the batch's processing time): a
    /// person over 89 now is over 89 in what leaves, whatever their age at
    /// the event, and an event without a time is not taken to be in 1970.
    pub now_ms: i64,
}

/// Start of the UTC year of an instant (how an instant keeps only its year
/// in a millisecond field).
fn year_start_ms(ms: i64) -> i64 {
    let (y, _, _) = crate::time::civil_from_days(ms.div_euclid(86_400_000));
    crate::time::civil_to_epoch_ms(y, 1, 1, 0, 0, 0).unwrap_or(0)
}

/// Applies Safe Harbor to `ev`; `scrubber` is built once per stage.
pub fn safe_harbor(
    ev: &CanonicalEvent,
    opts: &SafeHarborOptions<'_>,
    scrubber: &Scrubber,
) -> (CanonicalEvent, Vec<Step>) {
    let mut out = ev.clone();
    let mut steps = Vec::new();
    let mut step = |path: &'static str, method: &'static str, params: String| {
        steps.push(Step {
            path,
            method,
            params,
        })
    };
    let shift_days = match opts.dates {
        Dates::Shift(s) => Some(s.days(&ev.subject_key)),
        Dates::Year => None,
    };
    let date_method = match opts.dates {
        Dates::Year => ("year_only", String::new()),
        Dates::Shift(s) => ("date_shift", format!("max_days={}", s.max_days())),
    };
    let instant = |ms: i64| match shift_days {
        Some(d) => shift_ms(ms, d),
        None => Some(year_start_ms(ms)),
    };
    let date = |d: &Text| match shift_days {
        Some(days) => shift_date(d, days),
        None => year_only(d),
    };

    // Identifiers, and what is derived from them or from source records.
    match opts.keep_subject {
        Some(system) => {
            out.identifiers.retain(|i| i.system == system);
            step("identifiers", "suppress", "except=subject".into());
            step("subject_key", "keep", "for=random_token".into());
        }
        None => {
            out.identifiers.clear();
            out.subject_key = Text::default();
            step("identifiers", "suppress", String::new());
            step("subject_key", "suppress", String::new());
        }
    }
    out.links.clear();
    out.event_id = Text::default();
    for p in ["links", "event_id"] {
        step(p, "suppress", String::new());
    }
    out.contacts.clear();
    step("contacts", "suppress", String::new());

    // Dates.
    out.event_time_ms = ev.event_time_ms.and_then(instant);
    step("event_time_ms", date_method.0, date_method.1.clone());
    if let Some(e) = out.encounter.as_mut() {
        e.start_ms = e.start_ms.and_then(instant);
        e.end_ms = e.end_ms.and_then(instant);
        e.location = None;
        e.prior_location = None;
        e.attending = None;
        step("encounter.start_ms", date_method.0, date_method.1.clone());
        step("encounter.end_ms", date_method.0, date_method.1.clone());
        for p in [
            "encounter.location",
            "encounter.prior_location",
            "encounter.attending",
        ] {
            step(p, "suppress", String::new());
        }
    }
    let mut date_values = false;
    for c in out.codes.iter_mut() {
        c.recorded_ms = c.recorded_ms.and_then(instant);
        if c.value_type.as_deref() == Some("date") {
            c.value = c.value.as_ref().and_then(date);
            date_values = true;
        }
    }
    if !out.codes.is_empty() {
        step("codes.recorded_ms", date_method.0, date_method.1.clone());
    }
    if date_values {
        step("codes.value", date_method.0, date_method.1.clone());
    }
    if let Some(a) = out.appointment.as_mut() {
        a.start_ms = a.start_ms.and_then(instant);
        a.end_ms = a.end_ms.and_then(instant);
        step("appointment.start_ms", date_method.0, date_method.1.clone());
        step("appointment.end_ms", date_method.0, date_method.1.clone());
    }
    if let Some(m) = out.medication.as_mut() {
        m.authored_ms = m.authored_ms.and_then(instant);
        step(
            "medication.authored_ms",
            date_method.0,
            date_method.1.clone(),
        );
    }
    if let Some(p) = out.provenance.as_mut() {
        p.recorded_ms = p.recorded_ms.and_then(instant);
        p.targets.clear();
        step(
            "provenance.recorded_ms",
            date_method.0,
            date_method.1.clone(),
        );
        step("provenance.targets", "suppress", String::new());
    }
    if let Some(c) = out.consent.as_mut() {
        c.reference = Text::default();
        c.period_start_ms = c.period_start_ms.and_then(instant);
        c.period_end_ms = c.period_end_ms.and_then(instant);
        step("consent.reference", "suppress", String::new());
        step(
            "consent.period_start_ms",
            date_method.0,
            date_method.1.clone(),
        );
        step(
            "consent.period_end_ms",
            date_method.0,
            date_method.1.clone(),
        );
    }

    // Demographics.
    if let Some(d) = out.demographics.as_mut() {
        for (path, v) in direct_demographics(d) {
            *v = None;
            step(path, "suppress", String::new());
        }
        d.city = None;
        d.county = None;
        d.latitude = None;
        d.longitude = None;
        for p in [
            "demographics.city",
            "demographics.county",
            "demographics.latitude",
            "demographics.longitude",
        ] {
            step(p, "suppress", String::new());
        }
        if let Some(z) = d.postal_code.take() {
            d.postal_code = zip3(&z);
        }
        step(
            "demographics.postal_code",
            "zip3",
            "restricted_list=hhs-2000".into(),
        );
        // A birth date says the age: over 89 at disclosure, it goes entirely.
        let at = ev.event_time_ms.map_or(opts.now_ms, |t| t.max(opts.now_ms));
        if let Some(b) = d.birth_date.take() {
            let over_89 = age_at(&b, at).is_none_or(|age| age > values::MAX_AGE_KEPT);
            if over_89 {
                step("demographics.birth_date", "suppress", "age_over_89".into());
            } else {
                d.birth_date = date(&b);
                step(
                    "demographics.birth_date",
                    date_method.0,
                    date_method.1.clone(),
                );
            }
        }
        d.deceased_date = d.deceased_date.as_ref().and_then(date);
        step(
            "demographics.deceased_date",
            date_method.0,
            date_method.1.clone(),
        );
    }

    free_text(ev, &mut out, opts.keep_text, scrubber, &mut step);
    (out, steps)
}

/// Free text (the note, and the display of every code: a source writes
/// what it likes there): dropped, or scrubbed of the record's own values
/// (names, identifiers, contacts, address and contact details, ZIP, birth
/// date) and of every identifier shape.
fn free_text(
    ev: &CanonicalEvent,
    out: &mut CanonicalEvent,
    keep_text: bool,
    scrubber: &Scrubber,
    step: &mut impl FnMut(&'static str, &'static str, String),
) {
    let note = out.note.take();
    let displays = out.codes.iter().any(|c| c.display.is_some());
    if note.is_none() && !displays {
        return;
    }
    let mut suppress = |why: &str| {
        for c in out.codes.iter_mut() {
            c.display = None;
        }
        if note.is_some() {
            step("note", "suppress", why.into());
        }
        if displays {
            step("codes.display", "suppress", why.into());
        }
    };
    if !keep_text {
        suppress("");
        return;
    }
    // Names have no shape: without the subject's own (an Observation or
    // Condition carries no demographics), text cannot be scrubbed of
    // them, so it goes.
    if ev
        .demographics
        .as_ref()
        .is_none_or(|d| d.family_name.is_none())
    {
        suppress("names_unknown");
        return;
    }
    let mut known: Vec<Known<'_>> = Vec::new();
    known.extend(ev.identifiers.iter().map(|i| Known::value(&i.value)));
    known.extend(ev.links.iter().map(|l| Known::value(&l.value)));
    for c in &ev.contacts {
        known.extend(
            [&c.family_name, &c.given_name]
                .into_iter()
                .flatten()
                .map(|v| Known::name(v)),
        );
        known.extend(c.phone.as_deref().map(Known::value));
    }
    if let Some(d) = &ev.demographics {
        known.extend(
            [
                &d.family_name,
                &d.given_name,
                &d.middle_name,
                &d.name_suffix,
                &d.mothers_maiden_name,
            ]
            .into_iter()
            .flatten()
            .map(|v| Known::name(v)),
        );
        known.extend(
            [
                &d.address_line,
                &d.city,
                &d.county,
                &d.phone,
                &d.fax,
                &d.email,
                &d.url,
                &d.postal_code,
                &d.birth_date,
            ]
            .into_iter()
            .flatten()
            .map(|v| Known::value(v)),
        );
    }
    if let Some(note) = note {
        let (clean, kinds) = scrubber.scrub(&note, &known);
        out.note = Some(clean.as_str().into());
        step("note", "scrub", kinds.join(","));
    }
    if displays {
        let mut all = Vec::new();
        for c in out.codes.iter_mut() {
            if let Some(d) = c.display.take() {
                let (clean, kinds) = scrubber.scrub(&d, &known);
                c.display = Some(clean.as_str().into());
                all.extend(kinds);
            }
        }
        all.sort();
        all.dedup();
        step("codes.display", "scrub", all.join(","));
    }
}

/// The HIPAA limited data set (164.514(e)(2)): the 16 direct identifiers
/// of the individual and of relatives removed (with `keep_direct`, left
/// for tokenize to replace with tokens), and geography below the city;
/// dates, city, state and 5-digit ZIP kept. Source record ids and the
/// subject key stay (tokenize replaces the subject key).
pub fn limited_data_set(
    ev: &CanonicalEvent,
    keep_direct: bool,
    keep_text: bool,
    scrubber: &Scrubber,
) -> (CanonicalEvent, Vec<Step>) {
    let mut out = ev.clone();
    let mut steps = Vec::new();
    let mut step = |path: &'static str, method: &'static str, params: String| {
        steps.push(Step {
            path,
            method,
            params,
        })
    };
    let (direct, direct_params) = if keep_direct {
        ("keep", "for=deterministic_token")
    } else {
        ("suppress", "")
    };
    if !keep_direct {
        out.identifiers.clear();
        out.links.clear();
        out.contacts.clear();
    }
    for p in ["identifiers", "links", "contacts"] {
        step(p, direct, direct_params.into());
    }
    if let Some(d) = out.demographics.as_mut() {
        for (path, v) in direct_demographics(d) {
            if !keep_direct {
                *v = None;
            }
            step(path, direct, direct_params.into());
        }
        d.county = None;
        d.latitude = None;
        d.longitude = None;
        for p in [
            "demographics.county",
            "demographics.latitude",
            "demographics.longitude",
        ] {
            step(p, "suppress", "below=city".into());
        }
    }
    if let Some(e) = out.encounter.as_mut() {
        e.location = None;
        e.prior_location = None;
        e.attending = None;
        for p in [
            "encounter.location",
            "encounter.prior_location",
            "encounter.attending",
        ] {
            step(p, "suppress", String::new());
        }
    }
    if let Some(p) = out.provenance.as_mut() {
        p.targets.clear();
        step("provenance.targets", "suppress", String::new());
    }
    free_text(ev, &mut out, keep_text, scrubber, &mut step);
    (out, steps)
}

/// The demographic fields that are direct identifiers (names, street,
/// contact details, web address), by path: what a limited data set
/// removes, and tokenize replaces with tokens.
pub fn direct_demographics(d: &mut Demographics) -> [(&'static str, &mut Option<Text>); 10] {
    [
        ("demographics.family_name", &mut d.family_name),
        ("demographics.given_name", &mut d.given_name),
        ("demographics.middle_name", &mut d.middle_name),
        ("demographics.name_suffix", &mut d.name_suffix),
        (
            "demographics.mothers_maiden_name",
            &mut d.mothers_maiden_name,
        ),
        ("demographics.address_line", &mut d.address_line),
        ("demographics.phone", &mut d.phone),
        ("demographics.fax", &mut d.fax),
        ("demographics.email", &mut d.email),
        ("demographics.url", &mut d.url),
    ]
}

/// The age at the event (at `now_ms`, the disclosure, for an event without
/// a time) as the purpose states it: in years or bands, `90+` for anyone
/// over 89 at the event or now (an age at an old event plus its year would
/// otherwise tell an age over 89); `None` when the birth date is unknown.
pub fn age_of(ev: &CanonicalEvent, mode: AgeMode, now_ms: i64) -> Option<Text> {
    let width = match mode {
        AgeMode::Omit => return None,
        AgeMode::Years => 1,
        AgeMode::Band(w) => w,
    };
    let birth = ev.demographics.as_ref()?.birth_date.as_ref()?;
    let at_event = age_at(birth, ev.event_time_ms.unwrap_or(now_ms))?;
    let age = match age_at(birth, now_ms) {
        Some(now) if now > values::MAX_AGE_KEPT => now.max(at_event),
        _ => at_event,
    };
    Some(age_band(age, width))
}

/// Rolls ICD-10 codes starting with one of `prefixes` (`*`: all) up to
/// their three-character category; the display of a rolled-up code goes
/// (it names the specific diagnosis). Returns whether any code changed.
pub fn roll_up(ev: &mut CanonicalEvent, prefixes: &[String]) -> bool {
    let mut changed = false;
    for c in ev.codes.iter_mut() {
        let Some(category) = c.code.get(..3) else {
            continue;
        };
        if !ICD10_SYSTEMS.contains(&c.system.as_str()) || c.code.len() <= 3 {
            continue;
        }
        let rare = prefixes
            .iter()
            .any(|p| p == "*" || c.code.starts_with(p.as_str()));
        if rare {
            c.code = category.into();
            c.display = None;
            changed = true;
        }
    }
    changed
}

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
    pub fn new(topology: &Topology, keys: Option<&KeyRing>) -> Result<DeIdentify, String> {
        let mut policies = BTreeMap::new();
        for p in topology.purposes.values() {
            let shifter = match (p.deidentify.dates, p.profile) {
                (DateMode::Shift, Profile::SafeHarbor) => {
                    let ring = keys.ok_or_else(|| {
                        format!(
                            "purpose '{}' shifts dates, which needs the key ring: pass --key-file (or CONSENTRY_MASTER_KEY in development)",
                            p.name
                        )
                    })?;
                    Some(
                        DateShifter::new(ring, &p.name, p.deidentify.shift_max_days)
                            .map_err(|e| format!("purpose '{}': {e}", p.name))?,
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
            fwd: Forwarder::new(NAME, topology, false),
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
    fn name(&self) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Normalize;
    use consentry_core::stage::{Body, InputMeta, NoState, Stage, StageInput};
    use consentry_core::topology::Topology;
    use consentry_crypto::{Environment, KeyRing};
    use consentry_synth::{hl7_adt, patients, SynthConfig};

    fn normalized(cfg: &SynthConfig, p: &consentry_synth::Patient) -> CanonicalEvent {
        let topology = Topology::parse("topology.yaml", crate::test_fixtures::SHIPPED_TOPOLOGY)
            .expect("shipped topology");
        let input = StageInput {
            meta: InputMeta {
                topic: "ehr.hl7v2".into(),
                partition: 0,
                offset: 0,
                key: None,
                idempotency_key: None,
                correlation_id: None,
                ..Default::default()
            },
            body: Body::Raw(hl7_adt(cfg, p, "A01", 0).into_bytes()),
        };
        let out = Normalize::new(&topology).process(&input, &NoState);
        (*out[0].outputs[0].event).clone()
    }

    /// Every identifier value of the synthetic patient, as it can appear
    /// in an envelope.
    fn identifying_values(p: &consentry_synth::Patient) -> Vec<String> {
        let b = &p.birth_date;
        vec![
            p.mrn.clone(),
            p.account.clone(),
            p.ssn.clone(),
            p.drivers_license.clone(),
            p.plan_beneficiary.clone(),
            p.family.clone(),
            p.given.clone(),
            p.street.clone(),
            p.zip.clone(),
            p.phone.clone(),
            p.fax.clone(),
            p.email.clone(),
            p.portal_url.clone(),
            p.ip.clone(),
            p.device_id.clone(),
            p.vehicle_id.clone(),
            p.biometric_id.clone(),
            p.visit.clone(),
            p.kin.0.clone(),
            p.kin.1.clone(),
            format!("{}-{}-{}", &b[..4], &b[4..6], &b[6..8]),
        ]
    }

    #[test]
    fn no_identifier_value_survives_in_any_byte_with_or_without_text() {
        let cfg = SynthConfig::new(11, 25);
        let scrubber = Scrubber::new();
        let ring = KeyRing::from_key(Environment::NonProduction, [9; 32]);
        let shifter = DateShifter::new(&ring, "outcomes-analytics", 180).expect("shifter");
        for p in patients(&cfg) {
            let ev = normalized(&cfg, &p);
            for (dates, keep_text) in [
                (Dates::Year, false),
                (Dates::Year, true),
                (Dates::Shift(&shifter), true),
            ] {
                let opts = SafeHarborOptions {
                    dates,
                    keep_text,
                    keep_subject: None,
                    now_ms: 0,
                };
                let (out, steps) = safe_harbor(&ev, &opts, &scrubber);
                let bytes = serde_json::to_string(&out).expect("serializes");
                // The failure names the value's position, never the value.
                for (i, v) in identifying_values(&p).iter().enumerate() {
                    assert!(
                        !bytes.contains(v.as_str()),
                        "identifying value #{i} survived"
                    );
                }
                assert!(!bytes.contains(ev.subject_key.as_str()));
                assert!(steps.iter().any(|s| s.path == "demographics.postal_code"));
                assert_eq!(out.note.is_some(), keep_text && ev.note.is_some());
                // What identifies no one is kept.
                assert_eq!(out.codes.len(), ev.codes.len());
                assert_eq!(
                    out.demographics.as_ref().and_then(|d| d.state.clone()),
                    ev.demographics.as_ref().and_then(|d| d.state.clone())
                );
            }
        }
    }

    #[test]
    fn the_recipe_names_every_path_it_changed() {
        use consentry_core::envelope::{Appointment, ConsentInfo, Medication, ProvenanceInfo};
        let ev = CanonicalEvent {
            event_time_ms: Some(1_790_000_000_000),
            appointment: Some(Appointment {
                start_ms: Some(1_790_000_000_000),
                ..Default::default()
            }),
            medication: Some(Medication {
                authored_ms: Some(1_790_000_000_000),
                ..Default::default()
            }),
            provenance: Some(ProvenanceInfo {
                targets: vec!["Patient/1".into()],
                ..Default::default()
            }),
            consent: Some(ConsentInfo {
                reference: "Consent/1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = SafeHarborOptions {
            dates: Dates::Year,
            keep_text: false,
            keep_subject: None,
            now_ms: 0,
        };
        let (out, steps) = safe_harbor(&ev, &opts, &Scrubber::new());
        let paths: Vec<&str> = steps.iter().map(|s| s.path).collect();
        for p in [
            "appointment.start_ms",
            "medication.authored_ms",
            "provenance.targets",
            "consent.reference",
            "consent.period_start_ms",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        assert!(out.provenance.is_some_and(|p| p.targets.is_empty()));
        assert_eq!(out.consent.map(|c| c.reference), Some(Text::default()));
    }

    /// A code's display is text the source writes: scrubbed like the note
    /// where text is kept, dropped where it is not; and a source's own
    /// "de-identified" label never survives de-identify.
    #[test]
    fn code_displays_are_text_and_labels_are_de_identifys_own() {
        let cfg = SynthConfig::new(5, 1);
        let p = &patients(&cfg)[0];
        let mut ev = normalized(&cfg, p);
        ev.codes.push(consentry_core::envelope::Coding {
            system: "http://loinc.org".into(),
            code: "1234-5".into(),
            display: Some(
                format!(
                    "Result for {} {}, call 217 555 0100",
                    p.given,
                    p.family.to_uppercase()
                )
                .as_str()
                .into(),
            ),
            ..Default::default()
        });
        let scrubber = Scrubber::new();
        let keep = SafeHarborOptions {
            dates: Dates::Year,
            keep_text: true,
            keep_subject: None,
            now_ms: 0,
        };
        let (out, steps) = safe_harbor(&ev, &keep, &scrubber);
        let d = out
            .codes
            .iter()
            .find(|c| c.code == "1234-5")
            .and_then(|c| c.display.clone())
            .expect("display kept");
        assert_eq!(d, "Result for [value] [value], call [phone]");
        assert!(steps
            .iter()
            .any(|s| s.path == "codes.display" && s.method == "scrub"));
        let drop = SafeHarborOptions {
            keep_text: false,
            ..keep
        };
        let (out, steps) = safe_harbor(&ev, &drop, &scrubber);
        assert!(out.codes.iter().all(|c| c.display.is_none()));
        assert!(steps
            .iter()
            .any(|s| s.path == "codes.display" && s.method == "suppress"));

        let topology = Topology::parse("topology.yaml", crate::test_fixtures::SHIPPED_TOPOLOGY)
            .expect("shipped topology");
        let ring = KeyRing::from_key(Environment::NonProduction, [4; 32]);
        let stage = DeIdentify::new(&topology, Some(&ring)).expect("builds");
        ev.purpose = Some("patient-support".into());
        ev.security_labels = vec!["de-identified".into()];
        let input = StageInput {
            meta: InputMeta {
                topic: "events.gated".into(),
                idempotency_key: Some("ik1-x".into()),
                ..Default::default()
            },
            body: Body::Event(Box::new(ev)),
        };
        let o = stage.process(&input, &NoState);
        assert_eq!(o[0].outputs[0].event.security_labels, ["phi"]);
    }

    #[test]
    fn ages_over_89_lose_the_birth_date_and_shifts_keep_intervals() {
        let cfg = SynthConfig::new(11, 1);
        let p = &patients(&cfg)[0];
        let mut ev = normalized(&cfg, p);
        let scrubber = Scrubber::new();
        let at = ev.event_time_ms.expect("event time");
        let year = SafeHarborOptions {
            dates: Dates::Year,
            keep_text: false,
            keep_subject: None,
            now_ms: at,
        };
        let (y, m, d) = crate::time::civil_from_days(at.div_euclid(86_400_000));
        for (age, kept) in [(89, true), (90, false), (105, false)] {
            let birth = format!("{:04}-{m:02}-{d:02}", y - age);
            ev.demographics.as_mut().expect("demographics").birth_date =
                Some(birth.as_str().into());
            let (out, steps) = safe_harbor(&ev, &year, &scrubber);
            let kept_birth = out.demographics.and_then(|d| d.birth_date);
            assert_eq!(kept_birth.is_some(), kept, "age {age}");
            if kept {
                assert_eq!(
                    kept_birth.as_deref(),
                    Some(format!("{:04}", y - age).as_str())
                );
            } else {
                assert!(steps.iter().any(|s| s.params == "age_over_89"));
            }
        }
        // 85 at the event, 95 when disclosed ten years later: the age that
        // counts is the one now (issue 16), so the birth date goes, and the
        // age says 90+.
        let birth = format!("{:04}-{m:02}-{d:02}", y - 85);
        ev.demographics.as_mut().expect("demographics").birth_date = Some(birth.as_str().into());
        let later = SafeHarborOptions {
            now_ms: at + 10 * 366 * 86_400_000,
            ..year
        };
        let (out, _) = safe_harbor(&ev, &later, &scrubber);
        assert_eq!(out.demographics.and_then(|d| d.birth_date), None);
        assert_eq!(
            age_of(&ev, AgeMode::Band(5), later.now_ms).as_deref(),
            Some("90+")
        );
        assert_eq!(age_of(&ev, AgeMode::Years, at).as_deref(), Some("85"));
        // An event without a time is aged at the disclosure, not in 1970
        // (when everyone born since is "not yet born", and kept).
        let mut timeless = ev.clone();
        timeless.event_time_ms = None;
        let (out, _) = safe_harbor(&timeless, &later, &scrubber);
        assert_eq!(out.demographics.and_then(|d| d.birth_date), None);
        let young = SafeHarborOptions {
            now_ms: at,
            ..later
        };
        let (out, _) = safe_harbor(&timeless, &young, &scrubber);
        assert!(out.demographics.and_then(|d| d.birth_date).is_some());
        // Shifted dates: the same subject, the same shift, intervals kept.
        let ring = KeyRing::from_key(Environment::NonProduction, [9; 32]);
        let shifter = DateShifter::new(&ring, "p", 30).expect("shifter");
        let opts = SafeHarborOptions {
            dates: Dates::Shift(&shifter),
            keep_text: false,
            keep_subject: None,
            now_ms: 0,
        };
        let (a, _) = safe_harbor(&ev, &opts, &scrubber);
        let (b, _) = safe_harbor(&ev, &opts, &scrubber);
        assert_eq!(a.event_time_ms, b.event_time_ms, "stable");
        let shift = shifter.days(&ev.subject_key);
        assert_eq!(
            a.event_time_ms,
            ev.event_time_ms.and_then(|t| shift_ms(t, shift))
        );
        let enc = |e: &CanonicalEvent| e.encounter.as_ref().and_then(|x| x.start_ms);
        if let (Some(s0), Some(t0), Some(s1), Some(t1)) =
            (enc(&ev), ev.event_time_ms, enc(&a), a.event_time_ms)
        {
            assert_eq!(t1 - s1, t0 - s0, "the interval is kept");
        }
    }
}
