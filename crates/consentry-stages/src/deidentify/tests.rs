//! de-identify over synthetic patients: no identifier survives, the
//! recipe names every change, labels and ages follow the profile.

use super::values::shift_ms;
use super::*;
use crate::normalize::Normalize;
use consentry_core::stage::{Body, InputMeta, NoState, Stage, StageInput};
use consentry_crypto::{Environment, KeyRing};
use consentry_synth::{hl7_adt, patients, SynthConfig};

fn normalized(cfg: &SynthConfig, p: &consentry_synth::Patient) -> CanonicalEvent {
    let topology = crate::test_fixtures::topology();
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

    let topology = crate::test_fixtures::topology();
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
        ev.demographics.as_mut().expect("demographics").birth_date = Some(birth.as_str().into());
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
