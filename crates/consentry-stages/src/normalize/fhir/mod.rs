//! FHIR R4 JSON (one resource, or a collection, transaction or message
//! Bundle) into canonical events: one per Patient, Encounter, Appointment,
//! Condition, Observation, DiagnosticReport, AllergyIntolerance,
//! MedicationRequest, Consent or Provenance. Resources of the care context
//! (`model::CARE_CONTEXT_RESOURCES`: practitioners, organizations,
//! locations, medication products) yield no event.
//!
//! The record is first checked against `model` (drift, shapes); only
//! then mapped. A resource that points at its patient by reference is
//! resolved through the Bundle it came in, the reference's own identifier,
//! or the patient index in the stage's state; if none knows the patient
//! yet, the record is held (`Reject::hold`) until its Patient arrives.
//! A reference's `display` is the patient's name: it is never read.

pub mod model;

use compact_str::{format_compact, ToCompactString};
use consentry_core::envelope::{
    concat, identifier_kind, Appointment, Coding, ConsentInfo, ConsentProvision, Contact,
    Demographics, Encounter, Identifier, Link, Medication, ProvenanceInfo, Text, SOURCE_FHIR,
};
use consentry_core::{CanonicalEvent, ReasonCode};
use serde_json::Value;
use std::collections::HashMap;

use crate::normalize::{canonical_country, index_key, reject, Ctx, Mapped, Reject};
use crate::time::parse_fhir_datetime;
use model::{ext, Problem, CARE_CONTEXT_RESOURCES, EVENT_RESOURCES};

/// LOINC "Sex assigned at birth": carried as demographics.birth_sex.
pub const LOINC_BIRTH_SEX: &str = "76689-9";
pub const LOINC: &str = "http://loinc.org";
pub const US_SSN: &str = "http://hl7.org/fhir/sid/us-ssn";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

/// The resources of one record, with what a reference inside it can find.
struct Record<'v> {
    /// (fullUrl, resource) in order.
    resources: Vec<(Option<&'v str>, &'v Value)>,
    /// fullUrl and `Type/id` of every entry.
    by_ref: HashMap<String, &'v Value>,
    /// The Bundle's own identity, for entries without an id of their own.
    bundle: Option<BundleIdentity>,
}

/// How a Bundle is named in the event ids of its entries.
struct BundleIdentity {
    name: String,
    /// Named by the sender (a versioned id, or an identifier), rather than
    /// by when it was updated or what it holds.
    explicit: bool,
}

/// The record's identity before it is split (for holding it whole).
pub fn record_identity(v: &Value) -> Option<String> {
    let rt = str_at(v, &["resourceType"])?;
    if rt == "Bundle" {
        Some(format!("{SOURCE_FHIR}:{}", bundle_identity(v).name))
    } else {
        Some(
            resource_event_id(v)
                .unwrap_or_else(|| format!("{SOURCE_FHIR}:{rt}/_content/{}", content_digest(v))),
        )
    }
}

/// The version part of an event id (see ARCHITECTURE.md, "FHIR event
/// ids"): FHIR's own version where the sender gives one; else when the
/// resource was last updated; else a digest of its content, so a changed
/// resource is a new event and an identical re-send is a duplicate. Real
/// feeds (Bulk Data `$export`, generated data sets, many notifications)
/// carry no `meta` at all.
fn version_part(r: &Value) -> String {
    if let Some(v) = str_at(r, &["meta", "versionId"]) {
        return format!("_history/{}", bounded(v));
    }
    if let Some(ms) = str_at(r, &["meta", "lastUpdated"]).and_then(parse_fhir_datetime) {
        return format!("_updated/{ms}");
    }
    format!("_content/{}", content_digest(r))
}

/// A digest of a resource's content: serde_json's maps are sorted, so key
/// order and white space do not change it.
fn content_digest(r: &Value) -> String {
    let mut d = consentry_core::keys::ContentDigest::new();
    d.update(serde_json::to_string(r).unwrap_or_default().as_bytes());
    hex::encode(&d.finish()[..16])
}

