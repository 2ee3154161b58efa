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
//!
//! Here: a record's identity and its split into resources. `resources`
//! maps each resource type, `references` finds whose record a resource is,
//! `datatypes` reads FHIR datatypes into envelope values.

mod datatypes;
pub mod model;
mod references;
mod resources;

pub use datatypes::str_at;
pub use references::patient_id;

use consentry_core::envelope::{Text, SOURCE_FHIR};
use consentry_core::ReasonCode;
use datatypes::arr;
use resources::map_resource;
use serde_json::Value;
use std::collections::HashMap;

use crate::normalize::{reject, Ctx, Mapped, Reject};
use crate::time::parse_fhir_datetime;
use model::{Problem, CARE_CONTEXT_RESOURCES, EVENT_RESOURCES};

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
