//! What verification finds: where a record sits, what is wrong with the
//! trail, and each writer's report.

use super::verify::HashCheck;
use crate::audit::AuditRecord;
use serde::Serialize;
use std::fmt;

/// Where a record sits in the topic read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.partition, self.offset)
    }
}

/// One audit record as read, for [`verify`].
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub record: AuditRecord,
    pub check: HashCheck,
    pub position: Position,
    /// A digest of the record's bytes, to recognise exact duplicates.
    pub digest: [u8; 32],
}

/// Something wrong with the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Break {
    /// In its place in the chain, but its content no longer matches its hash.
    Modified {
        writer: String,
        sequence: i64,
        audit_id: String,
        at: Position,
    },
    /// Not written by the writer it names: its hash does not verify and it
    /// does not fit the chain (or takes a place a genuine record holds).
    Injected {
        writer: String,
        sequence: i64,
        audit_id: String,
        at: Position,
    },
    /// Sequence numbers `from..=to` are not in the topic.
    Missing { writer: String, from: i64, to: i64 },
    /// Appears after a record that comes later in the chain.
    Reordered {
        writer: String,
        sequence: i64,
        after: i64,
        at: Position,
    },
    /// Its previous hash is not the hash of the record before it.
    BrokenLink {
        writer: String,
        sequence: i64,
        at: Position,
    },
    /// Made under a key version the verifier does not hold.
    Unverifiable {
        writer: String,
        sequence: i64,
        key_version: i32,
        at: Position,
    },
    /// A checkpoint names a chain head the topic does not hold (a
    /// truncated tail, or a replaced record).
    CheckpointMismatch {
        writer: String,
        sequence: i64,
        named_by: String,
    },
    /// A record without chain fields.
    Unchained { audit_id: String, at: Position },
    /// A checkpoint without a signature, where the verifier has the
    /// public keys to check one.
    CheckpointUnsigned { writer: String, sequence: i64 },
    /// A checkpoint (or a signed head) whose signature the public key of
    /// its version does not accept: not made by the signing key.
    CheckpointForged { writer: String, sequence: i64 },
    /// The records a signed checkpoint vouches for are not the records in
    /// the topic (recomputed from their bytes, no key needed).
    SegmentMismatch { writer: String, sequence: i64 },
}

impl Break {
    /// Where in its writer's chain it is, for ordering a report.
    pub fn position_in_chain(&self) -> i64 {
        match self {
            Break::Missing { from, .. } => *from,
            Break::Modified { sequence, .. }
            | Break::Injected { sequence, .. }
            | Break::Reordered { sequence, .. }
            | Break::BrokenLink { sequence, .. }
            | Break::Unverifiable { sequence, .. }
            | Break::CheckpointMismatch { sequence, .. }
            | Break::CheckpointUnsigned { sequence, .. }
            | Break::CheckpointForged { sequence, .. }
            | Break::SegmentMismatch { sequence, .. } => *sequence,
            Break::Unchained { .. } => 0,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Break::Modified { .. } => "modified",
            Break::Injected { .. } => "injected",
            Break::Missing { .. } => "missing",
            Break::Reordered { .. } => "reordered",
            Break::BrokenLink { .. } => "broken_link",
            Break::Unverifiable { .. } => "unverifiable",
            Break::CheckpointMismatch { .. } => "checkpoint_mismatch",
            Break::Unchained { .. } => "unchained",
            Break::CheckpointUnsigned { .. } => "checkpoint_unsigned",
            Break::CheckpointForged { .. } => "checkpoint_forged",
            Break::SegmentMismatch { .. } => "segment_mismatch",
        }
    }
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::Modified { writer, sequence, audit_id, at } => write!(
                f,
                "modified: {writer} #{sequence} (audit id {audit_id}, at {at}) does not match its hash"
            ),
            Break::Injected { writer, sequence, audit_id, at } => write!(
                f,
                "injected: a record at {at} claims to be {writer} #{sequence} (audit id {audit_id}) but was not written by it"
            ),
            Break::Missing { writer, from, to } if from == to => {
                write!(f, "missing: {writer} #{from} is not in the topic")
            }
            Break::Missing { writer, from, to } => {
                write!(f, "missing: {writer} #{from} to #{to} are not in the topic")
            }
            Break::Reordered { writer, sequence, after, at } => write!(
                f,
                "reordered: {writer} #{sequence} (at {at}) comes after #{after}"
            ),
            Break::BrokenLink { writer, sequence, at } => write!(
                f,
                "broken link: {writer} #{sequence} (at {at}) does not follow the record before it"
            ),
            Break::Unverifiable { writer, sequence, key_version, at } => write!(
                f,
                "unverifiable: {writer} #{sequence} (at {at}) was hashed under key version {key_version}, which this key ring does not hold"
            ),
            Break::CheckpointMismatch { writer, sequence, named_by } => write!(
                f,
                "checkpoint mismatch: {named_by} names {writer} #{sequence} as a chain head, which the topic does not hold"
            ),
            Break::Unchained { audit_id, at } => {
                write!(f, "unchained: the record at {at} (audit id {audit_id}) has no chain fields")
            }
            Break::CheckpointUnsigned { writer, sequence } => {
                write!(f, "checkpoint unsigned: {writer} #{sequence} carries no signature")
            }
            Break::CheckpointForged { writer, sequence } => write!(
                f,
                "checkpoint forged: the signature of {writer} #{sequence} was not made by the checkpoint key"
            ),
            Break::SegmentMismatch { writer, sequence } => write!(
                f,
                "segment mismatch: the records {writer} #{sequence} vouches for are not the ones in the topic"
            ),
        }
    }
}

/// What [`verify`] found for one writer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriterReport {
    pub writer: String,
    /// Records on the writer's chain.
    pub records: usize,
    pub last_sequence: Option<i64>,
    /// Exact copies of a record (retried sends): tolerated.
    pub duplicates: usize,
    /// Genuine records no later record links to (a retried batch's first
    /// attempt on a broker that shows aborted transactions): tolerated.
    pub aborted_attempts: usize,
    pub breaks: Vec<Break>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub records: usize,
    pub writers: Vec<WriterReport>,
    /// Breaks that belong to no single writer's chain walk.
    pub breaks: Vec<Break>,
}

impl Verification {
    pub fn is_clean(&self) -> bool {
        self.breaks.is_empty() && self.writers.iter().all(|w| w.breaks.is_empty())
    }

    pub fn all_breaks(&self) -> impl Iterator<Item = &Break> {
        self.writers
            .iter()
            .flat_map(|w| w.breaks.iter())
            .chain(self.breaks.iter())
    }
}
