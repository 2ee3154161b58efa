//! `consentry replay plan --policy NEW.yaml`: what a policy change would
//! change at each destination, before anything is touched. A dry run: it
//! reads the normalized history, today's consent table, the disclosure
//! ledger, the audit trail and the destination topics, runs the stages
//! after normalize in process under the new policy (`stages::replay`), and
//! writes nothing to any topic nor to the vault. Exit 0 when nothing would
//! change, 3 when something would, 1 on error.

use clap::{Args, Subcommand};
use consentry_core::headers;
use consentry_core::stage::{Body, InputMeta, StageInput, StageName};
use consentry_core::topology::Topology;
use consentry_runtime::codec::SchemaCache;
use consentry_runtime::kafka::{compacted, read_all, Record};
use consentry_runtime::Connection;
use consentry_stages::replay::{
    self, fields_of, held_records, values_of, Lineage, Plan, PlanningVault,
};
use consentry_stages::Services;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Only one subject's history: its identifier value (with --system).
    #[arg(long, value_name = "ID", requires = "system")]
    pub subject: Option<String>,
    /// The identifier system of --subject (as normalize writes it, e.g.
    /// the MRN system topology.yaml maps).
    #[arg(long, value_name = "SYSTEM", requires = "subject")]
    pub system: Option<String>,
    /// The plan as one JSON document.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub services: super::services::ServiceArgs,
}

pub fn execute(global: &Global, cmd: ReplayCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ReplayCmd::Plan(args) => plan(global, args),
    }
}

