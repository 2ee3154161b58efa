//! normalize (foundation version): HL7 v2 ADT and FHIR R4 JSON into the
//! canonical envelope. Strict about what it cannot read (quarantine with a
//! reason and a path), never about panicking: every input yields an Outcome.
//!
//! The full mapping (all ADT events and segments, Bundles, the patient
//! index, schema-drift detection) is issue 3's; this version maps the
//! fields the synthetic feed carries.

use consentry_core::audit::{decision, Transformation};
use consentry_core::envelope::{
    Coding, Demographics, Encounter, Identifier, SOURCE_FHIR, SOURCE_HL7V2,
};
use consentry_core::keys;
use consentry_core::stage::{Body, Decided, Outcome, Output, Stage, StageInput};
use consentry_core::topology::{Identity, SourceFormat, Topology};
use consentry_core::{CanonicalEvent, ReasonCode};
use serde_json::Value;

use crate::hl7;
use crate::time::parse_fhir_datetime;

pub const NAME: &str = "normalize";
/// Larger records are quarantined unparsed (`too_large`).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// ADT trigger events this version maps.
const ADT_EVENTS: [&str; 9] = [
    "A01", "A02", "A03", "A04", "A08", "A11", "A13", "A31", "A40",
];
/// Segments this version knows; any other is schema drift.
const KNOWN_SEGMENTS: [&str; 13] = [
    "MSH", "EVN", "PID", "PD1", "NK1", "PV1", "PV2", "DG1", "AL1", "IN1", "OBX", "NTE", "MRG",
];
const FHIR_TYPES: [&str; 3] = ["Patient", "Encounter", "Condition"];

pub struct Normalize {
    policy_version: String,
    output_topic: String,
    identity: Identity,
    /// Which source topic carries which format.
    hl7_topics: Vec<String>,
    max_record_bytes: usize,
}

/// A reason to quarantine, with the PHI-free path it concerns.
struct Reject {
    reason: ReasonCode,
    detail: String,
    event_id: Option<String>,
}

fn reject(reason: ReasonCode, detail: impl Into<String>) -> Reject {
    Reject {
        reason,
        detail: detail.into(),
        event_id: None,
    }
}

