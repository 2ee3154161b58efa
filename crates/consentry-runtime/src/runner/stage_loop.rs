//! The loop around batches: starting a stage (its producer, consumer,
//! dedup store and tables, each read to its end before any input), taking
//! a batch, the work a table change makes possible, checkpoints when idle,
//! idleness across the process, and leaving the group on shutdown.

use super::consumer::StageContext;
use super::{ChainBoard, RunOptions, StageLoop, StageReport, CATCH_UP_TIMEOUT, TXN_TIMEOUT};
use crate::codec::Codec;
use crate::dedup::DedupStore;
use crate::produce::{self, CountingProducer, DeliveryErrors};
use crate::state::StateStore;
use crate::{panics, Metrics};
use consentry_core::chain::ChainWriter;
use consentry_core::envelope::{SOURCE_FHIR, SOURCE_HL7V2};
use consentry_core::stage::{Outcome, Stage, StageName, StateView};
use consentry_core::topology::{SourceFormat, Topology};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::Producer;
use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Tracks the last input time of every stage in the process. A stage's
/// idle clock starts when it is first assigned partitions (a group join
/// takes seconds); one never assigned counts as idle after `UNASSIGNED_GRACE`.
pub struct IdleBoard {
    pub(super) started: Instant,
    pub(super) last: Mutex<HashMap<String, Option<Instant>>>,
}

pub(super) const UNASSIGNED_GRACE: Duration = Duration::from_secs(30);

impl IdleBoard {
    pub(super) fn new(stages: &[String]) -> Arc<IdleBoard> {
        Arc::new(IdleBoard {
            started: Instant::now(),
            last: Mutex::new(stages.iter().map(|s| (s.clone(), None)).collect()),
        })
    }
    pub(super) fn touch(&self, stage: &str) {
        if let Ok(mut m) = self.last.lock() {
            m.insert(stage.to_string(), Some(Instant::now()));
        }
    }
    pub(super) fn all_idle_for(&self, d: Duration) -> bool {
        let grace = self.started.elapsed() >= UNASSIGNED_GRACE.max(d);
        self.last
            .lock()
            .map(|m| m.values().all(|t| t.map_or(grace, |t| t.elapsed() >= d)))
            .unwrap_or(false)
    }
}

/// What a stage sees of its tables: its own (read-write) and the one it
/// only reads. Their keys never overlap (the consent table's start with
/// `consent/`), so a lookup tries its own first.
pub(super) struct Tables<'a> {
    pub(super) own: Option<&'a StateStore>,
    pub(super) reads: Option<&'a StateStore>,
}

impl StateView for Tables<'_> {
    fn get(&self, key: &str) -> Option<&[u8]> {
        self.own
            .and_then(|t| t.get(key))
            .or_else(|| self.reads.and_then(|t| t.get(key)))
    }

    fn scan(&self, prefix: &str) -> Vec<(&str, &[u8])> {
        let mut out: Vec<(&str, &[u8])> = Vec::new();
        for t in [self.own, self.reads].into_iter().flatten() {
            out.extend(t.scan(prefix));
        }
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    fn value_bytes(&self) -> usize {
        self.own.map_or(0, StateView::value_bytes)
    }
}

/// At most this many transactions of table work in a row before the inputs
/// are polled again.
pub(super) const MAX_WORK_ONLY_BATCHES: u32 = 4;

/// How often a stage reads how far its consent table is behind (a round
/// trip to the broker per partition).
const CONSENT_LAG_EVERY: Duration = Duration::from_secs(5);

