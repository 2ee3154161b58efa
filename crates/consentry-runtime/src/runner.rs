//! The stage runner: consume a batch, call the pure stage, produce outputs,
//! audit and quarantine records, append ledger entries, and commit input
//! offsets — in one transaction.
//!
//! Exactly-once results do not rest on the transaction alone (see
//! `ledger`): an input whose idempotency key the ledger already holds is
//! skipped, so a replayed batch, a retried send or an aborted transaction
//! still visible to readers never yields a second, different output.

use crate::panics;
use crate::produce::{self, CountingProducer, DeliveryErrors};
use consentry_core::audit::{decision, AuditRecord, ChainHead};
use consentry_core::chain::{self, ChainWriter};
use consentry_core::envelope::{Text, SOURCE_FHIR, SOURCE_HL7V2};
use consentry_core::keys::{self, ContentDigest};
use consentry_core::stage::{InputMeta, Outcome, Stage, StageInput, StateView};
use consentry_core::topology::{SourceFormat, StageSpec, Topology};
use consentry_core::ReasonCode;
use consentry_crypto::quarantine::MAX_SEALED_PAYLOAD;
use consentry_crypto::{AuditKeys, QuarantineContext, QuarantineKeys};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage, ToBytes};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, info_span, warn};

use crate::codec::{Codec, DecodeError};
use crate::ledger::{Ledger, Seen};
use crate::state::StateStore;
use crate::{Connection, Metrics};

/// How a stage runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub conn: Connection,
    /// Distinguishes instances of one stage (`transactional.id` suffix).
    pub instance: String,
    pub batch_max: usize,
    pub batch_wait: Duration,
    /// Exit cleanly once every stage in the process has had no input for this long.
    pub exit_when_idle: Option<Duration>,
    /// Seals every quarantined payload (the quarantine topic holds no
    /// plaintext).
    pub quarantine_keys: Arc<QuarantineKeys>,
    /// Hash the audit chain and fingerprint inputs and outputs.
    pub audit_keys: Arc<AuditKeys>,
    /// How often each stage writes a checkpoint of the chain heads.
    pub checkpoint_every: Duration,
}

/// The committed chain heads of every stage in the process, which each
/// stage's checkpoint records (so a truncated tail of one chain is caught
/// by another's checkpoint).
pub type ChainBoard = Mutex<BTreeMap<String, ChainHead>>;

/// What a stage did, for the end-of-run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageReport {
    pub stage: String,
    pub records_in: u64,
    pub records_out: u64,
    pub quarantined: u64,
    pub duplicates: u64,
    /// Held records sent on once what they waited for arrived.
    pub redriven: u64,
    pub audit_records: u64,
    pub transactions_committed: u64,
    pub transactions_aborted: u64,
}

/// Tracks the last input time of every stage in the process. A stage's
/// idle clock starts when it is first assigned partitions (a group join
/// takes seconds); one never assigned counts as idle after `UNASSIGNED_GRACE`.
pub struct IdleBoard {
    started: Instant,
    last: Mutex<HashMap<String, Option<Instant>>>,
}

const UNASSIGNED_GRACE: Duration = Duration::from_secs(30);

impl IdleBoard {
    fn new(stages: &[String]) -> Arc<IdleBoard> {
        Arc::new(IdleBoard {
            started: Instant::now(),
            last: Mutex::new(stages.iter().map(|s| (s.clone(), None)).collect()),
        })
    }
    fn touch(&self, stage: &str) {
        if let Ok(mut m) = self.last.lock() {
            m.insert(stage.to_string(), Some(Instant::now()));
        }
    }
    fn all_idle_for(&self, d: Duration) -> bool {
        let grace = self.started.elapsed() >= UNASSIGNED_GRACE.max(d);
        self.last
            .lock()
            .map(|m| m.values().all(|t| t.map_or(grace, |t| t.elapsed() >= d)))
            .unwrap_or(false)
    }
}

struct StageContext {
    stage: String,
    prefix: String,
    metrics: Arc<Metrics>,
    rebalanced: AtomicBool,
    /// Input partitions the stage takes nothing from (see `StallWatch`).
    stalls: Mutex<StallWatch>,
}

/// Each input partition's position at the previous statistics report, to
/// warn of one the stage took nothing from although something was there
/// to take: the stage is stuck (as a rebalance waiting on a table was), or
/// the fetcher gets nothing from the broker. A partition whose only
/// unread entry is a transaction marker has nothing to take and is quiet,
/// not stalled.
#[derive(Default)]
struct StallWatch {
    /// (topic, partition) → (position, reported stalled).
    positions: HashMap<(String, i32), (i64, bool)>,
}

#[derive(Debug, PartialEq, Eq)]
enum StallChange {
    Stalled,
    Moving,
}

