//! HL7 v2.3–v2.8 ADT messages into a canonical event.
//!
//! `SEGMENTS` is the mapping's whole knowledge of the format: each segment
//! it reads, the highest field number v2.8 defines for it, and the fields it
//! carries. A segment not in the table, or a populated field above its
//! highest number, is schema drift (unless `topology.yaml` allow-lists it);
//! known fields that are not carried are dropped on purpose.

use compact_str::format_compact;
use consentry_core::envelope::{
    concat, identifier_kind, Coding, Contact, Coverage, Demographics, Encounter, Identifier, Link,
    Text, SOURCE_HL7V2,
};
use consentry_core::{CanonicalEvent, ReasonCode};

use crate::normalize::hl7::{self, Message, Segment};
use crate::normalize::{canonical_country, reject, Ctx, Mapped, Reject};

/// Trigger events this mapping reads.
pub const ADT_EVENTS: [&str; 9] = [
    "A01", "A02", "A03", "A04", "A08", "A11", "A13", "A31", "A40",
];

/// Versions (MSH-12.1) this mapping reads.
pub const VERSIONS: [&str; 11] = [
    "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2",
];

/// A segment the mapping knows: its highest field number (v2.8.2) and the
/// fields it carries into the envelope.
pub struct SegmentDef {
    pub id: &'static str,
    pub max_field: usize,
    pub carried: &'static [usize],
}

pub const SEGMENTS: [SegmentDef; 14] = [
    SegmentDef {
        id: "MSH",
        max_field: 25,
        carried: &[3, 7, 9, 10, 12],
    },
    SegmentDef {
        id: "SFT",
        max_field: 6,
        carried: &[],
    },
    SegmentDef {
        id: "EVN",
        max_field: 7,
        carried: &[2, 6],
    },
    SegmentDef {
        id: "PID",
        max_field: 40,
        carried: &[
            2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 29, 30, 40,
        ],
    },
    SegmentDef {
        id: "PD1",
        max_field: 22,
        carried: &[12],
    },
    SegmentDef {
        id: "NK1",
        max_field: 41,
        carried: &[2, 3, 5, 7],
    },
    SegmentDef {
        id: "PV1",
        max_field: 54,
        carried: &[2, 3, 6, 7, 10, 14, 19, 36, 44, 45],
    },
    SegmentDef {
        id: "PV2",
        max_field: 50,
        carried: &[3],
    },
    SegmentDef {
        id: "DG1",
        max_field: 26,
        carried: &[3, 5],
    },
    SegmentDef {
        id: "AL1",
        max_field: 6,
        carried: &[2, 3, 4, 5, 6],
    },
    SegmentDef {
        id: "IN1",
        max_field: 56,
        carried: &[2, 3, 4, 17, 36, 49],
    },
    SegmentDef {
        id: "OBX",
        max_field: 33,
        carried: &[2, 3, 5, 6, 11, 14],
    },
    SegmentDef {
        id: "NTE",
        max_field: 8,
        carried: &[3],
    },
    SegmentDef {
        id: "MRG",
        max_field: 7,
        carried: &[1, 3],
    },
];

fn segment_def(id: &str) -> Option<&'static SegmentDef> {
    let b = id.as_bytes();
    SEGMENTS
        .iter()
        .find(|d| d.id.len() == b.len() && d.id.bytes().zip(b).all(|(x, y)| x == *y))
}

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

