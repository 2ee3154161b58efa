//! Reading a compacted topic into memory: the common part of a stage's
//! ledger and its state table.
//!
//! A table is read from the beginning of every partition and then kept up
//! to date by `catch_up`, which reads until the end each partition had when
//! it was called and fails rather than return a partial view (it asks the
//! broker for every partition's end: a round trip each, so it is for
//! start-up and rebalances), and by `tail`, which applies what the
//! background fetcher has already brought, without waiting. The reader
//! uses the same isolation as downstream consumers (see `dedup`), so what
//! it sees is what every other reader of the topic sees.

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::Connection;

pub struct TableReader {
    topic: String,
    consumer: crate::config::Reader,
    partitions: Vec<i32>,
    positions: Positions,
}

/// Where the reader stands in each partition.
#[derive(Default)]
struct Positions {
    /// Per partition: the offset after the last record read, or the end a
    /// catch-up reached.
    reached: HashMap<i32, i64>,
    /// Partitions whose end librdkafka has reported since their last
    /// record (see `catch_up`).
    at_end: HashSet<i32>,
    /// For a partition at its end: the high watermark the first lag
    /// reading after the report saw (it counts the transaction markers
    /// after the last record, which are no records to apply).
    end_seen: HashMap<i32, i64>,
    /// Per partition, ends the broker reported that the reader had not
    /// reached yet, with when each was first seen, oldest first.
    pending: HashMap<i32, VecDeque<(i64, Instant)>>,
}

/// How far a table is behind its topic, for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Records (and transaction markers) not yet applied; `None` when the
    /// broker did not answer for every partition.
    pub records: Option<i64>,
    /// How long the oldest end not yet reached has been known: the age of
    /// what the table does not show yet. Under steady traffic it stays
    /// small; it grows only while the reader falls behind or stops.
    pub oldest: Option<Duration>,
}

/// At most this many ends are remembered per partition (the oldest stay).
const MAX_PENDING_ENDS: usize = 64;

impl Positions {
    /// A record at `offset` was read; returns the offset after it.
    fn read(&mut self, partition: i32, offset: i64) -> i64 {
        let next = offset + 1;
        let reached = self.reached.entry(partition).or_insert(0);
        *reached = (*reached).max(next);
        self.at_end.remove(&partition);
        self.end_seen.remove(&partition);
        next
    }

    /// Takes one reading of `partition`'s high watermark (`None`: the
    /// broker did not answer); returns the records behind it.
    fn observe(&mut self, partition: i32, high: Option<i64>, now: Instant) -> Option<i64> {
        let mut reached = self.reached.get(&partition).copied().unwrap_or(0);
        if let (true, Some(high)) = (self.at_end.contains(&partition), high) {
            reached = reached.max(*self.end_seen.entry(partition).or_insert(high));
        }
        let q = self.pending.entry(partition).or_default();
        while q.front().is_some_and(|(end, _)| *end <= reached) {
            q.pop_front();
        }
        let high = high?;
        if high > reached && q.back().is_none_or(|(end, _)| *end < high) {
            if q.len() >= MAX_PENDING_ENDS {
                q.pop_back();
            }
            q.push_back((high, now));
        }
        Some((high - reached).max(0))
    }

    /// When the oldest end not yet reached was first seen.
    fn oldest_pending(&self) -> Option<Instant> {
        self.pending
            .values()
            .filter_map(|q| q.front().map(|(_, t)| *t))
            .min()
    }

    fn end_reported(&mut self, partition: i32) {
        self.at_end.insert(partition);
    }
}

/// Applies a record with a readable key (nothing else is a table entry);
/// returns how many it applied, 0 or 1.
fn apply_keyed(m: &impl Message, apply: &mut impl FnMut(&str, Option<&[u8]>)) -> usize {
    match m.key().and_then(|k| std::str::from_utf8(k).ok()) {
        Some(k) => {
            apply(k, m.payload());
            1
        }
        None => 0,
    }
}