impl StallWatch {
    /// One statistics report of a partition: `position` is the next offset
    /// the stage will take; `waiting` says records are fetched and not yet
    /// taken, or the readable end is beyond what was fetched.
    fn observe(
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

/// Runs every stage in its own thread until shutdown or idleness. Returns
/// one report per stage, or the first fatal error.
pub fn run_stages(
    topology: Arc<Topology>,
    stages: Vec<Box<dyn Stage>>,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<StageReport>> {
    panics::install_hook();
    let names: Vec<String> = stages.iter().map(|s| s.name().to_string()).collect();
    let idle = IdleBoard::new(&names);
    let board: Arc<ChainBoard> = Arc::default();
    let mut handles = Vec::new();
    for stage in stages {
        let (topology, opts, metrics, stop, idle, board) = (
            Arc::clone(&topology),
            opts.clone(),
            Arc::clone(&metrics),
            Arc::clone(&stop),
            Arc::clone(&idle),
            Arc::clone(&board),
        );
        let name = stage.name().to_string();
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let stage_name = stage.name();
                let halted = metrics.stage_halted.with_label_values(&[stage_name]);
                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    StageLoop::start(&topology, stage, &opts, metrics, Arc::clone(&idle), board)
                        .and_then(|mut l| l.run(&stop, &idle))
                }))
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "stage {stage_name} panicked at {}",
                        panics::last_location().unwrap_or_else(|| "an unknown place".into())
                    ))
                });
                if result.is_err() {
                    // One stage failing stops the process: fail closed. A
                    // half-alive process (normalize dead, the rest idle and
                    // healthy-looking) is what this prevents.
                    halted.set(1);
                    stop.store(true, Ordering::SeqCst);
                }
                result
            })?;
        handles.push((name, handle));
    }
    let mut reports = Vec::new();
    let mut first_err = None;
    for (name, h) in handles {
        match h.join() {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => {
                error!(stage = %name, error = %e, "stage stopped with an error");
                first_err.get_or_insert(e.context(format!("stage {name}")));
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("stage {name} panicked"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}

/// What a stage sees of its tables: its own (read-write) and the one it
/// only reads. Their keys never overlap (the consent table's start with
/// `consent/`), so a lookup tries its own first.
struct Tables<'a> {
    own: Option<&'a StateStore>,
    reads: Option<&'a StateStore>,
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

struct Pending {
    dedup_key: String,
    digest: [u8; 32],
}

/// What one open transaction has done so far.
#[derive(Default)]
struct Batch {
    pending: Vec<Pending>,
    /// Keys handled earlier in this (uncommitted) batch, with their digests.
    in_batch: HashMap<String, [u8; 32]>,
    offsets: BTreeMap<(String, i32), i64>,
    counts: BatchCounts,
    /// Audit records, sent and acknowledged before anything else.
    audit: Vec<Prepared>,
    /// Outputs and quarantine records, sent once the audit records are in.
    records: Vec<Prepared>,
    /// The batch's processing time, in its audit records.
    now_ms: i64,
}

/// A record ready to send (physical topic).
struct Prepared {
    topic: String,
    key: String,
    payload: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

struct StageLoop {
    stage: Box<dyn Stage>,
    spec: StageSpec,
    policy_version: String,
    audit_topic: String,
    audit_heads_topic: String,
    quarantine_topic: String,
    disclosure_topic: String,
    /// Destination topic → whether its records are PHI (its purpose's profile).
    destination_phi: HashMap<String, bool>,
    /// Purpose → whether its records remain PHI after de-identify.
    purpose_phi: HashMap<String, bool>,
    ledger_topic: String,
    conn: Connection,
    opts: RunOptions,
    consumer: BaseConsumer<StageContext>,
    producer: CountingProducer,
    /// Copies each committed checkpoint's signed head to the heads topic,
    /// outside the stage's transactions (which keep to the partitions a
    /// batch needs).
    heads_producer: produce::AckedProducer,
    /// The signed head of the checkpoint being committed.
    pending_head: Option<chain::SignedHead>,
    ledger: Ledger,
    state: Option<StateStore>,
    /// A table the stage reads and never writes (the consent table).
    reads: Option<StateStore>,
    /// Source format of each raw input topic, for the drift metric's label.
    source_formats: HashMap<String, &'static str>,
    codec: Codec,
    metrics: Arc<Metrics>,
    report: StageReport,
    chain: ChainWriter,
    board: Arc<ChainBoard>,
    /// `consentry/<stage>@<version>`, in every audit record.
    service: String,
    last_checkpoint: Instant,
    /// Commits since the last checkpoint.
    unchecked_commits: u64,
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many transactions of table work in a row before the inputs
/// are polled again.
const MAX_WORK_ONLY_BATCHES: u32 = 4;
const LEDGER_TIMEOUT: Duration = Duration::from_secs(120);

impl StageLoop {
    fn start(
        topology: &Topology,
        stage: Box<dyn Stage>,
        opts: &RunOptions,
        metrics: Arc<Metrics>,
        idle: Arc<IdleBoard>,
        board: Arc<ChainBoard>,
    ) -> anyhow::Result<StageLoop> {
        let name = stage.name();
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

        let ledger = Ledger::open(conn, &conn.physical(&spec.ledger), LEDGER_TIMEOUT)?;
        // The chain goes on from the last head this writer committed (kept
        // in its ledger), so a restart does not start a new, unanchored one.
        let writer_id = format!("{name}/{}", opts.instance);
        let head = ledger.chain_head(&writer_id);
        let chain = ChainWriter::new(
            &writer_id,
            head.as_ref().map(|(seq, hash)| (*seq, hash.as_str())),
        );
        metrics
            .ledger_keys
            .with_label_values(&[name])
            .set(ledger.len() as i64);
        // The whole table before any input: a stage never decides on part of it.
        let state = match &spec.state {
            Some(t) => Some(StateStore::open(conn, &conn.physical(t), LEDGER_TIMEOUT)?),
            None => None,
        };
        // The consent gate decides on no event before its table is whole.
        let reads = match &spec.reads {
            Some(t) => {
                let table = StateStore::open(conn, &conn.physical(t), LEDGER_TIMEOUT)?;
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
        let _ = idle;
        info!(stage = name, group = %conn.physical(&spec.consumer_group), ledger_keys = ledger.len(), "stage started");

        Ok(StageLoop {
            policy_version: topology.policy_version.clone(),
            audit_topic: topology.audit_topic.clone(),
            audit_heads_topic: topology.audit_heads_topic.clone(),
            quarantine_topic: topology.quarantine_topic.clone(),
            disclosure_topic: topology.disclosure_topic.clone(),
            destination_phi: topology
                .purposes
                .values()
                .map(|p| {
                    (
                        p.topic.clone(),
                        consentry_core::destination::is_phi(p.profile),
                    )
                })
                .collect(),
            purpose_phi: topology
                .purposes
                .values()
                .map(|p| {
                    (
                        p.name.clone(),
                        consentry_core::destination::is_phi(p.profile),
                    )
                })
                .collect(),
            ledger_topic: spec.ledger.clone(),
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
            ledger,
            state,
            reads,
            source_formats,
            codec,
            metrics,
            chain,
            board,
            service: format!("consentry/{name}@{}", env!("CARGO_PKG_VERSION")),
            last_checkpoint: Instant::now(),
            unchecked_commits: 0,
        })
    }

    fn name(&self) -> &'static str {
        self.stage.name()
    }

    /// The view the stage decides on: its own table and the one it reads.
    fn tables(&self) -> Tables<'_> {
        Tables {
            own: self.state.as_ref(),
            reads: self.reads.as_ref(),
        }
    }

    /// Both tables, to read on (tail, catch up, take changes).
    fn tables_mut(&mut self) -> impl Iterator<Item = &mut StateStore> {
        [self.state.as_mut(), self.reads.as_mut()]
            .into_iter()
            .flatten()
    }

    fn run(&mut self, stop: &AtomicBool, idle: &IdleBoard) -> anyhow::Result<StageReport> {
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

    /// Writes a checkpoint record (the process's committed chain heads) in
    /// a transaction of its own.
    fn checkpoint(&mut self) -> anyhow::Result<()> {
        let heads: Vec<ChainHead> = match self.board.lock() {
            Ok(b) => b.values().cloned().collect(),
            Err(_) => anyhow::bail!("chain board poisoned"),
        };
        let name = self.name();
        let mut rec = AuditRecord {
            stage: name.into(),
            policy_version: self.policy_version.as_str().into(),
            decision: decision::CHECKPOINT.into(),
            reason_code: ReasonCode::Ok.as_str().into(),
            checkpoint: heads,
            ..Default::default()
        };
        self.producer.begin_transaction()?;
        self.producer.context().reset();
        let result = (|| {
            let mut b = Batch::default();
            let now = now_ms();
            // Unique per chain position: the sequence number is in the id.
            let seq = self.chain.committed().map_or(0, |h| h.sequence + 1);
            let basis = format!("checkpoint/{}/{seq}", self.chain.writer_id());
            rec.audit_id = keys::idempotency_key(name, &self.policy_version, &basis, None);
            rec.idempotency_key = rec.audit_id.clone();
            self.prepare_audit(&mut rec, now, &mut b)?;
            self.send_prepared(b.audit)?;
            produce::flush(&self.producer, TXN_TIMEOUT)?;
            self.check_deliveries()?;
            self.write_chain_head()?;
            produce::commit(&self.producer, TXN_TIMEOUT)?;
            self.check_deliveries()
        })();
        match result {
            Ok(()) => {
                self.chain_committed();
                self.unchecked_commits = 0;
                self.last_checkpoint = Instant::now();
                // The committed checkpoint's signed head, acknowledged.
                // Lost, the heads topic still holds an earlier one: weaker
                // evidence for a while, never a false one.
                if let Some(head) = self.pending_head.take() {
                    let sent = serde_json::to_vec(&head)
                        .map_err(anyhow::Error::from)
                        .and_then(|json| {
                            self.heads_producer.enqueue(
                                &self.conn.physical(&self.audit_heads_topic),
                                &head.writer_id,
                                &json,
                                TXN_TIMEOUT,
                            )
                        })
                        .and_then(|ack| ack.wait());
                    if let Err(e) = sent {
                        warn!(stage = self.name(), error = %e, "checkpoint head not copied to the heads topic");
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.chain.rollback();
                self.pending_head = None;
                let _ = produce::flush(&self.producer, TXN_TIMEOUT);
                self.producer.abort_transaction(TXN_TIMEOUT)?;
                Err(e)
            }
        }
    }

    /// Sets the runtime's fields of an audit record, links it into the
    /// chain and queues it.
    fn prepare_audit(
        &mut self,
        rec: &mut AuditRecord,
        now: i64,
        b: &mut Batch,
    ) -> anyhow::Result<()> {
        rec.service = self.service.as_str().into();
        rec.processing_time_ms = now;
        let id = self
            .codec
            .audit_schema_id()
            .ok_or_else(|| anyhow::anyhow!("audit topic has no registered schema"))?;
        let keys = Arc::clone(&self.opts.audit_keys);
        let mac = |body: &[u8]| keys.chain_mac_active(body);
        let payload = if rec.decision == decision::CHECKPOINT {
            // Signed, vouching for the records since the last one, and
            // copied to the heads topic: evidence outside this chain.
            let payload = self
                .chain
                .link_checkpoint(rec, id, keys.active_version(), mac, |m| {
                    keys.sign_checkpoint(m)
                })?;
            self.pending_head = Some(chain::SignedHead::of(rec, |m| keys.sign_checkpoint(m)));
            payload
        } else {
            self.chain.link(rec, id, keys.active_version(), mac)?
        };
        let headers = identity_headers(
            &rec.audit_id,
            rec.correlation_id.as_deref().unwrap_or(""),
            self.name(),
        );
        b.audit.push(Prepared {
            topic: self.conn.physical(&self.audit_topic),
            // Keyed by writer: one chain, one partition, in order.
            key: self.chain.writer_id().to_string(),
            payload: Some(payload),
            headers,
        });
        b.counts.audit += 1;
        Ok(())
    }

    fn send_prepared(&self, records: Vec<Prepared>) -> anyhow::Result<()> {
        for r in records {
            let mut rec = BaseRecord::<str, [u8]>::to(&r.topic)
                .key(r.key.as_str())
                .headers(r.headers);
            if let Some(p) = &r.payload {
                rec = rec.payload(p.as_slice());
            }
            self.send(rec)?;
        }
        Ok(())
    }

    /// The chain's head goes to the ledger in the batch's transaction.
    fn write_chain_head(&self) -> anyhow::Result<()> {
        let Some((seq, hash)) = self.chain.pending_head() else {
            return Ok(());
        };
        let ledger_topic = self.conn.physical(&self.ledger_topic);
        let key = Ledger::chain_head_key(self.chain.writer_id());
        let value = format!("{seq}:{hash}");
        self.send(
            BaseRecord::to(&ledger_topic)
                .key(key.as_str())
                .payload(value.as_bytes()),
        )
    }

    fn chain_committed(&mut self) {
        self.chain.commit();
        if let Some(head) = self.chain.committed() {
            if let Ok(mut b) = self.board.lock() {
                b.insert(head.writer_id.to_string(), head);
            }
        }
    }

    /// Catches the state table up and asks the stage what its changes make
    /// possible (held records to re-drive). Work is only taken once this
    /// instance owns partitions, since it may only re-drive its own inputs.
    fn state_work(&mut self) -> anyhow::Result<Vec<Outcome>> {
        if self.state.is_none() && self.reads.is_none() {
            return Ok(Vec::new());
        }
        let name = self.stage.name();
        let mut changes = false;
        for table in self.tables_mut() {
            table.tail()?;
            changes |= table.has_changes();
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
    fn next_batch(
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
                table.catch_up(LEDGER_TIMEOUT)?;
                table.rescan();
            }
            self.ledger.catch_up(LEDGER_TIMEOUT)?;
            self.metrics
                .ledger_keys
                .with_label_values(&[self.stage.name()])
                .set(self.ledger.len() as i64);
            // The idle clock starts now: reading the tables (a round trip
            // per partition) is not idleness, and on a slow broker it could
            // use up an `--exit-when-idle` window before the first fetch.
            idle.touch(self.stage.name());
        }
        Ok(batch)
    }

    /// One transaction: the state work first, then the polled inputs.
    fn process_batch(&mut self, inputs: &[OwnedMessage], work: Vec<Outcome>) -> anyhow::Result<()> {
        let name = self.name();
        let span = info_span!(
            "batch",
            stage = name,
            records = inputs.len(),
            work = work.len()
        );
        let _enter = span.enter();
        self.producer.begin_transaction()?;
        self.producer.context().reset();

        let mut b = Batch {
            now_ms: now_ms(),
            ..Default::default()
        };
        let mut phases = BatchPhases::new();
        for unit in work {
            self.handle_unit(unit, None, &mut b)?;
        }
        for m in inputs {
            b.offsets
                .insert((m.topic().to_string(), m.partition()), m.offset() + 1);
            let logical = self
                .conn
                .logical(m.topic())
                .unwrap_or(m.topic())
                .to_string();
            b.counts.input(&logical);
            let meta = input_meta(&logical, m, b.now_ms);
            // A record that makes the stage panic is a bad record, not a
            // dead stage: it goes to quarantine (`malformed`, with where
            // the code gave up, never the panic's message, which may quote
            // the input) and the batch goes on.
            let decided = panic::catch_unwind(AssertUnwindSafe(|| {
                match self.codec.decode(&logical, m.payload()) {
                    Ok(body) => Ok(self.stage.process(
                        &StageInput {
                            meta: meta.clone(),
                            body,
                        },
                        &self.tables(),
                    )),
                    Err(DecodeError::Record { reason, detail }) => Ok(vec![Outcome::quarantined(
                        name,
                        &self.policy_version,
                        &meta,
                        None,
                        reason,
                        detail,
                    )]),
                    Err(e @ DecodeError::Registry(_)) => Err(e),
                }
            }));
            let units = match decided {
                Ok(Ok(units)) => units,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    let at = panics::last_location().unwrap_or_else(|| "unknown".into());
                    self.metrics.stage_panics.with_label_values(&[name]).inc();
                    vec![Outcome::quarantined(
                        name,
                        &self.policy_version,
                        &meta,
                        None,
                        ReasonCode::Malformed,
                        format!("{name} panicked at {at}"),
                    )]
                }
            };
            let redrive_of = crate::inspect::header(m, keys::HEADER_REDRIVE_OF);
            // Once per input, whatever number of units it yields (a Bundle).
            let fingerprint = m
                .payload()
                .map(|p| Text::from(self.opts.audit_keys.fingerprint(p).as_str()));
            for mut unit in units {
                if let Some(qid) = redrive_of {
                    rekey_for_redrive(&mut unit, name, &self.policy_version, qid);
                    b.counts.redriven += 1;
                }
                self.handle_unit(unit, Some((m, fingerprint.as_ref())), &mut b)?;
            }
        }

        // Fail closed: the audit records first, acknowledged, and only then
        // what they describe. A trail that cannot be written stops the
        // batch before any output leaves (on every broker, including one
        // that shows aborted transactions).
        phases.mark("process");
        self.send_prepared(std::mem::take(&mut b.audit))?;
        if let Err(e) = produce::flush(&self.producer, TXN_TIMEOUT)
            .map_err(anyhow::Error::from)
            .and_then(|()| self.check_deliveries())
        {
            self.metrics
                .audit_write_failures
                .with_label_values(&[name])
                .inc();
            return Err(e.context("audit records not acknowledged; nothing else written"));
        }
        phases.mark("audit_acked");
        self.send_prepared(std::mem::take(&mut b.records))?;
        // Ledger entries and state writes only after every output is
        // acknowledged (see ledger.rs): neither may vouch for a missing record.
        produce::flush(&self.producer, TXN_TIMEOUT)?;
        self.check_deliveries()?;
        phases.mark("outputs_acked");
        self.write_chain_head()?;
        let ledger_topic = self.conn.physical(&self.ledger_topic);
        for p in &b.pending {
            self.send(
                BaseRecord::to(&ledger_topic)
                    .key(&p.dedup_key)
                    .payload(&p.digest[..]),
            )?;
        }
        if let Some(state) = &self.state {
            let topic = state.topic().to_string();
            for w in state.staged() {
                let mut rec = BaseRecord::<str, [u8]>::to(&topic).key(w.key.as_str());
                if let Some(v) = &w.value {
                    rec = rec.payload(v.as_slice());
                }
                self.send(rec)?;
            }
        }

        if !b.offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), next) in &b.offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
            }
            let group = self
                .consumer
                .group_metadata()
                .ok_or_else(|| anyhow::anyhow!("consumer has no group metadata"))?;
            self.producer
                .send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)?;
        }
        phases.mark("ledger_and_offsets");
        produce::commit(&self.producer, TXN_TIMEOUT)?;
        self.check_deliveries()?;
        let commit = phases.mark("committed");
        phases.warn_if_slow(name, inputs.len());
        self.metrics
            .commit_seconds
            .with_label_values(&[name])
            .observe(commit.as_secs_f64());
        self.metrics
            .transactions
            .with_label_values(&[name, "committed"])
            .inc();
        self.report.transactions_committed += 1;
        self.chain_committed();
        self.unchecked_commits += 1;

        for p in b.pending {
            self.ledger.record(p.dedup_key, p.digest);
        }
        if let Some(state) = self.state.as_mut() {
            state.commit();
        }
        self.metrics
            .ledger_keys
            .with_label_values(&[name])
            .set(self.ledger.len() as i64);
        b.counts.commit(name, &self.metrics, &mut self.report);
        debug!(stage = name, "batch committed");
        Ok(())
    }

    /// Deduplicates one unit of work and, if it is new, sends its records
    /// and stages its state writes.
    fn handle_unit(
        &mut self,
        unit: Outcome,
        input: Option<(&OwnedMessage, Option<&Text>)>,
        b: &mut Batch,
    ) -> anyhow::Result<()> {
        let name = self.name();
        // A dependency that did not answer is no verdict on the record:
        // abort the batch and retry it (fail closed, nothing written).
        if let Some(q) = unit
            .quarantine
            .as_ref()
            .filter(|q| q.reason == ReasonCode::Unavailable)
        {
            anyhow::bail!("{name}: {}", q.detail);
        }
        // Encoded once: the same bytes are digested and sent. Under
        // `catch_unwind` like `process`: what a stage made of a record is
        // the record's doing, and may not stop the stage either.
        let encoding = panic::catch_unwind(AssertUnwindSafe(|| {
            unit.outputs
                .iter()
                .map(|o| self.codec.encode_event(&o.topic, &o.event))
                .collect::<Result<Vec<_>, _>>()
        }));
        let (unit, encoded) = match encoding {
            Ok(encoded) => (unit, encoded?),
            Err(_) => {
                let at = panics::last_location().unwrap_or_else(|| "unknown".into());
                self.metrics.stage_panics.with_label_values(&[name]).inc();
                let meta = source_of(&unit);
                let mut q = Outcome::quarantined_with_key(
                    name,
                    &self.policy_version,
                    &meta,
                    unit.dedup_key.clone(),
                    unit.audit.event_id.clone(),
                    ReasonCode::Malformed,
                    format!("{name} output encoding panicked at {at}"),
                );
                q.held_payload = unit.held_payload;
                (q, Vec::new())
            }
        };
        let digest = outcome_digest(&unit, &encoded);
        let ledger = &self.ledger;
        let in_batch = &b.in_batch;
        let seen = |key: &str| match in_batch.get(key) {
            Some(d) if *d == digest => Seen::Same,
            Some(_) => Seen::Different,
            None => ledger.check(key, &digest),
        };
        let (mut unit, encoded) = match seen(&unit.dedup_key) {
            Seen::Same => {
                b.counts.duplicates += 1;
                return Ok(());
            }
            Seen::New => (unit, encoded),
            Seen::Different => {
                // Same key, other content: never overwrite what left
                // already; hold the newcomer for review instead. Its state
                // writes are not applied: they belong to the content held.
                let key = keys::idempotency_key(
                    name,
                    &self.policy_version,
                    &unit.dedup_key,
                    Some(&hex::encode(&digest[..8])),
                );
                if seen(&key) != Seen::New {
                    b.counts.duplicates += 1;
                    return Ok(());
                }
                let meta = source_of(&unit);
                let mut conflict = Outcome::quarantined_with_key(
                    name,
                    &self.policy_version,
                    &meta,
                    key,
                    unit.audit.event_id.clone(),
                    ReasonCode::IdempotencyConflict,
                    "idempotency-key",
                );
                conflict.held_payload = unit.held_payload;
                (conflict, Vec::new())
            }
        };
        self.send_outcome(&mut unit, encoded, input, b)?;
        if unit.audit.decision == decision::REDRIVE {
            b.counts.redriven += 1;
        }
        b.counts.consent(&unit.audit);
        match self.state.as_mut() {
            Some(state) => {
                for w in unit.state {
                    state.write(w);
                }
            }
            // A table the stage only reads is never written by it.
            None if !unit.state.is_empty() => {
                anyhow::bail!("{name} wrote to a table it only reads")
            }
            None => {}
        }
        b.in_batch.insert(unit.dedup_key.to_string(), digest);
        b.pending.push(Pending {
            dedup_key: unit.dedup_key.into(),
            digest,
        });
        Ok(())
    }

    fn send_outcome(
        &mut self,
        outcome: &mut Outcome,
        encoded: Vec<Vec<u8>>,
        input: Option<(&OwnedMessage, Option<&Text>)>,
        b: &mut Batch,
    ) -> anyhow::Result<()> {
        let name = self.name();
        let keys = Arc::clone(&self.opts.audit_keys);
        let input_payload = input.and_then(|(m, _)| m.payload());
        outcome.audit.input_fingerprint = match (input, outcome.held_payload.as_deref()) {
            (Some((_, Some(fingerprint))), _) => Some(fingerprint.clone()),
            (_, Some(held)) => Some(keys.fingerprint(held).as_str().into()),
            _ => None,
        };
        if outcome.audit.event_time_ms.is_none() {
            outcome.audit.event_time_ms =
                outcome.outputs.first().and_then(|o| o.event.event_time_ms);
        }
        for (out, payload) in outcome.outputs.iter().zip(encoded) {
            // Fingerprint the Avro body: the same content under a
            // re-registered schema id is the same record.
            let fingerprint = keys.fingerprint(payload.get(5..).unwrap_or_default());
            if let Some(a) = outcome
                .audit
                .outputs
                .iter_mut()
                .find(|a| a.idempotency_key == out.idempotency_key && a.topic == out.topic)
            {
                a.fingerprint = fingerprint.as_str().into();
            }
            let mut headers = identity_headers(&out.idempotency_key, &out.correlation_id, name);
            // Whether the record is still PHI, for consumers that route on
            // headers: from its purpose's profile only, never from a label's
            // value. A destination's records always say it; an internal
            // record once de-identify has labelled it (before that, no
            // header: it is PHI whatever the purpose).
            let phi = self
                .destination_phi
                .get(out.topic.as_str())
                .copied()
                .or_else(|| {
                    let labelled = out
                        .event
                        .security_labels
                        .iter()
                        .any(|l| keys::is_reserved_label(l));
                    let purpose = out.event.purpose.as_deref()?;
                    labelled.then(|| self.purpose_phi.get(purpose).copied().unwrap_or(true))
                });
            if let Some(phi) = phi {
                headers = headers.insert(Header {
                    key: keys::HEADER_PHI,
                    value: Some(if phi { "true" } else { "false" }),
                });
            }
            b.records.push(Prepared {
                topic: self.conn.physical(&out.topic),
                key: out.key.to_string(),
                payload: Some(payload),
                headers,
            });
            b.counts.output(&out.topic);
        }
        for d in &mut outcome.disclosures {
            d.disclosed_at_ms = b.now_ms;
            let payload = self.codec.encode_disclosure(&self.disclosure_topic, d)?;
            b.records.push(Prepared {
                topic: self.conn.physical(&self.disclosure_topic),
                // One subject's disclosures in one partition, in order.
                key: d.subject_token.to_string(),
                payload: Some(payload),
                headers: identity_headers(&d.disclosure_id, &d.correlation_id, name),
            });
        }
        if let Some(q) = &outcome.quarantine {
            let corr = outcome.correlation_id.clone().unwrap_or_default();
            let qid = outcome.audit.audit_id.as_str();
            // A payload too big to seal into one broker record (a record
            // near the broker's size limit) is not held: the quarantine
            // record would exceed the limit, fail the batch every time and
            // halt the stage. The record stays readable at its source
            // offset, which the headers name, and the detail says so.
            let whole = outcome.held_payload.as_deref().or(input_payload);
            let payload = whole.filter(|p| p.len() <= MAX_SEALED_PAYLOAD);
            let detail = match whole {
                Some(p) if payload.is_none() => format!(
                    "{}; payload not held ({} bytes): read it at its source offset",
                    q.detail,
                    p.len()
                ),
                _ => q.detail.clone(),
            };
            let headers = identity_headers(&outcome.dedup_key, &corr, name)
                .insert(Header {
                    key: keys::HEADER_REASON_CODE,
                    value: Some(q.reason.as_str()),
                })
                .insert(Header {
                    key: keys::HEADER_REASON_DETAIL,
                    value: Some(&detail),
                })
                .insert(Header {
                    key: keys::HEADER_SOURCE_TOPIC,
                    value: Some(outcome.audit.source_topic.as_str()),
                })
                .insert(Header {
                    key: keys::HEADER_SOURCE_PARTITION,
                    value: Some(&outcome.audit.source_partition.to_string()),
                })
                .insert(Header {
                    key: keys::HEADER_SOURCE_OFFSET,
                    value: Some(&outcome.audit.source_offset.to_string()),
                })
                .insert(Header {
                    key: keys::HEADER_QUARANTINE_ID,
                    value: Some(qid),
                });
            // The payload leaves this process only sealed, bound to the
            // headers that describe it (see consentry_crypto::quarantine).
            let sealed = payload.map(|p| {
                let context = QuarantineContext {
                    id: qid,
                    stage: name,
                    source_topic: &outcome.audit.source_topic,
                    source_partition: outcome.audit.source_partition,
                    source_offset: outcome.audit.source_offset,
                    reason: q.reason.as_str(),
                };
                self.opts.quarantine_keys.seal(&context, p)
            });
            let headers = match &sealed {
                Some(_) => headers.insert(Header {
                    key: keys::HEADER_SEALED,
                    value: Some(&self.opts.quarantine_keys.header()),
                }),
                None => headers,
            };
            b.records.push(Prepared {
                topic: self.conn.physical(&self.quarantine_topic),
                key: qid.to_string(),
                payload: sealed,
                headers,
            });
            b.counts.quarantine(q.reason);
            if q.reason == ReasonCode::SchemaDrift {
                let source = self
                    .source_formats
                    .get(outcome.audit.source_topic.as_str())
                    .copied()
                    .unwrap_or("internal");
                b.counts.drift(source, &q.detail);
            }
        }
        let now = b.now_ms;
        self.prepare_audit(&mut outcome.audit, now, b)
    }

    fn send<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
        &self,
        record: BaseRecord<'_, K, P>,
    ) -> anyhow::Result<()> {
        produce::send(&self.producer, record)
    }

    fn check_deliveries(&self) -> anyhow::Result<()> {
        self.producer.context().check()
    }

    /// Aborts the open transaction and moves the consumer back to the
    /// batch's first offsets, so the batch is processed again.
    fn abort_and_rewind(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let name = self.name();
        // A batch that failed while sending has records in flight; abort
        // needs their delivery reports polled first (a BaseProducer polls
        // only when asked), or it times out and the stage stops.
        if let Err(e) = produce::flush(&self.producer, TXN_TIMEOUT) {
            warn!(stage = name, error = %e, "flush before abort failed");
        }
        if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
            // A fatal producer error (e.g. fenced by a newer instance): stop.
            anyhow::bail!("cannot abort the transaction: {e}");
        }
        if let Some(state) = self.state.as_mut() {
            state.abort();
        }
        self.chain.rollback();
        self.metrics
            .transactions
            .with_label_values(&[name, "aborted"])
            .inc();
        self.report.transactions_aborted += 1;
        let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for m in batch {
            first
                .entry((m.topic().to_string(), m.partition()))
                .or_insert(m.offset());
        }
        for ((topic, partition), offset) in first {
            if let Err(e) = self.consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            ) {
                warn!(stage = name, error = %e, "seek after abort failed; rejoining from committed offsets");
                self.consumer.unsubscribe();
                let physical: Vec<String> = self
                    .spec
                    .inputs
                    .iter()
                    .map(|t| self.conn.physical(t))
                    .collect();
                self.consumer
                    .subscribe(&physical.iter().map(String::as_str).collect::<Vec<_>>())?;
                break;
            }
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        info!(
            stage = self.name(),
            "shutting down: leaving the consumer group"
        );
        self.consumer.unsubscribe();
        // Dropping the consumer closes it, which leaves the group.
    }
}

