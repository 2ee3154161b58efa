//! Reading whole topics from the beginning to their current end: for the
//! run summary, the CLI and the integration tests. Not used on a stage's
//! hot path.

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::Connection;

/// The partitions of `physical_topic`, in order (none if it does not exist).
pub(crate) fn partitions(
    consumer: &crate::config::Reader,
    physical_topic: &str,
) -> anyhow::Result<Vec<i32>> {
    let md = consumer.fetch_metadata(Some(physical_topic), Duration::from_secs(10))?;
    let mut partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == physical_topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// Every committed-or-visible record of `physical_topic`, in partition order.
pub fn read_topic(
    conn: &Connection,
    physical_topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<OwnedMessage>> {
    let consumer = conn.create_reader()?;
    let partitions = partitions(&consumer, physical_topic)?;
    if partitions.is_empty() {
        anyhow::bail!("topic '{physical_topic}' does not exist");
    }
    let mut tpl = TopicPartitionList::new();
    let mut pending = BTreeSet::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(physical_topic, *p, Duration::from_secs(10))?;
        if high > low {
            tpl.add_partition_offset(physical_topic, *p, Offset::Beginning)?;
            pending.insert(*p);
        }
    }
    let mut out = Vec::new();
    if pending.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            anyhow::bail!("reading '{physical_topic}' did not reach the end within {timeout:?}");
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            // A broker restarting: librdkafka reconnects; the deadline bounds it.
            Some(Err(e)) if crate::config::is_transient(&e) => {}
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    out.sort_by_key(|m| (m.partition(), m.offset()));
    Ok(out)
}

/// The value of header `name`, as UTF-8.
pub fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}
