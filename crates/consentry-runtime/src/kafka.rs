//! The small Kafka API the command line uses (`synth`, `quarantine`,
//! `audit`, `summary`): whole topics read as plain records, and a publisher
//! whose sends are all acknowledged or the call fails. The binary speaks
//! only this; rdkafka stays inside the runtime.

use crate::inspect;
use crate::produce::{self, CountingProducer, DeliveryErrors};
use crate::Connection;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use std::time::Duration;

/// One record as read: where it sits, its key, payload and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (ms since the epoch), if it has one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    pub fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The value of header `name`, as UTF-8 (the first, if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The raw value of header `name` (the first, if repeated).
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Every committed-or-visible record of `physical_topic`, in partition
/// order (see `inspect::read_topic`).
pub fn read_all(
    conn: &Connection,
    physical_topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Record>> {
    Ok(inspect::read_topic(conn, physical_topic, timeout)?
        .into_iter()
        .map(|m| Record {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

/// Where each partition of `physical_topic` ends now (its high
/// watermarks, by partition): a topic written to since has moved on.
pub fn log_ends(conn: &Connection, physical_topic: &str) -> anyhow::Result<Vec<i64>> {
    use rdkafka::consumer::Consumer;
    let consumer = conn.create_reader()?;
    inspect::partitions(&consumer, physical_topic)?
        .into_iter()
        .map(|p| {
            Ok(consumer
                .fetch_watermarks(physical_topic, p, Duration::from_secs(10))?
                .1)
        })
        .collect()
}

/// A compacted topic as it stands, from its records in the order written:
/// the last value of each key, deleted keys (a record without a payload)
/// gone. A record without a key counts under the empty key.
pub fn compacted(records: &[Record]) -> std::collections::BTreeMap<&[u8], &[u8]> {
    let mut table = std::collections::BTreeMap::new();
    for r in records {
        let key = r.key().unwrap_or_default();
        match r.payload() {
            Some(v) => table.insert(key, v),
            None => table.remove(key),
        };
    }
    table
}

/// One record to publish.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outgoing<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// A partition of its own choosing; the key's partition otherwise.
    pub partition: Option<i32>,
    /// Typed headers' pairs (`consentry_core::headers`).
    pub headers: &'a [(&'static str, Vec<u8>)],
}

/// Typed headers' pairs as rdkafka carries them.
pub(crate) fn kafka_headers(pairs: &[(&str, Vec<u8>)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |hs, (key, value)| {
        hs.insert(Header {
            key,
            value: Some(value.as_slice()),
        })
    })
}

/// An idempotent producer whose every send is checked at `finish`.
pub struct Publisher {
    producer: CountingProducer,
}

impl Publisher {
    pub fn new(conn: &Connection) -> anyhow::Result<Publisher> {
        Ok(Publisher {
            producer: conn
                .producer()
                .create_with_context(DeliveryErrors::default())?,
        })
    }

    /// Queues `record` for `physical_topic`, waiting while the queue is full.
    pub fn send(&self, physical_topic: &str, record: Outgoing<'_>) -> anyhow::Result<()> {
        let mut rec = BaseRecord::<[u8], [u8]>::to(physical_topic)
            .payload(record.payload)
            .headers(kafka_headers(record.headers));
        if let Some(key) = record.key {
            rec = rec.key(key);
        }
        if let Some(p) = record.partition {
            rec = rec.partition(p);
        }
        produce::send(&self.producer, rec)
    }

    /// Waits for every send's acknowledgement; fails if any failed.
    pub fn finish(self, timeout: Duration) -> anyhow::Result<()> {
        self.producer.flush(timeout)?;
        self.producer.context().check()
    }
}
