//! Idempotency keys, correlation ids and content digests.
//!
//! An idempotency key names one output of one stage for one source event
//! under one policy version (and, after the consent gate, one purpose). It is
//! a digest, so it carries no PHI and is the same on every replay.

use crate::envelope::Text;
use sha2::{Digest, Sha256};

/// Security labels de-identify puts on each record (the `phi` header says
/// the same). Reserved: normalize drops them from what a source sends, so
/// a source can never label its own record de-identified.
pub const LABEL_PHI: &str = "phi";
pub const LABEL_DE_IDENTIFIED: &str = "de-identified";

/// Whether a security label is one only de-identify may set.
pub fn is_reserved_label(label: &str) -> bool {
    label.trim().eq_ignore_ascii_case(LABEL_PHI)
        || label.trim().eq_ignore_ascii_case(LABEL_DE_IDENTIFIED)
}

/// Room on the stack for a digest's input; longer inputs use the heap.
const STACK_BYTES: usize = 256;

/// Appends each part, length-prefixed so ("ab","c") and ("a","bc") differ.
fn put_parts(bytes: &mut [u8], parts: &[&str]) -> usize {
    let mut at = 0;
    for p in parts {
        bytes[at..at + 8].copy_from_slice(&(p.len() as u64).to_be_bytes());
        bytes[at + 8..at + 8 + p.len()].copy_from_slice(p.as_bytes());
        at += 8 + p.len();
    }
    at
}

fn encoded_len(parts: &[&str]) -> usize {
    parts.iter().map(|p| 8 + p.len()).sum()
}

/// Calls `f` with the parts encoded into one contiguous buffer: one hash
/// call, since keys are made for every record and many small updates cost
/// more than the hashing itself.
fn with_encoded<R>(parts: &[&str], f: impl FnOnce(&[u8]) -> R) -> R {
    let need = encoded_len(parts);
    if need <= STACK_BYTES {
        let mut buf = [0u8; STACK_BYTES];
        let n = put_parts(&mut buf, parts);
        f(&buf[..n])
    } else {
        let mut heap = vec![0u8; need];
        put_parts(&mut heap, parts);
        f(&heap)
    }
}

fn digest_parts(parts: &[&str]) -> [u8; 32] {
    with_encoded(parts, |bytes| Sha256::digest(bytes).into())
}

/// Hasher states that have absorbed a fixed leading run of parts (a key's
/// domain, stage and policy version).
const PREFIX_CACHE: usize = 8;

thread_local! {
    static PREFIXES: std::cell::RefCell<Vec<(Box<[u8]>, Sha256)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `digest_parts` of `fixed` followed by `rest`, the same digest, with the
/// whole 64-byte blocks of `fixed` hashed once per thread rather than once
/// per call. A stage's keys all start with the same domain, stage name and
/// policy version, over 64 bytes as a rule: this saves one of the two
/// SHA-256 blocks of each key made for every record.
fn digest_prefixed(fixed: &[&str], rest: &[&str]) -> [u8; 32] {
    let mut hasher = with_encoded(fixed, |prefix| {
        // A prefix shorter than a block has nothing to save.
        if prefix.len() < 64 {
            let mut hasher = Sha256::new();
            hasher.update(prefix);
            return hasher;
        }
        PREFIXES.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some((_, hasher)) = cache.iter().find(|(k, _)| **k == *prefix) {
                return hasher.clone();
            }
            let mut hasher = Sha256::new();
            hasher.update(prefix);
            // A process runs a stage or two: a full cache means something
            // unusual (a tool looping over stages); the newest entry goes.
            if cache.len() == PREFIX_CACHE {
                cache.pop();
            }
            cache.push((prefix.into(), hasher.clone()));
            hasher
        })
    });
    with_encoded(rest, |bytes| hasher.update(bytes));
    hasher.finalize().into()
}

/// Writes the hex of `bytes` into `out` (twice as long).
fn put_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// A key from an ASCII buffer: built on the stack and copied once (a
/// string grown character by character costs more than the hashing).
fn ascii_text(buf: &[u8]) -> Text {
    // Hex digits, dashes and a fixed prefix: always UTF-8.
    std::str::from_utf8(buf).map(Text::from).unwrap_or_default()
}

/// `ik1-` and the hex of the digest's first 16 bytes.
fn ik1(d: &[u8; 32]) -> Text {
    let mut buf = [0u8; 36];
    buf[..4].copy_from_slice(b"ik1-");
    put_hex(&mut buf[4..], &d[..16]);
    ascii_text(&buf)
}

