//! Avro schemas shipped in `schemas/` and the Confluent wire format
//! (magic byte 0, 4-byte big-endian schema id, Avro binary datum).
//!
//! Encoding takes the schema id as an argument: looking it up in a registry
//! is I/O and belongs to the runtime.

use apache_avro::{from_avro_datum, from_value, to_avro_datum, to_value, Schema};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::OnceLock;

use crate::{AuditRecord, CanonicalEvent};

/// A schema this build ships, by the file stem used in `topology.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaRef {
    CanonicalEvent,
    AuditRecord,
    Disclosure,
    /// A portal's or CRM's consent capture (`consent::ConsentEvent`).
    ConsentEvent,
    /// A destination's schema: the canonical event cut down to its
    /// purpose's allowlist (`destination::schema_text`), not a file.
    Destination,
}

impl SchemaRef {
    pub const ALL: [SchemaRef; 5] = [
        SchemaRef::CanonicalEvent,
        SchemaRef::AuditRecord,
        SchemaRef::Disclosure,
        SchemaRef::ConsentEvent,
        SchemaRef::Destination,
    ];

    /// The name topology.yaml uses (the file stem in `schemas/`).
    pub fn name(self) -> &'static str {
        match self {
            SchemaRef::CanonicalEvent => "canonical_event",
            SchemaRef::AuditRecord => "audit_record",
            SchemaRef::Disclosure => "disclosure",
            SchemaRef::ConsentEvent => "consent_event",
            SchemaRef::Destination => "destination",
        }
    }

    pub fn from_name(name: &str) -> Option<SchemaRef> {
        SchemaRef::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The schema's JSON text as shipped (a destination's is derived from
    /// the canonical event's: see `Topology::schema_text`).
    pub fn source(self) -> &'static str {
        match self {
            SchemaRef::CanonicalEvent | SchemaRef::Destination => {
                include_str!("../../../schemas/canonical_event.avsc")
            }
            SchemaRef::Disclosure => include_str!("../../../schemas/disclosure.avsc"),
            SchemaRef::ConsentEvent => include_str!("../../../schemas/consent_event.avsc"),
            SchemaRef::AuditRecord => include_str!("../../../schemas/audit_record.avsc"),
        }
    }

    /// The parsed schema. The shipped files are checked by a unit test, so
    /// a parse failure here is a build defect, not an input error.
    pub fn schema(self) -> &'static Schema {
        static EVENT: OnceLock<Schema> = OnceLock::new();
        static AUDIT: OnceLock<Schema> = OnceLock::new();
        static DISCLOSURE: OnceLock<Schema> = OnceLock::new();
        static CONSENT: OnceLock<Schema> = OnceLock::new();
        let cell = match self {
            SchemaRef::CanonicalEvent | SchemaRef::Destination => &EVENT,
            SchemaRef::AuditRecord => &AUDIT,
            SchemaRef::Disclosure => &DISCLOSURE,
            SchemaRef::ConsentEvent => &CONSENT,
        };
        cell.get_or_init(|| {
            Schema::parse_str(self.source()).expect("shipped schema parses (unit-tested)")
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("record is too short for the Confluent wire format")]
    TooShort,
    #[error("record does not start with the Confluent magic byte")]
    BadMagic,
    #[error("schema id {0} is not known to this stage")]
    UnknownSchema(u32),
    #[error("Avro datum does not decode: {0}")]
    Decode(String),
    #[error("value does not encode with the schema: {0}")]
    Encode(String),
}

/// Splits a Confluent-framed record into its schema id and Avro body.
pub fn split_wire(bytes: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if bytes.len() < 5 {
        return Err(WireError::TooShort);
    }
    if bytes[0] != 0 {
        return Err(WireError::BadMagic);
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[5..]))
}