impl Normalize {
    pub fn new(topology: &Topology) -> Normalize {
        let spec = topology.stage(NAME);
        let inputs = spec.map(|s| s.inputs.clone()).unwrap_or_default();
        Normalize {
            policy_version: topology.policy_version.clone(),
            output_topic: spec
                .and_then(|s| s.outputs.first().cloned())
                .unwrap_or_default(),
            identity: topology.identity.clone(),
            hl7_topics: inputs
                .into_iter()
                .filter(|t| topology.topic(t).and_then(|s| s.format) == Some(SourceFormat::Hl7v2))
                .collect(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    pub fn with_max_record_bytes(mut self, n: usize) -> Self {
        self.max_record_bytes = n;
        self
    }

    fn normalize(&self, topic: &str, bytes: &[u8]) -> Result<CanonicalEvent, Reject> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(reject(ReasonCode::Empty, "record"));
        }
        if bytes.len() > self.max_record_bytes {
            return Err(reject(
                ReasonCode::TooLarge,
                format!("record exceeds {} bytes", self.max_record_bytes),
            ));
        }
        let mut ev = if self.hl7_topics.iter().any(|t| t == topic) {
            self.map_hl7(bytes)?
        } else {
            self.map_fhir(bytes)?
        };
        ev.policy_version = self.policy_version.clone();
        ev.correlation_id = keys::correlation_id(&ev.source_format, &ev.event_id);
        let subject = ev
            .identifiers
            .iter()
            .find(|i| i.system == self.identity.subject_system)
            .map(|i| keys::subject_key(&i.system, &i.value));
        match subject {
            Some(k) => ev.subject_key = k,
            None => {
                let path = if ev.source_format == SOURCE_HL7V2 {
                    "PID-3"
                } else {
                    "subject.identifier"
                };
                return Err(Reject {
                    reason: ReasonCode::UnresolvedSubject,
                    detail: path.into(),
                    event_id: Some(ev.event_id),
                });
            }
        }
        Ok(ev)
    }

    fn map_hl7(&self, bytes: &[u8]) -> Result<CanonicalEvent, Reject> {
        let m =
            hl7::parse(bytes).map_err(|e| reject(ReasonCode::Malformed, format!("hl7: {e}")))?;
        let msh = m
            .segment("MSH")
            .ok_or_else(|| reject(ReasonCode::Malformed, "MSH"))?;
        if let Some(seg) = m.segments.iter().find(|s| !KNOWN_SEGMENTS.contains(&s.id)) {
            return Err(reject(
                ReasonCode::SchemaDrift,
                format!("segment {}", seg.id),
            ));
        }
        let version = m.field(msh, 12).unwrap_or_default();
        let version = version.split('^').next().unwrap_or_default();
        if !matches!(
            version,
            "2.3" | "2.3.1" | "2.4" | "2.5" | "2.5.1" | "2.6" | "2.7" | "2.7.1" | "2.8"
        ) {
            return Err(reject(ReasonCode::UnsupportedType, "MSH-12"));
        }
        let msg_type = msh.raw(9).unwrap_or_default();
        let (code, trigger) = (
            m.component(msg_type, 1).unwrap_or_default(),
            m.component(msg_type, 2).unwrap_or_default(),
        );
        if code != "ADT" || !ADT_EVENTS.contains(&trigger.as_str()) {
            return Err(reject(ReasonCode::UnsupportedType, "MSH-9"));
        }
        let control_id = m
            .field(msh, 10)
            .ok_or_else(|| reject(ReasonCode::MissingField, "MSH-10"))?;
        let sending_app = msh
            .raw(3)
            .and_then(|r| m.component(r, 1))
            .unwrap_or_else(|| "unknown".into());
        let event_id = format!("{SOURCE_HL7V2}:{sending_app}:{control_id}");
        let event_time_ms = match m.field(msh, 7) {
            Some(ts) => Some(hl7::parse_ts(&ts).ok_or_else(|| Reject {
                reason: ReasonCode::Malformed,
                detail: "MSH-7".into(),
                event_id: Some(event_id.clone()),
            })?),
            None => None,
        };
        let pid = m.segment("PID").ok_or_else(|| Reject {
            reason: ReasonCode::MissingField,
            detail: "PID".into(),
            event_id: Some(event_id.clone()),
        })?;

        let mut identifiers = Vec::new();
        for rep in m.repetitions(pid, 3) {
            let (Some(value), Some(auth)) = (m.component(rep, 1), m.component(rep, 4)) else {
                continue;
            };
            let system = self
                .identity
                .hl7_authorities
                .get(&auth)
                .cloned()
                .unwrap_or_else(|| format!("urn:hl7:authority:{auth}"));
            let kind = match m.component(rep, 5).as_deref() {
                Some("MR") => "mrn",
                Some("AN") => "account",
                Some("SS") => "ssn",
                Some("DL") => "drivers_license",
                _ => "other",
            };
            identifiers.push(Identifier {
                system,
                value,
                kind: kind.into(),
            });
        }
        if let Some(acct) = pid.raw(18).and_then(|r| m.component(r, 1)) {
            identifiers.push(Identifier {
                system: "urn:hl7:pid-18".into(),
                value: acct,
                kind: "account".into(),
            });
        }
        if let Some(ssn) = m.field(pid, 19) {
            identifiers.push(Identifier {
                system: "http://hl7.org/fhir/sid/us-ssn".into(),
                value: ssn,
                kind: "ssn".into(),
            });
        }
        if let Some(dl) = pid.raw(20).and_then(|r| m.component(r, 1)) {
            identifiers.push(Identifier {
                system: "urn:hl7:pid-20".into(),
                value: dl,
                kind: "drivers_license".into(),
            });
        }

        let name = pid.raw(5).unwrap_or_default();
        let addr = pid.raw(11).unwrap_or_default();
        let (mut phone, mut email) = (None, None);
        for rep in m.repetitions(pid, 13) {
            if m.component(rep, 3).as_deref() == Some("Internet") {
                email = email.or(m.component(rep, 4));
            } else {
                phone = phone.or(m.component(rep, 1));
            }
        }
        let demographics = Demographics {
            family_name: m.component(name, 1),
            given_name: m.component(name, 2),
            birth_date: m.field(pid, 7).map(|d| hl7_date_to_iso(&d)),
            sex: m.field(pid, 8),
            address_line: m.component(addr, 1),
            city: m.component(addr, 3),
            state: m.component(addr, 4),
            postal_code: m.component(addr, 5),
            phone,
            email,
        };
        let encounter = m.segment("PV1").map(|pv1| Encounter {
            encounter_class: m.field(pv1, 2),
            start_ms: m.field(pv1, 44).and_then(|t| hl7::parse_ts(&t)),
            end_ms: m.field(pv1, 45).and_then(|t| hl7::parse_ts(&t)),
            location: pv1.raw(3).and_then(|r| m.component(r, 1)),
        });
        let codes = m
            .all("DG1")
            .filter_map(|dg1| {
                let raw = dg1.raw(3)?;
                Some(Coding {
                    system: hl7_code_system(m.component(raw, 3).as_deref()),
                    code: m.component(raw, 1)?,
                })
            })
            .collect();
        let notes: Vec<String> = m.all("NTE").filter_map(|nte| m.field(nte, 3)).collect();
        Ok(CanonicalEvent {
            event_id,
            event_type: format!("ADT^{trigger}"),
            event_time_ms,
            source_system: sending_app,
            source_format: SOURCE_HL7V2.into(),
            identifiers,
            demographics: Some(demographics),
            encounter,
            codes,
            note: (!notes.is_empty()).then(|| notes.join("\n")),
            ..Default::default()
        })
    }

    fn map_fhir(&self, bytes: &[u8]) -> Result<CanonicalEvent, Reject> {
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
        if !FHIR_TYPES.contains(&rt) {
            return Err(reject(ReasonCode::UnsupportedType, "resourceType"));
        }
        let id = str_at(&v, &["id"]).ok_or_else(|| reject(ReasonCode::MissingField, "id"))?;
        let version = str_at(&v, &["meta", "versionId"])
            .ok_or_else(|| reject(ReasonCode::MissingField, "meta.versionId"))?;
        let event_id = format!("{SOURCE_FHIR}:{rt}/{id}/_history/{version}");
        let malformed = |path: &str| Reject {
            reason: ReasonCode::Malformed,
            detail: path.to_string(),
            event_id: Some(event_id.clone()),
        };
        let event_time_ms = match str_at(&v, &["meta", "lastUpdated"]) {
            Some(t) => Some(parse_fhir_datetime(t).ok_or_else(|| malformed("meta.lastUpdated"))?),
            None => None,
        };
        let source_system = str_at(&v, &["meta", "source"])
            .unwrap_or("unknown")
            .to_string();
        let mut ev = CanonicalEvent {
            event_id: event_id.clone(),
            event_type: format!("fhir:{rt}"),
            event_time_ms,
            source_system,
            source_format: SOURCE_FHIR.into(),
            ..Default::default()
        };
        match rt {
            "Patient" => {
                ev.identifiers = fhir_identifiers(v.get("identifier"));
                let name = v.get("name").and_then(|n| n.get(0));
                let addr = v.get("address").and_then(|a| a.get(0));
                let telecom = v
                    .get("telecom")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let telecom_of = |system: &str| {
                    telecom
                        .iter()
                        .find(|t| t.get("system").and_then(Value::as_str) == Some(system))
                        .and_then(|t| t.get("value").and_then(Value::as_str))
                        .map(String::from)
                };
                ev.demographics = Some(Demographics {
                    family_name: name.and_then(|n| str_at(n, &["family"])).map(String::from),
                    given_name: name
                        .and_then(|n| n.get("given")?.get(0)?.as_str())
                        .map(String::from),
                    birth_date: str_at(&v, &["birthDate"]).map(String::from),
                    sex: str_at(&v, &["gender"]).map(fhir_gender_to_hl7),
                    address_line: addr
                        .and_then(|a| a.get("line")?.get(0)?.as_str())
                        .map(String::from),
                    city: addr.and_then(|a| str_at(a, &["city"])).map(String::from),
                    state: addr.and_then(|a| str_at(a, &["state"])).map(String::from),
                    postal_code: addr
                        .and_then(|a| str_at(a, &["postalCode"]))
                        .map(String::from),
                    phone: telecom_of("phone"),
                    email: telecom_of("email"),
                });
            }
            "Encounter" => {
                ev.identifiers = subject_identifier(&v, "subject").into_iter().collect();
                let period = v.get("period");
                let time = |k: &str| -> Result<Option<i64>, Reject> {
                    match period.and_then(|p| str_at(p, &[k])) {
                        Some(t) => parse_fhir_datetime(t)
                            .map(Some)
                            .ok_or_else(|| malformed(&format!("period.{k}"))),
                        None => Ok(None),
                    }
                };
                ev.encounter = Some(Encounter {
                    encounter_class: str_at(&v, &["class", "code"]).map(String::from),
                    start_ms: time("start")?,
                    end_ms: time("end")?,
                    location: v
                        .get("location")
                        .and_then(|l| l.get(0)?.get("location")?.get("display")?.as_str())
                        .map(String::from),
                });
            }
            "Condition" => {
                ev.identifiers = subject_identifier(&v, "subject").into_iter().collect();
                ev.codes = v
                    .get("code")
                    .and_then(|c| c.get("coding"))
                    .and_then(Value::as_array)
                    .map(|cs| {
                        cs.iter()
                            .filter_map(|c| {
                                Some(Coding {
                                    system: fhir_code_system(str_at(c, &["system"])?),
                                    code: str_at(c, &["code"])?.to_string(),
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let notes: Vec<&str> = v
                    .get("note")
                    .and_then(Value::as_array)
                    .map(|ns| ns.iter().filter_map(|n| str_at(n, &["text"])).collect())
                    .unwrap_or_default();
                ev.note = (!notes.is_empty()).then(|| notes.join("\n"));
            }
            _ => {}
        }
        Ok(ev)
    }
}

impl Stage for Normalize {
    fn name(&self) -> &'static str {
        NAME
    }

    fn process(&self, input: &StageInput) -> Outcome {
        let bytes = match &input.body {
            Body::Raw(b) => b,
            Body::Event(_) => {
                return Outcome::quarantined(
                    NAME,
                    &self.policy_version,
                    &input.meta,
                    None,
                    ReasonCode::SchemaMismatch,
                    "normalize reads raw source records",
                );
            }
        };
        match self.normalize(&input.meta.topic, bytes) {
            Ok(ev) => {
                let key = keys::idempotency_key(NAME, &self.policy_version, &ev.event_id, None);
                let output = Output {
                    topic: self.output_topic.clone(),
                    key: ev.subject_key.clone(),
                    idempotency_key: key.clone(),
                    correlation_id: ev.correlation_id.clone(),
                    event: ev.clone(),
                };
                Decided {
                    stage: NAME,
                    policy_version: &self.policy_version,
                    placeholder: false,
                    decision: decision::FORWARD,
                    purpose: None,
                    transformations: vec![Transformation {
                        path: ev.source_format.clone(),
                        method: "parse_to_canonical".into(),
                    }],
                }
                .outcome(
                    &input.meta,
                    key,
                    Some(ev.event_id),
                    ev.correlation_id,
                    vec![output],
                )
            }
            Err(r) => {
                // A record whose event id is known is deduplicated by it, so a
                // resent bad message is quarantined once; others by position.
                let key = match &r.event_id {
                    Some(id) => keys::idempotency_key(NAME, &self.policy_version, id, None),
                    None => keys::positional_key(
                        NAME,
                        &input.meta.topic,
                        input.meta.partition,
                        input.meta.offset,
                    ),
                };
                Outcome::quarantined_with_key(
                    NAME,
                    &self.policy_version,
                    &input.meta,
                    key,
                    r.event_id,
                    r.reason,
                    r.detail,
                )
            }
        }
    }
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

fn fhir_identifiers(v: Option<&Value>) -> Vec<Identifier> {
    v.and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|i| {
                    let system = str_at(i, &["system"])?.to_string();
                    let value = str_at(i, &["value"])?.to_string();
                    let code = i
                        .get("type")
                        .and_then(|t| t.get("coding")?.get(0)?.get("code")?.as_str());
                    let kind = match code {
                        Some("MR") => "mrn",
                        Some("AN") => "account",
                        Some("SS") => "ssn",
                        Some("DL") => "drivers_license",
                        _ if system == "http://hl7.org/fhir/sid/us-ssn" => "ssn",
                        _ => "other",
                    };
                    Some(Identifier {
                        system,
                        value,
                        kind: kind.into(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The identifier a reference carries (`subject.identifier`). A reference
/// by URL alone cannot be resolved until issue 3's patient index exists.
fn subject_identifier(v: &Value, field: &str) -> Option<Identifier> {
    let i = v.get(field)?.get("identifier")?;
    Some(Identifier {
        system: str_at(i, &["system"])?.to_string(),
        value: str_at(i, &["value"])?.to_string(),
        kind: "mrn".into(),
    })
}

fn hl7_date_to_iso(d: &str) -> String {
    match d.len() {
        n if n >= 8 && d.bytes().take(8).all(|b| b.is_ascii_digit()) => {
            format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8])
        }
        _ => d.to_string(),
    }
}

fn hl7_code_system(s: Option<&str>) -> String {
    match s {
        Some("I10") | Some("I10C") => "http://hl7.org/fhir/sid/icd-10-cm".into(),
        Some("SCT") => "http://snomed.info/sct".into(),
        Some("LN") => "http://loinc.org".into(),
        Some(other) => format!("urn:hl7:coding-system:{other}"),
        None => "urn:hl7:coding-system:unknown".into(),
    }
}

fn fhir_code_system(s: &str) -> String {
    s.to_string()
}

fn fhir_gender_to_hl7(g: &str) -> String {
    match g {
        "male" => "M",
        "female" => "F",
        "other" => "O",
        _ => "U",
    }
    .into()
}

#[cfg(test)]
mod tests;
