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
}

impl SchemaRef {
    pub const ALL: [SchemaRef; 2] = [SchemaRef::CanonicalEvent, SchemaRef::AuditRecord];

    /// The name topology.yaml uses (the file stem in `schemas/`).
    pub fn name(self) -> &'static str {
        match self {
            SchemaRef::CanonicalEvent => "canonical_event",
            SchemaRef::AuditRecord => "audit_record",
        }
    }

    pub fn from_name(name: &str) -> Option<SchemaRef> {
        SchemaRef::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The schema's JSON text as shipped.
    pub fn source(self) -> &'static str {
        match self {
            SchemaRef::CanonicalEvent => include_str!("../../../schemas/canonical_event.avsc"),
            SchemaRef::AuditRecord => include_str!("../../../schemas/audit_record.avsc"),
        }
    }

    /// The parsed schema. The shipped files are checked by a unit test, so
    /// a parse failure here is a build defect, not an input error.
    pub fn schema(self) -> &'static Schema {
        static EVENT: OnceLock<Schema> = OnceLock::new();
        static AUDIT: OnceLock<Schema> = OnceLock::new();
        let cell = match self {
            SchemaRef::CanonicalEvent => &EVENT,
            SchemaRef::AuditRecord => &AUDIT,
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
    encode(ev, SchemaRef::CanonicalEvent.schema(), schema_id)
}

pub fn encode_audit(rec: &AuditRecord, schema_id: u32) -> Result<Vec<u8>, WireError> {
    encode(rec, SchemaRef::AuditRecord.schema(), schema_id)
}

pub fn decode_event(body: &[u8], writer: &Schema) -> Result<CanonicalEvent, WireError> {
    decode(body, writer, SchemaRef::CanonicalEvent.schema())
}

pub fn decode_audit(body: &[u8], writer: &Schema) -> Result<AuditRecord, WireError> {
    decode(body, writer, SchemaRef::AuditRecord.schema())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Coding, Demographics, Identifier};

    #[test]
    fn shipped_schemas_parse() {
        for s in SchemaRef::ALL {
            assert!(Schema::parse_str(s.source()).is_ok(), "{}", s.name());
            assert_eq!(SchemaRef::from_name(s.name()), Some(s));
        }
    }

    #[test]
    fn event_round_trips_through_wire_format() {
        let ev = CanonicalEvent {
            event_id: "hl7v2:A:1".into(),
            event_type: "ADT^A01".into(),
            event_time_ms: Some(1_700_000_000_000),
            source_system: "EPIC".into(),
            source_format: "hl7v2".into(),
            correlation_id: "c".into(),
            policy_version: "p".into(),
            purpose: Some("marketing".into()),
            subject_key: "k".into(),
            identifiers: vec![Identifier {
                system: "s".into(),
                value: "v".into(),
                kind: "mrn".into(),
            }],
            demographics: Some(Demographics {
                family_name: Some("F".into()),
                ..Default::default()
            }),
            encounter: None,
            codes: vec![Coding {
                system: "icd10".into(),
                code: "E11.9".into(),
            }],
            note: None,
            suppressed: vec!["note".into()],
        };
        let bytes = encode_event(&ev, 42).unwrap();
        let (id, body) = split_wire(&bytes).unwrap();
        assert_eq!(id, 42);
        let back = decode_event(body, SchemaRef::CanonicalEvent.schema()).unwrap();
        assert_eq!(back, ev);
    }

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