/// Encodes `value` through Avro's generic `Value`, resolved against
/// `schema`: fields the schema lacks are left out (a destination's schema
/// is a cut of the canonical one). Builds a tree and resolves the schema on
/// every call.
fn encode<T: Serialize>(value: &T, schema: &Schema, schema_id: u32) -> Result<Vec<u8>, WireError> {
    let v = to_value(value)
        .and_then(|v| v.resolve(schema))
        .map_err(|e| WireError::Encode(e.to_string()))?;
    let body = to_avro_datum(schema, v).map_err(|e| WireError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Encodes `value` straight from its serde form, for a schema that has
/// every field the type serializes, in the same order (the shipped
/// schemas, which name no type by reference): no `Value` tree, no schema
/// resolution per record. The same bytes as `encode` (tested).
fn encode_direct<T: Serialize>(
    value: &T,
    schema: &Schema,
    schema_id: u32,
) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(1024);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    apache_avro::write_avro_datum_ref(schema, value, &mut out)
        .map_err(|e| WireError::Encode(redact_avro_error(&e.to_string())))?;
    Ok(out)
}

/// The most a single length prefix in an Avro datum may make the decoder
/// allocate (apache-avro's default is 512 MiB, applied per string or per
/// array count). Records are at most a few MiB, so a larger length is a
/// corrupt or hostile record: it fails to decode instead of exhausting memory.
pub const MAX_AVRO_ALLOCATION_BYTES: usize = 2 * 1024 * 1024;

fn limit_allocations() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION_BYTES);
    });
}

/// Decodes an Avro body written with `writer`, read as `reader`.
fn decode<T: DeserializeOwned>(
    mut body: &[u8],
    writer: &Schema,
    reader: &Schema,
) -> Result<T, WireError> {
    limit_allocations();
    let v = from_avro_datum(writer, &mut body, Some(reader))
        .map_err(|e| WireError::Decode(redact_avro_error(&e.to_string())))?;
    from_value(&v).map_err(|e| WireError::Decode(redact_avro_error(&e.to_string())))
}

/// apache-avro's error texts can quote the offending value. Keep only the
/// part before any quoted value so an error never carries a field's content.
fn redact_avro_error(msg: &str) -> String {
    let cut = msg.find(['"', '\'', '(']).unwrap_or(msg.len());
    let s = msg[..cut].trim_end().to_string();
    if s.is_empty() {
        "invalid datum".to_string()
    } else {
        s
    }
}

pub fn encode_event(ev: &CanonicalEvent, schema_id: u32) -> Result<Vec<u8>, WireError> {
    encode_direct(ev, SchemaRef::CanonicalEvent.schema(), schema_id)
}

pub fn encode_audit(rec: &AuditRecord, schema_id: u32) -> Result<Vec<u8>, WireError> {
    encode_direct(rec, SchemaRef::AuditRecord.schema(), schema_id)
}

/// Encodes an event with another schema than the canonical one (a
/// destination's): fields the schema does not have are not written.
pub fn encode_event_as(
    ev: &CanonicalEvent,
    schema: &Schema,
    schema_id: u32,
) -> Result<Vec<u8>, WireError> {
    encode(ev, schema, schema_id)
}

pub fn encode_disclosure(
    d: &crate::disclosure::Disclosure,
    schema_id: u32,
) -> Result<Vec<u8>, WireError> {
    encode_direct(d, SchemaRef::Disclosure.schema(), schema_id)
}

pub fn decode_disclosure(
    body: &[u8],
    writer: &Schema,
) -> Result<crate::disclosure::Disclosure, WireError> {
    decode(body, writer, SchemaRef::Disclosure.schema())
}

pub fn encode_consent_event(
    c: &crate::consent::ConsentEvent,
    schema_id: u32,
) -> Result<Vec<u8>, WireError> {
    encode_direct(c, SchemaRef::ConsentEvent.schema(), schema_id)
}

/// Decodes a consent capture's body, written with the shipped schema (the
/// one `topics apply` registers for the consent-events topic).
pub fn decode_consent_event(body: &[u8]) -> Result<crate::consent::ConsentEvent, WireError> {
    let s = SchemaRef::ConsentEvent.schema();
    decode(body, s, s)
}