fn plan(global: &Global, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let current = global.load_topology()?;
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
    let conn = global.connection()?;
    let ring = args.services.required_key_ring()?;
    let services = Services {
        keys: Some(Arc::new(ring)),
        vault: Some(Arc::new(PlanningVault)),
    };
    let selection = Selection {
        from_ms: args.from,
        to_ms: args.to,
        subject: args.subject.zip(args.system),
    };
    let history = History::read(&conn, &current, &purposes, &selection)?;
    let now_ms = super::now_ms();
    let events = history.events.len();
    let replayed = replay::replay(
        &policy,
        &services,
        &history.consent_table,
        history.events,
        &purposes,
        now_ms,
    )?;
    let held = held_records(
        history.disclosures,
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
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "policy_before": current.policy_version,
                "policy_after": policy.policy_version,
                "events": events,
                "changes": plan.changes(),
                "destinations": plan.destinations,
            })
        );
    } else {
        print_plan(&current, &policy, events, &plan);
    }
    Ok(if plan.changes() == 0 {
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

/// Which history to replay.
struct Selection {
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    /// (identifier value, system).
    subject: Option<(String, String)>,
}

impl Selection {
    fn admits(&self, r: &Record, ev: &consentry_core::envelope::CanonicalEvent) -> bool {
        // A record without a timestamp is kept: the window cannot say.
        let at = r.timestamp_ms;
        let in_window = self.from_ms.is_none_or(|f| at.is_none_or(|t| t >= f))
            && self.to_ms.is_none_or(|e| at.is_none_or(|t| t < e));
        let of_subject = self.subject.as_ref().is_none_or(|(value, system)| {
            ev.identifiers
                .iter()
                .any(|i| i.system == system.as_str() && i.value == value.as_str())
        });
        in_window && of_subject
    }
}

/// What the current deployment holds, read whole.
struct History {
    /// What normalize wrote: the input of consent-gate.
    events: Vec<StageInput>,
    consent_table: BTreeMap<String, Vec<u8>>,
    disclosures: Vec<consentry_core::disclosure::Disclosure>,
    lineage: Lineage,
    /// Disclosure id → the fields its destination record carries.
    fields: HashMap<String, BTreeSet<String>>,
    /// Disclosure id → a fingerprint of its destination record's values.
    values: HashMap<String, [u8; 32]>,
}

impl History {
    fn read(
        conn: &Connection,
        t: &Topology,
        purposes: &BTreeSet<String>,
        selection: &Selection,
    ) -> anyhow::Result<History> {
        let mut cache = SchemaCache::for_connection(conn)?;
        let gate = t
            .stage(StageName::ConsentGate.as_str())
            .ok_or_else(|| anyhow::anyhow!("the topology has no consent-gate stage"))?;
        // Every topic the plan needs, read at once: each read waits mostly
        // on the broker (metadata, watermarks, fetches per partition).
        let mut wanted: Vec<&str> = gate.inputs.iter().map(String::as_str).collect();
        wanted.extend(gate.reads.as_deref());
        wanted.extend([t.disclosure_topic.as_str(), t.audit_topic.as_str()]);
        wanted.extend(
            purposes
                .iter()
                .filter_map(|p| t.purposes.get(p))
                .map(|p| p.topic.as_str()),
        );
        wanted.sort_unstable();
        wanted.dedup();
        let topics: HashMap<&str, Vec<Record>> = std::thread::scope(|s| {
            let reads: Vec<_> = wanted
                .iter()
                .map(|topic| {
                    (
                        *topic,
                        s.spawn(move || read_all(conn, &conn.physical(topic), READ_TIMEOUT)),
                    )
                })
                .collect();
            reads
                .into_iter()
                .map(|(topic, h)| {
                    let records = h
                        .join()
                        .map_err(|_| anyhow::anyhow!("reading {topic} panicked"))??;
                    Ok((topic, records))
                })
                .collect::<anyhow::Result<_>>()
        })?;
        let read = |logical: &str| -> anyhow::Result<&[Record]> {
            Ok(topics.get(logical).map_or(&[][..], Vec::as_slice))
        };
        let mut events = Vec::new();
        for topic in &gate.inputs {
            for r in read(topic)? {
                let Some(payload) = r.payload() else { continue };
                let ev = cache
                    .decode_event(payload)
                    .map_err(|e| anyhow::anyhow!("{topic}[{}]@{}: {e}", r.partition, r.offset))?;
                if !selection.admits(r, &ev) {
                    continue;
                }
                events.push(StageInput {
                    meta: meta(topic, r),
                    body: Body::Event(Box::new(ev)),
                });
            }
        }
        let mut consent_table = BTreeMap::new();
        if let Some(table) = &gate.reads {
            for (key, value) in compacted(read(table)?) {
                // Table keys are text; a record without one is no entry.
                if let Ok(key) = std::str::from_utf8(key).map(String::from) {
                    if !key.is_empty() {
                        consent_table.insert(key, value.to_vec());
                    }
                }
            }
        }
        // Every record of the ledger, the trail and the destinations is
        // read, or there is no plan: one left out could be planned as new.
        let unreadable = |topic: &str, r: &Record, e: &dyn std::fmt::Display| {
            anyhow::anyhow!("{topic}[{}]@{}: {e}; no plan", r.partition, r.offset)
        };
        let mut disclosures = Vec::new();
        for r in read(&t.disclosure_topic)? {
            let Some(payload) = r.payload() else { continue };
            let d = cache
                .decode_disclosure(payload)
                .map_err(|e| unreadable(&t.disclosure_topic, r, &e))?;
            if purposes.contains(d.purpose.as_str()) {
                disclosures.push(d);
            }
        }
        let mut lineage = Lineage::default();
        for r in read(&t.audit_topic)? {
            let Some(payload) = r.payload() else { continue };
            let a = cache
                .decode_audit(payload)
                .map_err(|e| unreadable(&t.audit_topic, r, &e))?;
            lineage.add(&a);
        }
        let mut fields = HashMap::new();
        let mut values = HashMap::new();
        for p in purposes.iter().filter_map(|p| t.purposes.get(p)) {
            for r in read(&p.topic)? {
                let (Some(id), Some(payload)) = (r.header(headers::IDEMPOTENCY_KEY), r.payload())
                else {
                    continue;
                };
                let ev = cache
                    .decode_event(payload)
                    .map_err(|e| unreadable(&p.topic, r, &e))?;
                fields.insert(id.to_string(), fields_of(&ev));
                values.insert(id.to_string(), values_of(&ev));
            }
        }
        Ok(History {
            events,
            consent_table,
            disclosures,
            lineage,
            fields,
            values,
        })
    }
}

fn meta(topic: &str, r: &Record) -> InputMeta {
    InputMeta {
        topic: topic.to_string(),
        partition: r.partition,
        offset: r.offset,
        key: r
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(String::from),
        idempotency_key: r.header(headers::IDEMPOTENCY_KEY).map(String::from),
        correlation_id: r.header(headers::CORRELATION_ID).map(String::from),
        ..Default::default()
    }
}

fn print_plan(current: &Topology, policy: &Topology, events: usize, plan: &Plan) {
    println!(
        "replay plan: policy {} -> {} over {events} normalized events (a dry run: nothing written)",
        current.policy_version, policy.policy_version
    );
    println!();
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>10} {:>16} {:>8}",
        "purpose", "backfill", "retract", "correct", "unchanged", "consent-withheld", "current"
    );
    for d in &plan.destinations {
        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>10} {:>16} {:>8}",
            d.purpose,
            d.backfill.records,
            d.retract.records,
            d.correct.records,
            d.unchanged,
            d.consent_withheld,
            d.already_current
        );
        let list = |m: &BTreeMap<String, u64>| {
            let mut v: Vec<(&String, &u64)> = m.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v.iter()
                .map(|(f, n)| format!("{f} ({n})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !d.fields_withheld.is_empty() {
            println!("  fields withheld: {}", list(&d.fields_withheld));
        }
        if !d.fields_released.is_empty() {
            println!("  fields released: {}", list(&d.fields_released));
        }
        if !d.profile_changes.is_empty() {
            println!("  profile: {}", list(&d.profile_changes));
        }
        for (n, what) in [
            (
                d.values_changed,
                "corrections change values only (same fields)",
            ),
            (
                d.would_quarantine,
                "the new policy would quarantine: look at these first",
            ),
            (
                d.shape_unknown,
                "no longer on the topic: shape unknown, left as they are",
            ),
        ] {
            if n > 0 {
                println!("  {n} {what}");
            }
        }
        for (what, c) in [
            ("correct", &d.correct),
            ("retract", &d.retract),
            ("backfill", &d.backfill),
        ] {
            if !c.samples.is_empty() {
                println!(
                    "  e.g. {what}: internal correlation ids (for audit trace) {}",
                    c.samples.join(", ")
                );
            }
        }
    }
    println!();
    let changed = plan.destinations.iter().filter(|d| d.changes() > 0).count();
    if plan.changes() == 0 {
        println!("verdict: nothing would change at any destination.");
    } else {
        println!(
            "verdict: {} records would change at {changed} of {} destinations.",
            plan.changes(),
            plan.destinations.len()
        );
    }
}
