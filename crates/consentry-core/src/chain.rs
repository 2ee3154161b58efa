//! The audit trail's hash chains: linking records as a writer encodes them,
//! and verifying a whole topic's worth of them.
//!
//! Each writer (`<stage>/<instance>`, or a vault process) numbers its records
//! from 0 and puts the previous record's hash in each one. `hash` is the
//! Avro body's last field: an HMAC-SHA256, under the audit chain key, of
//! every body byte before it, so nothing of the record (including
//! `previous_hash`) can change without the hash failing, and a record cannot
//! be forged without the key. The MAC itself is the caller's (`mac`
//! closures), so this module holds no key material and stays pure.
//!
//! A broker that shows aborted transactions (tansu) leaves a retried batch's
//! first attempt in the topic: those records are well-formed and chained,
//! but no later record links to them. [`verify`] tolerates such dead-end
//! branches (counted as aborted attempts) and exact duplicates (retried
//! sends), and names everything else: modified, injected, missing and
//! reordered records, broken links, and chain heads named by a checkpoint
//! that are not in the topic (a truncated tail).

use crate::audit::{AuditRecord, ChainHead};
use crate::avro::{self, WireError};
use crate::envelope::Text;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// Appends Avro's encoding of a string: zig-zag varint length, then bytes.
fn avro_string(out: &mut Vec<u8>, s: &[u8]) {
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

/// One writer's chain as it is being written.
#[derive(Debug, Clone)]
pub struct ChainWriter {
    writer_id: Text,
    next: i64,
    head: Text,
    committed_next: i64,
    committed_head: Text,
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
            committed_next: next,
            committed_head: head,
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
        Ok(wire)
    }

    /// The records linked since the last commit are now committed.
    pub fn commit(&mut self) {
        self.committed_next = self.next;
        self.committed_head = self.head.clone();
    }

    /// The records linked since the last commit were aborted: the next
    /// record follows the committed head again.
    pub fn rollback(&mut self) {
        self.next = self.committed_next;
        self.head = self.committed_head.clone();
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

/// Whether a record's hash matches its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashCheck {
    Valid,
    Invalid,
    /// Made under a key version the verifier does not hold (retired).
    Unverifiable,
}

/// Checks `rec` (decoded from the Avro `body`) against its hash. `mac`
/// gives the chain key's MAC of a version, `None` if it is not held.
pub fn check_hash(
    body: &[u8],
    rec: &AuditRecord,
    mac: impl Fn(u32, &[u8]) -> Option<[u8; 32]>,
) -> HashCheck {
    let mut tail = Vec::with_capacity(rec.hash.len() + 2);
    avro_string(&mut tail, rec.hash.as_bytes());
    let Some(prefix) = body.strip_suffix(tail.as_slice()) else {
        return HashCheck::Invalid;
    };
    let Ok(version) = u32::try_from(rec.hash_key_version) else {
        return HashCheck::Invalid;
    };
    match mac(version, prefix) {
        None => HashCheck::Unverifiable,
        Some(m) if hex::encode(m) == rec.hash.as_str() => HashCheck::Valid,
        Some(_) => HashCheck::Invalid,
    }
}

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
}

impl Break {
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

/// Verifies every chain in `records` (in the order they were read).
pub fn verify(records: Vec<ReadRecord>) -> Verification {
    let mut out = Verification {
        records: records.len(),
        ..Default::default()
    };
    let mut by_writer: BTreeMap<String, Vec<ReadRecord>> = BTreeMap::new();
    for r in records {
        if r.record.writer_id.is_empty() || r.record.hash.is_empty() {
            out.breaks.push(Break::Unchained {
                audit_id: r.record.audit_id.to_string(),
                at: r.position,
            });
            continue;
        }
        by_writer
            .entry(r.record.writer_id.to_string())
            .or_default()
            .push(r);
    }
    // Every hash each writer holds on its chain, for the checkpoints.
    let mut held: HashMap<&str, HashSet<(i64, &str)>> = HashMap::new();
    for (writer, recs) in &by_writer {
        let (report, nodes) = verify_writer(writer, recs);
        held.insert(
            writer.as_str(),
            nodes
                .iter()
                .map(|&i| (recs[i].record.sequence, recs[i].record.hash.as_str()))
                .collect(),
        );
        out.writers.push(report);
    }
    for (writer, recs) in &by_writer {
        for r in recs.iter().filter(|r| r.check == HashCheck::Valid) {
            for head in &r.record.checkpoint {
                let ok = held
                    .get(head.writer_id.as_str())
                    .is_some_and(|h| h.contains(&(head.sequence, head.hash.as_str())));
                let brk = Break::CheckpointMismatch {
                    writer: head.writer_id.to_string(),
                    sequence: head.sequence,
                    named_by: format!("{writer} #{}", r.record.sequence),
                };
                if !ok && !out.breaks.contains(&brk) {
                    out.breaks.push(brk);
                }
            }
        }
    }
    out
}

/// One writer: returns its report and the indices of the records that
/// count as genuine (valid, unverifiable or modified in place).
fn verify_writer(writer: &str, recs: &[ReadRecord]) -> (WriterReport, Vec<usize>) {
    let mut report = WriterReport {
        writer: writer.to_string(),
        ..Default::default()
    };
    let mut seen_bytes = HashSet::new();
    let mut unique = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        if seen_bytes.insert(r.digest) {
            unique.push(i);
        } else {
            report.duplicates += 1;
        }
    }
    let seq = |i: usize| recs[i].record.sequence;
    let hash = |i: usize| recs[i].record.hash.as_str();
    let prev = |i: usize| recs[i].record.previous_hash.as_str();
    let trusted: Vec<usize> = unique
        .iter()
        .copied()
        .filter(|&i| recs[i].check != HashCheck::Invalid)
        .collect();
    let trusted_seqs: HashSet<i64> = trusted.iter().map(|&i| seq(i)).collect();
    let trusted_hashes: HashMap<&str, i64> = trusted.iter().map(|&i| (hash(i), seq(i))).collect();
    let referenced: HashSet<&str> = trusted.iter().map(|&i| prev(i)).collect();

