//! What can be wrong with an HL7 v2 message, and the limits a message is
//! held to. Errors name a segment or a field position, never content.

/// Limits that keep a hostile message from costing unbounded work.
pub const MAX_SEGMENTS: usize = 5_000;
pub const MAX_FIELDS: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("message does not start with an MSH segment")]
    NoMsh,
    #[error("MSH-1/MSH-2 encoding characters are invalid")]
    BadEncodingCharacters,
    #[error("segment {0} has an invalid segment id")]
    BadSegmentId(usize),
    #[error("message has more than {MAX_SEGMENTS} segments")]
    TooManySegments,
    #[error("segment {0} has more than {MAX_FIELDS} fields")]
    TooManyFields(String),
    #[error("message is larger than 4 GiB")]
    TooLarge,
}