/// Input text in an id, up to a bound: a longer value is named by its digest.
fn bounded(s: &str) -> String {
    if s.len() <= 128 {
        s.to_string()
    } else {
        let mut d = consentry_core::keys::ContentDigest::new();
        d.update(s.as_bytes());
        format!("~{}", hex::encode(&d.finish()[..16]))
    }
}

fn bundle_identity(v: &Value) -> BundleIdentity {
    let explicit = |name| BundleIdentity {
        name,
        explicit: true,
    };
    if let (Some(id), Some(ver)) = (str_at(v, &["id"]), str_at(v, &["meta", "versionId"])) {
        return explicit(format!("Bundle/{}/_history/{}", bounded(id), bounded(ver)));
    }
    if let Some(i) = v.get("identifier") {
        if let Some(value) = str_at(i, &["value"]) {
            return explicit(format!(
                "Bundle?identifier={}|{}",
                bounded(str_at(i, &["system"]).unwrap_or("")),
                bounded(value)
            ));
        }
    }
    // An update time names a version of something with an id; without
    // one it would name every unnamed Bundle of that instant alike.
    let name = match str_at(v, &["id"]) {
        Some(id) => format!("Bundle/{}/{}", bounded(id), version_part(v)),
        None => format!("Bundle/_content/{}", content_digest(v)),
    };
    BundleIdentity {
        name,
        explicit: false,
    }
}

/// `fhir:<Type>/<id>/<version part>`, for a resource that has an id.
fn resource_event_id(r: &Value) -> Option<String> {
    Some(format!(
        "{SOURCE_FHIR}:{}/{}/{}",
        str_at(r, &["resourceType"])?,
        bounded(str_at(r, &["id"])?),
        version_part(r)
    ))
}

pub(crate) fn map(bytes: &[u8], ctx: &Ctx<'_>) -> Result<Vec<Mapped>, Reject> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        reject(
            ReasonCode::Malformed,
            format!("json: line {} column {}", e.line(), e.column()),
        )
    })?;
    let rt = v
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or_else(|| reject(ReasonCode::Malformed, "resourceType"))?;
    if CARE_CONTEXT_RESOURCES.contains(&rt) {
        return Ok(Vec::new());
    }
    if rt != "Bundle" && !EVENT_RESOURCES.contains(&rt) {
        return Err(reject(ReasonCode::UnsupportedType, "resourceType"));
    }
    let identity = record_identity(&v);
    let with_id = |mut r: Reject| {
        r.event_id = r.event_id.or_else(|| identity.as_deref().map(Text::from));
        r
    };
    model::check(&v, ctx.allow_fhir).map_err(|p| {
        with_id(match p {
            Problem::Drift(path) => reject(ReasonCode::SchemaDrift, path),
            Problem::Malformed(path) => reject(ReasonCode::Malformed, path),
            Problem::Unsupported(path) => reject(ReasonCode::UnsupportedType, path),
        })
    })?;
    let record = collect(&v).map_err(with_id)?;
    let mut out = Vec::with_capacity(record.resources.len());
    for (i, (full_url, r)) in record.resources.iter().enumerate() {
        out.push(map_resource(r, *full_url, i, &record, ctx).map_err(with_id)?);
    }
    Ok(out)
}

fn collect(v: &Value) -> Result<Record<'_>, Reject> {
    let mut rec = Record {
        resources: Vec::new(),
        by_ref: HashMap::new(),
        bundle: None,
    };
    if str_at(v, &["resourceType"]) != Some("Bundle") {
        rec.resources.push((None, v));
        return Ok(rec);
    }
    match str_at(v, &["type"]) {
        Some("collection" | "transaction" | "message") => {}
        _ => return Err(reject(ReasonCode::UnsupportedType, "Bundle.type")),
    }
    rec.bundle = Some(bundle_identity(v));
    for entry in arr(v, "entry") {
        let full_url = str_at(entry, &["fullUrl"]);
        let Some(r) = entry.get("resource") else {
            let detail = if str_at(entry, &["request", "method"]) == Some("DELETE") {
                (ReasonCode::UnsupportedType, "Bundle.entry.request.method")
            } else {
                (ReasonCode::Malformed, "Bundle.entry.resource")
            };
            return Err(reject(detail.0, detail.1));
        };
        let rt = str_at(r, &["resourceType"]).unwrap_or_default();
        if let Some(u) = full_url {
            rec.by_ref.insert(u.to_string(), r);
        }
        if let Some(id) = str_at(r, &["id"]) {
            rec.by_ref.insert(format!("{rt}/{id}"), r);
        }
        // MessageHeader and allow-listed other types travel along unmapped.
        if EVENT_RESOURCES.contains(&rt) {
            rec.resources.push((full_url, r));
        }
    }
    Ok(rec)
}