fn demographics(
    m: &Message<'_>,
    pid: Segment<'_, '_>,
) -> Result<Option<Demographics>, &'static str> {
    // The legal name (XPN-7 = L) if one is marked, else the first; the
    // home (or permanent) address likewise.
    let pick = |n: usize, wanted: &[&str]| {
        let mut first = None;
        for r in m.repetitions(pid, n) {
            let c = m.comps(r);
            if c.raw(7).is_some_and(|t| wanted.contains(&t.trim_ascii())) {
                return Some(c);
            }
            first.get_or_insert(c);
        }
        first
    };
    let name = pick(5, &["L"]);
    let address = pick(11, &["H", "P"]);
    let birth_date = m
        .comp(pid, 7, 1)
        .map(|d| crate::normalize::hl7_date_to_iso(&d).ok_or("PID-7"))
        .transpose()?;
    let deceased_date = m
        .comp(pid, 29, 1)
        .map(|d| {
            crate::normalize::hl7_date_to_iso(&d)
                .map(|s| s.chars().take(10).collect::<Text>())
                .ok_or("PID-29")
        })
        .transpose()?;
    let (mut phone, mut fax, mut email, mut url) = (None, None, None, None);
    let telecoms = [13, 40, 14].into_iter().flat_map(|n| m.repetitions(pid, n));
    for rep in telecoms {
        let xtn = m.comps(rep);
        match xtn.raw(3).map(str::trim_ascii) {
            Some("Internet") | Some("X.400") => {
                if let Some(addr) = xtn.get(4) {
                    if addr.contains("://") {
                        url = url.or(Some(addr));
                    } else {
                        email = email.or(Some(addr));
                    }
                }
            }
            Some("FX") => fax = fax.or_else(|| xtn_number_of(&xtn)),
            _ => phone = phone.or_else(|| xtn_number_of(&xtn)),
        }
    }
    let codes = |n: usize| -> Vec<Text> {
        m.repetitions(pid, n)
            .filter_map(|r| m.component(r, 1))
            .collect()
    };
    let deceased = match m.comp(pid, 30, 1).as_deref() {
        Some("Y") => Some(true),
        Some("N") => Some(false),
        _ => deceased_date.as_ref().map(|_| true),
    };
    Ok(Some(Demographics {
        family_name: name.as_ref().and_then(|c| c.sub(1, 1)),
        given_name: name.as_ref().and_then(|c| c.get(2)),
        middle_name: name.as_ref().and_then(|c| c.get(3)),
        name_suffix: name.as_ref().and_then(|c| c.get(4)),
        mothers_maiden_name: m.first(pid, 6).and_then(|r| m.subcomponent(r, 1, 1)),
        birth_date,
        sex: m.comp(pid, 8, 1),
        birth_sex: None,
        race: codes(10),
        ethnicity: codes(22),
        marital_status: m.comp(pid, 16, 1),
        language: m.comp(pid, 15, 1),
        religion: m.comp(pid, 17, 1),
        deceased,
        deceased_date,
        address_line: address
            .as_ref()
            .and_then(|a| match (a.sub(1, 1), a.get(2)) {
                (Some(l1), Some(l2)) => Some(concat(&[&l1, ", ", &l2])),
                (l1, l2) => l1.or(l2),
            }),
        city: address.as_ref().and_then(|a| a.get(3)),
        state: address.as_ref().and_then(|a| a.get(4)),
        postal_code: address.as_ref().and_then(|a| a.get(5)),
        country: address
            .as_ref()
            .and_then(|a| a.get(6))
            .map(|c| canonical_country(&c)),
        county: address
            .as_ref()
            .and_then(|a| a.get(9))
            .or_else(|| m.comp(pid, 12, 1)),
        latitude: None,
        longitude: None,
        phone,
        fax,
        email,
        url,
        age: None,
    }))
}

/// An extended composite id (CX): value, type code (CX-5) and assigning
/// authority (CX-4.1, else CX-4.2), whose system `topology.yaml` maps.
fn cx(m: &Message<'_>, rep: &str, default_kind: &'static str, ctx: &Ctx<'_>) -> Option<Identifier> {
    let c = m.comps(rep);
    let value = c.get(1)?;
    let authority = c.sub(4, 1).or_else(|| c.sub(4, 2));
    let kind = match c.raw(5).map(str::trim_ascii).filter(|s| !s.is_empty()) {
        Some(code) => match identifier_kind::from_type_code(code) {
            identifier_kind::OTHER => default_kind,
            k => k,
        },
        None => default_kind,
    };
    let system = match &authority {
        Some(a) => ctx
            .authority_systems
            .get(a.as_str())
            .cloned()
            .unwrap_or_else(|| format_compact!("urn:hl7v2:assigning-authority:{a}")),
        None => Text::const_new("urn:hl7v2:assigning-authority:none"),
    };
    let kind = if kind == identifier_kind::OTHER && system == ctx.identity.subject_system {
        identifier_kind::MRN
    } else {
        kind
    };
    Some(Identifier {
        system,
        value,
        kind: Text::const_new(kind),
        authority,
    })
}

/// A coded element (CE/CWE): code, text and coding system.
fn coded(m: &Message<'_>, raw: &str, kind: &'static str) -> Option<Coding> {
    let c = m.comps(raw);
    Some(Coding {
        code: c.get(1)?,
        display: c.get(2),
        system: coding_system(c.raw(3).map(str::trim_ascii).filter(|s| !s.is_empty())),
        kind: Some(Text::const_new(kind)),
        ..Default::default()
    })
}

