//! Each mapped resource type's elements into the canonical event: the
//! event's kind, time, codes and details, the Consent's provisions and an
//! Observation's values.

use super::datatypes::{
    arr, codings, contact, first_code, identifier, link, mapped_ids, number_text,
    patient_demographics, str_at,
};
use super::references::{patient_id, provenance_subject, resolve};
use super::{
    bounded, content_digest, resource_event_id, Record, ACT_REASON, LOINC, LOINC_BIRTH_SEX,
};
use compact_str::{format_compact, ToCompactString};
use consentry_core::envelope::{
    concat, identifier_kind, Appointment, Coding, ConsentInfo, ConsentProvision, Demographics,
    Encounter, Identifier, Medication, ProvenanceInfo, Text, SOURCE_FHIR,
};
use consentry_core::{CanonicalEvent, ReasonCode};
use serde_json::Value;

use crate::normalize::{Ctx, Mapped, Reject};
use crate::time::parse_fhir_datetime;

pub(super) fn map_resource(
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

/// Parses the FHIR date-time at a path of the resource being mapped.
pub(super) type TimeAt<'a> = dyn Fn(&str, Option<&str>) -> Result<Option<i64>, Reject> + 'a;

pub(super) fn consent(r: &Value, event_id: &str, time: &TimeAt<'_>) -> Result<ConsentInfo, Reject> {
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

pub(super) fn observation_value(part: &Value, c: &mut Coding, notes: &mut Vec<Text>) {
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