fn map_resource(
    r: &Value,
    full_url: Option<&str>,
    index: usize,
    record: &Record<'_>,
    ctx: &Ctx<'_>,
) -> Result<Mapped, Reject> {
    let rt = str_at(r, &["resourceType"]).unwrap_or_default();
    // Which rule names the event: ARCHITECTURE.md, "FHIR event ids".
    let event_id: Text = match (resource_event_id(r), &record.bundle) {
        (Some(id), _) => id.into(),
        // A transaction's new resources have no id yet: a Bundle the sender
        // named, and the entry's place in it, name them.
        (None, Some(b)) if b.explicit => format_compact!(
            "{SOURCE_FHIR}:{}#{}",
            b.name,
            full_url.map_or_else(|| index.to_string(), bounded)
        ),
        // Otherwise the entry's fullUrl, or its place in the Bundle, and a
        // digest of its content: without an id, neither a fullUrl (senders
        // reuse `urn:uuid:1`) nor an update time (a whole export shares
        // one) tells two patients' resources apart; the content does.
        (None, b) => match full_url {
            Some(u) => format_compact!(
                "{SOURCE_FHIR}:{rt}/{}/_content/{}",
                bounded(u),
                content_digest(r)
            ),
            None => match b {
                Some(b) => format_compact!(
                    "{SOURCE_FHIR}:{}#{index}/_content/{}",
                    b.name,
                    content_digest(r)
                ),
                None => format_compact!("{SOURCE_FHIR}:{rt}/_content/{}", content_digest(r)),
            },
        },
    };
    let fail = |reason: ReasonCode, detail: String| Reject {
        reason,
        detail,
        event_id: Some(event_id.clone()),
        hold: None,
    };
    let time = |path: &str, s: Option<&str>| -> Result<Option<i64>, Reject> {
        match s {
            None => Ok(None),
            Some(t) => parse_fhir_datetime(t)
                .map(Some)
                .ok_or_else(|| fail(ReasonCode::Malformed, format!("{rt}.{path}"))),
        }
    };
    let mut ev = CanonicalEvent {
        event_id: event_id.clone(),
        event_type: concat(&["fhir:", rt]),
        event_time_ms: time("meta.lastUpdated", str_at(r, &["meta", "lastUpdated"]))?,
        source_system: str_at(r, &["meta", "source"]).unwrap_or("unknown").into(),
        source_format: SOURCE_FHIR.into(),
        security_labels: arr(r.get("meta").unwrap_or(&Value::Null), "security")
            .iter()
            .filter_map(|c| str_at(c, &["code"]).map(Text::from))
            .collect(),
        ..Default::default()
    };
    let mut notes: Vec<Text> = arr(r, "note")
        .iter()
        .filter_map(|n| str_at(n, &["text"]).map(Text::from))
        .collect();
    let mut index_entry = None;
    // A subject that cannot be resolved is this event's problem.
    let of_event = |mut e: Reject| {
        e.event_id = Some(event_id.clone());
        e
    };
    // The subject: the Patient itself, or whom the resource points at.
    let subject = |field: &str| -> Result<Vec<Identifier>, Reject> {
        let path = format!("{rt}.{field}");
        resolve(r.get(field), &path, record, ctx).map_err(of_event)
    };

    match rt {
        "Patient" => {
            ev.identifiers = arr(r, "identifier").iter().filter_map(identifier).collect();
            let subject_ids = mapped_ids(&ev.identifiers, ctx);
            if subject_ids.is_empty() {
                return Err(fail(
                    ReasonCode::UnresolvedSubject,
                    "Patient.identifier".into(),
                ));
            }
            if let Some(id) = str_at(r, &["id"]) {
                index_entry = Some((format!("Patient/{id}"), subject_ids));
            }
            ev.demographics = Some(patient_demographics(r));
            ev.contacts = arr(r, "contact").iter().map(contact).collect();
            ev.links = arr(r, "link").iter().filter_map(link).collect();
        }
        "Encounter" => {
            ev.identifiers = subject("subject")?;
            ev.identifiers
                .extend(arr(r, "identifier").iter().filter_map(|i| {
                    let mut id = identifier(i)?;
                    if id.kind == identifier_kind::OTHER {
                        id.kind = identifier_kind::VISIT.into();
                    }
                    Some(id)
                }));
            let locations = arr(r, "location");
            let display = |l: &Value| str_at(l, &["location", "display"]).map(Text::from);
            ev.encounter = Some(Encounter {
                encounter_class: str_at(r, &["class", "code"]).map(Text::from),
                status: str_at(r, &["status"]).map(Text::from),
                start_ms: time("period.start", str_at(r, &["period", "start"]))?,
                end_ms: time("period.end", str_at(r, &["period", "end"]))?,
                location: locations
                    .iter()
                    .find(|l| str_at(l, &["status"]).is_none_or(|s| s != "completed"))
                    .and_then(display),
                prior_location: locations
                    .iter()
                    .find(|l| str_at(l, &["status"]) == Some("completed"))
                    .and_then(display),
                hospital_service: first_code(r.get("serviceType")).map(Text::from),
                admit_source: first_code(r.pointer("/hospitalization/admitSource")).map(Text::from),
                discharge_disposition: first_code(
                    r.pointer("/hospitalization/dischargeDisposition"),
                )
                .map(Text::from),
                attending: arr(r, "participant")
                    .iter()
                    .find(|p| {
                        arr(p, "type")
                            .iter()
                            .any(|t| first_code(Some(t)) == Some("ATND"))
                    })
                    .and_then(|p| str_at(p, &["individual", "display"]))
                    .map(Text::from),
            });
            ev.codes = codings(arr(r, "reasonCode"), "admit_reason");
        }
        "Appointment" => {
            // The patient is the participant whose actor is a Patient.
            let actor = arr(r, "participant")
                .iter()
                .filter_map(|p| p.get("actor"))
                .find(|a| {
                    str_at(a, &["type"]) == Some("Patient")
                        || str_at(a, &["reference"]).is_some_and(|s| patient_id(s).is_some())
                        || str_at(a, &["identifier", "system"])
                            .is_some_and(|s| ctx.mapped.contains(s))
                });
            ev.identifiers =
                resolve(actor, "Appointment.participant.actor", record, ctx).map_err(of_event)?;
            ev.appointment = Some(Appointment {
                status: str_at(r, &["status"]).map(Text::from),
                start_ms: time("start", str_at(r, &["start"]))?,
                end_ms: time("end", str_at(r, &["end"]))?,
            });
            ev.codes = codings(arr(r, "serviceType"), "service");
            for k in ["description", "comment", "patientInstruction"] {
                if let Some(t) = str_at(r, &[k]) {
                    notes.push(t.into());
                }
            }
        }
        "Condition" => {
            ev.identifiers = subject("subject")?;
            let problem = arr(r, "category")
                .iter()
                .any(|c| first_code(Some(c)) == Some("problem-list-item"));
            let mut codes = codings(
                std::slice::from_ref(r.get("code").unwrap_or(&Value::Null)),
                if problem { "problem" } else { "diagnosis" },
            );
            let status = first_code(r.get("clinicalStatus"));
            let recorded = time("recordedDate", str_at(r, &["recordedDate"]))?;
            for c in &mut codes {
                c.status = status.map(Text::from);
                c.recorded_ms = recorded;
            }
            ev.codes = codes;
        }
        "Observation" => {
            ev.identifiers = subject("subject")?;
            let effective = match str_at(r, &["effectiveDateTime"]) {
                Some(t) => time("effectiveDateTime", Some(t))?,
                None => time("effectiveInstant", str_at(r, &["effectiveInstant"]))?,
            };
            let status = str_at(r, &["status"]);
            let mut parts = vec![r];
            parts.extend(arr(r, "component"));
            for part in parts {
                let Some(coding) = arr(part.get("code").unwrap_or(&Value::Null), "coding").first()
                else {
                    continue;
                };
                let (Some(system), Some(code)) =
                    (str_at(coding, &["system"]), str_at(coding, &["code"]))
                else {
                    continue;
                };
                if system == LOINC && code == LOINC_BIRTH_SEX {
                    let d = ev.demographics.get_or_insert_with(Demographics::default);
                    d.birth_sex = first_code(part.get("valueCodeableConcept")).map(Text::from);
                    continue;
                }
                let mut c = Coding {
                    system: system.into(),
                    code: code.into(),
                    kind: Some("observation".into()),
                    display: str_at(coding, &["display"]).map(Text::from),
                    status: status.map(Text::from),
                    recorded_ms: effective,
                    ..Default::default()
                };
                observation_value(part, &mut c, &mut notes);
                ev.codes.push(c);
            }
        }
        "DiagnosticReport" => {
            ev.identifiers = subject("subject")?;
            let effective = match str_at(r, &["effectiveDateTime"]) {
                Some(t) => time("effectiveDateTime", Some(t))?,
                None => time("issued", str_at(r, &["issued"]))?,
            };
            let status = str_at(r, &["status"]);
            let mut codes = codings(
                std::slice::from_ref(r.get("code").unwrap_or(&Value::Null)),
                "report",
            );
            codes.extend(codings(arr(r, "conclusionCode"), "conclusion"));
            for c in &mut codes {
                c.status = status.map(Text::from);
                c.recorded_ms = effective;
            }
            ev.codes = codes;
            // The results are Observations of their own; attachments
            // (presentedForm) can hold anything and are never read.
            if let Some(t) = str_at(r, &["conclusion"]) {
                notes.push(t.into());
            }
        }
        "AllergyIntolerance" => {
            ev.identifiers = subject("patient")?;
            let status = first_code(r.get("clinicalStatus"));
            let recorded = time("recordedDate", str_at(r, &["recordedDate"]))?;
            let mut codes = codings(
                std::slice::from_ref(r.get("code").unwrap_or(&Value::Null)),
                "allergy",
            );
            for reaction in arr(r, "reaction") {
                codes.extend(codings(arr(reaction, "manifestation"), "reaction"));
                if let Some(t) = str_at(reaction, &["description"]) {
                    notes.push(t.into());
                }
                notes.extend(
                    arr(reaction, "note")
                        .iter()
                        .filter_map(|n| str_at(n, &["text"]).map(Text::from)),
                );
            }
            for c in &mut codes {
                c.status = status.map(Text::from);
                c.recorded_ms = recorded;
            }
            ev.codes = codes;
        }
        "MedicationRequest" => {
            ev.identifiers = subject("subject")?;
            ev.medication = Some(Medication {
                status: str_at(r, &["status"]).map(Text::from),
                intent: str_at(r, &["intent"]).map(Text::from),
                authored_ms: time("authoredOn", str_at(r, &["authoredOn"]))?,
            });
            ev.codes = codings(
                std::slice::from_ref(r.get("medicationCodeableConcept").unwrap_or(&Value::Null)),
                "medication",
            );
            ev.codes.extend(codings(arr(r, "reasonCode"), "reason"));
            for d in arr(r, "dosageInstruction") {
                for k in ["text", "patientInstruction"] {
                    if let Some(t) = str_at(d, &[k]) {
                        notes.push(t.into());
                    }
                }
            }
        }
        "Consent" => {
            ev.identifiers = subject("patient")?;
            ev.consent = Some(consent(r, &event_id, &time)?);
        }
        "Provenance" => {
            let (ids, targets) = provenance_subject(r, record, ctx).map_err(of_event)?;
            ev.identifiers = ids;
            ev.provenance = Some(ProvenanceInfo {
                recorded_ms: time("recorded", str_at(r, &["recorded"]))?,
                activity: first_code(r.get("activity")).map(Text::from),
                targets,
            });
        }
        _ => return Err(fail(ReasonCode::UnsupportedType, "resourceType".into())),
    }
    ev.note = (!notes.is_empty()).then(|| notes.join("\n").into());
    Ok(Mapped {
        ev: Box::new(ev),
        index: index_entry,
    })
}