/// HL7 table 0396 names to the URIs FHIR uses for the same systems.
pub fn coding_system(name: Option<&str>) -> Text {
    let Some(name) = name else {
        return Text::const_new("urn:hl7v2:coding-system:unknown");
    };
    Text::const_new(match name {
        "I10" | "I10C" | "ICD10CM" => "http://hl7.org/fhir/sid/icd-10-cm",
        "I10P" => "http://www.cms.gov/Medicare/Coding/ICD10",
        "I9" | "I9C" | "ICD9CM" => "http://hl7.org/fhir/sid/icd-9-cm",
        "SCT" | "SNM" | "SNOMED" | "SNOMEDCT" => "http://snomed.info/sct",
        "LN" | "LOINC" => crate::normalize::fhir::LOINC,
        "RXNORM" | "RXN" => "http://www.nlm.nih.gov/research/umls/rxnorm",
        "NDC" => "http://hl7.org/fhir/sid/ndc",
        "C4" | "CPT" => "http://www.ama-assn.org/go/cpt",
        "CVX" => "http://hl7.org/fhir/sid/cvx",
        "CDCREC" | "HL70005" => "urn:oid:2.16.840.1.113883.6.238",
        "UCUM" => "http://unitsofmeasure.org",
        t if t.len() == 7 && t.starts_with("HL7") && t[3..].bytes().all(|b| b.is_ascii_digit()) => {
            return format_compact!("http://terminology.hl7.org/CodeSystem/v2-{}", &t[3..]);
        }
        other => return format_compact!("urn:hl7v2:coding-system:{other}"),
    })
}

/// PV1-2 patient class (table 0004) as the v3 ActCode FHIR uses.
fn encounter_class(c: &str) -> Option<Text> {
    Some(Text::const_new(match c {
        "I" | "B" => "IMP",
        "O" | "R" => "AMB",
        "E" => "EMER",
        "P" => "PRENC",
        // C (commercial account), N (not applicable), U (unknown).
        _ => return None,
    }))
}

/// The encounter status a trigger implies (FHIR Encounter.status values).
fn status_of(trigger: &str) -> Option<&'static str> {
    match trigger {
        "A01" | "A02" | "A13" => Some("in-progress"),
        "A03" => Some("finished"),
        "A04" => Some("arrived"),
        "A11" => Some("cancelled"),
        _ => None,
    }
}

/// Point of care, room and bed (PL-1..3), space-separated.
fn location(m: &Message<'_>, raw: &str) -> Option<Text> {
    let pl = m.comps(raw);
    let mut out: Option<Text> = None;
    for part in (1..=3).filter_map(|c| pl.get(c)) {
        match &mut out {
            None => out = Some(part),
            Some(o) => {
                o.push(' ');
                o.push_str(&part);
            }
        }
    }
    out
}

/// A telephone number: XTN-1 as written, else area code and local number.
fn xtn_number(m: &Message<'_>, rep: &str) -> Option<Text> {
    xtn_number_of(&m.comps(rep))
}

fn xtn_number_of(xtn: &hl7::Comps<'_, '_>) -> Option<Text> {
    xtn.get(1).or_else(|| {
        let local = xtn.get(7)?;
        Some(match xtn.get(6) {
            Some(area) => concat(&[&area, &local]),
            None => local,
        })
    })
}

/// Drops later copies of an identifier (PID-3 and PID-18 often both carry
/// the account). A message has a handful, so a scan beats hashing; a field
/// repeated thousands of times (hostile, or broken) is hashed instead, so
/// it costs linear time, not quadratic.
fn dedup_identifiers(ids: &mut Vec<Identifier>) {
    if ids.len() > 32 {
        let mut seen = std::collections::HashSet::new();
        ids.retain(|i| seen.insert((i.system.clone(), i.value.clone(), i.kind.clone())));
        return;
    }
    let mut i = 0;
    while i < ids.len() {
        let dup = ids[..i]
            .iter()
            .any(|j| j.system == ids[i].system && j.value == ids[i].value && j.kind == ids[i].kind);
        if dup {
            ids.remove(i);
        } else {
            i += 1;
        }
    }
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
