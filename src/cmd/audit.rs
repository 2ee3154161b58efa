//! `consentry audit verify | trace | disclosures`: the auditor's questions.
//!
//! - `verify` reads the audit topic (or a copy of it) and checks every
//!   writer's hash chain with the audit chain key (`core::chain`): modified,
//!   missing, reordered and injected records and truncated tails are named;
//!   retried sends and aborted attempts are tolerated and counted. Exit 1 on
//!   any break.
//! - `trace` reconstructs one event's path across the stages from its
//!   correlation id or source event id.
//! - `disclosures` answers a patient's request for an accounting of
//!   disclosures from the disclosure ledger. The subject's identifier is
//!   turned into its internal pseudonym here and looked up as that; it is
//!   never printed or looked up in plain text.

use clap::{Args, Subcommand};
use consentry_core::audit::AuditRecord;
use consentry_core::audit::Decision;
use consentry_core::avro::{self, split_wire};
use consentry_core::chain::{self, Break, Position, ReadRecord};
use consentry_core::disclosure::Disclosure;
use consentry_core::keys::{self, ContentDigest};
use consentry_core::stage::StageName;
use consentry_crypto::{AuditKeys, CheckpointKeys, SignatureCheck};
use consentry_runtime::codec::SchemaCache;
use consentry_runtime::kafka::read_all;
use consentry_stages::subject::SubjectPseudonyms;
use consentry_stages::time::format_iso;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::services::ServiceArgs;
use super::Global;

const READ_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Verify every writer's hash chain; exit 1 on any break.
    Verify(VerifyArgs),
    /// One event's path across the stages: what each decided and changed.
    Trace(TraceArgs),
    /// A subject's accounting of disclosures: every destination, purpose,
    /// time and policy under which their data left.
    Disclosures(DisclosuresArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Read this topic (logical name) instead of the topology's audit topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Verify with the checkpoint public keys alone (`consentry keys
    /// audit-public-key`): signatures, the records each checkpoint vouches
    /// for (by their bytes), and the heads topic, without any key that
    /// could forge a record. Without it, the key ring checks every
    /// record's hash too.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// Machine-readable report.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub services: ServiceArgs,
}

#[derive(Args)]
pub struct TraceArgs {
    /// A correlation id, a source event id (hl7v2:<MSH-3>:<MSH-10>, fhir:...),
    /// or a destination record's key, correlation-id, idempotency-key or event_id.
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DisclosuresArgs {
    /// The subject's identifier value (tokenized here, never looked up as is).
    #[arg(long)]
    pub subject: String,
    /// The identifier's system (default: the topology's subject system).
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub services: ServiceArgs,
}

pub fn execute(global: &Global, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Verify(a) => verify(global, a),
        AuditCmd::Trace(a) => trace(global, a),
        AuditCmd::Disclosures(a) => disclosures(global, a),
    }
}