/// The subject's identifiers from a reference: its `identifier` if from a
/// mapped system, else the Patient it names in this record or in the
/// patient index. Unknown yet: held (`Reject::hold`).
fn resolve(
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

fn provenance_subject(
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
fn strip_base(reference: &str) -> &str {
    let r = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    match r.rmatch_indices('/').nth(1) {
        Some((i, _)) if r.contains("://") => &r[i + 1..],
        _ => r,
    }
}

/// Parses the FHIR date-time at a path of the resource being mapped.
type TimeAt<'a> = dyn Fn(&str, Option<&str>) -> Result<Option<i64>, Reject> + 'a;

fn consent(r: &Value, event_id: &str, time: &TimeAt<'_>) -> Result<ConsentInfo, Reject> {
    let root = r.get("provision");
    let purposes = |p: &Value| -> Vec<Text> {
        arr(p, "purpose")
            .iter()
            .filter(|c| str_at(c, &["system"]).is_none_or(|s| s == ACT_REASON))
            .filter_map(|c| str_at(c, &["code"]).map(Text::from))
            .collect()
    };
    let mut provisions = Vec::new();
    // Nested provisions in document order, with their depth; bounded by the
    // JSON nesting limit of the parser.
    fn nested(
        p: &Value,
        depth: i32,
        out: &mut Vec<ConsentProvision>,
        purposes: &dyn Fn(&Value) -> Vec<Text>,
    ) {
        for child in arr(p, "provision") {
            out.push(ConsentProvision {
                decision: str_at(child, &["type"]).map(Text::from),
                purposes: purposes(child),
                data_classes: arr(child, "class")
                    .iter()
                    .filter_map(|c| str_at(c, &["code"]).map(Text::from))
                    .collect(),
                depth,
            });
            nested(child, depth + 1, out, purposes);
        }
    }
    if let Some(p) = root {
        nested(p, 1, &mut provisions, &purposes);
    }
    Ok(ConsentInfo {
        reference: event_id.strip_prefix("fhir:").unwrap_or(event_id).into(),
        status: str_at(r, &["status"]).map(Text::from),
        scope: first_code(r.get("scope")).map(Text::from),
        categories: arr(r, "category")
            .iter()
            .filter_map(|c| first_code(Some(c)).map(Text::from))
            .collect(),
        decision: root.and_then(|p| str_at(p, &["type"])).map(Text::from),
        purposes: root.map(purposes).unwrap_or_default(),
        period_start_ms: time(
            "provision.period.start",
            root.and_then(|p| str_at(p, &["period", "start"])),
        )?,
        period_end_ms: time(
            "provision.period.end",
            root.and_then(|p| str_at(p, &["period", "end"])),
        )?,
        provisions,
    })
}

fn observation_value(part: &Value, c: &mut Coding, notes: &mut Vec<Text>) {
    if let Some(q) = part.get("valueQuantity") {
        c.value = q.get("value").map(number_text);
        c.value_type = Some("quantity".into());
        c.unit = str_at(q, &["unit"])
            .or_else(|| str_at(q, &["code"]))
            .map(Text::from);
    } else if let Some(cc) = part.get("valueCodeableConcept") {
        c.value = first_code(Some(cc)).map(Text::from);
        c.value_type = Some("code".into());
    } else if let Some(b) = part.get("valueBoolean").and_then(Value::as_bool) {
        c.value = Some(b.to_compact_string());
        c.value_type = Some("boolean".into());
    } else if let Some(i) = part.get("valueInteger") {
        c.value = Some(number_text(i));
        c.value_type = Some("quantity".into());
    } else if let Some(d) = str_at(part, &["valueDateTime"]) {
        c.value = Some(d.into());
        c.value_type = Some("date".into());
    } else if let Some(s) = str_at(part, &["valueString"]) {
        // Text can say anything: it is free text, never a coded value.
        notes.push(s.into());
        c.value_type = Some("text".into());
    } else {
        for (key, kind) in [
            ("valueRange", "range"),
            ("valueRatio", "ratio"),
            ("valueSampledData", "sampled_data"),
            ("valueTime", "time"),
            ("valuePeriod", "period"),
        ] {
            if part.get(key).is_some() {
                // Known and not carried.
                c.value_type = Some(kind.into());
            }
        }
    }
}

fn patient_demographics(r: &Value) -> Demographics {
    let names = arr(r, "name");
    let name = ["official", "usual"]
        .iter()
        .find_map(|u| names.iter().find(|n| str_at(n, &["use"]) == Some(u)))
        .or_else(|| names.first());
    let given: Vec<&str> = name
        .map(|n| arr(n, "given").iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let addresses = arr(r, "address");
    let address = addresses
        .iter()
        .find(|a| str_at(a, &["use"]) == Some("home"))
        .or_else(|| addresses.first());
    let telecom = arr(r, "telecom");
    let contact_point = |system: &str| {
        telecom
            .iter()
            .find(|t| str_at(t, &["system"]) == Some(system))
            .and_then(|t| str_at(t, &["value"]))
            .map(Text::from)
    };
    let extension = |url: &str| {
        arr(r, "extension")
            .iter()
            .find(|x| str_at(x, &["url"]) == Some(url))
    };
    let omb_codes = |url: &str| -> Vec<Text> {
        extension(url)
            .map(|x| {
                arr(x, "extension")
                    .iter()
                    .filter(|s| matches!(str_at(s, &["url"]), Some("ombCategory" | "detailed")))
                    .filter_map(|s| str_at(s, &["valueCoding", "code"]).map(Text::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let geo = address.and_then(|a| {
        arr(a, "extension")
            .iter()
            .find(|x| str_at(x, &["url"]) == Some(ext::GEOLOCATION))
    });
    let geo_part = |which: &str| {
        geo.and_then(|g| {
            arr(g, "extension")
                .iter()
                .find(|s| str_at(s, &["url"]) == Some(which))
                .and_then(|s| s.get("valueDecimal"))
                .map(number_text)
        })
    };
    let communications = arr(r, "communication");
    let language = communications
        .iter()
        .find(|c| c.get("preferred").and_then(Value::as_bool) == Some(true))
        .or_else(|| communications.first())
        .and_then(|c| first_code(c.get("language")));
    let deceased_date = str_at(r, &["deceasedDateTime"]).map(|d| d.chars().take(10).collect());
    Demographics {
        family_name: name.and_then(|n| str_at(n, &["family"])).map(Text::from),
        given_name: given.first().map(|g| Text::from(*g)),
        middle_name: (given.len() > 1).then(|| given[1..].join(" ").into()),
        name_suffix: name
            .and_then(|n| arr(n, "suffix").first())
            .and_then(Value::as_str)
            .map(Text::from),
        mothers_maiden_name: extension(ext::MOTHERS_MAIDEN_NAME)
            .and_then(|x| str_at(x, &["valueString"]))
            .map(Text::from),
        birth_date: str_at(r, &["birthDate"]).map(Text::from),
        sex: str_at(r, &["gender"]).map(|g| Text::const_new(crate::normalize::sex_from_fhir(g))),
        birth_sex: extension(ext::US_CORE_BIRTHSEX)
            .and_then(|x| str_at(x, &["valueCode"]))
            .map(Text::from),
        race: omb_codes(ext::US_CORE_RACE),
        ethnicity: omb_codes(ext::US_CORE_ETHNICITY),
        marital_status: first_code(r.get("maritalStatus")).map(Text::from),
        language: language.map(Text::from),
        religion: None,
        deceased: r
            .get("deceasedBoolean")
            .and_then(Value::as_bool)
            .or(deceased_date.as_ref().map(|_| true)),
        deceased_date,
        address_line: address.and_then(|a| {
            let lines: Vec<&str> = arr(a, "line").iter().filter_map(Value::as_str).collect();
            (!lines.is_empty()).then(|| lines.join(", ").into())
        }),
        city: address.and_then(|a| str_at(a, &["city"])).map(Text::from),
        county: address
            .and_then(|a| str_at(a, &["district"]))
            .map(Text::from),
        state: address.and_then(|a| str_at(a, &["state"])).map(Text::from),
        postal_code: address
            .and_then(|a| str_at(a, &["postalCode"]))
            .map(Text::from),
        country: address
            .and_then(|a| str_at(a, &["country"]))
            .map(canonical_country),
        latitude: geo_part("latitude"),
        longitude: geo_part("longitude"),
        phone: contact_point("phone"),
        fax: contact_point("fax"),
        email: contact_point("email"),
        url: contact_point("url"),
        age: None,
    }
}

fn contact(c: &Value) -> Contact {
    Contact {
        relationship: arr(c, "relationship")
            .first()
            .and_then(|r| first_code(Some(r)))
            .map(Text::from),
        family_name: str_at(c, &["name", "family"]).map(Text::from),
        given_name: c
            .get("name")
            .and_then(|n| arr(n, "given").first())
            .and_then(Value::as_str)
            .map(Text::from),
        phone: arr(c, "telecom")
            .iter()
            .find(|t| str_at(t, &["system"]) == Some("phone"))
            .and_then(|t| str_at(t, &["value"]))
            .map(Text::from),
    }
}

fn link(l: &Value) -> Option<Link> {
    let relation = Text::from(str_at(l, &["type"])?);
    let other = l.get("other")?;
    if let Some(id) = other.get("identifier").and_then(identifier) {
        return Some(Link {
            relation,
            system: id.system,
            value: id.value,
        });
    }
    Some(Link {
        relation,
        system: "reference".into(),
        value: strip_base(str_at(other, &["reference"])?).into(),
    })
}

/// An identifier with a system and a value; its kind from its type code.
fn identifier(i: &Value) -> Option<Identifier> {
    let system = Text::from(str_at(i, &["system"])?);
    let value = Text::from(str_at(i, &["value"])?);
    let kind = match i.pointer("/type/coding/0/code").and_then(Value::as_str) {
        Some(code) => identifier_kind::from_type_code(code),
        None if system == US_SSN => identifier_kind::SSN,
        None => identifier_kind::OTHER,
    };
    Some(Identifier {
        system,
        value,
        kind: kind.into(),
        authority: str_at(i, &["assigner", "display"]).map(Text::from),
    })
}

/// The identifiers from systems `topology.yaml` maps: the subject's identity.
fn mapped_ids(ids: &[Identifier], ctx: &Ctx<'_>) -> Vec<Identifier> {
    ids.iter()
        .filter(|i| ctx.mapped.contains(i.system.as_str()))
        .cloned()
        .collect()
}

/// One Coding per coding of each CodeableConcept.
fn codings(concepts: &[Value], kind: &str) -> Vec<Coding> {
    concepts
        .iter()
        .flat_map(|cc| arr(cc, "coding"))
        .filter_map(|c| {
            Some(Coding {
                system: str_at(c, &["system"])?.into(),
                code: str_at(c, &["code"])?.into(),
                kind: Some(kind.into()),
                display: str_at(c, &["display"]).map(Text::from),
                ..Default::default()
            })
        })
        .collect()
}

fn first_code(cc: Option<&Value>) -> Option<&str> {
    let cc = cc?;
    // A Coding has `code` directly; a CodeableConcept has `coding`.
    str_at(cc, &["code"]).or_else(|| arr(cc, "coding").iter().find_map(|c| str_at(c, &["code"])))
}

fn number_text(v: &Value) -> Text {
    match v {
        Value::Number(n) => n.to_compact_string(),
        Value::String(s) => s.as_str().into(),
        other => other.to_compact_string(),
    }
}

pub fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

fn arr<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
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
