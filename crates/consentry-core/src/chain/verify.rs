//! Verifying a topic's worth of audit records: each record's hash, each
//! writer's chain (tolerating aborted attempts and retried sends), each
//! checkpoint's signature and segment, and the signed heads.

use super::report::*;
use super::signed::{checkpoint_message, head_message, SignedHead};
use super::write::avro_string;
use crate::audit::AuditRecord;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

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

/// What a checkpoint's signature says, as the verifier's public keys see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVerdict {
    Valid,
    Invalid,
    /// No public key of the signature's version.
    UnknownKey,
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

/// One writer's report, the indices of the records that count as genuine
/// (valid, unverifiable or modified in place), and its chain (sequence →
/// index).
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
