//! HL7 v2.3–v2.8 ADT messages into a canonical event.
//!
//! `SEGMENTS` (in `segments`) is the mapping's whole knowledge of the
//! format: each segment it reads, the highest field number v2.8 defines for
//! it, and the fields it carries. A segment not in the table, or a
//! populated field above its highest number, is schema drift (unless
//! `topology.yaml` allow-lists it); known fields that are not carried are
//! dropped on purpose. `map` reads the message header and the event's
//! segments; `fields` reads the composite datatypes (CX, CE, XTN, PL) and
//! the patient's demographics.

mod fields;
mod segments;

pub use fields::coding_system;
pub use segments::{SegmentDef, ADT_EVENTS, SEGMENTS, VERSIONS};

use fields::{
    coded, cx, dedup_identifiers, demographics, encounter_class, location, status_of, xtn_number,
};
use segments::segment_def;

use compact_str::format_compact;
use consentry_core::envelope::{
    concat, identifier_kind, Contact, Coverage, Demographics, Encounter, Identifier, Link, Text,
    SOURCE_HL7V2,
};
use consentry_core::{CanonicalEvent, ReasonCode};

use crate::normalize::hl7::{self, Message, Segment};
use crate::normalize::{reject, Ctx, Mapped, Reject};

/// The first place the message goes beyond the mapping, as a path.
fn drift(m: &Message<'_>, ctx: &Ctx<'_>) -> Option<String> {
    let allow = |path: &str| !ctx.allow_hl7.is_empty() && ctx.allow_hl7.contains(path);
    for seg in m.segments() {
        if allow(seg.id) {
            continue;
        }
        let Some(def) = segment_def(seg.id) else {
            return Some(format!("segment {}", seg.id));
        };
        // Only a segment with more fields than its definition can drift.
        if seg.field_count() <= def.max_field {
            continue;
        }
        if let Some(n) = seg.populated().find(|n| *n > def.max_field) {
            let path = format!("{}-{n}", seg.id);
            if !allow(&path) {
                return Some(path);
            }
        }
    }
    None
}

