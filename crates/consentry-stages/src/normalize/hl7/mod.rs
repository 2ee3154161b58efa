//! A strict, allocation-bounded reader for HL7 v2.x messages, and the
//! ADT mapping (`adt`) that normalize builds on it.
//!
//! Separators come from MSH-1 and MSH-2; segments end at CR (LF and CRLF
//! are accepted too); MLLP framing is removed. Field numbers follow the
//! standard: for MSH, MSH-1 is the field separator itself. Errors name a
//! segment or field position, never content.
//!
//! `parse` (in `parse`) builds one table of field offsets per message;
//! the byte scans it and the value look-ups use live in `scan`; values are
//! read and unescaped through `Message`, `Segment` and `Comps` (in
//! `message`); timestamps through `parse_ts` (in `timestamp`).

pub mod adt;
mod error;
mod message;
mod parse;
mod scan;
mod timestamp;

pub use error::{Hl7Error, MAX_FIELDS, MAX_SEGMENTS};
pub use message::{Comps, Message, Segment, Separators, MAX_COMPONENTS};
pub use parse::parse;
pub use scan::{first_nonempty, nth_part, parts, strip_mllp, Parts};
pub use timestamp::parse_ts;

#[cfg(test)]
mod tests;
