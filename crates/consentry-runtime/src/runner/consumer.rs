//! The stage consumer's callbacks: consumer lag per input partition from
//! librdkafka's statistics, a warning for a partition the stage took
//! nothing from although something was there to take (`StallWatch`), and
//! rebalances (assigned partitions; the stage loop drops a batch polled
//! across one).

use crate::Metrics;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

pub(super) struct StageContext {
    pub(super) stage: String,
    pub(super) prefix: String,
    pub(super) metrics: Arc<Metrics>,
    pub(super) rebalanced: AtomicBool,
    /// Input partitions the stage takes nothing from (see `StallWatch`).
    pub(super) stalls: Mutex<StallWatch>,
}

/// Each input partition's position at the previous statistics report, to
/// warn of one the stage took nothing from although something was there
/// to take: the stage is stuck (as a rebalance waiting on a table was), or
/// the fetcher gets nothing from the broker. A partition whose only
/// unread entry is a transaction marker has nothing to take and is quiet,
/// not stalled.
#[derive(Default)]
pub(super) struct StallWatch {
    /// (topic, partition) → (position, reported stalled).
    pub(super) positions: HashMap<(String, i32), (i64, bool)>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum StallChange {
    Stalled,
    Moving,
}

impl StallWatch {
    /// One statistics report of a partition: `position` is the next offset
    /// the stage will take; `waiting` says records are fetched and not yet
    /// taken, or the readable end is beyond what was fetched.
    pub(super) fn observe(
        &mut self,
        topic: &str,
        partition: i32,
        position: i64,
        waiting: bool,
    ) -> Option<StallChange> {
        let key = (topic.to_string(), partition);
        let before = self.positions.get(&key).copied();
        let stalled = waiting && before.is_some_and(|(p, _)| p == position);
        let reported = before.is_some_and(|(_, r)| r);
        self.positions.insert(key, (position, stalled));
        match (stalled, reported) {
            (true, false) => Some(StallChange::Stalled),
            (false, true) => Some(StallChange::Moving),
            _ => None,
        }
    }
}

impl ClientContext for StageContext {
    fn stats_raw(&self, statistics: &[u8]) {
        match serde_json::from_slice::<Statistics>(statistics) {
            Ok(s) => self.stats(s),
            Err(e) => warn!(stage = %self.stage, error = %e, "cannot parse librdkafka statistics"),
        }
    }

    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            let Some(logical) = topic.strip_prefix(&self.prefix) else {
                continue;
            };
            for (p, part) in &t.partitions {
                // The partition's last stable offset (read_committed's end)
                // minus the next offset the stage will consume. librdkafka's
                // own consumer_lag needs consumer-side commits, which a
                // transactional stage never makes.
                let lag = if part.app_offset >= 0 && part.ls_offset >= 0 {
                    (part.ls_offset - part.app_offset).max(0)
                } else if part.consumer_lag >= 0 {
                    part.consumer_lag
                } else {
                    continue;
                };
                if *p >= 0 && part.fetch_state == "active" {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[&self.stage, logical, &p.to_string()])
                        .set(lag);
                    if part.app_offset >= 0 {
                        let waiting = part.fetchq_cnt > 0
                            || (part.next_offset >= 0 && part.ls_offset > part.next_offset);
                        let change = self
                            .stalls
                            .lock()
                            .ok()
                            .and_then(|mut w| w.observe(logical, *p, part.app_offset, waiting));
                        match change {
                            Some(StallChange::Stalled) => warn!(
                                stage = %self.stage, topic = logical, partition = *p, lag,
                                "input partition has records to take, but the stage took none since the last statistics report"
                            ),
                            Some(StallChange::Moving) => info!(
                                stage = %self.stage, topic = logical, partition = *p,
                                "input partition moving again"
                            ),
                            None => {}
                        }
                    }
                }
            }
        }
    }
}

impl ConsumerContext for StageContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let gauge = self
            .metrics
            .assigned_partitions
            .with_label_values(&[&self.stage]);
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(stage = %self.stage, partitions = tpl.count(), "partitions assigned");
                gauge.set(tpl.count() as i64);
            }
            Rebalance::Revoke(_) => gauge.set(0),
            Rebalance::Error(_) => {}
        }
        self.rebalanced.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_stalled_only_if_it_had_something_to_take_and_took_nothing() {
        let mut w = StallWatch::default();
        // First report: nothing to compare with.
        assert_eq!(w.observe("t", 0, 10, true), None);
        // Moved: fine.
        assert_eq!(w.observe("t", 0, 20, true), None);
        // Did not move with records waiting: stalled, reported once.
        assert_eq!(w.observe("t", 0, 20, true), Some(StallChange::Stalled));
        assert_eq!(w.observe("t", 0, 20, true), None);
        // Moving again.
        assert_eq!(w.observe("t", 0, 25, true), Some(StallChange::Moving));
        // Did not move, nothing waiting (a quiet partition ending in a
        // transaction marker): not stalled.
        assert_eq!(w.observe("t", 0, 25, false), None);
        assert_eq!(w.observe("t", 0, 25, false), None);
        // Partitions are watched apart.
        assert_eq!(w.observe("t", 1, 25, true), None);
        assert_eq!(w.observe("u", 0, 25, true), None);
        assert_eq!(w.observe("t", 1, 25, true), Some(StallChange::Stalled));
    }
}
