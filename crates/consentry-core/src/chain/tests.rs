//! Tests of the audit chains: linking as written, and verification naming
//! every kind of tampering while tolerating aborted attempts and retries.

use super::*;
use crate::audit::AuditRecord;
use crate::avro::{decode_audit, split_wire, SchemaRef};
use sha2::{Digest, Sha256};

/// A stand-in for the audit chain key: SHA-256 of a secret and the bytes.
fn mac_with(secret: &'static [u8]) -> impl Fn(&[u8]) -> [u8; 32] {
    move |bytes| {
        Sha256::new()
            .chain_update(secret)
            .chain_update(bytes)
            .finalize()
            .into()
    }
}

fn verifier_mac(version: u32, bytes: &[u8]) -> Option<[u8; 32]> {
    (version == 1).then(|| mac_with(b"k1")(bytes))
}

fn record(n: usize) -> AuditRecord {
    AuditRecord {
        audit_id: format!("audit-{n}").as_str().into(),
        stage: "route".into(),
        decision: crate::audit::Decision::Forward,
        ..Default::default()
    }
}

/// Writes `n` records on one chain, committed: their wire bytes.
fn chain(writer: &mut ChainWriter, from: usize, n: usize) -> Vec<Vec<u8>> {
    let out = (from..from + n)
        .map(|i| {
            writer
                .link(&mut record(i), 7, 1, mac_with(b"k1"))
                .expect("encodes")
        })
        .collect();
    writer.commit();
    out
}

fn read(wires: &[Vec<u8>]) -> Vec<ReadRecord> {
    wires
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let (_, body) = split_wire(w).expect("wire");
            let record = decode_audit(body, SchemaRef::AuditRecord.schema()).expect("decodes");
            ReadRecord {
                check: check_hash(body, &record, verifier_mac),
                record,
                position: Position {
                    partition: 0,
                    offset: i as i64,
                },
                digest: Sha256::digest(w).into(),
            }
        })
        .collect()
}

fn kinds(v: &Verification) -> Vec<String> {
    v.all_breaks().map(|b| b.to_string()).collect()
}

#[test]
fn a_written_chain_verifies_clean() {
    let mut w = ChainWriter::new("route/0", None);
    let wires = chain(&mut w, 0, 6);
    let v = verify(read(&wires));
    assert!(v.is_clean(), "{:?}", kinds(&v));
    assert_eq!(v.writers.len(), 1);
    assert_eq!(v.writers[0].records, 6);
    assert_eq!(v.writers[0].last_sequence, Some(5));
    let head = w.committed().expect("a head");
    assert_eq!(head.sequence, 5);
    let last = &read(&wires[5..])[0].record;
    assert_eq!(head.hash, last.hash);
    assert_eq!(last.previous_hash, read(&wires[4..5])[0].record.hash);
}

#[test]
fn an_altered_record_is_modified() {
    let mut w = ChainWriter::new("route/0", None);
    let mut wires = chain(&mut w, 0, 5);
    // Flip one byte of the audit id, inside the hashed prefix.
    let at = wires[2]
        .windows(7)
        .position(|x| x == b"audit-2")
        .expect("id in bytes");
    wires[2][at + 6] = b'9';
    let v = verify(read(&wires));
    assert_eq!(
        v.all_breaks().cloned().collect::<Vec<_>>(),
        [Break::Modified {
            writer: "route/0".into(),
            sequence: 2,
            audit_id: "audit-9".into(),
            at: Position {
                partition: 0,
                offset: 2
            }
        }]
    );
}

#[test]
fn a_deleted_record_is_missing_and_swapped_ones_reordered() {
    let mut w = ChainWriter::new("normalize/0", None);
    let wires = chain(&mut w, 0, 8);
    let mut tampered = wires.clone();
    tampered.remove(3);
    tampered.swap(4, 5); // sequence 5 and 6 (after the removal shifted them)
    let v = verify(read(&tampered));
    let breaks = kinds(&v);
    assert_eq!(
        breaks,
        [
            "missing: normalize/0 #3 is not in the topic",
            "reordered: normalize/0 #5 (at 0@5) comes after #6",
        ],
        "{breaks:?}"
    );
}

