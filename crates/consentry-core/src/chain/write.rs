//! One writer's chain as it is written: numbering, linking each record to
//! the one before by its hash, and the segment of records the next
//! checkpoint vouches for.

use super::signed::checkpoint_message;
use crate::audit::{AuditRecord, ChainHead};
use crate::avro::{self, WireError};
use crate::envelope::Text;

/// Appends Avro's encoding of a string: zig-zag varint length, then bytes.
pub(super) fn avro_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = (s.len() as u64) << 1; // zig-zag of a non-negative length
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(s);
}

/// The records a writer wrote since its last checkpoint: where they start,
/// and a running SHA-256 over each one's `ContentDigest`.
#[derive(Debug, Clone)]
struct Segment {
    from: i64,
    hasher: sha2::Sha256,
}

impl Segment {
    fn starting_at(from: i64) -> Segment {
        Segment {
            from,
            hasher: sha2::Sha256::default(),
        }
    }

    fn add(&mut self, wire: &[u8]) {
        use sha2::Digest;
        let mut d = crate::keys::ContentDigest::new();
        d.update(wire);
        self.hasher.update(d.finish());
    }

    fn digest(&self) -> String {
        use sha2::Digest;
        hex::encode(self.hasher.clone().finalize())
    }
}

/// One writer's chain as it is being written.
#[derive(Debug, Clone)]
pub struct ChainWriter {
    writer_id: Text,
    next: i64,
    head: Text,
    segment: Segment,
    committed_next: i64,
    committed_head: Text,
    committed_segment: Segment,
}

impl ChainWriter {
    /// A chain that resumes after `resume` (the last committed record's
    /// sequence number and hash), or starts at 0.
    pub fn new(writer_id: &str, resume: Option<(i64, &str)>) -> ChainWriter {
        let (next, head) = match resume {
            Some((seq, hash)) => (seq + 1, Text::from(hash)),
            None => (0, Text::default()),
        };
        ChainWriter {
            writer_id: writer_id.into(),
            next,
            head: head.clone(),
            segment: Segment::starting_at(next),
            committed_next: next,
            committed_head: head,
            committed_segment: Segment::starting_at(next),
        }
    }

    pub fn writer_id(&self) -> &str {
        &self.writer_id
    }

    /// Sets `rec`'s chain fields and encodes it in the Confluent wire
    /// format. `mac` is the audit chain key of `key_version`.
    pub fn link(
        &mut self,
        rec: &mut AuditRecord,
        schema_id: u32,
        key_version: u32,
        mac: impl Fn(&[u8]) -> [u8; 32],
    ) -> Result<Vec<u8>, WireError> {
        rec.writer_id = self.writer_id.clone();
        rec.sequence = self.next;
        rec.previous_hash = self.head.clone();
        rec.hash_key_version = i32::try_from(key_version)
            .map_err(|_| WireError::Encode("key version out of range".into()))?;
        rec.hash = Text::default();
        let mut wire = avro::encode_audit(rec, schema_id)?;
        // An empty string is one byte (length 0), and `hash` is the last
        // field: what precedes it is the body the MAC covers.
        if wire.pop() != Some(0) || wire.len() < 5 {
            return Err(WireError::Encode(
                "the audit schema does not end with its hash field".into(),
            ));
        }
        let hash = hex::encode(mac(&wire[5..]));
        avro_string(&mut wire, hash.as_bytes());
        rec.hash = hash.as_str().into();
        self.next += 1;
        self.head = rec.hash.clone();
        self.segment.add(&wire);
        Ok(wire)
    }

    /// Links a checkpoint record: it vouches for the segment since the
    /// previous checkpoint (`segment_from`, `segment_digest`), is signed
    /// by `sign` (the checkpoint key: version and hex signature of
    /// [`checkpoint_message`]), then linked like any record; the next
    /// segment starts with it.
    pub fn link_checkpoint(
        &mut self,
        rec: &mut AuditRecord,
        schema_id: u32,
        key_version: u32,
        mac: impl Fn(&[u8]) -> [u8; 32],
        sign: impl FnOnce(&[u8]) -> (u32, String),
    ) -> Result<Vec<u8>, WireError> {
        rec.writer_id = self.writer_id.clone();
        rec.sequence = self.next;
        rec.previous_hash = self.head.clone();
        rec.segment_from = self.segment.from;
        rec.segment_digest = Some(self.segment.digest().as_str().into());
        let (version, signature) = sign(&checkpoint_message(rec));
        rec.signature = Some(signature.as_str().into());
        rec.signature_key_version = i32::try_from(version)
            .map_err(|_| WireError::Encode("key version out of range".into()))?;
        let wire = self.link(rec, schema_id, key_version, mac)?;
        self.segment = Segment::starting_at(rec.sequence);
        self.segment.add(&wire);
        Ok(wire)
    }

    /// The records linked since the last commit are now committed.
    pub fn commit(&mut self) {
        self.committed_next = self.next;
        self.committed_head = self.head.clone();
        self.committed_segment = self.segment.clone();
    }

    /// The records linked since the last commit were aborted: the next
    /// record follows the committed head again.
    pub fn rollback(&mut self) {
        self.next = self.committed_next;
        self.head = self.committed_head.clone();
        self.segment = self.committed_segment.clone();
    }

    /// The last record linked (committed or not): sequence and hash.
    pub fn pending_head(&self) -> Option<(i64, &str)> {
        (self.next > 0 && self.next != self.committed_next)
            .then_some((self.next - 1, self.head.as_str()))
    }

    /// The last committed record, if any.
    pub fn committed(&self) -> Option<ChainHead> {
        (self.committed_next > 0).then(|| ChainHead {
            writer_id: self.writer_id.clone(),
            sequence: self.committed_next - 1,
            hash: self.committed_head.clone(),
        })
    }
}