/// A record `consentry quarantine redrive` sent back is new work, whatever
/// the ledger says of the input it once was: each of its units gets a key
/// of its own, derived from the quarantine id. So the redrive of one id is
/// handled once (sending it again is a duplicate), and a record that fails
/// again gets a new quarantine id rather than vanishing as a duplicate of
/// its first failure. Output keys are the stage's own, so what downstream
/// stages already have stays a duplicate there.
fn rekey_for_redrive(unit: &mut Outcome, stage: &str, policy_version: &str, quarantine_id: &str) {
    let key = keys::idempotency_key(
        stage,
        policy_version,
        &unit.dedup_key,
        Some(&format!("redrive:{quarantine_id}")),
    );
    unit.audit.audit_id = keys::audit_id(stage, policy_version, &key);
    unit.audit.idempotency_key = key.clone();
    unit.dedup_key = key;
}

/// Where a unit came from, to quarantine it in its place.
fn source_of(unit: &Outcome) -> InputMeta {
    InputMeta {
        topic: unit.audit.source_topic.to_string(),
        partition: unit.audit.source_partition,
        offset: unit.audit.source_offset,
        correlation_id: unit.correlation_id.as_deref().map(String::from),
        ..Default::default()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn input_meta(logical_topic: &str, m: &OwnedMessage, now_ms: i64) -> InputMeta {
    let header = |name: &str| crate::inspect::header(m, name).map(String::from);
    InputMeta {
        topic: logical_topic.to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(String::from),
        idempotency_key: header(keys::HEADER_IDEMPOTENCY_KEY),
        correlation_id: header(keys::HEADER_CORRELATION_ID),
        timestamp_ms: m.timestamp().to_millis(),
        now_ms,
    }
}

fn identity_headers(idempotency_key: &str, correlation_id: &str, stage: &str) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: keys::HEADER_IDEMPOTENCY_KEY,
            value: Some(idempotency_key),
        })
        .insert(Header {
            key: keys::HEADER_CORRELATION_ID,
            value: Some(correlation_id),
        })
        .insert(Header {
            key: keys::HEADER_STAGE,
            value: Some(stage),
        })
}