/// The audit id of the decision a stage recorded under `dedup_key` (also
/// the quarantine id when the decision is to quarantine).
/// A stable 64-bit hash of a string (to pick one owner among partitions),
/// the same in every process and every build.
pub fn stable_hash(s: &str) -> u64 {
    let d = digest_parts(&["stable-hash/v1", s]);
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

pub fn audit_id(stage: &str, policy_version: &str, dedup_key: &str) -> Text {
    idempotency_key(stage, policy_version, dedup_key, Some("audit"))
}

/// The idempotency key of `stage`'s output for `event_id` under
/// `policy_version`, for `purpose` once the event has one.
pub fn idempotency_key(
    stage: &str,
    policy_version: &str,
    event_id: &str,
    purpose: Option<&str>,
) -> Text {
    let d = digest_prefixed(
        &["idempotency-key/v1", stage, policy_version],
        &[event_id, purpose.unwrap_or("")],
    );
    ik1(&d)
}

/// The key under which a stage records that it has handled an input that
/// had no usable identity (it could not be parsed): its position in the log.
pub fn positional_key(stage: &str, topic: &str, partition: i32, offset: i64) -> Text {
    let d = digest_parts(&[
        "positional-key/v1",
        stage,
        topic,
        &partition.to_string(),
        &offset.to_string(),
    ]);
    ik1(&d)
}

/// A correlation id derived from the source event, so that a replay of the
/// same source event correlates with the first run.
pub fn correlation_id(source_format: &str, event_id: &str) -> Text {
    let d = digest_parts(&["correlation-id/v1", source_format, event_id]);
    // UUID layout: 8-4-4-4-12 hex digits.
    let mut buf = [0u8; 36];
    let mut at = 0;
    for (i, range) in [0..4, 4..6, 6..8, 8..10, 10..16].into_iter().enumerate() {
        if i > 0 {
            buf[at] = b'-';
            at += 1;
        }
        let n = 2 * range.len();
        put_hex(&mut buf[at..at + n], &d[range]);
        at += n;
    }
    ascii_text(&buf)
}

/// The partitioning key of a subject: a digest of its canonical identifier.
/// Records of one subject share a partition, so their order is kept.
pub fn subject_key(system: &str, value: &str) -> Text {
    let d = digest_prefixed(&["subject-key/v1", system], &[value]);
    let mut buf = [0u8; 32];
    put_hex(&mut buf, &d[..16]);
    ascii_text(&buf)
}

/// A content digest over a sequence of byte strings.
#[derive(Default)]
pub struct ContentDigest(Sha256);

impl ContentDigest {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_keep_their_published_values() {
        // Keys are written to topics and audit records: their values must
        // never change within a format version (`ik1`, `v1`).
        assert_eq!(
            idempotency_key("normalize", "p1", "hl7v2:X:1", None),
            format!(
                "ik1-{}",
                hex::encode(
                    &Sha256::digest(
                        [
                            &18u64.to_be_bytes()[..],
                            b"idempotency-key/v1",
                            &9u64.to_be_bytes(),
                            b"normalize",
                            &2u64.to_be_bytes(),
                            b"p1",
                            &9u64.to_be_bytes(),
                            b"hl7v2:X:1",
                            &0u64.to_be_bytes(),
                        ]
                        .concat()
                    )[..16]
                )
            )
        );
        let c = correlation_id("hl7v2", "X:1");
        let h = hex::encode(
            &Sha256::digest(
                [
                    &17u64.to_be_bytes()[..],
                    b"correlation-id/v1",
                    &5u64.to_be_bytes(),
                    b"hl7v2",
                    &3u64.to_be_bytes(),
                    b"X:1",
                ]
                .concat(),
            )[..16],
        );
        assert_eq!(
            c,
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        );
        // A stage's prefix (over one block) is cached per thread: the same
        // keys, again and interleaved with another stage's.
        let pv = "2026.11-normalize.1";
        let first = idempotency_key("normalize", pv, "hl7v2:X:1", None);
        let other = idempotency_key("consent-gate", pv, "hl7v2:X:1", Some("trial"));
        assert_eq!(idempotency_key("normalize", pv, "hl7v2:X:1", None), first);
        assert_eq!(
            idempotency_key("consent-gate", pv, "hl7v2:X:1", Some("trial")),
            other
        );
        // Long parts take the heap path and hash the same way.
        let long = "x".repeat(400);
        assert_eq!(subject_key("s", &long), subject_key("s", &long.clone()));
        assert_ne!(subject_key("s", &long), subject_key("s", &long[1..]));
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        let a = idempotency_key("normalize", "p1", "hl7v2:X:1", None);
        assert_eq!(a, idempotency_key("normalize", "p1", "hl7v2:X:1", None));
        assert_ne!(a, idempotency_key("normalize", "p2", "hl7v2:X:1", None));
        assert_ne!(a, idempotency_key("route", "p1", "hl7v2:X:1", None));
        assert_ne!(
            idempotency_key("route", "p1", "e", Some("marketing")),
            idempotency_key("route", "p1", "e", Some("patient-support"))
        );
        assert!(a.starts_with("ik1-") && a.len() == 36);
        let c = correlation_id("hl7v2", "X:1");
        assert_eq!(c.len(), 36);
        assert_eq!(c.matches('-').count(), 4);
    }

    proptest! {
        #[test]
        fn prefixed_digests_equal_whole_digests(
            fixed in proptest::collection::vec(".{0,40}", 1..4),
            rest in proptest::collection::vec(".{0,300}", 0..4),
        ) {
            // The cached prefix state must never change a key: the same
            // digest as hashing every part at once, whatever the lengths
            // (below, at and above a block; stack and heap buffers).
            let fixed: Vec<&str> = fixed.iter().map(String::as_str).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            let whole: Vec<&str> = fixed.iter().chain(&rest).copied().collect();
            for _ in 0..2 {
                prop_assert_eq!(digest_prefixed(&fixed, &rest), digest_parts(&whole));
            }
        }

        #[test]
        fn part_boundaries_matter(a in ".{0,8}", b in ".{0,8}", c in ".{0,8}") {
            // Moving a character between parts must change the key.
            if !b.is_empty() {
                let moved = format!("{a}{}", &b[..b.chars().next().map(char::len_utf8).unwrap_or(0)]);
                let rest = &b[b.chars().next().map(char::len_utf8).unwrap_or(0)..];
                prop_assert_ne!(
                    idempotency_key(&a, &b, &c, None),
                    idempotency_key(&moved, rest, &c, None)
                );
            }
        }
    }
}