impl StageLoop {
    pub(super) fn start(
        topology: &Topology,
        stage: Box<dyn Stage>,
        opts: &RunOptions,
        metrics: Arc<Metrics>,
        board: Arc<ChainBoard>,
    ) -> anyhow::Result<StageLoop> {
        let name = stage.name().as_str();
        let spec = topology
            .stage(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("stage '{name}' is not in the topology"))?;
        let conn = &opts.conn;
        let codec = Codec::for_stage(conn, topology, &spec.outputs, &spec.inputs)?;

        let producer: CountingProducer = conn
            .transactional_producer(&format!("{}-{}", spec.consumer_group, opts.instance))
            .create_with_context(DeliveryErrors::default())?;
        // Fences a previous incarnation and aborts its open transaction
        // before this one reads the ledger.
        producer.init_transactions(TXN_TIMEOUT)?;
        let heads_producer = produce::AckedProducer::new(&conn.producer())?;

        let dedup = DedupStore::open(conn, &conn.physical(&spec.ledger), CATCH_UP_TIMEOUT)?;
        // The chain goes on from the last head this writer committed (kept
        // in its ledger), so a restart does not start a new, unanchored one.
        let writer_id = format!("{name}/{}", opts.instance);
        let head = dedup.chain_head(&writer_id);
        let chain = ChainWriter::new(
            &writer_id,
            head.as_ref().map(|(seq, hash)| (*seq, hash.as_str())),
        );
        metrics
            .dedup_keys
            .with_label_values(&[name])
            .set(dedup.len() as i64);
        // The whole table before any input: a stage never decides on part of it.
        let state = match &spec.state {
            Some(t) => Some(StateStore::open(conn, &conn.physical(t), CATCH_UP_TIMEOUT)?),
            None => None,
        };
        // The consent gate decides on no event before its table is whole.
        let reads = match &spec.reads {
            Some(t) => {
                let table = StateStore::open(conn, &conn.physical(t), CATCH_UP_TIMEOUT)?;
                info!(stage = name, table = %t, entries = table.len(), "table read to its end");
                Some(table)
            }
            None => None,
        };
        let source_formats = spec
            .inputs
            .iter()
            .filter_map(|t| {
                let f = match topology.topic(t)?.format? {
                    SourceFormat::Hl7v2 => SOURCE_HL7V2,
                    SourceFormat::FhirJson => SOURCE_FHIR,
                };
                Some((t.clone(), f))
            })
            .collect();

        let ctx = StageContext {
            stage: name.to_string(),
            prefix: conn.topic_prefix.clone(),
            metrics: Arc::clone(&metrics),
            rebalanced: AtomicBool::new(false),
            stalls: Mutex::default(),
        };
        let consumer: BaseConsumer<StageContext> = conn
            .consumer(&spec.consumer_group)
            .create_with_context(ctx)?;
        let physical: Vec<String> = spec.inputs.iter().map(|t| conn.physical(t)).collect();
        consumer.subscribe(&physical.iter().map(String::as_str).collect::<Vec<_>>())?;
        info!(stage = name, group = %conn.physical(&spec.consumer_group), dedup_keys = dedup.len(), "stage started");
        // Which policy this instance enforces: instances on different
        // versions for long is drift (an alert).
        metrics
            .policy_info
            .with_label_values(&[name, topology.policy_version.as_str()])
            .set(1);
        if stage.name() == StageName::Route {
            // Each destination's ceiling, for the footprint panels.
            for p in topology.purposes.values() {
                let mut by_class = std::collections::BTreeMap::new();
                for class in p.allow.iter().filter_map(|f| topology.fields.get(f)) {
                    *by_class.entry(*class).or_insert(0i64) += 1;
                }
                for (class, n) in by_class {
                    metrics
                        .destination_allowlist_fields
                        .with_label_values(&[&p.name, class.as_str()])
                        .set(n);
                }
            }
        }

        Ok(StageLoop {
            policy_version: topology.policy_version.clone(),
            audit_topic: topology.audit_topic.clone(),
            audit_heads_topic: topology.audit_heads_topic.clone(),
            quarantine_topic: topology.quarantine_topic.clone(),
            disclosure_topic: topology.disclosure_topic.clone(),
            destination_phi: topology
                .purposes
                .values()
                .map(|p| (p.topic.clone(), p.profile.is_phi()))
                .collect(),
            destination_purpose: topology
                .purposes
                .values()
                .map(|p| (p.topic.clone(), p.name.clone()))
                .collect(),
            purpose_phi: topology
                .purposes
                .values()
                .map(|p| (p.name.clone(), p.profile.is_phi()))
                .collect(),
            dedup_topic: spec.ledger.clone(),
            report: StageReport {
                stage: name.to_string(),
                ..Default::default()
            },
            stage,
            spec,
            conn: conn.clone(),
            opts: opts.clone(),
            consumer,
            producer,
            heads_producer,
            pending_head: None,
            dedup,
            state,
            reads,
            source_formats,
            codec,
            metrics,
            chain,
            board,
            service: format!("consentry/{name}@{}", env!("CARGO_PKG_VERSION")),
            last_checkpoint: Instant::now(),
            consent_lag_read: Instant::now()
                .checked_sub(CONSENT_LAG_EVERY)
                .unwrap_or_else(Instant::now),
            unchecked_commits: 0,
        })
    }

