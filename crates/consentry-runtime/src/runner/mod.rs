//! The stage runner: every stage runs the same transaction recipe, one
//! batch at a time, in a thread of its own:
//!
//! 1. **begin** a transaction;
//! 2. **process**: decode each input, call the pure `Stage::process` (under
//!    `catch_unwind`: a record that panics a stage is quarantined), and
//!    check each outcome's dedup key against the stage's dedup store
//!    (`transaction.rs`);
//! 3. **audit acknowledged**: the batch's audit records, linked into the
//!    writer's hash chain, are sent and acknowledged before anything they
//!    describe (`audit_chain.rs`): fail closed;
//! 4. **records acknowledged**: outputs, disclosure-ledger records and
//!    sealed quarantine records, with their headers (`outbox.rs`);
//! 5. **chain head, dedup entries and state**: the writer's chain head, the
//!    keys handled and the state table's writes, only now that what they
//!    vouch for is in;
//! 6. **offsets**: the inputs' next offsets, sent to the transaction;
//! 7. **commit**; metrics are counted only after it (`counts.rs`).
//!
//! On any failure the transaction is aborted and the consumer rewound to
//! the batch's first offsets; ten failures in a row stop the process.
//! Exactly-once results do not rest on the transaction alone (see
//! `crate::dedup`): an input whose idempotency key the store already holds
//! is skipped, so a replayed batch, a retried send or an aborted
//! transaction still visible to readers never yields a second, different
//! output. `consumer.rs` holds the consumer's callbacks (lag, stalls,
//! rebalances); `stage_loop.rs` the loop around batches (taking a batch,
//! table work, idleness).

mod audit_chain;
mod consumer;
mod counts;
mod outbox;
mod stage_loop;
mod transaction;

use crate::codec::Codec;
use crate::dedup::DedupStore;
use crate::produce::{self, CountingProducer};
use crate::state::StateStore;
use crate::{panics, Connection, Metrics};
use consentry_core::audit::ChainHead;
use consentry_core::chain::{self, ChainWriter};
use consentry_core::stage::Stage;
use consentry_core::topology::{StageSpec, Topology};
use consentry_crypto::{AuditKeys, QuarantineKeys};
use consumer::StageContext;
use rdkafka::consumer::BaseConsumer;
use stage_loop::IdleBoard;
use std::collections::{BTreeMap, HashMap};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::error;

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
                let stage_name = stage.name().as_str();
                let halted = metrics.stage_halted.with_label_values(&[stage_name]);
                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    StageLoop::start(&topology, stage, &opts, metrics, board)
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
    /// When the consent table's lag was last read.
    consent_lag_read: Instant,
    /// Destination topic → its purpose (for the footprint metrics).
    destination_purpose: HashMap<String, String>,
    /// Purpose → whether its records remain PHI after de-identify.
    purpose_phi: HashMap<String, bool>,
    dedup_topic: String,
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
    dedup: DedupStore,
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

const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