#[test]
fn a_forged_record_is_injected() {
    let mut w = ChainWriter::new("route/0", None);
    let mut wires = chain(&mut w, 0, 4);
    // A record claiming #2's place, linked like it, with a hash made
    // without the key.
    let mut forged = ChainWriter::new("route/0", None);
    let mut fake = Vec::new();
    for i in 0..3 {
        fake.push(
            forged
                .link(&mut record(i), 7, 1, mac_with(b"not the key"))
                .unwrap(),
        );
    }
    wires.insert(3, fake[2].clone());
    let v = verify(read(&wires));
    let b: Vec<_> = v.all_breaks().map(Break::kind).collect();
    assert_eq!(b, ["injected"], "{:?}", kinds(&v));
}

#[test]
fn aborted_attempts_and_exact_duplicates_are_tolerated() {
    let mut w = ChainWriter::new("route/0", None);
    let mut wires = chain(&mut w, 0, 3);
    // First attempt of a batch, aborted but still visible.
    for i in 3..6 {
        wires.push(w.link(&mut record(i), 7, 1, mac_with(b"k1")).unwrap());
    }
    w.rollback();
    wires.extend(chain(&mut w, 10, 4));
    wires.push(wires[4].clone()); // a retried send's exact copy
    let v = verify(read(&wires));
    assert!(v.is_clean(), "{:?}", kinds(&v));
    let r = &v.writers[0];
    assert_eq!((r.records, r.aborted_attempts, r.duplicates), (7, 3, 1));
    assert_eq!(r.last_sequence, Some(6));
}

#[test]
fn a_resumed_chain_continues_and_a_checkpoint_catches_a_truncated_tail() {
    let mut a = ChainWriter::new("normalize/0", None);
    let mut wires = chain(&mut a, 0, 3);
    let head = a.committed().unwrap();
    let mut resumed = ChainWriter::new("normalize/0", Some((head.sequence, &head.hash)));
    wires.extend(chain(&mut resumed, 3, 2));
    let mut b = ChainWriter::new("route/0", None);
    let mut cp = record(99);
    cp.checkpoint = vec![resumed.committed().unwrap()];
    wires.push(b.link(&mut cp, 7, 1, mac_with(b"k1")).unwrap());
    assert!(verify(read(&wires)).is_clean());

    wires.remove(4); // normalize/0's last record
    let v = verify(read(&wires));
    assert_eq!(
        kinds(&v),
        ["checkpoint mismatch: route/0 #0 names normalize/0 #4 as a chain head, which the topic does not hold"]
    );
}

#[test]
fn a_retired_key_version_is_unverifiable_not_clean() {
    let mut w = ChainWriter::new("route/0", None);
    let wires: Vec<_> = (0..2)
        .map(|i| w.link(&mut record(i), 7, 2, mac_with(b"k2")).unwrap())
        .collect();
    let v = verify(read(&wires));
    assert_eq!(
        v.all_breaks().map(Break::kind).collect::<Vec<_>>(),
        ["unverifiable", "unverifiable"]
    );
}

/// `read`, with the digest `audit verify` computes (what segments cover).
fn read_as_verified(wires: &[Vec<u8>]) -> Vec<ReadRecord> {
    let mut out = read(wires);
    for (r, w) in out.iter_mut().zip(wires) {
        let mut d = crate::keys::ContentDigest::new();
        d.update(w);
        r.digest = d.finish();
    }
    out
}

/// A stand-in signature: SHA-256 of a signer's secret and the message
/// (what matters here is which signer made it).
fn sign_with(secret: &'static [u8]) -> impl Fn(&[u8]) -> (u32, String) {
    move |m| (1, hex::encode(mac_with(secret)(m)))
}

fn check_signed_by_k(version: u32, m: &[u8], sig: &str) -> SignatureVerdict {
    if version != 1 {
        SignatureVerdict::UnknownKey
    } else if hex::encode(mac_with(b"signer")(m)) == sig {
        SignatureVerdict::Valid
    } else {
        SignatureVerdict::Invalid
    }
}

/// Records, a checkpoint, more records, a checkpoint: committed wires.
fn with_checkpoints(signer: &'static [u8]) -> Vec<Vec<u8>> {
    let mut w = ChainWriter::new("route/0", None);
    let mut wires = chain(&mut w, 0, 3);
    let checkpoint = |w: &mut ChainWriter| {
        let mut rec = AuditRecord {
            decision: crate::audit::Decision::Checkpoint,
            ..record(99)
        };
        let wire = w
            .link_checkpoint(&mut rec, 7, 1, mac_with(b"k1"), sign_with(signer))
            .expect("links");
        w.commit();
        wire
    };
    wires.push(checkpoint(&mut w));
    wires.extend(chain(&mut w, 10, 2));
    wires.push(checkpoint(&mut w));
    wires
}