impl TableReader {
    /// Assigns every partition of `physical_topic` from the beginning.
    pub fn open(
        conn: &Connection,
        physical_topic: &str,
        what: &str,
    ) -> anyhow::Result<TableReader> {
        let consumer = conn.create_table_reader()?;
        let md = consumer.fetch_metadata(Some(physical_topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == physical_topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            anyhow::bail!(
                "{what} topic '{physical_topic}' does not exist; run `consentry topics apply`"
            );
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(physical_topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        Ok(TableReader {
            topic: physical_topic.to_string(),
            consumer,
            partitions,
            positions: Positions::default(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How far the reader is behind: asks the broker for every partition's
    /// end (a round trip each, `timeout` at most): for a metric every few
    /// seconds, not per batch.
    pub fn lag(&mut self, timeout: Duration) -> Lag {
        let now = Instant::now();
        let mut records = Some(0);
        for p in self.partitions.clone() {
            let high = self
                .consumer
                .fetch_watermarks(&self.topic, p, timeout)
                .ok()
                .map(|(_, high)| high);
            let behind = self.positions.observe(p, high, now);
            records = records.zip(behind).map(|(a, b)| a + b);
        }
        Lag {
            records,
            oldest: self.positions.oldest_pending().map(|t| now - t),
        }
    }

    /// Applies up to `max` records already fetched, without waiting and
    /// without asking the broker anything. Returns how many it applied.
    pub fn tail(
        &mut self,
        max: usize,
        mut apply: impl FnMut(&str, Option<&[u8]>),
    ) -> anyhow::Result<usize> {
        let mut applied = 0;
        while applied < max {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    applied += apply_keyed(&m, &mut apply);
                    self.positions.read(m.partition(), m.offset());
                }
                Some(Err(KafkaError::PartitionEOF(p))) => self.positions.end_reported(p),
                // A broker restarting: librdkafka reconnects; try later.
                Some(Err(e)) if crate::config::is_transient(&e) => break,
                Some(Err(e)) => return Err(e.into()),
                None => break,
            }
        }
        Ok(applied)
    }

    /// Reads every record appended since the last catch-up (by anyone),
    /// calling `apply(key, value)` for each keyed record in log order
    /// (`value: None` is a tombstone). Returns how many it applied.
    pub fn catch_up(
        &mut self,
        timeout: Duration,
        mut apply: impl FnMut(&str, Option<&[u8]>),
    ) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut targets = HashMap::new();
        for p in &self.partitions {
            let (_, high) =
                self.consumer
                    .fetch_watermarks(&self.topic, *p, Duration::from_secs(10))?;
            if self.positions.reached.get(p).copied().unwrap_or(0) < high {
                targets.insert(*p, high);
            }
        }
        // librdkafka reports a partition's end once per end offset. If this
        // reader has had that report already (`tail` took it), and only
        // control records (transaction markers) lie between the last record
        // it applied and the high watermark, nothing more would ever come
        // for the partition, and the catch-up would wait out its timeout
        // (a rebalance in a stage, taking its 120 s). A seek to where the
        // reader stands starts a new fetch, which reports the end anew.
        for p in targets.keys() {
            if self.positions.at_end.contains(p) {
                let from = self
                    .positions
                    .reached
                    .get(p)
                    .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                self.consumer
                    .seek(&self.topic, *p, from, Duration::from_secs(10))?;
            }
        }
        let mut applied = 0;
        while !targets.is_empty() {
            if Instant::now() > deadline {
                anyhow::bail!("table '{}' did not catch up within {timeout:?}", self.topic);
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    applied += apply_keyed(&m, &mut apply);
                    let next = self.positions.read(m.partition(), m.offset());
                    if targets.get(&m.partition()).is_some_and(|t| next >= *t) {
                        targets.remove(&m.partition());
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // The end of the partition: control records (transaction
                    // markers) may sit after the last data record.
                    if let Some(t) = targets.remove(&p) {
                        self.positions.reached.insert(p, t);
                    }
                    self.positions.end_reported(p);
                }
                // A broker restarting: librdkafka reconnects; the deadline
                // bounds the wait.
                Some(Err(e)) if crate::config::is_transient(&e) => {}
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_oldest_end_not_reached() {
        let mut p = Positions::default();
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        // Records 0..10 at the end; the reader has 0..4.
        p.read(0, 3);
        assert_eq!(p.observe(0, Some(10), t0), Some(6));
        assert_eq!(p.oldest_pending(), Some(t0));
        // More arrive; the reader passes the first end seen: the age is
        // the second end's, not the first's.
        assert_eq!(p.observe(0, Some(20), later(5_000)), Some(16));
        p.read(0, 11);
        assert_eq!(p.observe(0, Some(20), later(10_000)), Some(8));
        assert_eq!(p.oldest_pending(), Some(later(5_000)));
        // Caught up: nothing pending.
        p.read(0, 19);
        assert_eq!(p.observe(0, Some(20), later(15_000)), Some(0));
        assert_eq!(p.oldest_pending(), None);
        // The end reported, with a transaction marker after the last
        // record: not behind ...
        p.end_reported(0);
        assert_eq!(p.observe(0, Some(21), later(20_000)), Some(0));
        // ... until records come after it that the reader does not take
        // (a stalled fetcher): behind, and ageing.
        assert_eq!(p.observe(0, Some(30), later(25_000)), Some(9));
        assert_eq!(p.oldest_pending(), Some(later(25_000)));
        // A broker that does not answer: no count, the age goes on.
        assert_eq!(p.observe(0, None, later(30_000)), None);
        assert_eq!(p.oldest_pending(), Some(later(25_000)));
    }
}
