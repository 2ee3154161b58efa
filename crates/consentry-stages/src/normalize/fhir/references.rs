//! Whose record a resource is: its patient reference resolved through
//! the Bundle, a mapped identifier, or the patient index; a Provenance's
//! target; and the forms a reference to a Patient takes.

use super::datatypes::{arr, identifier, mapped_ids, str_at};
use super::Record;
use compact_str::format_compact;
use consentry_core::envelope::{identifier_kind, Identifier, Text};
use consentry_core::ReasonCode;
use serde_json::Value;

use crate::normalize::{index_key, reject, Ctx, Reject};

/// The subject's identifiers from a reference: its `identifier` if from a
/// mapped system, else the Patient it names in this record or in the
/// patient index. Unknown yet: held (`Reject::hold`).
pub(super) fn resolve(
    reference: Option<&Value>,
    path: &str,
    record: &Record<'_>,
    ctx: &Ctx<'_>,
) -> Result<Vec<Identifier>, Reject> {
    let Some(reference) = reference else {
        return Err(reject(ReasonCode::MissingField, path));
    };
    if let Some(id) = reference.get("identifier").and_then(identifier) {
        if ctx.mapped.contains(id.system.as_str()) {
            let mut id = id;
            if id.kind == identifier_kind::OTHER && id.system == ctx.identity.subject_system {
                id.kind = identifier_kind::MRN.into();
            }
            return Ok(vec![id]);
        }
    }
    let Some(target) = str_at(reference, &["reference"]) else {
        // A display alone is a name: never used to find anyone.
        let detail = if reference.get("identifier").is_some() {
            format!("{path}.identifier.system")
        } else {
            format!("{path}: neither identifier nor reference")
        };
        return Err(reject(ReasonCode::UnresolvedSubject, detail));
    };
    if let Some(r) = record
        .by_ref
        .get(target)
        .or_else(|| patient_id(target).and_then(|id| record.by_ref.get(&format!("Patient/{id}"))))
    {
        return match str_at(r, &["resourceType"]) {
            Some("Patient") => {
                let ids: Vec<Identifier> =
                    arr(r, "identifier").iter().filter_map(identifier).collect();
                let ids = mapped_ids(&ids, ctx);
                if ids.is_empty() {
                    Err(reject(ReasonCode::UnresolvedSubject, "Patient.identifier"))
                } else {
                    Ok(ids)
                }
            }
            _ => Err(reject(
                ReasonCode::UnresolvedSubject,
                format!("{path}.reference (not a Patient)"),
            )),
        };
    }
    let Some(id) = patient_id(target) else {
        let why = if target.starts_with("urn:") {
            "not in the Bundle"
        } else {
            "not a Patient"
        };
        return Err(reject(
            ReasonCode::UnresolvedSubject,
            format!("{path}.reference ({why})"),
        ));
    };
    let key = format!("Patient/{id}");
    match ctx.state.get(&index_key(&key)) {
        Some(bytes) => serde_json::from_slice(bytes).map_err(|_| {
            // Written by this stage; unreadable means a defect or tampering.
            reject(ReasonCode::Malformed, "patient index entry")
        }),
        None => Err(Reject {
            reason: ReasonCode::UnresolvedSubject,
            detail: format!("{path}.reference"),
            event_id: None,
            hold: Some(key),
        }),
    }
}

/// The Patient id in a reference: `Patient/123`, `https://x/fhir/Patient/123`
/// or either with `/_history/n`.
pub fn patient_id(reference: &str) -> Option<&str> {
    let parts: Vec<&str> = reference.split('/').collect();
    let at = parts.iter().rposition(|p| *p == "Patient")?;
    let id = *parts.get(at + 1)?;
    let rest = &parts[at + 2..];
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    (valid && (rest.is_empty() || (rest.len() == 2 && rest[0] == "_history"))).then_some(id)
}

pub(super) fn provenance_subject(
    r: &Value,
    record: &Record<'_>,
    ctx: &Ctx<'_>,
) -> Result<(Vec<Identifier>, Vec<Text>), Reject> {
    let targets = arr(r, "target");
    let names: Vec<Text> = targets
        .iter()
        .filter_map(|t| {
            let s = str_at(t, &["reference"])?;
            // A urn:uuid target is named by the resource it points at.
            Some(match record.by_ref.get(s) {
                Some(res) if s.starts_with("urn:") => {
                    match (str_at(res, &["resourceType"]), str_at(res, &["id"])) {
                        (Some(rt), Some(id)) => format_compact!("{rt}/{id}"),
                        _ => s.into(),
                    }
                }
                _ => strip_base(s).into(),
            })
        })
        .collect();
    // A Patient target is the subject; else the subject of a target in
    // this record.
    if let Some(t) = targets.iter().find(|t| {
        str_at(t, &["type"]) == Some("Patient")
            || str_at(t, &["reference"]).is_some_and(|s| {
                patient_id(s).is_some()
                    || record
                        .by_ref
                        .get(s)
                        .is_some_and(|x| str_at(x, &["resourceType"]) == Some("Patient"))
            })
    }) {
        return Ok((resolve(Some(t), "Provenance.target", record, ctx)?, names));
    }
    for t in targets {
        let Some(res) = str_at(t, &["reference"]).and_then(|s| record.by_ref.get(s)) else {
            continue;
        };
        for field in ["subject", "patient"] {
            if let Some(s) = res.get(field) {
                return Ok((resolve(Some(s), "Provenance.target", record, ctx)?, names));
            }
        }
    }
    Err(reject(ReasonCode::UnresolvedSubject, "Provenance.target"))
}

/// `https://ehr/fhir/Encounter/1/_history/2` -> `Encounter/1`.
pub(super) fn strip_base(reference: &str) -> &str {
    let r = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    match r.rmatch_indices('/').nth(1) {
        Some((i, _)) if r.contains("://") => &r[i + 1..],
        _ => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_references_in_every_form() {
        assert_eq!(patient_id("Patient/123"), Some("123"));
        assert_eq!(
            patient_id("https://ehr.example.org/fhir/Patient/a-1"),
            Some("a-1")
        );
        assert_eq!(patient_id("Patient/123/_history/4"), Some("123"));
        assert_eq!(patient_id("Group/1"), None);
        assert_eq!(patient_id("Patient/"), None);
        assert_eq!(patient_id("Patient/1/extra"), None);
        assert_eq!(patient_id("urn:uuid:0c3151bd"), None);
        assert_eq!(
            strip_base("https://x.org/fhir/Encounter/9/_history/2"),
            "Encounter/9"
        );
        assert_eq!(strip_base("Encounter/9"), "Encounter/9");
    }
}