/// Decodes any record into Avro's generic value (for tools that show
/// records whatever their schema, such as a destination's).
pub fn decode_generic(
    mut body: &[u8],
    writer: &Schema,
) -> Result<apache_avro::types::Value, WireError> {
    limit_allocations();
    from_avro_datum(writer, &mut body, None)
        .map_err(|e| WireError::Decode(redact_avro_error(&e.to_string())))
}

pub fn decode_event(body: &[u8], writer: &Schema) -> Result<CanonicalEvent, WireError> {
    let canonical = SchemaRef::CanonicalEvent.schema();
    let is_projection = match (writer, canonical) {
        (Schema::Record(w), Schema::Record(c)) => w.name != c.name,
        _ => false,
    };
    if is_projection {
        // A destination's schema (a subset of the canonical one): what it
        // does not carry reads as empty.
        let v = decode_generic(body, writer)?;
        return from_value(&v).map_err(|e| WireError::Decode(redact_avro_error(&e.to_string())));
    }
    decode(body, writer, canonical)
}

pub fn decode_audit(body: &[u8], writer: &Schema) -> Result<AuditRecord, WireError> {
    decode(body, writer, SchemaRef::AuditRecord.schema())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{
        Appointment, Coding, ConsentInfo, ConsentProvision, Contact, Coverage, Demographics,
        Encounter, Identifier, Link, Medication, ProvenanceInfo,
    };

    #[test]
    fn shipped_schemas_parse() {
        for s in SchemaRef::ALL {
            assert!(Schema::parse_str(s.source()).is_ok(), "{}", s.name());
            assert_eq!(SchemaRef::from_name(s.name()), Some(s));
        }
    }

    /// An event with every field of the schema set, nested records included.
    fn full_event() -> CanonicalEvent {
        let some = |s: &str| Some(crate::envelope::Text::from(s));
        CanonicalEvent {
            event_id: "hl7v2:A:1".into(),
            event_type: "ADT^A01".into(),
            event_time_ms: Some(1_700_000_000_000),
            source_system: "EPIC".into(),
            source_format: "hl7v2".into(),
            correlation_id: "c".into(),
            policy_version: "p".into(),
            purpose: some("marketing"),
            subject_key: "k".into(),
            identifiers: vec![Identifier {
                system: "s".into(),
                value: "v".into(),
                kind: "mrn".into(),
                authority: some("CSHOSP"),
            }],
            demographics: Some(Demographics {
                family_name: some("F"),
                given_name: some("G"),
                birth_date: some("1970-01-01"),
                sex: some("F"),
                address_line: some("1 St"),
                city: some("C"),
                state: some("IL"),
                postal_code: some("62704"),
                phone: some("555-0100"),
                email: some("e@example.org"),
                middle_name: some("M"),
                name_suffix: some("Jr"),
                mothers_maiden_name: some("MM"),
                birth_sex: some("F"),
                race: vec!["2106-3".into()],
                ethnicity: vec!["2186-5".into()],
                marital_status: some("M"),
                language: some("en"),
                religion: some("CHR"),
                deceased: Some(false),
                deceased_date: some("2026-01-01"),
                county: some("Sangamon"),
                country: some("US"),
                latitude: some("39.78"),
                longitude: some("-89.65"),
                fax: some("555-0101"),
                url: some("https://example.org"),
                age: some("40-49"),
            }),
            encounter: Some(Encounter {
                encounter_class: some("IMP"),
                start_ms: Some(1),
                end_ms: Some(2),
                location: some("W1 101 A"),
                status: some("finished"),
                prior_location: some("W2 1 A"),
                hospital_service: some("MED"),
                admit_source: some("7"),
                discharge_disposition: some("01"),
                attending: some("A B"),
            }),
            codes: vec![Coding {
                system: "icd10".into(),
                code: "E11.9".into(),
                kind: some("diagnosis"),
                display: some("Diabetes"),
                value: some("7.1"),
                value_type: some("quantity"),
                unit: some("%"),
                status: some("final"),
                recorded_ms: Some(3),
            }],
            note: some("free text"),
            suppressed: vec!["x".into()],
            contacts: vec![Contact {
                relationship: some("SPO"),
                family_name: some("K"),
                given_name: some("L"),
                phone: some("555-0102"),
            }],
            appointment: Some(Appointment {
                status: some("booked"),
                start_ms: Some(4),
                end_ms: Some(5),
            }),
            medication: Some(Medication {
                status: some("active"),
                intent: some("order"),
                authored_ms: Some(6),
            }),
            consent: Some(ConsentInfo {
                reference: "Consent/c/_history/1".into(),
                status: some("active"),
                scope: some("patient-privacy"),
                categories: vec!["59284-0".into()],
                decision: some("permit"),
                purposes: vec!["HRESCH".into()],
                period_start_ms: Some(7),
                period_end_ms: Some(8),
                provisions: vec![ConsentProvision {
                    decision: some("deny"),
                    purposes: vec!["HMARKT".into()],
                    data_classes: vec!["psychiatric".into()],
                    depth: 2,
                }],
            }),
            provenance: Some(ProvenanceInfo {
                recorded_ms: Some(9),
                activity: some("CREATE"),
                targets: vec!["MedicationRequest/1".into()],
            }),
            links: vec![Link {
                relation: "replaces".into(),
                system: "s".into(),
                value: "old".into(),
            }],
            security_labels: vec!["R".into()],
            coverages: vec![Coverage {
                payer: some("P"),
                plan: some("PL"),
                relationship: some("SEL"),
            }],
            subject_token: some("tok:subject:v1:abc"),
            consent_basis: some("Consent/c@v1/*"),
        }
    }

    #[test]
    fn every_field_round_trips_through_wire_format() {
        let ev = full_event();
        let bytes = encode_event(&ev, 42).unwrap();
        let (id, body) = split_wire(&bytes).unwrap();
        assert_eq!(id, 42);
        let back = decode_event(body, SchemaRef::CanonicalEvent.schema()).unwrap();
        assert_eq!(back, ev);
        // An event with nothing optional set round-trips too.
        let empty = CanonicalEvent::default();
        let bytes = encode_event(&empty, 1).unwrap();
        assert_eq!(
            decode_event(&bytes[5..], SchemaRef::CanonicalEvent.schema()).unwrap(),
            empty
        );
    }

    /// The direct serde path writes exactly the bytes the `Value` path
    /// writes, for every shipped schema, full and empty records alike.
    #[test]
    fn direct_encoding_is_byte_for_byte_the_value_encoding() {
        fn same<T: Serialize>(v: &T, s: SchemaRef) {
            assert_eq!(
                encode_direct(v, s.schema(), 9).unwrap(),
                encode(v, s.schema(), 9).unwrap(),
                "{}",
                s.name()
            );
        }
        same(&full_event(), SchemaRef::CanonicalEvent);
        same(&CanonicalEvent::default(), SchemaRef::CanonicalEvent);
        let audit = AuditRecord {
            audit_id: "a".into(),
            stage: "route".into(),
            purpose: Some("marketing".into()),
            consent_reference: Some("Consent/c".into()),
            consent_version: Some("3".into()),
            event_time_ms: Some(-5),
            outputs: vec![crate::audit::AuditOutput {
                topic: "out.x".into(),
                idempotency_key: "k".into(),
                fingerprint: "v1:00".into(),
                correlation_id: Some("c".into()),
                event_id: Some("ev1-00".into()),
            }],
            transformations: vec![crate::audit::Transformation::new("a.b", "withhold", "p")],
            checkpoint: vec![crate::audit::ChainHead {
                writer_id: "w".into(),
                sequence: 4,
                hash: "h".into(),
            }],
            ..Default::default()
        };
        same(&audit, SchemaRef::AuditRecord);
        same(&AuditRecord::default(), SchemaRef::AuditRecord);
        let d = crate::disclosure::Disclosure {
            disclosure_id: "d".into(),
            subject_reference: Some("tok:x".into()),
            event_time_ms: Some(1),
            fields: vec!["a".into(), "b".into()],
            phi: true,
            ..Default::default()
        };
        same(&d, SchemaRef::Disclosure);
        let c = crate::consent::ConsentEvent {
            consent_id: "c".into(),
            expires_ms: Some(7),
            captured_by: Some("role".into()),
            version: 2,
            ..Default::default()
        };
        same(&c, SchemaRef::ConsentEvent);
    }

    #[test]
    fn events_written_with_the_foundation_schema_still_read() {
        // BACKWARD: this build reads what the previous schema version wrote.
        let old = Schema::parse_str(FOUNDATION_EVENT_SCHEMA).unwrap();
        let mut ev = CanonicalEvent {
            event_id: "e".into(),
            subject_key: "k".into(),
            identifiers: vec![Identifier {
                system: "s".into(),
                value: "v".into(),
                kind: "mrn".into(),
                authority: None,
            }],
            ..Default::default()
        };
        let v = to_value(&ev).unwrap().resolve(&old).unwrap();
        let body = to_avro_datum(&old, v).unwrap();
        let back = decode_event(&body, &old).unwrap();
        ev.identifiers[0].authority = None;
        assert_eq!(back, ev);
    }

    /// The canonical event schema as the foundation (issue 2) shipped it.
    const FOUNDATION_EVENT_SCHEMA: &str = r#"{"type": "record", "name": "CanonicalEvent", "namespace": "io.consentry.v1", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "event_type", "type": "string"},
        {"name": "event_time_ms", "type": ["null", "long"], "default": null},
        {"name": "source_system", "type": "string"}, {"name": "source_format", "type": "string"},
        {"name": "correlation_id", "type": "string"}, {"name": "policy_version", "type": "string"},
        {"name": "purpose", "type": ["null", "string"], "default": null},
        {"name": "subject_key", "type": "string"},
        {"name": "identifiers", "type": {"type": "array", "items": {"type": "record", "name": "Identifier", "fields": [
            {"name": "system", "type": "string"}, {"name": "value", "type": "string"}, {"name": "kind", "type": "string"}]}}, "default": []},
        {"name": "demographics", "type": ["null", {"type": "record", "name": "Demographics", "fields": [
            {"name": "family_name", "type": ["null", "string"], "default": null}]}], "default": null},
        {"name": "encounter", "type": ["null", {"type": "record", "name": "Encounter", "fields": [
            {"name": "encounter_class", "type": ["null", "string"], "default": null}]}], "default": null},
        {"name": "codes", "type": {"type": "array", "items": {"type": "record", "name": "Coding", "fields": [
            {"name": "system", "type": "string"}, {"name": "code", "type": "string"}]}}, "default": []},
        {"name": "note", "type": ["null", "string"], "default": null},
        {"name": "suppressed", "type": {"type": "array", "items": "string"}, "default": []}]}"#;

    #[test]
    fn huge_length_prefix_is_refused_not_allocated() {
        // Found by the fuzzer: a string length of ~3.5e9 in the first field.
        let mut body = vec![0xfe, 0xff, 0xff, 0xff, 0x1f];
        body.extend_from_slice(b"abc");
        assert!(decode_event(&body, SchemaRef::CanonicalEvent.schema()).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(split_wire(&[0, 1]), Err(WireError::TooShort)));
        assert!(matches!(
            split_wire(&[9, 0, 0, 0, 1]),
            Err(WireError::BadMagic)
        ));
        let r = decode_event(&[0xff, 0xff, 0xff], SchemaRef::CanonicalEvent.schema());
        assert!(r.is_err());
    }
}
