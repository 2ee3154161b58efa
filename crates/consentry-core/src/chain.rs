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

/// What a checkpoint's signature says, as the verifier's public keys see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVerdict {
    Valid,
    Invalid,
    /// No public key of the signature's version.
    UnknownKey,
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

/// Checks a signature: (key version, message, hex signature) → verdict.
pub type SignatureCheck<'a> = &'a dyn Fn(u32, &[u8], &str) -> SignatureVerdict;

/// How [`verify_with`] checks more than the chains: signatures (given the
/// public keys) and the heads topic.
#[derive(Default)]
pub struct VerifyOptions<'a> {
    pub signatures: Option<SignatureCheck<'a>>,
    pub heads: Vec<SignedHead>,
}

/// Verifies every chain in `records` (in the order they were read).
pub fn verify(records: Vec<ReadRecord>) -> Verification {
    verify_with(records, &VerifyOptions::default())
}

/// [`verify`], and with `options`: every checkpoint's signature and the
/// segment it vouches for (recomputed from the records' bytes, so a
/// record altered in place is caught without the chain key), and every
/// signed head of the heads topic present in the chains.
pub fn verify_with(records: Vec<ReadRecord>, options: &VerifyOptions<'_>) -> Verification {
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
        let (mut report, nodes, chain) = verify_writer(writer, recs);
        held.insert(
            writer.as_str(),
            nodes
                .iter()
                .map(|&i| (recs[i].record.sequence, recs[i].record.hash.as_str()))
                .collect(),
        );
        if let Some(check) = options.signatures {
            check_checkpoints(writer, recs, &chain, check, &mut report);
            report.breaks.sort_by_key(Break::position_in_chain);
        }
        out.writers.push(report);
    }
    for head in &options.heads {
        if let Some(check) = options.signatures {
            let message = head_message(&head.writer_id, head.sequence, &head.hash);
            if check(head.key_version, &message, &head.signature) != SignatureVerdict::Valid {
                out.breaks.push(Break::CheckpointForged {
                    writer: head.writer_id.clone(),
                    sequence: head.sequence,
                });
                continue;
            }
        }
        let ok = held
            .get(head.writer_id.as_str())
            .is_some_and(|h| h.contains(&(head.sequence, head.hash.as_str())));
        if !ok {
            out.breaks.push(Break::CheckpointMismatch {
                writer: head.writer_id.clone(),
                sequence: head.sequence,
                named_by: "the heads topic".into(),
            });
        }
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
/// Every checkpoint on `writer`'s chain: signed by the checkpoint key,
/// and vouching for exactly the records the chain holds before it.
fn check_checkpoints(
    writer: &str,
    recs: &[ReadRecord],
    chain: &BTreeMap<i64, usize>,
    check: SignatureCheck<'_>,
    report: &mut WriterReport,
) {
    use sha2::Digest;
    for &i in chain.values() {
        let rec = &recs[i].record;
        if rec.decision != crate::audit::Decision::Checkpoint {
            continue;
        }
        let Some(signature) = rec.signature.as_deref() else {
            report.breaks.push(Break::CheckpointUnsigned {
                writer: writer.to_string(),
                sequence: rec.sequence,
            });
            continue;
        };
        let version = u32::try_from(rec.signature_key_version).unwrap_or(u32::MAX);
        if check(version, &checkpoint_message(rec), signature) != SignatureVerdict::Valid {
            report.breaks.push(Break::CheckpointForged {
                writer: writer.to_string(),
                sequence: rec.sequence,
            });
            continue;
        }
        // The segment: every record from `segment_from` to this one, by
        // its bytes. A gap is reported as missing by the chain walk.
        let covered: Option<Vec<usize>> = (rec.segment_from.max(0)..rec.sequence)
            .map(|s| chain.get(&s).copied())
            .collect();
        let Some(covered) = covered else { continue };
        let mut hasher = sha2::Sha256::default();
        for j in covered {
            hasher.update(recs[j].digest);
        }
        if rec.segment_digest.as_deref() != Some(hex::encode(hasher.finalize()).as_str()) {
            report.breaks.push(Break::SegmentMismatch {
                writer: writer.to_string(),
                sequence: rec.sequence,
            });
        }
    }
}

/// One writer's genuine records and its chain (sequence → index).
type WriterWalk = (WriterReport, Vec<usize>, BTreeMap<i64, usize>);

fn verify_writer(writer: &str, recs: &[ReadRecord]) -> WriterWalk {
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
    let on_chain_by_seq: BTreeMap<i64, usize> = on_chain.iter().map(|&i| (seq(i), i)).collect();
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
    report.breaks.sort_by_key(Break::position_in_chain);
    (report, nodes, on_chain_by_seq)
}

#[cfg(test)]
mod tests;