    // A record whose hash fails is modified in place if it still fits the
    // chain (its link fields are intact and no genuine record holds its
    // place), else injected.
    let mut nodes = trusted.clone();
    for &i in unique
        .iter()
        .filter(|&&i| recs[i].check == HashCheck::Invalid)
    {
        let r = &recs[i];
        let links_back = (seq(i) == 0 && prev(i).is_empty())
            || trusted_hashes.get(prev(i)) == Some(&(seq(i) - 1));
        let linked_to = referenced.contains(hash(i));
        let fits = !trusted_seqs.contains(&seq(i)) && (links_back || linked_to);
        let (writer, sequence, audit_id, at) = (
            writer.to_string(),
            r.record.sequence,
            r.record.audit_id.to_string(),
            r.position,
        );
        if fits {
            report.breaks.push(Break::Modified {
                writer,
                sequence,
                audit_id,
                at,
            });
            nodes.push(i);
        } else {
            report.breaks.push(Break::Injected {
                writer,
                sequence,
                audit_id,
                at,
            });
        }
    }
    for &i in &trusted {
        if recs[i].check == HashCheck::Unverifiable {
            report.breaks.push(Break::Unverifiable {
                writer: writer.to_string(),
                sequence: seq(i),
                key_version: recs[i].record.hash_key_version,
                at: recs[i].position,
            });
        }
    }

    // Walk back from the head: the node with the highest sequence number
    // that no other node links to (the latest one read, among equals).
    let node_by_hash: HashMap<&str, usize> = nodes.iter().map(|&i| (hash(i), i)).collect();
    let node_referenced: HashSet<&str> = nodes.iter().map(|&i| prev(i)).collect();
    let best = |candidates: &mut dyn Iterator<Item = usize>| -> Option<usize> {
        candidates.max_by_key(|&i| (seq(i), recs[i].position.offset, i))
    };
    let mut on_chain = Vec::new();
    let mut cur = best(
        &mut nodes
            .iter()
            .copied()
            .filter(|&i| !node_referenced.contains(hash(i))),
    );
    while let Some(i) = cur {
        on_chain.push(i);
        if seq(i) == 0 && prev(i).is_empty() {
            break;
        }
        if let Some(&p) = node_by_hash.get(prev(i)).filter(|&&p| seq(p) == seq(i) - 1) {
            cur = Some(p);
            continue;
        }
        let below = best(&mut nodes.iter().copied().filter(|&p| seq(p) < seq(i)));
        let from = below.map_or(0, |p| seq(p) + 1);
        if from < seq(i) {
            report.breaks.push(Break::Missing {
                writer: writer.to_string(),
                from,
                to: seq(i) - 1,
            });
        } else {
            report.breaks.push(Break::BrokenLink {
                writer: writer.to_string(),
                sequence: seq(i),
                at: recs[i].position,
            });
        }
        cur = below;
    }
    let chain_set: HashSet<usize> = on_chain.iter().copied().collect();
    report.aborted_attempts = trusted.iter().filter(|i| !chain_set.contains(i)).count();
    report.records = on_chain.len();
    report.last_sequence = on_chain.first().map(|&i| seq(i));

    // In the order read, the chain's sequence numbers only grow.
    let mut read_order: Vec<usize> = on_chain;
    read_order.sort_by_key(|&i| (recs[i].position, i));
    let mut highest: Option<i64> = None;
    for i in read_order {
        match highest {
            Some(h) if seq(i) < h => report.breaks.push(Break::Reordered {
                writer: writer.to_string(),
                sequence: seq(i),
                after: h,
                at: recs[i].position,
            }),
            _ => highest = Some(seq(i)),
        }
    }
    report.breaks.sort_by_key(|b| match b {
        Break::Missing { from, .. } => *from,
        Break::Modified { sequence, .. }
        | Break::Injected { sequence, .. }
        | Break::Reordered { sequence, .. }
        | Break::BrokenLink { sequence, .. }
        | Break::Unverifiable { sequence, .. }
        | Break::CheckpointMismatch { sequence, .. } => *sequence,
        Break::Unchained { .. } => 0,
    });
    (report, nodes)
}

#[cfg(test)]
mod tests;
