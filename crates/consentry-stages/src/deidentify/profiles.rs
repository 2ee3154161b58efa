//! What each de-identification profile does to an event: Safe Harbor
//! (with its free-text scrub), the limited data set, and the per-purpose
//! generalizations (age at the event, ICD-10 roll-up). Pure functions of
//! the event and the purpose's options; the stage in `mod.rs` picks them.

use super::scrub::{Known, Scrubber};
use super::values::{age_at, age_band, shift_date, shift_ms, year_only, zip3};
use consentry_core::envelope::{Demographics, Encounter, Text};
use consentry_core::topology::AgeMode;
use consentry_core::CanonicalEvent;
use consentry_crypto::DateShifter;

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

/// The recipe's recorder: each call notes one step, in order.
fn recorder(steps: &mut Vec<Step>) -> impl FnMut(&'static str, &'static str, String) + '_ {
    move |path, method, params| {
        steps.push(Step {
            path,
            method,
            params,
        })
    }
}

/// Removes where an encounter happened and who attended (every profile
/// that keeps the encounter does), noting each path.
fn suppress_places(e: &mut Encounter, step: &mut impl FnMut(&'static str, &'static str, String)) {
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

/// Applies Safe Harbor to `ev`; `scrubber` is built once per stage.
pub fn safe_harbor(
    ev: &CanonicalEvent,
    opts: &SafeHarborOptions<'_>,
    scrubber: &Scrubber,
) -> (CanonicalEvent, Vec<Step>) {
    let mut out = ev.clone();
    let mut steps = Vec::new();
    let mut step = recorder(&mut steps);
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
        step("encounter.start_ms", date_method.0, date_method.1.clone());
        step("encounter.end_ms", date_method.0, date_method.1.clone());
        suppress_places(e, &mut step);
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
            let over_89 = age_at(&b, at).is_none_or(|age| age > super::values::MAX_AGE_KEPT);
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
    drop(step);
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
    let mut step = recorder(&mut steps);
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
        suppress_places(e, &mut step);
    }
    if let Some(p) = out.provenance.as_mut() {
        p.targets.clear();
        step("provenance.targets", "suppress", String::new());
    }
    free_text(ev, &mut out, keep_text, scrubber, &mut step);
    drop(step);
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
        Some(now) if now > super::values::MAX_AGE_KEPT => now.max(at_event),
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
