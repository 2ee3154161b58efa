//! What signatures cover: a checkpoint record's fields, and a writer's
//! signed head as the heads topic holds it.

use crate::audit::AuditRecord;
use serde::Serialize;

/// What a checkpoint's signature covers, in an unambiguous encoding
/// (every field length-prefixed): who wrote it and where, what came
/// before it, the segment it vouches for, the chain heads it names and
/// when. Everything here is set before the record's `hash`, so the
/// signature can be inside the hashed body.
pub fn checkpoint_message(rec: &AuditRecord) -> Vec<u8> {
    let mut m = Vec::with_capacity(256);
    let mut field = |b: &[u8]| {
        m.extend_from_slice(&(b.len() as u64).to_be_bytes());
        m.extend_from_slice(b);
    };
    field(b"consentry/checkpoint/v1");
    field(rec.writer_id.as_bytes());
    field(&rec.sequence.to_be_bytes());
    field(rec.previous_hash.as_bytes());
    field(rec.stage.as_bytes());
    field(rec.policy_version.as_bytes());
    field(&rec.processing_time_ms.to_be_bytes());
    field(&rec.segment_from.to_be_bytes());
    field(rec.segment_digest.as_deref().unwrap_or("").as_bytes());
    field(&(rec.checkpoint.len() as u64).to_be_bytes());
    for h in &rec.checkpoint {
        field(h.writer_id.as_bytes());
        field(&h.sequence.to_be_bytes());
        field(h.hash.as_bytes());
    }
    m
}

/// A writer's latest checkpoint as the heads topic holds it (one record per
/// writer, compacted): outside the writer's own chain, so cutting the
/// chain's tail leaves it naming a record the topic no longer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SignedHead {
    pub writer_id: String,
    pub sequence: i64,
    /// The checkpoint record's hash.
    pub hash: String,
    pub key_version: u32,
    /// Hex Ed25519 signature of [`head_message`].
    pub signature: String,
}

impl SignedHead {
    /// The head of a just-linked checkpoint `rec`, signed by `sign` (the
    /// checkpoint key: version and hex signature of [`head_message`]).
    pub fn of(rec: &AuditRecord, sign: impl FnOnce(&[u8]) -> (u32, String)) -> SignedHead {
        let (key_version, signature) = sign(&head_message(&rec.writer_id, rec.sequence, &rec.hash));
        SignedHead {
            writer_id: rec.writer_id.to_string(),
            sequence: rec.sequence,
            hash: rec.hash.to_string(),
            key_version,
            signature,
        }
    }
}

/// What a signed head's signature covers.
pub fn head_message(writer_id: &str, sequence: i64, hash: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    for b in [
        &b"consentry/head/v1"[..],
        writer_id.as_bytes(),
        &sequence.to_be_bytes(),
        hash.as_bytes(),
    ] {
        m.extend_from_slice(&(b.len() as u64).to_be_bytes());
        m.extend_from_slice(b);
    }
    m
}
