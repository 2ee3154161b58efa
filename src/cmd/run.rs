//! `consentry run <stage|all>`: run stages until SIGTERM, or until idle
//! with `--exit-when-idle`, then print what each stage did.

use clap::builder::PossibleValue;
use clap::Args;
use clap::ValueEnum;
use consentry_core::stage::StageName;
use consentry_crypto::{AuditKeys, QuarantineKeys};
use consentry_runtime::runner::{self, RunOptions, StageReport};
use consentry_runtime::{shutdown, Metrics};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::Global;

#[derive(Args)]
pub struct RunArgs {
    /// One or more stages, or all of them.
    #[arg(required = true)]
    pub stages: Vec<StageChoice>,
    /// Exit cleanly once no input has arrived for this many seconds.
    #[arg(long, value_name = "SECS")]
    pub exit_when_idle: Option<f64>,
    /// Where to serve Prometheus metrics (port 0 picks a free port).
    #[arg(long, env = "CONSENTRY_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    #[command(flatten)]
    pub metrics_tls: super::tls::MetricsTlsArgs,
    /// This instance's id, unique among instances of a stage (e.g. the pod name).
    #[arg(long, env = "CONSENTRY_INSTANCE", default_value = "0")]
    pub instance: String,
    /// Most records per transaction.
    #[arg(long, default_value_t = 500)]
    pub batch_max: usize,
    /// Longest wait to fill a batch, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub batch_wait_ms: u64,
    /// Seconds between checkpoint records of the audit chain heads (and
    /// one at a clean stop).
    #[arg(long, default_value_t = 10.0)]
    pub checkpoint_secs: f64,
    #[command(flatten)]
    pub services: super::services::ServiceArgs,
}

/// What `run` is asked to run: one stage, or every stage in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageChoice {
    All,
    One(StageName),
}

const CHOICES: [StageChoice; 7] = [
    StageChoice::All,
    StageChoice::One(StageName::ConsentLedger),
    StageChoice::One(StageName::Normalize),
    StageChoice::One(StageName::ConsentGate),
    StageChoice::One(StageName::DeIdentify),
    StageChoice::One(StageName::Tokenize),
    StageChoice::One(StageName::Route),
];

impl ValueEnum for StageChoice {
    fn value_variants<'a>() -> &'a [Self] {
        &CHOICES
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        match self {
            StageChoice::All => Some(PossibleValue::new("all").help("every stage, in one process")),
            StageChoice::One(stage) => stage.to_possible_value(),
        }
    }
}

pub fn execute(global: &Global, args: RunArgs) -> anyhow::Result<ExitCode> {
    let topology = Arc::new(global.load_topology()?);
    let mut names: Vec<StageName> = Vec::new();
    for choice in &args.stages {
        match choice {
            StageChoice::All => names.extend(StageName::ALL),
            StageChoice::One(stage) => names.push(*stage),
        }
    }
    // Pipeline order (the enum's).
    names.sort();
    names.dedup();
    let conn = global.connection()?;
    args.services.check_transport(&conn)?;
    let ring = args.services.required_key_ring()?;
    let quarantine_keys = Arc::new(QuarantineKeys::new(&ring)?);
    let audit_keys = Arc::new(AuditKeys::new(&ring)?);
    // The vault only for the stages that use it (the ledger shreds; a vault file admits one
    // process at a time).
    let (services, vault) = if names.iter().any(|n| n.uses_vault()) {
        args.services.services(ring)?
    } else {
        // The gate's subject pseudonyms need the ring, not the vault.
        let services = consentry_stages::Services {
            keys: Some(Arc::new(ring)),
            vault: None,
        };
        (services, None)
    };
    let stages = names
        .iter()
        .map(|n| {
            consentry_stages::build(*n, &topology, &services)
                .map_err(|e| anyhow::anyhow!("stage '{n}' cannot start: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stop = shutdown::install()?;
    let metrics = Metrics::new();
    let addr = metrics.serve(&args.metrics_addr, args.metrics_tls.config()?)?;
    tracing::info!(%addr, "serving metrics on /metrics");
    if let Some(vault) = vault {
        metrics.watch_dependency("vault_store", move || vault.ping_store());
    }
    let exit_when_idle = match args.exit_when_idle {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(_) => anyhow::bail!("--exit-when-idle takes a positive number of seconds"),
        None => None,
    };
    let opts = RunOptions {
        conn,
        instance: args.instance,
        batch_max: args.batch_max.max(1),
        batch_wait: Duration::from_millis(args.batch_wait_ms.max(1)),
        exit_when_idle,
        quarantine_keys,
        audit_keys,
        checkpoint_every: match args.checkpoint_secs {
            s if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
            _ => anyhow::bail!("--checkpoint-secs takes a positive number of seconds"),
        },
    };
    let reports = runner::run_stages(Arc::clone(&topology), stages, opts, metrics, stop)?;
    print_reports(&reports);
    Ok(ExitCode::SUCCESS)
}

fn print_reports(reports: &[StageReport]) {
    println!(
        "{:<14} {:>8} {:>8} {:>12} {:>11} {:>8} {:>10} {:>8} {:>9}",
        "stage",
        "in",
        "out",
        "quarantined",
        "duplicates",
        "audit",
        "committed",
        "aborted",
        "redriven"
    );
    for r in reports {
        println!(
            "{:<14} {:>8} {:>8} {:>12} {:>11} {:>8} {:>10} {:>8} {:>9}",
            r.stage,
            r.records_in,
            r.records_out,
            r.quarantined,
            r.duplicates,
            r.audit_records,
            r.transactions_committed,
            r.transactions_aborted,
            r.redriven
        );
    }
}