fn verify(global: &Global, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let topology = global.load_topology()?;
    // With the public keys only, no record's HMAC can be checked (nor
    // forged): the chains' links, the signatures and the segments can.
    let (keys, public) = match &args.public_key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {}", path.display(), e.kind()))?;
            let public = CheckpointKeys::from_json(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            (None, public)
        }
        None => {
            let ring = args.services.required_key_ring()?;
            let keys = AuditKeys::new(&ring)?;
            let public = keys.checkpoint_public_keys();
            (Some(keys), public)
        }
    };
    let conn = global.connection()?;
    let topic = args.topic.unwrap_or(topology.audit_topic.clone());
    let (v, _) = check_trail(&conn, &topology, &topic, keys.as_ref(), &public)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("audit topic '{topic}': {} records", v.records);
        println!(
            "{:<40} {:>8} {:>8} {:>11} {:>8} {:>7}",
            "writer", "records", "last #", "duplicates", "aborted", "breaks"
        );
        for w in &v.writers {
            println!(
                "{:<40} {:>8} {:>8} {:>11} {:>8} {:>7}",
                w.writer,
                w.records,
                w.last_sequence.map_or("-".into(), |s| s.to_string()),
                w.duplicates,
                w.aborted_attempts,
                w.breaks.len()
            );
        }
        for b in v.all_breaks() {
            println!("BREAK {b}");
        }
        if v.is_clean() {
            println!("verified: every chain is intact");
        }
    }
    Ok(if v.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read_audit(global: &Global) -> anyhow::Result<Vec<AuditRecord>> {
    let topology = global.load_topology()?;
    let conn = global.connection()?;
    let messages = read_all(&conn, &conn.physical(&topology.audit_topic), READ_TIMEOUT)?;
    let mut cache = SchemaCache::for_connection(&conn)?;
    Ok(messages
        .iter()
        .filter_map(|m| cache.decode_audit(m.payload()?).ok())
        .collect())
}

fn trace(global: &Global, args: TraceArgs) -> anyhow::Result<ExitCode> {
    let records = read_audit(global)?;
    // An event id names the source event; its correlation id then finds
    // every stage's records (later stages no longer carry the event id).
    // A destination's id (keyed per purpose: the recipient's record key,
    // `correlation-id` or `idempotency-key` header) is in route's record
    // of the output, beside the internal correlation id it came from.
    let mut correlation: BTreeSet<String> = BTreeSet::from([args.id.clone()]);
    for r in &records {
        let names_output = r.outputs.iter().any(|o| {
            o.correlation_id.as_deref() == Some(args.id.as_str())
                || o.event_id.as_deref() == Some(args.id.as_str())
                || o.idempotency_key == args.id
        });
        if r.event_id.as_deref() == Some(args.id.as_str()) || names_output {
            if let Some(c) = &r.correlation_id {
                correlation.insert(c.to_string());
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut path: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| {
            r.correlation_id
                .as_deref()
                .is_some_and(|c| correlation.contains(c))
                || r.event_id.as_deref() == Some(args.id.as_str())
        })
        // Retried batches write a decision again: show it once.
        .filter(|r| seen.insert(r.audit_id.to_string()))
        .collect();
    let stage_rank = |s: &str| StageName::parse(s).map_or(usize::MAX, |n| n as usize);
    path.sort_by(|a, b| {
        (stage_rank(&a.stage), &a.purpose, a.processing_time_ms).cmp(&(
            stage_rank(&b.stage),
            &b.purpose,
            b.processing_time_ms,
        ))
    });
    if path.is_empty() {
        eprintln!(
            "no audit record has correlation id, event id or destination id '{}'",
            args.id
        );
        return Ok(ExitCode::from(2));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&path)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<13} {:<19} {:<11} {:<20} {:<22} {:<10} transformations",
        "stage", "purpose", "decision", "reason", "policy", "consent"
    );
    for r in &path {
        let steps: Vec<String> = r
            .transformations
            .iter()
            .map(|t| {
                let mut s = format!("{} {}", t.method, t.path);
                if let Some(to) = &t.target_path {
                    s.push_str(&format!("->{to}"));
                }
                if !t.params.is_empty() {
                    s.push_str(&format!(" ({})", t.params));
                }
                s
            })
            .collect();
        let consent = match (&r.consent_reference, &r.consent_version) {
            (Some(c), Some(v)) => format!("{c}@{v}"),
            (Some(c), None) => c.to_string(),
            _ => "-".into(),
        };
        println!(
            "{:<13} {:<19} {:<11} {:<20} {:<22} {:<10} {}",
            r.stage,
            r.purpose.as_deref().unwrap_or("-"),
            r.decision,
            r.reason_code,
            r.policy_version,
            consent,
            if steps.is_empty() {
                "-".into()
            } else {
                steps.join("; ")
            }
        );
    }
    let stopped = path.iter().find(|r| r.decision == Decision::Quarantine);
    match stopped {
        Some(r) => println!(
            "stopped at {}: {} (quarantine id {})",
            r.stage, r.reason_code, r.audit_id
        ),
        None => {
            let delivered: BTreeSet<&str> = path
                .iter()
                .filter(|r| r.stage == "route")
                .flat_map(|r| r.outputs.iter().map(|o| o.topic.as_str()))
                .collect();
            println!(
                "delivered to: {}",
                if delivered.is_empty() {
                    "nothing yet".to_string()
                } else {
                    delivered.into_iter().collect::<Vec<_>>().join(", ")
                }
            );
            // Purposes consent kept it from: at the gate or at route.
            let denied: Vec<String> = path
                .iter()
                .filter(|r| r.decision == Decision::Deny)
                .map(|r| {
                    format!(
                        "{} at {} ({})",
                        r.purpose.as_deref().unwrap_or("-"),
                        r.stage,
                        r.reason_code
                    )
                })
                .collect();
            if !denied.is_empty() {
                println!("withheld by consent: {}", denied.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn disclosures(global: &Global, args: DisclosuresArgs) -> anyhow::Result<ExitCode> {
    let topology = global.load_topology()?;
    let ring = args.services.required_key_ring()?;
    let system = args
        .system
        .unwrap_or_else(|| topology.identity.subject_system.clone());
    let subject_key = keys::subject_key(&system, args.subject.trim());
    let tokens: BTreeSet<String> = SubjectPseudonyms::new(&ring)
        .map_err(|e| anyhow::anyhow!(e))?
        .all_versions(&ring, &subject_key)
        .into_iter()
        .collect();
    let conn = global.connection()?;
    let messages = read_all(
        &conn,
        &conn.physical(&topology.disclosure_topic),
        READ_TIMEOUT,
    )?;
    let mut cache = SchemaCache::for_connection(&conn)?;
    let mut seen = BTreeSet::new();
    let mut found: Vec<Disclosure> = Vec::new();
    for m in &messages {
        let Some((id, body)) = m.payload().and_then(|p| split_wire(p).ok()) else {
            continue;
        };
        let Ok(writer) = cache.writer(id) else {
            continue;
        };
        let Ok(d) = avro::decode_disclosure(body, writer) else {
            continue;
        };
        // A retried batch writes a disclosure again: count it once.
        if tokens.contains(d.subject_token.as_str()) && seen.insert(d.disclosure_id.to_string()) {
            found.push(d);
        }
    }
    found.sort_by_key(|d| (d.disclosed_at_ms, d.purpose.clone()));
    if args.json {
        let rows: Vec<_> = found
            .iter()
            .map(|d| {
                serde_json::json!({
                    "disclosed_at": format_iso(d.disclosed_at_ms),
                    "purpose": d.purpose,
                    "destination": d.destination,
                    "recipient": topology.destinations.get(d.destination.as_str()).map(|x| x.system.as_str()),
                    "topic": d.topic,
                    "event_type": d.event_type,
                    "policy_version": d.policy_version,
                    "profile": d.profile,
                    "phi": d.phi,
                    "consent_reference": d.consent_reference,
                    "consent_version": d.consent_version,
                    "correlation_id": d.correlation_id,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("accounting of disclosures: {} records", found.len());
    println!(
        "{:<24} {:<19} {:<40} {:<10} {:<22} {:<18} {:<4}",
        "disclosed at", "purpose", "recipient", "event", "policy", "profile", "phi"
    );
    for d in &found {
        let recipient = topology
            .destinations
            .get(d.destination.as_str())
            .map_or(d.destination.as_str(), |x| x.system.as_str());
        println!(
            "{:<24} {:<19} {:<40} {:<10} {:<22} {:<18} {:<4}",
            format_iso(d.disclosed_at_ms),
            d.purpose,
            recipient,
            d.event_type,
            d.policy_version,
            d.profile,
            if d.phi { "yes" } else { "no" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads `topic` and verifies its chains (`audit verify`): each record's
/// hash under `keys` (without them, links, signatures and segments only),
/// and every writer's signed head. Returns the verification and the
/// records as read, each with its own hash check.
pub(crate) fn check_trail(
    conn: &consentry_runtime::Connection,
    topology: &consentry_core::topology::Topology,
    topic: &str,
    keys: Option<&AuditKeys>,
    public: &CheckpointKeys,
) -> anyhow::Result<(chain::Verification, Vec<ReadRecord>)> {
    let messages = read_all(conn, &conn.physical(topic), READ_TIMEOUT)?;
    let mut cache = SchemaCache::for_connection(conn)?;
    let mut read = Vec::with_capacity(messages.len());
    let mut undecodable = Vec::new();
    for m in &messages {
        let position = Position {
            partition: m.partition,
            offset: m.offset,
        };
        let payload = m.payload().unwrap_or_default();
        let decoded = split_wire(payload).ok().and_then(|(id, body)| {
            let writer = cache.writer(id).ok()?;
            let record = avro::decode_audit(body, writer).ok()?;
            Some((body, record))
        });
        let Some((body, record)) = decoded else {
            undecodable.push(Break::Unchained {
                audit_id: "<undecodable>".into(),
                at: position,
            });
            continue;
        };
        let mut d = ContentDigest::new();
        d.update(payload);
        read.push(ReadRecord {
            check: match keys {
                Some(keys) => chain::check_hash(body, &record, |v, b| keys.chain_mac(v, b)),
                None => chain::HashCheck::Unverifiable,
            },
            record,
            position,
            digest: d.finish(),
        });
    }
    // Every writer's latest signed checkpoint, from outside the chains.
    let heads: Vec<chain::SignedHead> = read_all(
        conn,
        &conn.physical(&topology.audit_heads_topic),
        READ_TIMEOUT,
    )?
    .iter()
    .filter_map(|m| serde_json::from_slice::<chain::SignedHead>(m.payload()?).ok())
    .fold(BTreeMap::new(), |mut latest, h| {
        // Compaction keeps the last per writer; before it runs, the
        // highest sequence is the latest.
        let keep = latest
            .get(&h.writer_id)
            .is_none_or(|old: &chain::SignedHead| old.sequence < h.sequence);
        if keep {
            latest.insert(h.writer_id.clone(), h);
        }
        latest
    })
    .into_values()
    .collect();
    let check = |version: u32, message: &[u8], signature: &str| match public
        .verify(version, message, signature)
    {
        SignatureCheck::Valid => chain::SignatureVerdict::Valid,
        SignatureCheck::Invalid => chain::SignatureVerdict::Invalid,
        SignatureCheck::UnknownVersion => chain::SignatureVerdict::UnknownKey,
    };
    let options = chain::VerifyOptions {
        signatures: Some(&check),
        heads,
    };
    let records = read.clone();
    let mut v = chain::verify_with(read, &options);
    // Without the chain key every record is unverifiable by its hash:
    // that is the mode, not a break.
    if keys.is_none() {
        for w in &mut v.writers {
            w.breaks
                .retain(|b| !matches!(b, chain::Break::Unverifiable { .. }));
        }
    }
    v.breaks.extend(undecodable);
    Ok((v, records))
}
