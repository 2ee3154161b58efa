//! Request bodies and their field caps: what a call may send, bounded so
//! that what goes into an audit record is bounded, whoever calls.

use super::{bad_request, CallRecord, Response};
use serde::{Deserialize, Serialize};

/// The longest justification, and the longest of any other field of a
/// body (a token, a purpose, a quarantine id).
pub const MAX_JUSTIFICATION_BYTES: usize = 2048;
pub const MAX_FIELD_BYTES: usize = 512;

/// `POST /v1/resolve`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResolveBody {
    pub token: String,
    pub purpose: String,
    pub justification: String,
    #[serde(default)]
    pub break_glass: bool,
}

impl ResolveBody {
    pub fn exceeds_caps(&self) -> bool {
        exceeds_caps(&self.justification, &[&self.purpose, &self.token])
    }
}

/// A quarantine record as its headers describe it, its sealed payload,
/// and why the caller wants it opened.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineOpenBody {
    pub id: String,
    pub stage: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub reason: String,
    pub sealed_hex: String,
    pub purpose: String,
    pub justification: String,
    #[serde(default)]
    pub break_glass: bool,
}

impl QuarantineOpenBody {
    pub(super) fn exceeds_caps(&self) -> bool {
        exceeds_caps(
            &self.justification,
            &[
                &self.id,
                &self.stage,
                &self.source_topic,
                &self.reason,
                &self.purpose,
            ],
        )
    }
}

fn exceeds_caps(justification: &str, fields: &[&String]) -> bool {
    justification.len() > MAX_JUSTIFICATION_BYTES
        || fields.iter().any(|f| f.len() > MAX_FIELD_BYTES)
}

/// The 400 answer to a body with a field over its cap.
pub(super) fn too_long(call: &mut CallRecord) -> Response {
    bad_request(
        call,
        "field_too_long",
        &format!(
            "a justification is at most {MAX_JUSTIFICATION_BYTES} bytes, any other field at most {MAX_FIELD_BYTES}"
        ),
    )
}