/// The digest of what an outcome writes downstream: its outputs, or its
/// quarantine verdict. Audit records are left out: they name the input's
/// position, which differs between two deliveries of the same event.
fn outcome_digest(o: &Outcome, encoded: &[Vec<u8>]) -> [u8; 32] {
    let mut d = ContentDigest::new();
    for (out, payload) in o.outputs.iter().zip(encoded) {
        d.update(out.topic.as_bytes());
        d.update(out.key.as_bytes());
        d.update(out.idempotency_key.as_bytes());
        // Skip the 5-byte wire header: a re-registered schema id is not a content change.
        d.update(payload.get(5..).unwrap_or_default());
    }
    if let Some(q) = &o.quarantine {
        d.update(q.reason.as_str().as_bytes());
        d.update(q.detail.as_bytes());
    }
    // The ledger record's id and subject, not its time of writing.
    for x in &o.disclosures {
        d.update(x.disclosure_id.as_bytes());
        d.update(x.subject_token.as_bytes());
    }
    d.finish()
}

/// A batch slower than this is logged with where its time went.
const SLOW_BATCH: Duration = Duration::from_secs(1);

/// When each phase of a batch's transaction ended, to say which one made a
/// slow batch slow (the stage's own work, an acknowledgement, the commit).
struct BatchPhases {
    last: Instant,
    phases: Vec<(&'static str, Duration)>,
}

impl BatchPhases {
    fn new() -> BatchPhases {
        BatchPhases {
            last: Instant::now(),
            phases: Vec::with_capacity(5),
        }
    }

