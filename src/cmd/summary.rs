//! `consentry summary`: what the topics hold, read from the topics
//! themselves (not from counters): per topic records and distinct
//! idempotency keys, audit records per stage and decision, quarantine per
//! reason. `make run` ends with it.

use clap::Args;
use consentry_core::consent::ConsentEntry;
use consentry_core::headers;
use consentry_core::stage::StageName;
use consentry_core::topology::TopicRole;
use consentry_runtime::codec::SchemaCache;
use consentry_runtime::kafka::{compacted, read_all};
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use super::Global;

#[derive(Args)]
pub struct SummaryArgs {
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Count the idempotency ledgers' records too (what each stage writes
    /// to remember what it handled; left out by default: they are large).
    #[arg(long)]
    pub ledgers: bool,
}

pub fn execute(global: &Global, args: SummaryArgs) -> anyhow::Result<ExitCode> {
    let topology = global.load_topology()?;
    let conn = global.connection()?;
    let timeout = Duration::from_secs(60);

    let mut topics = Vec::new();
    let mut tables = Vec::new();
    let mut consent: BTreeMap<&'static str, usize> = BTreeMap::new();
    // normalize's table: its patient index and held records.
    let patient_index = topology.stage("normalize").and_then(|s| s.state.clone());
    for spec in topology
        .topics
        .values()
        .filter(|t| args.ledgers || !matches!(t.role, TopicRole::Ledger))
    {
        let msgs = read_all(&conn, &conn.physical(&spec.name), timeout)?;
        let distinct: BTreeSet<&str> = msgs
            .iter()
            .filter_map(|m| m.header(headers::IDEMPOTENCY_KEY))
            .collect();
        topics.push((spec.name.clone(), spec.role, msgs.len(), distinct.len()));
        if spec.role == TopicRole::ConsentState {
            for e in compacted(&msgs)
                .values()
                .filter_map(|v| ConsentEntry::decode(v))
            {
                *consent.entry(e.status.as_str()).or_default() += 1;
            }
        }
        if patient_index.as_ref() == Some(&spec.name) {
            let live = compacted(&msgs);
            let count = |prefix: &[u8]| live.keys().filter(|k| k.starts_with(prefix)).count();
            tables.push((spec.name.clone(), count(b"idx/"), count(b"held/")));
        }
    }

    let mut audit: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut cache = SchemaCache::for_connection(&conn)?;
    let mut undecodable = 0;
    for m in read_all(&conn, &conn.physical(&topology.audit_topic), timeout)? {
        match m.payload().map(|p| cache.decode_audit(p)) {
            Some(Ok(a)) => {
                *audit
                    .entry((a.stage.into(), a.decision.as_str().into()))
                    .or_default() += 1
            }
            _ => undecodable += 1,
        }
    }
    let mut quarantine: BTreeMap<(String, String), usize> = BTreeMap::new();
    for m in read_all(&conn, &conn.physical(&topology.quarantine_topic), timeout)? {
        let stage = m.header(headers::STAGE).unwrap_or("?").to_string();
        let reason = m.header(headers::REASON_CODE).unwrap_or("?").to_string();
        *quarantine.entry((stage, reason)).or_default() += 1;
    }

    if args.json {
        let v = serde_json::json!({
            "policy_version": topology.policy_version,
            "topic_prefix": conn.topic_prefix,
            "topics": topics.iter().map(|(n, r, c, d)| serde_json::json!({"topic": n, "role": format!("{r:?}"), "records": c, "distinct_idempotency_keys": d})).collect::<Vec<_>>(),
            "audit": audit.iter().map(|((s, d), n)| serde_json::json!({"stage": s, "decision": d, "records": n})).collect::<Vec<_>>(),
            "audit_undecodable": undecodable,
            "quarantine": quarantine.iter().map(|((s, r), n)| serde_json::json!({"stage": s, "reason": r, "records": n})).collect::<Vec<_>>(),
            "consent_table": consent,
            "state": tables.iter().map(|(t, idx, held)| serde_json::json!({"topic": t, "patients_indexed": idx, "records_held": held})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }

    println!(
        "Consentry summary — policy {}, topic prefix '{}'",
        topology.policy_version, conn.topic_prefix
    );
    println!();
    println!(
        "{:<28} {:<15} {:>9} {:>15}",
        "topic", "role", "records", "distinct keys"
    );
    for (n, r, c, d) in &topics {
        // Raw feeds carry no idempotency keys until normalize assigns them.
        let distinct = if consentry_runtime::codec::is_raw(*r) && *r != TopicRole::Quarantine {
            "-".to_string()
        } else {
            d.to_string()
        };
        println!(
            "{:<28} {:<15} {:>9} {:>15}",
            n,
            format!("{r:?}"),
            c,
            distinct
        );
    }
    println!();
    println!("audit records by stage and decision:");
    for stage in StageName::ALL.map(StageName::as_str) {
        let row: Vec<String> = audit
            .iter()
            .filter(|((s, _), _)| s == stage)
            .map(|((_, d), n)| format!("{d} {n}"))
            .collect();
        let total: usize = audit
            .iter()
            .filter(|((s, _), _)| s == stage)
            .map(|(_, n)| n)
            .sum();
        println!(
            "  {:<14} {:>7}  ({})",
            stage,
            total,
            if row.is_empty() {
                "none".into()
            } else {
                row.join(", ")
            }
        );
    }
    if undecodable > 0 {
        println!("  undecodable audit records: {undecodable}");
    }
    println!();
    if !consent.is_empty() {
        let row: Vec<String> = consent.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!(
            "consent table (subject x purpose x channel): {}",
            row.join(", ")
        );
    }
    for (t, idx, held) in &tables {
        println!("{t}: {idx} patients indexed, {held} records held for a patient not seen yet");
    }
    println!();
    if quarantine.is_empty() {
        println!("quarantine: empty");
    } else {
        println!("quarantine by stage and reason:");
        for ((s, r), n) in &quarantine {
            println!("  {s:<14} {r:<22} {n:>6}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
