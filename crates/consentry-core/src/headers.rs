//! Every Kafka header Consentry writes or reads, by name, and the typed
//! sets of them a record carries: the identity headers on every record a
//! stage writes, the quarantine headers on a held record, the redrive
//! headers on a record sent back to its stage.
//!
//! Headers are `(name, bytes)` pairs here: this crate has no Kafka client,
//! so the runtime turns pairs into its client's headers and hands lookups
//! back. Values are UTF-8 text; numbers are decimal.

use crate::reason::ReasonCode;
use crate::stage::StageName;

/// The key under which the runtime deduplicates a record (DESIGN:
/// "Delivery guarantees").
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const CORRELATION_ID: &str = "correlation-id";
/// The stage that wrote the record.
pub const STAGE: &str = "stage";
pub const REASON_CODE: &str = "reason-code";
pub const REASON_DETAIL: &str = "reason-detail";
pub const SOURCE_TOPIC: &str = "source-topic";
pub const SOURCE_PARTITION: &str = "source-partition";
pub const SOURCE_OFFSET: &str = "source-offset";
/// `true` on records that remain PHI (a limited data set, identified-
/// tokenized), `false` on de-identified ones; absent before de-identify.
pub const PHI: &str = "phi";
/// On quarantine records: the quarantine id (the audit id of the decision),
/// and how the payload is sealed (`aes-256-gcm/v<key version>`).
pub const QUARANTINE_ID: &str = "quarantine-id";
pub const SEALED: &str = "sealed";
/// On a record `consentry quarantine redrive` sends back to its stage's
/// input: the quarantine id it came from.
pub const REDRIVE_OF: &str = "redrive-of";
/// On a record `consentry replay apply` writes: the replay it belongs to,
/// and the disclosure (the destination record's idempotency key) it
/// corrects or retracts.
pub const REPLAY_ID: &str = "replay-id";
pub const SUPERSEDES: &str = "supersedes";

/// Every header name, for tools that list or strip them.
pub const ALL: [&str; 14] = [
    IDEMPOTENCY_KEY,
    CORRELATION_ID,
    STAGE,
    REASON_CODE,
    REASON_DETAIL,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    PHI,
    QUARANTINE_ID,
    SEALED,
    REDRIVE_OF,
    REPLAY_ID,
    SUPERSEDES,
];

