//! Confluent-framed Avro from the wire decodes or errors; never panics.
#![no_main]
use consentry_core::avro::{decode_audit, decode_event, split_wire, SchemaRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, body)) = split_wire(data) {
        let _ = decode_event(body, SchemaRef::CanonicalEvent.schema());
        let _ = decode_audit(body, SchemaRef::AuditRecord.schema());
    }
});
