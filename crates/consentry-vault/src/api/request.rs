//! Request bodies and their field caps: what a call may send, bounded so
//! that what goes into an audit record is bounded, whoever calls.

use super::{bad_request, CallRecord, Response};
use consentry_crypto::QuarantineContext;
use serde::de::DeserializeOwned;
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

impl Body for ResolveBody {
    const SHAPE: &'static str =
        "the body must be JSON: {\"token\", \"purpose\", \"justification\", \"break_glass\"?}";

    fn exceeds_caps(&self) -> bool {
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
    /// What the caller says the record's headers are: the seal opens only
    /// if they are exactly what it was sealed under.
    pub fn context(&self) -> QuarantineContext<'_> {
        QuarantineContext {
            id: &self.id,
            stage: &self.stage,
            source_topic: &self.source_topic,
            source_partition: self.source_partition,
            source_offset: self.source_offset,
            reason: &self.reason,
        }
    }
}

impl Body for QuarantineOpenBody {
    const SHAPE: &'static str = "the body must be JSON: {\"id\", \"stage\", \"source_topic\", \"source_partition\", \"source_offset\", \"reason\", \"sealed_hex\", \"purpose\", \"justification\", \"break_glass\"?}";

    fn exceeds_caps(&self) -> bool {
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

/// A request body: the shape a 400 answer describes, and its caps.
pub(super) trait Body: DeserializeOwned {
    const SHAPE: &'static str;
    fn exceeds_caps(&self) -> bool;
}

/// `body` parsed and within its caps, or the 400 answer (the detail names
/// the body's shape or the caps, never a value sent).
pub(super) fn parse<B: Body>(body: &[u8], call: &mut CallRecord) -> Result<B, Response> {
    let Ok(req) = serde_json::from_slice::<B>(body) else {
        return Err(bad_request(call, "bad_request", B::SHAPE));
    };
    if req.exceeds_caps() {
        return Err(bad_request(
            call,
            "field_too_long",
            &format!(
                "a justification is at most {MAX_JUSTIFICATION_BYTES} bytes, any other field at most {MAX_FIELD_BYTES}"
            ),
        ));
    }
    Ok(req)
}
