//! `consentry replay`: what a policy change would change at each
//! destination (`plan`, a dry run), and bringing every destination in line
//! with it (`apply`, exactly once). Both read the normalized history,
//! today's consent table, the disclosure ledger, the audit trail and the
//! destination topics (`history`), and run the stages after normalize in
//! process under the new policy (`stages::replay`). A plan writes nothing
//! to any topic nor to the vault; exit 0 when nothing would change, 3 when
//! something would, 1 on error. Apply writes corrections, retractions and
//! backfills (`apply`).

mod apply;
mod history;
mod print;
mod progress;

use clap::{Args, Subcommand};
use consentry_core::topology::Topology;
use consentry_runtime::Connection;
use consentry_stages::replay::{self, held_records, Plan, PlanningVault, Replayed};
use consentry_stages::Services;
use history::{History, Selection};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::Global;

/// Exit code of a plan that would change something.
const CHANGES: u8 = 3;
const READ_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Subcommand)]
pub enum ReplayCmd {
    /// What a new policy would change at each destination (a dry run).
    Plan(PlanArgs),
    /// Performs the plan: corrections, retractions and backfills, each
    /// once, audited; run it again to resume after a stop.
    Apply(ApplyArgs),
}

#[derive(Args)]
pub struct PlanArgs {
    /// The new topology (policy) to plan against; the current one is
    /// --topology.
    #[arg(long, value_name = "NEW.yaml")]
    pub policy: PathBuf,
    /// Only these purposes (repeatable); every purpose of either policy
    /// otherwise.
    #[arg(long = "purpose", value_name = "P")]
    pub purposes: Vec<String>,
    /// Only history normalize wrote at or after this time (RFC 3339, or a
    /// date).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<i64>,
    /// Only history normalize wrote before this time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<i64>,
    /// Replay from the raw source topics, normalized again under the new
    /// policy (needed when the mapping itself changed: a segment now
    /// accepted, a code system mapped); the normalized topic otherwise.
    #[arg(long, conflicts_with = "subject")]
    pub from_source: bool,
    /// Only one subject's history: its identifier value (with --system).
    #[arg(long, value_name = "ID", requires = "system")]
    pub subject: Option<String>,
    /// The identifier system of --subject (as normalize writes it, e.g.
    /// the MRN system topology.yaml maps).
    #[arg(long, value_name = "SYSTEM", requires = "subject")]
    pub system: Option<String>,
    /// The plan (and with apply, its progress and result) as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub services: super::services::ServiceArgs,
}

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Units of work per transaction.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// At most this many units per second (spare a destination a flood).
    #[arg(long, value_name = "UNITS_PER_S")]
    pub max_rate: Option<f64>,
}

pub fn execute(global: &Global, cmd: ReplayCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ReplayCmd::Plan(args) => plan(global, args),
        ReplayCmd::Apply(args) => apply::apply(global, args),
    }
}

/// A replay worked out: both policies, the history read, what the new
/// policy does with it and the plan.
struct Worked {
    current: Topology,
    policy: Topology,
    purposes: BTreeSet<String>,
    selection: Selection,
    events: usize,
    history: History,
    replayed: Replayed,
    plan: Plan,
}

/// What a replay is about, before anything is read: both policies, the
/// purposes and the selection.
struct Setup {
    current: Topology,
    policy: Topology,
    /// The new policy's bytes as read (part of the replay id).
    policy_bytes: Vec<u8>,
    purposes: BTreeSet<String>,
    selection: Selection,
}

fn setup(global: &Global, args: &PlanArgs) -> anyhow::Result<Setup> {
    let current = global.load_topology()?;
    let policy_bytes = std::fs::read(&args.policy).map_err(|e| {
        anyhow::anyhow!("cannot read policy {}: {}", args.policy.display(), e.kind())
    })?;
    let policy = Topology::load(&args.policy).map_err(|e| {
        anyhow::anyhow!(
            "invalid policy {} (nothing was read):\n{e}",
            args.policy.display()
        )
    })?;
    if policy.policy_version == current.policy_version {
        // Records carry the version they were shaped under; with the same
        // version, what running stages wrote under the new policy cannot
        // be told from what they wrote before it.
        eprintln!(
            "warning: the new policy keeps policy_version {:?}; give it a version of its own before rolling it out",
            policy.policy_version
        );
    }
    let every: BTreeSet<String> = current
        .purposes
        .keys()
        .chain(policy.purposes.keys())
        .cloned()
        .collect();
    let purposes: BTreeSet<String> = if args.purposes.is_empty() {
        every
    } else {
        for p in &args.purposes {
            anyhow::ensure!(
                every.contains(p),
                "no purpose '{p}' in either policy; purposes: {}",
                every.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        args.purposes.iter().cloned().collect()
    };
    let selection = Selection {
        from_ms: args.from,
        to_ms: args.to,
        subject: args.subject.clone().zip(args.system.clone()),
        from_source: args.from_source,
    };
    Ok(Setup {
        current,
        policy,
        policy_bytes,
        purposes,
        selection,
    })
}

/// Reads the history and works out the plan. With `services` the stages
/// use the real vault (apply); without, a planning vault that remembers
/// nothing (plan).
fn work_out(
    conn: &Connection,
    args: &PlanArgs,
    setup: Setup,
    services: Option<Services>,
) -> anyhow::Result<Worked> {
    let Setup {
        current,
        policy,
        purposes,
        selection,
        ..
    } = setup;
    let services = match services {
        Some(s) => s,
        None => Services {
            keys: Some(Arc::new(args.services.required_key_ring()?)),
            vault: Some(Arc::new(PlanningVault)),
        },
    };
    let mut history = History::read(conn, &current, &purposes, &selection)?;
    let now_ms = super::now_ms();
    let events = history.events.len();
    let replayed = replay::replay(
        &policy,
        &services,
        &history.consent_table,
        (
            selection.history_from(),
            std::mem::take(&mut history.events),
        ),
        &purposes,
        now_ms,
    )?;
    let held = held_records(
        std::mem::take(&mut history.disclosures),
        &history.lineage,
        &history.fields,
        &history.values,
    );
    // A disclosure the plan cannot place could be planned as new: a second
    // disclosure. No plan rather than a wrong one.
    anyhow::ensure!(
        held.unmatched.is_empty(),
        "disclosures whose event the audit trail does not name, by purpose: {:?}; no plan (is the audit topic whole?)",
        held.unmatched
    );
    let plan = replay::compare(&held.records, &replayed, &purposes);
    Ok(Worked {
        current,
        policy,
        purposes,
        selection,
        events,
        history,
        replayed,
        plan,
    })
}

fn plan(global: &Global, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let conn = global.connection()?;
    let w = work_out(&conn, &args, setup(global, &args)?, None)?;
    let refusals = apply::schema_refusals(&conn, &w.policy, &w.purposes)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "policy_before": w.current.policy_version,
                "policy_after": w.policy.policy_version,
                "events": w.events,
                "history": w.selection.history_name(),
                "changes": w.plan.changes(),
                "destinations": w.plan.destinations,
                "schema_refusals": refusals,
            })
        );
    } else {
        print::print_plan(&w.current, &w.policy, &w.selection, w.events, &w.plan);
        print::print_refusals(&refusals);
    }
    Ok(if w.plan.changes() == 0 && refusals.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(CHANGES)
    })
}

fn parse_time(s: &str) -> Result<i64, String> {
    consentry_stages::time::parse_fhir_datetime(s).ok_or_else(|| {
        format!("'{s}' is not a time: give RFC 3339 (2026-12-01T00:00:00Z) or a date")
    })
}