    /// The stage's name, as metric labels and logs carry it.
    pub(super) fn name(&self) -> &'static str {
        self.stage.name().as_str()
    }

    pub(super) fn stage_name(&self) -> StageName {
        self.stage.name()
    }

    /// The view the stage decides on: its own table and the one it reads.
    pub(super) fn tables(&self) -> Tables<'_> {
        Tables {
            own: self.state.as_ref(),
            reads: self.reads.as_ref(),
        }
    }

    /// Both tables, to read on (tail, catch up, take changes).
    pub(super) fn tables_mut(&mut self) -> impl Iterator<Item = &mut StateStore> {
        [self.state.as_mut(), self.reads.as_mut()]
            .into_iter()
            .flatten()
    }

    pub(super) fn run(
        &mut self,
        stop: &AtomicBool,
        idle: &IdleBoard,
    ) -> anyhow::Result<StageReport> {
        let mut failures = 0u32;
        // Transactions in a row that carried table work and no input.
        let mut work_only = 0u32;
        while !stop.load(Ordering::SeqCst) {
            let work = self.state_work()?;
            // Work a table change made possible (revocation notices, held
            // records) commits on its own, not behind a full batch of
            // inputs: a revocation's latency is one short transaction. But
            // never for long: a table that changes all the time must not
            // starve the inputs.
            let batch = if work.is_empty() {
                work_only = 0;
                self.next_batch(self.opts.batch_wait, stop, idle)?
            } else if work_only >= MAX_WORK_ONLY_BATCHES {
                // Only what is already fetched: the work is not held back.
                work_only = 0;
                self.next_batch(Duration::ZERO, stop, idle)?
            } else {
                work_only += 1;
                Vec::new()
            };
            if batch.is_empty() && work.is_empty() {
                if self.unchecked_commits > 0
                    && self.last_checkpoint.elapsed() >= self.opts.checkpoint_every
                {
                    self.checkpoint()?;
                }
                if let Some(d) = self.opts.exit_when_idle {
                    if idle.all_idle_for(d) {
                        info!(stage = self.name(), "idle; exiting");
                        break;
                    }
                }
                continue;
            }
            idle.touch(self.name());
            let started = Instant::now();
            match self.process_batch(&batch, work) {
                Ok(()) => {
                    failures = 0;
                    self.metrics
                        .batch_seconds
                        .with_label_values(&[self.name()])
                        .observe(started.elapsed().as_secs_f64());
                }
                Err(e) => {
                    failures += 1;
                    warn!(stage = self.name(), error = %e, attempt = failures, "batch failed; aborting and retrying");
                    self.abort_and_rewind(&batch)?;
                    if failures >= 10 {
                        self.metrics
                            .stage_halted
                            .with_label_values(&[self.name()])
                            .set(1);
                        anyhow::bail!("batch failed {failures} times in a row: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(200 * u64::from(failures)));
                }
            }
        }
        if self.unchecked_commits > 0 {
            // The last heads, so a verifier can tell a clean stop from a
            // truncated tail.
            if let Err(e) = self.checkpoint() {
                warn!(stage = self.name(), error = %e, "final checkpoint not written");
            }
        }
        self.shutdown();
        Ok(self.report.clone())
    }

    /// Catches the state table up and asks the stage what its changes make
    /// possible (held records to re-drive). Work is only taken once this
    /// instance owns partitions, since it may only re-drive its own inputs.
    pub(super) fn state_work(&mut self) -> anyhow::Result<Vec<Outcome>> {
        if self.state.is_none() && self.reads.is_none() {
            return Ok(Vec::new());
        }
        let name = self.name();
        let mut changes = false;
        for table in self.tables_mut() {
            table.tail()?;
            changes |= table.has_changes();
        }
        let lag_due = self.consent_lag_read.elapsed() >= CONSENT_LAG_EVERY;
        if let (Some(consent), true) = (self.reads.as_mut(), lag_due) {
            // How stale the consent view is: records not applied, and the
            // age of the oldest change it does not show yet.
            self.consent_lag_read = Instant::now();
            let lag = consent.lag(Duration::from_secs(1));
            if let Some(n) = lag.records {
                self.metrics
                    .consent_table_lag_records
                    .with_label_values(&[name])
                    .set(n);
            }
            self.metrics
                .consent_table_lag_seconds
                .with_label_values(&[name])
                .set(lag.oldest.map_or(0, |d| d.as_secs() as i64));
        }
        if let Some(state) = &self.state {
            self.metrics
                .state_entries
                .with_label_values(&[name])
                .set(state.len() as i64);
            self.metrics
                .state_bytes
                .with_label_values(&[name])
                .set(state.bytes() as i64);
        }
        if !changes {
            return Ok(Vec::new());
        }
        let assignment = self.consumer.assignment()?;
        if assignment.count() == 0 {
            return Ok(Vec::new());
        }
        let owned: HashSet<(String, i32)> = assignment
            .elements()
            .iter()
            .map(|e| {
                let logical = self.conn.logical(e.topic()).unwrap_or(e.topic());
                (logical.to_string(), e.partition())
            })
            .collect();
        let owns = |topic: &str, partition: i32| owned.contains(&(topic.to_string(), partition));
        // Both tables' changes, or "anything" if either says so.
        let mut changed = Some(Vec::new());
        for table in self.tables_mut() {
            match (table.take_changed(), changed.as_mut()) {
                (Some(keys), Some(all)) => all.extend(keys),
                _ => changed = None,
            }
        }
        let tables = self.tables();
        match panic::catch_unwind(AssertUnwindSafe(|| {
            self.stage
                .on_state_change(changed.as_deref(), &tables, &owns)
        })) {
            Ok(work) => Ok(work),
            Err(_) => {
                // Table values are stored bytes, hostile like any input; the
                // work they would have made is skipped (it stays possible:
                // a later change or restart asks again), the stage goes on.
                let at = panics::last_location().unwrap_or_else(|| "unknown".into());
                self.metrics.stage_panics.with_label_values(&[name]).inc();
                error!(stage = name, at = %at, "table work panicked; skipped");
                Ok(Vec::new())
            }
        }
    }

    /// Up to `batch_max` records: waits up to `first_wait` for the first,
    /// then takes only what the fetcher already holds. Waiting to fill a
    /// batch would hold a lone record (a revocation on a quiet topic) for
    /// the whole wait; under load the fetcher holds plenty, and batches
    /// fill anyway. A rebalance during the poll discards the partial batch:
    /// positions restart from the committed offsets, and the ledger is
    /// re-read.
    pub(super) fn next_batch(
        &mut self,
        first_wait: Duration,
        stop: &AtomicBool,
        idle: &IdleBoard,
    ) -> anyhow::Result<Vec<OwnedMessage>> {
        let mut batch = Vec::new();
        let deadline = Instant::now() + first_wait;
        let mut rebalanced = false;
        while batch.len() < self.opts.batch_max && !stop.load(Ordering::SeqCst) {
            let wait = if batch.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let polled = self.consumer.poll(wait);
            // A rebalance handled inside this poll makes everything polled
            // before it stale (eager rebalancing: positions restart from the
            // committed offsets). A record this same poll returned came after
            // the new assignment, so it is kept.
            if self
                .consumer
                .context()
                .rebalanced
                .swap(false, Ordering::SeqCst)
            {
                batch.clear();
                rebalanced = true;
            }
            match polled {
                Some(Ok(m)) => batch.push(m.detach()),
                Some(Err(e)) => warn!(stage = self.name(), error = %e, "consumer error"),
                None if !batch.is_empty() => break,
                None => {}
            }
            if batch.is_empty() && Instant::now() >= deadline {
                break;
            }
        }
        if rebalanced {
            // Newly owned partitions may have held records to re-drive:
            // read the whole table first, then look at everything.
            for table in self.tables_mut() {
                table.catch_up(CATCH_UP_TIMEOUT)?;
                table.rescan();
            }
            self.dedup.catch_up(CATCH_UP_TIMEOUT)?;
            self.metrics
                .dedup_keys
                .with_label_values(&[self.name()])
                .set(self.dedup.len() as i64);
            // The idle clock starts now: reading the tables (a round trip
            // per partition) is not idleness, and on a slow broker it could
            // use up an `--exit-when-idle` window before the first fetch.
            idle.touch(self.name());
        }
        Ok(batch)
    }

    pub(super) fn shutdown(&mut self) {
        info!(
            stage = self.name(),
            "shutting down: leaving the consumer group"
        );
        self.consumer.unsubscribe();
        // Dropping the consumer closes it, which leaves the group.
    }
}
