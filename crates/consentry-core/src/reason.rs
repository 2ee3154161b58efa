//! Reason codes: one stable snake_case word that links a quarantined record,
//! its audit record and its metric label.

use std::fmt;

/// Why a stage decided what it did. The `as_str` form is stable: it is
/// written to Kafka headers, audit records and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    /// The input was accepted and transformed.
    Ok,
    /// The record was empty.
    Empty,
    /// The record is larger than the stage accepts.
    TooLarge,
    /// The input could not be parsed (bad HL7, bad JSON, bad Avro, bad UTF-8).
    Malformed,
    /// The input parsed but its message or resource type is not handled.
    UnsupportedType,
    /// A required element is missing (e.g. MSH-10, resource id).
    MissingField,
    /// No identifier from a mapped assigning authority / identifier system.
    UnresolvedSubject,
    /// The record's schema is not the one the stage reads.
    SchemaMismatch,
    /// A required Kafka header (idempotency key, correlation id) is missing.
    MissingHeader,
    /// The same idempotency key arrived with different content.
    IdempotencyConflict,
    /// The input has a segment, element or field the mapping does not know.
    SchemaDrift,
    /// A service the stage depends on (the token vault) did not answer. Not
    /// a verdict about the record: the runtime aborts the batch and retries
    /// it, so nothing is quarantined or written for it.
    Unavailable,
    /// A consent change that is not a step of the state machine.
    InvalidTransition,
    /// A consent version older than the one the consent table holds.
    StaleVersion,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 14] = [
        ReasonCode::Ok,
        ReasonCode::Empty,
        ReasonCode::TooLarge,
        ReasonCode::Malformed,
        ReasonCode::UnsupportedType,
        ReasonCode::MissingField,
        ReasonCode::UnresolvedSubject,
        ReasonCode::SchemaMismatch,
        ReasonCode::MissingHeader,
        ReasonCode::IdempotencyConflict,
        ReasonCode::SchemaDrift,
        ReasonCode::Unavailable,
        ReasonCode::InvalidTransition,
        ReasonCode::StaleVersion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Ok => "ok",
            ReasonCode::Empty => "empty",
            ReasonCode::TooLarge => "too_large",
            ReasonCode::Malformed => "malformed",
            ReasonCode::UnsupportedType => "unsupported_type",
            ReasonCode::MissingField => "missing_field",
            ReasonCode::UnresolvedSubject => "unresolved_subject",
            ReasonCode::SchemaMismatch => "schema_mismatch",
            ReasonCode::MissingHeader => "missing_header",
            ReasonCode::IdempotencyConflict => "idempotency_conflict",
            ReasonCode::SchemaDrift => "schema_drift",
            ReasonCode::Unavailable => "unavailable",
            ReasonCode::InvalidTransition => "invalid_transition",
            ReasonCode::StaleVersion => "stale_version",
        }
    }

    pub fn parse(code: &str) -> Option<ReasonCode> {
        ReasonCode::ALL.into_iter().find(|r| r.as_str() == code)
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: tables print these with widths.
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_snake_case() {
        for r in ReasonCode::ALL {
            assert_eq!(ReasonCode::parse(r.as_str()), Some(r));
            assert!(r
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        assert_eq!(ReasonCode::parse("nope"), None);
    }
}
