//! The Safe Harbor profile applied to a whole envelope (issue 4, in
//! progress: the de-identify stage will call this per (event, purpose) and
//! put the steps in the audit record's recipe; the pipeline still runs the
//! placeholder).
//!
//! Every envelope path is handled: removed, generalized (ZIP to three
//! digits, dates to their year or a per-subject shift, birth dates of
//! people over 89 removed), scrubbed (free text, only where the purpose
//! keeps it) or kept because it identifies no one (codes, sex, state).
//! Digests of identifiers (`subject_key`) and source record ids go too:
//! under 164.514(c) a re-identification code may not be derived from the
//! individual's information.

use crate::safe_harbor::{age_at, shift_date, shift_ms, year_only, zip3};
use crate::scrub::Scrubber;
use consentry_core::envelope::Text;
use consentry_core::CanonicalEvent;
use consentry_crypto::DateShifter;

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
        None => year_start_ms(ms),
    };
    let date = |d: &Text| match shift_days {
        Some(days) => shift_date(d, days),
        None => year_only(d),
    };

    // Identifiers, and what is derived from them or from source records.
    out.identifiers.clear();
    out.links.clear();
    out.subject_key = Text::default();
    out.event_id = Text::default();
    for p in ["identifiers", "links", "subject_key", "event_id"] {
        step(p, "suppress", String::new());
    }
    out.contacts.clear();
    step("contacts", "suppress", String::new());

    // Dates.
    out.event_time_ms = ev.event_time_ms.map(instant);
    step("event_time_ms", date_method.0, date_method.1.clone());
    if let Some(e) = out.encounter.as_mut() {
        e.start_ms = e.start_ms.map(instant);
        e.end_ms = e.end_ms.map(instant);
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
        c.recorded_ms = c.recorded_ms.map(instant);
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
        a.start_ms = a.start_ms.map(instant);
        a.end_ms = a.end_ms.map(instant);
        step("appointment.start_ms", date_method.0, date_method.1.clone());
        step("appointment.end_ms", date_method.0, date_method.1.clone());
    }
    if let Some(m) = out.medication.as_mut() {
        m.authored_ms = m.authored_ms.map(instant);
        step(
            "medication.authored_ms",
            date_method.0,
            date_method.1.clone(),
        );
    }
    if let Some(p) = out.provenance.as_mut() {
        p.recorded_ms = p.recorded_ms.map(instant);
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
        c.period_start_ms = c.period_start_ms.map(instant);
        c.period_end_ms = c.period_end_ms.map(instant);
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
    let mut known: Vec<Text> = Vec::new();
    if let Some(d) = out.demographics.as_mut() {
        for v in [
            d.family_name.take(),
            d.given_name.take(),
            d.middle_name.take(),
            d.name_suffix.take(),
            d.mothers_maiden_name.take(),
            d.address_line.take(),
            d.city.take(),
            d.county.take(),
            d.phone.take(),
            d.fax.take(),
            d.email.take(),
            d.url.take(),
        ]
        .into_iter()
        .flatten()
        {
            known.push(v);
        }
        d.latitude = None;
        d.longitude = None;
        for p in [
            "demographics.family_name",
            "demographics.given_name",
            "demographics.middle_name",
            "demographics.name_suffix",
            "demographics.mothers_maiden_name",
            "demographics.address_line",
            "demographics.city",
            "demographics.county",
            "demographics.latitude",
            "demographics.longitude",
            "demographics.phone",
            "demographics.fax",
            "demographics.email",
            "demographics.url",
        ] {
            step(p, "suppress", String::new());
        }
        if let Some(z) = d.postal_code.take() {
            d.postal_code = zip3(&z);
            known.push(z);
        }
        step(
            "demographics.postal_code",
            "zip3",
            "restricted_list=hhs-2000".into(),
        );
        // A birth date says the age: over 89, it goes entirely.
        let at = ev.event_time_ms.unwrap_or(0);
        if let Some(b) = d.birth_date.take() {
            let over_89 = age_at(&b, at).is_none_or(|age| age > crate::safe_harbor::MAX_AGE_KEPT);
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
            known.push(b);
        }
        d.deceased_date = d.deceased_date.as_ref().and_then(date);
        step(
            "demographics.deceased_date",
            date_method.0,
            date_method.1.clone(),
        );
    }

    // Free text: dropped, or scrubbed of the record's own values and of
    // every identifier shape.
    if let Some(note) = out.note.take() {
        if opts.keep_text {
            known.extend(ev.identifiers.iter().map(|i| i.value.clone()));
            known.extend(ev.contacts.iter().flat_map(|c| {
                [c.family_name.clone(), c.given_name.clone(), c.phone.clone()]
                    .into_iter()
                    .flatten()
            }));
            let refs: Vec<&str> = known.iter().map(Text::as_str).collect();
            let (clean, kinds) = scrubber.scrub(&note, &refs);
            out.note = Some(clean.as_str().into());
            step("note", "scrub", kinds.join(","));
        } else {
            step("note", "suppress", String::new());
        }
    }
    (out, steps)
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
        let topology = Topology::parse("topology.yaml", include_str!("../../../topology.yaml"))
            .expect("shipped topology");
        let input = StageInput {
            meta: InputMeta {
                topic: "ehr.hl7v2".into(),
                partition: 0,
                offset: 0,
                key: None,
                idempotency_key: None,
                correlation_id: None,
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
                let (out, steps) =
                    safe_harbor(&ev, &SafeHarborOptions { dates, keep_text }, &scrubber);
                let bytes = serde_json::to_string(&out).expect("serializes");
                for v in identifying_values(&p) {
                    assert!(!bytes.contains(&v), "{v} survived: {bytes}");
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

    #[test]
    fn ages_over_89_lose_the_birth_date_and_shifts_keep_intervals() {
        let cfg = SynthConfig::new(11, 1);
        let p = &patients(&cfg)[0];
        let mut ev = normalized(&cfg, p);
        let scrubber = Scrubber::new();
        let year = SafeHarborOptions {
            dates: Dates::Year,
            keep_text: false,
        };
        let at = ev.event_time_ms.expect("event time");
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
        // Shifted dates: the same subject, the same shift, intervals kept.
        let ring = KeyRing::from_key(Environment::NonProduction, [9; 32]);
        let shifter = DateShifter::new(&ring, "p", 30).expect("shifter");
        let opts = SafeHarborOptions {
            dates: Dates::Shift(&shifter),
            keep_text: false,
        };
        let (a, _) = safe_harbor(&ev, &opts, &scrubber);
        let (b, _) = safe_harbor(&ev, &opts, &scrubber);
        assert_eq!(a.event_time_ms, b.event_time_ms, "stable");
        let shift = shifter.days(&ev.subject_key);
        assert_eq!(
            a.event_time_ms,
            ev.event_time_ms.map(|t| shift_ms(t, shift))
        );
        let enc = |e: &CanonicalEvent| e.encounter.as_ref().and_then(|x| x.start_ms);
        if let (Some(s0), Some(t0), Some(s1), Some(t1)) =
            (enc(&ev), ev.event_time_ms, enc(&a), a.event_time_ms)
        {
            assert_eq!(t1 - s1, t0 - s0, "the interval is kept");
        }
    }
}
