//! The composite datatypes the ADT mapping reads (CX identifiers, CE/CWE
//! codes, XTN numbers, PL locations) and the patient's demographics from
//! PID, PD1, NK1 and their neighbours.

use compact_str::format_compact;
use consentry_core::envelope::{concat, identifier_kind, Coding, Demographics, Identifier, Text};

use crate::normalize::hl7::{self, Message, Segment};
use crate::normalize::{canonical_country, Ctx};

pub(super) fn demographics(
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
pub(super) fn cx(
    m: &Message<'_>,
    rep: &str,
    default_kind: &'static str,
    ctx: &Ctx<'_>,
) -> Option<Identifier> {
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
pub(super) fn coded(m: &Message<'_>, raw: &str, kind: &'static str) -> Option<Coding> {
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
pub(super) fn encounter_class(c: &str) -> Option<Text> {
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
pub(super) fn status_of(trigger: &str) -> Option<&'static str> {
    match trigger {
        "A01" | "A02" | "A13" => Some("in-progress"),
        "A03" => Some("finished"),
        "A04" => Some("arrived"),
        "A11" => Some("cancelled"),
        _ => None,
    }
}

/// Point of care, room and bed (PL-1..3), space-separated.
pub(super) fn location(m: &Message<'_>, raw: &str) -> Option<Text> {
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
pub(super) fn xtn_number(m: &Message<'_>, rep: &str) -> Option<Text> {
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
pub(super) fn dedup_identifiers(ids: &mut Vec<Identifier>) {
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