#[test]
fn signed_checkpoints_vouch_for_their_segments() {
    let options = VerifyOptions {
        signatures: Some(&check_signed_by_k),
        heads: Vec::new(),
    };
    let wires = with_checkpoints(b"signer");
    let clean = verify_with(read_as_verified(&wires), &options);
    assert!(
        clean.is_clean(),
        "{:?}",
        clean.all_breaks().collect::<Vec<_>>()
    );
    let records = read_as_verified(&wires);
    assert_eq!(
        (
            records[3].record.segment_from,
            records[6].record.segment_from
        ),
        (0, 3),
        "the second segment starts with the first checkpoint"
    );

    // A record's bytes changed (its hash field kept): the segment that
    // covers it no longer matches, whoever verifies.
    let mut altered = read_as_verified(&wires);
    altered[4].digest[0] ^= 1;
    let v = verify_with(altered, &options);
    let kinds: Vec<_> = v
        .all_breaks()
        .map(|b| (b.kind(), b.position_in_chain()))
        .collect();
    assert!(kinds.contains(&("segment_mismatch", 6)), "{kinds:?}");

    // Signed by another key: forged; no signature at all: unsigned.
    let forged = verify_with(read_as_verified(&with_checkpoints(b"forger")), &options);
    let kinds: Vec<_> = forged
        .all_breaks()
        .map(|b| (b.kind(), b.position_in_chain()))
        .collect();
    assert_eq!(kinds, [("checkpoint_forged", 3), ("checkpoint_forged", 6)]);
    let mut unsigned = read_as_verified(&wires);
    unsigned[6].record.signature = None;
    let kinds: Vec<_> = verify_with(unsigned, &options)
        .all_breaks()
        .map(|b| b.kind())
        .collect();
    assert_eq!(kinds, ["checkpoint_unsigned"]);

    // The heads topic names the last checkpoint: cutting it off shows.
    let last = read_as_verified(&wires)[6].record.clone();
    let head = SignedHead {
        writer_id: "route/0".into(),
        sequence: last.sequence,
        hash: last.hash.to_string(),
        key_version: 1,
        signature: sign_with(b"signer")(&head_message("route/0", last.sequence, &last.hash)).1,
    };
    let options = VerifyOptions {
        signatures: Some(&check_signed_by_k),
        heads: vec![head.clone()],
    };
    assert!(verify_with(read_as_verified(&wires), &options).is_clean());
    let cut = verify_with(read_as_verified(&wires[..5]), &options);
    let kinds: Vec<_> = cut
        .all_breaks()
        .map(|b| (b.kind(), b.position_in_chain()))
        .collect();
    assert_eq!(kinds, [("checkpoint_mismatch", 6)]);
    let forged_head = SignedHead {
        signature: sign_with(b"forger")(&head_message("route/0", 6, &last.hash)).1,
        ..head
    };
    let options = VerifyOptions {
        signatures: Some(&check_signed_by_k),
        heads: vec![forged_head],
    };
    let kinds: Vec<_> = verify_with(read_as_verified(&wires), &options)
        .all_breaks()
        .map(|b| b.kind())
        .collect();
    assert_eq!(kinds, ["checkpoint_forged"]);
}

#[test]
fn an_aborted_checkpoint_leaves_the_segment_as_it_was() {
    let mut w = ChainWriter::new("route/0", None);
    let mut wires = chain(&mut w, 0, 2);
    let mut rec = AuditRecord {
        decision: crate::audit::Decision::Checkpoint,
        ..record(99)
    };
    w.link_checkpoint(&mut rec, 7, 1, mac_with(b"k1"), sign_with(b"signer"))
        .expect("links");
    w.rollback();
    let mut rec = AuditRecord {
        decision: crate::audit::Decision::Checkpoint,
        ..record(98)
    };
    wires.push(
        w.link_checkpoint(&mut rec, 7, 1, mac_with(b"k1"), sign_with(b"signer"))
            .expect("links"),
    );
    w.commit();
    assert_eq!(rec.segment_from, 0);
    let options = VerifyOptions {
        signatures: Some(&check_signed_by_k),
        heads: Vec::new(),
    };
    assert!(verify_with(read_as_verified(&wires), &options).is_clean());
}