    /// Ends `phase` now; returns how long it took.
    fn mark(&mut self, phase: &'static str) -> Duration {
        let now = Instant::now();
        let took = now - self.last;
        self.phases.push((phase, took));
        self.last = now;
        took
    }

    /// `phase=ms` pairs, in order.
    fn describe(&self) -> String {
        self.phases
            .iter()
            .map(|(p, d)| format!("{p}={}ms", d.as_millis()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn warn_if_slow(&self, stage: &str, records: usize) {
        let took: Duration = self.phases.iter().map(|(_, d)| *d).sum();
        if took >= SLOW_BATCH {
            warn!(
                stage,
                records,
                took_ms = took.as_millis() as u64,
                phases = %self.describe(),
                "slow batch"
            );
        }
    }
}

/// Counters for one batch, applied to the metrics only once it commits.
#[derive(Default)]
struct BatchCounts {
    inputs: BTreeMap<String, u64>,
    outputs: BTreeMap<String, u64>,
    quarantined: BTreeMap<ReasonCode, u64>,
    drift: BTreeMap<(&'static str, String), u64>,
    duplicates: u64,
    redriven: u64,
    audit: u64,
    /// (purpose, decision, reason) of consent decisions.
    consent: BTreeMap<(String, &'static str, String), u64>,
    /// (purpose, arrival ms) of revocations whose notices the batch writes.
    revocations: Vec<(String, i64)>,
}

impl BatchCounts {
    fn input(&mut self, topic: &str) {
        *self.inputs.entry(topic.to_string()).or_default() += 1;
    }
    fn output(&mut self, topic: &str) {
        *self.outputs.entry(topic.to_string()).or_default() += 1;
    }
    fn quarantine(&mut self, reason: ReasonCode) {
        *self.quarantined.entry(reason).or_default() += 1;
    }
    fn drift(&mut self, source: &'static str, path: &str) {
        *self.drift.entry((source, path.to_string())).or_default() += 1;
    }
    /// Counts a consent decision: every one of the gate's, and route's
    /// re-check when it stops a record; times a revocation notice.
    fn consent(&mut self, a: &AuditRecord) {
        let purpose = a.purpose.as_deref().unwrap_or("").to_string();
        // route's allows are the gate's, confirmed: not counted twice.
        let decision = match (a.stage.as_str(), a.decision.as_str()) {
            ("consent-gate", decision::ALLOW) => decision::ALLOW,
            ("consent-gate" | "route" | "tokenize", decision::DENY) => decision::DENY,
            ("consent-gate", decision::DOWNGRADE) => decision::DOWNGRADE,
            ("route", decision::REVOCATION_NOTICE) => {
                if let Some(t) = a.event_time_ms {
                    self.revocations.push((purpose, t));
                }
                return;
            }
            _ => return,
        };
        *self
            .consent
            .entry((purpose, decision, a.reason_code.to_string()))
            .or_default() += 1;
    }

    fn commit(self, stage: &str, m: &Metrics, r: &mut StageReport) {
        for ((purpose, decision, reason), n) in self.consent {
            m.consent_decisions
                .with_label_values(&[stage, &purpose, decision, &reason])
                .inc_by(n);
        }
        // Counted after the commit: the notices are written now.
        let committed = now_ms();
        for (purpose, arrived) in self.revocations {
            m.revocation_seconds
                .with_label_values(&[&purpose])
                .observe((committed - arrived).max(0) as f64 / 1000.0);
        }
        for (t, n) in self.inputs {
            m.records_in.with_label_values(&[stage, &t]).inc_by(n);
            r.records_in += n;
        }
        for (t, n) in self.outputs {
            m.records_out.with_label_values(&[stage, &t]).inc_by(n);
            r.records_out += n;
        }
        for (reason, n) in self.quarantined {
            m.quarantined
                .with_label_values(&[stage, reason.as_str()])
                .inc_by(n);
            r.quarantined += n;
        }
        for ((source, path), n) in self.drift {
            m.schema_drift(source, &path, n);
        }
        m.duplicates
            .with_label_values(&[stage])
            .inc_by(self.duplicates);
        r.duplicates += self.duplicates;
        m.redriven.with_label_values(&[stage]).inc_by(self.redriven);
        r.redriven += self.redriven;
        m.audit_records
            .with_label_values(&[stage])
            .inc_by(self.audit);
        r.audit_records += self.audit;
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

    #[test]
    fn slow_batch_phases_are_named_in_order() {
        let mut p = BatchPhases::new();
        p.mark("process");
        p.mark("audit_acked");
        p.mark("committed");
        let d = p.describe();
        let names: Vec<&str> = d.split(' ').filter_map(|kv| kv.split('=').next()).collect();
        assert_eq!(names, ["process", "audit_acked", "committed"]);
        assert!(d.split(' ').all(|kv| kv.ends_with("ms")), "{d}");
    }
}
