//! Idempotency keys, correlation ids and content digests.
//!
//! An idempotency key names one output of one stage for one source event
//! under one policy version (and, after the consent gate, one purpose). It is
//! a digest, so it carries no PHI and is the same on every replay.

use sha2::{Digest, Sha256};

/// Header names every record carries (DESIGN: "Delivery guarantees").
pub const HEADER_IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const HEADER_CORRELATION_ID: &str = "correlation-id";
pub const HEADER_REASON_CODE: &str = "reason-code";
pub const HEADER_REASON_DETAIL: &str = "reason-detail";
pub const HEADER_STAGE: &str = "stage";
pub const HEADER_SOURCE_TOPIC: &str = "source-topic";
pub const HEADER_SOURCE_PARTITION: &str = "source-partition";
pub const HEADER_SOURCE_OFFSET: &str = "source-offset";

fn digest_parts(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefix each part so ("ab","c") and ("a","bc") differ.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// The idempotency key of `stage`'s output for `event_id` under
/// `policy_version`, for `purpose` once the event has one.
pub fn idempotency_key(
    stage: &str,
    policy_version: &str,
    event_id: &str,
    purpose: Option<&str>,
) -> String {
    let d = digest_parts(&[
        "idempotency-key/v1",
        stage,
        policy_version,
        event_id,
        purpose.unwrap_or(""),
    ]);
    format!("ik1-{}", hex::encode(&d[..16]))
}

/// The key under which a stage records that it has handled an input that
/// had no usable identity (it could not be parsed): its position in the log.
pub fn positional_key(stage: &str, topic: &str, partition: i32, offset: i64) -> String {
    let d = digest_parts(&[
        "positional-key/v1",
        stage,
        topic,
        &partition.to_string(),
        &offset.to_string(),
    ]);
    format!("ik1-{}", hex::encode(&d[..16]))
}

/// A correlation id derived from the source event, so that a replay of the
/// same source event correlates with the first run.
pub fn correlation_id(source_format: &str, event_id: &str) -> String {
    let d = digest_parts(&["correlation-id/v1", source_format, event_id]);
    let h = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The partitioning key of a subject: a digest of its canonical identifier.
/// Records of one subject share a partition, so their order is kept.
pub fn subject_key(system: &str, value: &str) -> String {
    let d = digest_parts(&["subject-key/v1", system, value]);
    hex::encode(&d[..16])
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
