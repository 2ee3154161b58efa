//! A stage's ledger: the compacted topic of idempotency keys it has handled,
//! each with a digest of what it wrote for that key.
//!
//! Why a ledger and not transactions alone: a broker that shows aborted
//! transactional records to `read_committed` readers (tansu does) would let
//! a replayed input be written twice. The ledger is read with the same
//! isolation as the stage's downstream readers, so "handled" here means
//! exactly "visible downstream", on any broker. The runner writes ledger
//! entries only after the outputs they vouch for have been acknowledged,
//! so a ledger entry never exists for outputs that do not.

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::Connection;

/// What the ledger knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    /// Handled before with the same outputs.
    Same,
    /// Handled before with different outputs.
    Different,
}

pub struct Ledger {
    topic: String,
    consumer: crate::config::Reader,
    partitions: Vec<i32>,
    /// Per partition: the high watermark the last catch-up reached.
    reached: HashMap<i32, i64>,
    entries: HashMap<String, [u8; 32]>,
}

impl Ledger {
    /// Opens the ledger on `physical_topic` and reads it to its end.
    pub fn open(
        conn: &Connection,
        physical_topic: &str,
        timeout: Duration,
    ) -> anyhow::Result<Ledger> {
        let consumer = conn.create_reader()?;
        let md = consumer.fetch_metadata(Some(physical_topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == physical_topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            anyhow::bail!(
                "ledger topic '{physical_topic}' does not exist; run `consentry topics apply`"
            );
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(physical_topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut ledger = Ledger {
            topic: physical_topic.to_string(),
            consumer,
            partitions,
            reached: HashMap::new(),
            entries: HashMap::new(),
        };
        ledger.catch_up(timeout)?;
        Ok(ledger)
    }

    /// Reads every entry appended since the last catch-up (by any instance
    /// of the stage). Fails rather than returning a partial view.
    pub fn catch_up(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut targets = HashMap::new();
        for p in &self.partitions {
            let (_, high) =
                self.consumer
                    .fetch_watermarks(&self.topic, *p, Duration::from_secs(10))?;
            if self.reached.get(p).copied().unwrap_or(0) < high {
                targets.insert(*p, high);
            }
        }
        while !targets.is_empty() {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "ledger '{}' did not catch up within {timeout:?}",
                    self.topic
                );
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if let (Some(k), Some(v)) = (m.key(), m.payload()) {
                        if let (Ok(k), Ok(d)) = (std::str::from_utf8(k), <[u8; 32]>::try_from(v)) {
                            self.entries.insert(k.to_string(), d);
                        }
                    }
                    let next = m.offset() + 1;
                    if targets.get(&m.partition()).is_some_and(|t| next >= *t) {
                        self.reached.insert(m.partition(), next);
                        targets.remove(&m.partition());
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // The end of the partition: control records (transaction
                    // markers) may sit after the last data record.
                    if let Some(t) = targets.remove(&p) {
                        self.reached.insert(p, t);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        Ok(())
    }

    pub fn check(&self, key: &str, digest: &[u8; 32]) -> Seen {
        match self.entries.get(key) {
            None => Seen::New,
            Some(d) if d == digest => Seen::Same,
            Some(_) => Seen::Different,
        }
    }

    /// Records keys whose outputs were committed.
    pub fn record(&mut self, key: String, digest: [u8; 32]) {
        self.entries.insert(key, digest);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