pub(crate) fn map(bytes: &[u8], ctx: &Ctx<'_>) -> Result<Mapped, Reject> {
    let m = hl7::parse(bytes).map_err(|e| reject(ReasonCode::Malformed, format!("hl7: {e}")))?;
    let msh = m
        .segment("MSH")
        .ok_or_else(|| reject(ReasonCode::Malformed, "MSH"))?;
    if m.all("MSH").count() > 1 {
        return Err(reject(
            ReasonCode::Malformed,
            "hl7: more than one message (MSH) in one record",
        ));
    }
    let version = m.comp(msh, 12, 1).unwrap_or_default();
    if !VERSIONS.contains(&version.as_str()) {
        return Err(reject(ReasonCode::UnsupportedType, "MSH-12"));
    }
    let msg_type = m.comps(m.first(msh, 9).unwrap_or_default());
    let (code, trigger) = (
        msg_type.get(1).unwrap_or_default(),
        msg_type.get(2).unwrap_or_default(),
    );
    if code != "ADT" || !ADT_EVENTS.contains(&trigger.as_str()) {
        return Err(reject(ReasonCode::UnsupportedType, "MSH-9"));
    }
    let control_id = m
        .field(msh, 10)
        .ok_or_else(|| reject(ReasonCode::MissingField, "MSH-10"))?;
    let sending_app = m.comp(msh, 3, 1).unwrap_or_else(|| "unknown".into());
    let event_id = concat(&[SOURCE_HL7V2, ":", &sending_app, ":", &control_id]);
    let fail = |reason: ReasonCode, detail: &str| Reject {
        reason,
        detail: detail.to_string(),
        event_id: Some(event_id.clone()),
        hold: None,
    };
    if let Some(path) = drift(&m, ctx) {
        return Err(fail(ReasonCode::SchemaDrift, &path));
    }
    let ts = |seg: Segment<'_, '_>, n: usize, path: &str| -> Result<Option<i64>, Reject> {
        match m.comp(seg, n, 1) {
            None => Ok(None),
            Some(t) => hl7::parse_ts(&t)
                .map(Some)
                .ok_or_else(|| fail(ReasonCode::Malformed, path)),
        }
    };

    // When the event happened: EVN-6, else EVN-2, else the message time.
    let mut event_time_ms = ts(msh, 7, "MSH-7")?;
    if let Some(evn) = m.segment("EVN") {
        if let Some(t) = ts(evn, 6, "EVN-6")?.or(ts(evn, 2, "EVN-2")?) {
            event_time_ms = Some(t);
        }
    }
    let pid = m
        .segment("PID")
        .ok_or_else(|| fail(ReasonCode::MissingField, "PID"))?;
    if trigger == "A40" && m.segment("MRG").is_none() {
        return Err(fail(ReasonCode::MissingField, "MRG"));
    }

    // Sized for a typical message: growing a Vec costs a reallocation.
    let mut identifiers = Vec::with_capacity(8);
    for (n, default_kind) in [
        (3, identifier_kind::OTHER),
        (2, identifier_kind::OTHER),
        (4, identifier_kind::OTHER),
        (18, identifier_kind::ACCOUNT),
    ] {
        for rep in m.repetitions(pid, n) {
            if let Some(id) = cx(&m, rep, default_kind, ctx) {
                identifiers.push(id);
            }
            if n == 18 {
                break; // PID-18 does not repeat; a second value is noise.
            }
        }
    }
    if let Some(ssn) = m.comp(pid, 19, 1) {
        identifiers.push(Identifier {
            system: Text::const_new(crate::normalize::fhir::US_SSN),
            value: ssn,
            kind: Text::const_new(identifier_kind::SSN),
            authority: None,
        });
    }
    if let Some(dl) = m.comp(pid, 20, 1) {
        let state = m.comp(pid, 20, 2);
        identifiers.push(Identifier {
            system: identifier_kind::drivers_license_system(state.as_deref()),
            value: dl,
            kind: Text::const_new(identifier_kind::DRIVERS_LICENSE),
            authority: None,
        });
    }

    let mut demographics =
        demographics(&m, pid).map_err(|path| fail(ReasonCode::Malformed, path))?;
    let mut security_labels = Vec::new();
    if let Some(pd1) = m.segment("PD1") {
        // PD1-12 protection indicator: the record's release is restricted.
        if m.comp(pd1, 12, 1).as_deref() == Some("Y") {
            security_labels.push(Text::const_new("R"));
        }
    }
    let contacts = m
        .all("NK1")
        .map(|nk1| {
            let name = m.comps(m.first(nk1, 2).unwrap_or_default());
            Contact {
                relationship: m.comp(nk1, 3, 1).or_else(|| m.comp(nk1, 7, 1)),
                family_name: name.sub(1, 1),
                given_name: name.get(2),
                phone: m.first(nk1, 5).and_then(|r| xtn_number(&m, r)),
            }
        })
        .collect();

    let encounter = match m.segment("PV1") {
        Some(pv1) => {
            if let Some(visit) = m
                .first(pv1, 19)
                .and_then(|r| cx(&m, r, identifier_kind::VISIT, ctx))
            {
                identifiers.push(visit);
            }
            Some(Encounter {
                encounter_class: m.comp(pv1, 2, 1).and_then(|c| encounter_class(&c)),
                status: status_of(&trigger).map(Text::const_new),
                start_ms: ts(pv1, 44, "PV1-44")?,
                end_ms: ts(pv1, 45, "PV1-45")?,
                location: m.first(pv1, 3).and_then(|r| location(&m, r)),
                prior_location: m.first(pv1, 6).and_then(|r| location(&m, r)),
                hospital_service: m.comp(pv1, 10, 1),
                admit_source: m.comp(pv1, 14, 1),
                discharge_disposition: m.comp(pv1, 36, 1),
                attending: m.first(pv1, 7).and_then(|r| {
                    let xcn = m.comps(r);
                    let (given, family) = (xcn.get(3), xcn.sub(2, 1));
                    match (given, family) {
                        (Some(g), Some(f)) => Some(concat(&[&g, " ", &f])),
                        (g, f) => g.or(f),
                    }
                }),
            })
        }
        None => None,
    };

    let mut codes = Vec::with_capacity(8);
    let mut notes = Vec::new();
    if let Some(pv2) = m.segment("PV2") {
        codes.extend(m.first(pv2, 3).and_then(|r| coded(&m, r, "admit_reason")));
    }
    for dg1 in m.all("DG1") {
        if let Some(mut c) = m.first(dg1, 3).and_then(|r| coded(&m, r, "diagnosis")) {
            c.recorded_ms = ts(dg1, 5, "DG1-5")?;
            codes.push(c);
        }
    }
    for al1 in m.all("AL1") {
        if let Some(mut c) = m.first(al1, 3).and_then(|r| coded(&m, r, "allergy")) {
            c.value = m.comp(al1, 4, 1);
            c.value_type = c.value.as_ref().map(|_| Text::const_new("severity"));
            c.recorded_ms = ts(al1, 6, "AL1-6")?;
            codes.push(c);
        }
        // Reactions are free text.
        notes.extend(m.repetitions(al1, 5).map(|r| m.text(r)));
    }
    for obx in m.all("OBX") {
        let Some(ident) = m.first(obx, 3) else {
            continue;
        };
        let Some(mut c) = coded(&m, ident, "observation") else {
            continue;
        };
        let value_type = m.comp(obx, 2, 1).unwrap_or_default();
        let value = m.first(obx, 5);
        if c.system == crate::normalize::fhir::LOINC
            && c.code == crate::normalize::fhir::LOINC_BIRTH_SEX
        {
            let d = demographics.get_or_insert_with(Demographics::default);
            d.birth_sex = value.and_then(|r| m.component(r, 1));
            continue;
        }
        match value_type.as_str() {
            "NM" | "SN" => {
                c.value = value.map(|r| m.text(r));
                c.value_type = Some(Text::const_new("quantity"));
            }
            "CE" | "CWE" | "CNE" | "CF" | "ID" | "IS" => {
                c.value = value.and_then(|r| m.component(r, 1));
                c.value_type = Some(Text::const_new("code"));
            }
            "DT" | "DTM" | "TS" => {
                c.value = value
                    .and_then(|r| m.component(r, 1))
                    .map(|d| {
                        crate::normalize::hl7_date_to_iso(&d)
                            .ok_or_else(|| fail(ReasonCode::Malformed, "OBX-5"))
                    })
                    .transpose()?;
                c.value_type = Some(Text::const_new("date"));
            }
            "ST" | "TX" | "FT" => {
                // Text can say anything: free text, never a coded value.
                notes.extend(m.repetitions(obx, 5).map(|r| m.text(r)));
                c.value_type = Some(Text::const_new("text"));
            }
            // Encapsulated data, pointers and the rest: known, not carried.
            other => c.value_type = (!other.is_empty()).then(|| other.to_ascii_lowercase().into()),
        }
        c.unit = m.comp(obx, 6, 1);
        c.status = m.comp(obx, 11, 1);
        c.recorded_ms = ts(obx, 14, "OBX-14")?;
        codes.push(c);
    }
    notes.extend(
        m.all("NTE")
            .flat_map(|nte| m.repetitions(nte, 3))
            .map(|r| m.text(r)),
    );

    let mut coverages = Vec::new();
    for in1 in m.all("IN1") {
        let payer_id = m.comp(in1, 3, 1);
        coverages.push(Coverage {
            payer: m.first(in1, 4).and_then(|r| m.component(r, 1)),
            plan: m.comp(in1, 2, 1),
            relationship: m.comp(in1, 17, 1),
        });
        if let Some(policy) = m.comp(in1, 36, 1) {
            identifiers.push(Identifier {
                system: format_compact!(
                    "urn:hl7v2:insurance-policy:{}",
                    payer_id.as_deref().unwrap_or("unknown")
                ),
                value: policy,
                kind: Text::const_new(identifier_kind::HEALTH_PLAN),
                authority: payer_id.clone(),
            });
        }
        for rep in m.repetitions(in1, 49) {
            if let Some(id) = cx(&m, rep, identifier_kind::HEALTH_PLAN, ctx) {
                identifiers.push(id);
            }
        }
    }

    let links = m
        .all("MRG")
        .flat_map(|mrg| m.repetitions(mrg, 1).chain(m.first(mrg, 3)))
        .filter_map(|r| cx(&m, r, identifier_kind::OTHER, ctx))
        .map(|id| Link {
            relation: Text::const_new("replaces"),
            system: id.system,
            value: id.value,
        })
        .collect();

    dedup_identifiers(&mut identifiers);
    Ok(Mapped {
        ev: Box::new(CanonicalEvent {
            event_id,
            event_type: concat(&["ADT^", &trigger]),
            event_time_ms,
            source_system: sending_app,
            source_format: Text::const_new(SOURCE_HL7V2),
            identifiers,
            demographics,
            contacts,
            encounter,
            codes,
            note: (!notes.is_empty()).then(|| notes.join("\n").into()),
            links,
            security_labels,
            coverages,
            ..Default::default()
        }),
        index: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_table_is_consistent() {
        for d in &SEGMENTS {
            assert!(d.carried.iter().all(|n| *n <= d.max_field), "{}", d.id);
            assert!(d.carried.windows(2).all(|w| w[0] < w[1]), "{}", d.id);
        }
        assert_eq!(
            coding_system(Some("HL70063")),
            "http://terminology.hl7.org/CodeSystem/v2-0063"
        );
        assert_eq!(
            coding_system(Some("I10")),
            "http://hl7.org/fhir/sid/icd-10-cm"
        );
        assert_eq!(encounter_class("I").as_deref(), Some("IMP"));
        assert_eq!(encounter_class("N"), None);
    }
}