/// Encoded headers, in the order they are written.
pub type Pairs = Vec<(&'static str, Vec<u8>)>;

/// Why a record's headers do not decode. Names the header, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header '{0}' is missing")]
    Missing(&'static str),
    #[error("header '{0}' is not UTF-8")]
    NotUtf8(&'static str),
    #[error("header '{name}' is not {expected}")]
    Invalid {
        name: &'static str,
        expected: &'static str,
    },
}

/// Reads headers through `get`, which returns a header's value by name
/// (the first one, when a record repeats a name).
struct Reader<F>(F);

impl<'a, F: Fn(&str) -> Option<&'a [u8]>> Reader<F> {
    fn optional(&self, name: &'static str) -> Result<Option<&'a str>, HeaderError> {
        match (self.0)(name) {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| HeaderError::NotUtf8(name)),
        }
    }

    fn text(&self, name: &'static str) -> Result<&'a str, HeaderError> {
        self.optional(name)?.ok_or(HeaderError::Missing(name))
    }

    fn parsed<T>(
        &self,
        name: &'static str,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, HeaderError> {
        parse(self.text(name)?).ok_or(HeaderError::Invalid { name, expected })
    }
}

/// A lookup over pairs: the first value under a name.
fn first<'a>(pairs: &'a [(&str, &'a [u8])]) -> impl Fn(&str) -> Option<&'a [u8]> {
    move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// The headers every record a stage writes carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub idempotency_key: String,
    pub correlation_id: String,
    pub stage: StageName,
}

impl IdentityHeaders {
    pub fn to_pairs(&self) -> Pairs {
        vec![
            (IDEMPOTENCY_KEY, self.idempotency_key.as_bytes().to_vec()),
            (CORRELATION_ID, self.correlation_id.as_bytes().to_vec()),
            (STAGE, self.stage.as_str().as_bytes().to_vec()),
        ]
    }

    pub fn from_lookup<'a>(
        get: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<IdentityHeaders, HeaderError> {
        IdentityHeaders::read(&Reader(get))
    }

    pub fn from_pairs(pairs: &[(&str, &[u8])]) -> Result<IdentityHeaders, HeaderError> {
        IdentityHeaders::from_lookup(first(pairs))
    }

    fn read<'a>(r: &Reader<impl Fn(&str) -> Option<&'a [u8]>>) -> Result<Self, HeaderError> {
        Ok(IdentityHeaders {
            idempotency_key: r.text(IDEMPOTENCY_KEY)?.to_string(),
            correlation_id: r.text(CORRELATION_ID)?.to_string(),
            stage: r.parsed(STAGE, "a stage name", StageName::parse)?,
        })
    }
}

/// The headers of a quarantine record: its identity, why it is held, where
/// it came from, and how its payload is sealed (`None`: no payload held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineHeaders {
    pub identity: IdentityHeaders,
    pub reason_code: ReasonCode,
    /// A path or a limit, never a value.
    pub reason_detail: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub quarantine_id: String,
    /// `aes-256-gcm/v<key version>` when the payload is held sealed.
    pub sealed: Option<String>,
}

impl QuarantineHeaders {
    pub fn to_pairs(&self) -> Pairs {
        let mut pairs = self.identity.to_pairs();
        pairs.extend([
            (REASON_CODE, self.reason_code.as_str().as_bytes().to_vec()),
            (REASON_DETAIL, self.reason_detail.as_bytes().to_vec()),
            (SOURCE_TOPIC, self.source_topic.as_bytes().to_vec()),
            (
                SOURCE_PARTITION,
                self.source_partition.to_string().into_bytes(),
            ),
            (SOURCE_OFFSET, self.source_offset.to_string().into_bytes()),
            (QUARANTINE_ID, self.quarantine_id.as_bytes().to_vec()),
        ]);
        if let Some(sealed) = &self.sealed {
            pairs.push((SEALED, sealed.as_bytes().to_vec()));
        }
        pairs
    }

    pub fn from_lookup<'a>(
        get: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<QuarantineHeaders, HeaderError> {
        let r = Reader(get);
        Ok(QuarantineHeaders {
            identity: IdentityHeaders::read(&r)?,
            reason_code: r.parsed(REASON_CODE, "a reason code", ReasonCode::parse)?,
            reason_detail: r.text(REASON_DETAIL)?.to_string(),
            source_topic: r.text(SOURCE_TOPIC)?.to_string(),
            source_partition: r
                .parsed(SOURCE_PARTITION, "a partition number", |s| s.parse().ok())?,
            source_offset: r.parsed(SOURCE_OFFSET, "an offset", |s| s.parse().ok())?,
            quarantine_id: r.text(QUARANTINE_ID)?.to_string(),
            sealed: r.optional(SEALED)?.map(String::from),
        })
    }

    pub fn from_pairs(pairs: &[(&str, &[u8])]) -> Result<QuarantineHeaders, HeaderError> {
        QuarantineHeaders::from_lookup(first(pairs))
    }
}

/// The headers of a record `consentry quarantine redrive` sends back to its
/// stage's input. The correlation id travels when the held record had one;
/// the idempotency key only between stages (a raw feed's record had none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveHeaders {
    pub redrive_of: String,
    pub correlation_id: Option<String>,
    pub idempotency_key: Option<String>,
}

impl RedriveHeaders {
    pub fn to_pairs(&self) -> Pairs {
        let mut pairs = vec![(REDRIVE_OF, self.redrive_of.as_bytes().to_vec())];
        if let Some(c) = &self.correlation_id {
            pairs.push((CORRELATION_ID, c.as_bytes().to_vec()));
        }
        if let Some(k) = &self.idempotency_key {
            pairs.push((IDEMPOTENCY_KEY, k.as_bytes().to_vec()));
        }
        pairs
    }

    pub fn from_lookup<'a>(
        get: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<RedriveHeaders, HeaderError> {
        let r = Reader(get);
        Ok(RedriveHeaders {
            redrive_of: r.text(REDRIVE_OF)?.to_string(),
            correlation_id: r.optional(CORRELATION_ID)?.map(String::from),
            idempotency_key: r.optional(IDEMPOTENCY_KEY)?.map(String::from),
        })
    }

    pub fn from_pairs(pairs: &[(&str, &[u8])]) -> Result<RedriveHeaders, HeaderError> {
        RedriveHeaders::from_lookup(first(pairs))
    }
}

/// The `phi` header's value.
pub fn phi_value(phi: bool) -> &'static str {
    if phi {
        "true"
    } else {
        "false"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn borrowed(pairs: &Pairs) -> Vec<(&str, &[u8])> {
        pairs.iter().map(|(n, v)| (*n, v.as_slice())).collect()
    }

    fn held() -> QuarantineHeaders {
        QuarantineHeaders {
            identity: IdentityHeaders {
                idempotency_key: "ik-1".into(),
                correlation_id: "c-1".into(),
                stage: StageName::Normalize,
            },
            reason_code: ReasonCode::Malformed,
            reason_detail: "MSH-10".into(),
            source_topic: "ehr.hl7v2".into(),
            source_partition: 2,
            source_offset: 41,
            quarantine_id: "q-1".into(),
            sealed: Some("aes-256-gcm/v1".into()),
        }
    }

    #[test]
    fn quarantine_headers_are_written_in_order_and_read_back() {
        let h = held();
        let pairs = h.to_pairs();
        let names: Vec<&str> = pairs.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "idempotency-key",
                "correlation-id",
                "stage",
                "reason-code",
                "reason-detail",
                "source-topic",
                "source-partition",
                "source-offset",
                "quarantine-id",
                "sealed"
            ]
        );
        assert_eq!(pairs[3].1, b"malformed");
        assert_eq!(pairs[6].1, b"2");
        assert_eq!(QuarantineHeaders::from_pairs(&borrowed(&pairs)), Ok(h));
    }

    #[test]
    fn decoding_names_the_header_at_fault() {
        let mut h = held();
        h.sealed = None;
        let pairs = h.to_pairs();
        assert!(!pairs.iter().any(|(n, _)| *n == SEALED));
        let mut b = borrowed(&pairs);
        assert_eq!(QuarantineHeaders::from_pairs(&b), Ok(h));
        b.retain(|(n, _)| *n != SOURCE_OFFSET);
        assert_eq!(
            QuarantineHeaders::from_pairs(&b),
            Err(HeaderError::Missing(SOURCE_OFFSET))
        );
        let bad: Vec<(&str, &[u8])> = vec![
            (IDEMPOTENCY_KEY, b"k"),
            (CORRELATION_ID, b"c"),
            (STAGE, b"gate"),
        ];
        assert_eq!(
            IdentityHeaders::from_pairs(&bad),
            Err(HeaderError::Invalid {
                name: STAGE,
                expected: "a stage name"
            })
        );
        let not_utf8: Vec<(&str, &[u8])> = vec![(REDRIVE_OF, &[0xff])];
        assert_eq!(
            RedriveHeaders::from_pairs(&not_utf8),
            Err(HeaderError::NotUtf8(REDRIVE_OF))
        );
    }

    #[test]
    fn every_name_is_distinct_kebab_case() {
        let mut names = ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '-')));
    }

    fn stage() -> impl Strategy<Value = StageName> {
        proptest::sample::select(StageName::ALL.to_vec())
    }

    fn reason() -> impl Strategy<Value = ReasonCode> {
        proptest::sample::select(ReasonCode::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn quarantine_headers_round_trip(
            key in ".*", corr in ".*", stage in stage(), reason in reason(),
            detail in ".*", topic in ".*", partition in any::<i32>(),
            offset in any::<i64>(), id in ".*", sealed in proptest::option::of(".*"),
        ) {
            let h = QuarantineHeaders {
                identity: IdentityHeaders { idempotency_key: key, correlation_id: corr, stage },
                reason_code: reason,
                reason_detail: detail,
                source_topic: topic,
                source_partition: partition,
                source_offset: offset,
                quarantine_id: id,
                sealed,
            };
            let pairs = h.to_pairs();
            prop_assert_eq!(QuarantineHeaders::from_pairs(&borrowed(&pairs)), Ok(h));
        }

        #[test]
        fn redrive_headers_round_trip(
            of in ".*", corr in proptest::option::of(".*"), key in proptest::option::of(".*"),
        ) {
            let h = RedriveHeaders { redrive_of: of, correlation_id: corr, idempotency_key: key };
            let pairs = h.to_pairs();
            prop_assert_eq!(RedriveHeaders::from_pairs(&borrowed(&pairs)), Ok(h));
        }
    }
}
