//! `consentry replay apply`: performs a plan. Each action is one unit of a
//! transactional job (`runtime::job`) under the replay's own chain and
//! dedup store (`ledger.replay`):
//! - a correction: route's record under the new policy, with `replay-id`
//!   and `supersedes` headers, and its disclosure-ledger entry;
//! - a retraction: a notice with ids only, and a ledger entry for it;
//! - a backfill: route's record, its ledger entry and route's state
//!   entries (so a later revocation reaches the destination).
//!
//! Every unit's audit record carries the replay id and both policy
//! versions. The replay id follows from the change and the selection, so
//! the same command run again resumes: units already written are skipped.
//! Nothing is written while the registry would refuse a destination's new
//! schema.

use super::{work_out, ApplyArgs, Worked};
use consentry_core::audit::{AuditOutput, AuditRecord, Decision};
use consentry_core::disclosure::Disclosure;
use consentry_core::headers::{self, Pairs};
use consentry_core::keys;
use consentry_core::stage::StageName;
use consentry_core::topology::Topology;
use consentry_core::ReasonCode;
use consentry_crypto::audit::AuditKeys;
use consentry_runtime::codec::Codec;
use consentry_runtime::job::{JobOptions, JobRecord, JobUnit, TransactionalJob};
use consentry_runtime::registry::{RegistryClient, RegistryError};
use consentry_runtime::Connection;
use consentry_stages::replay::{replay_id, retraction_notice, Action, RECORD_RETRACTED};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cmd::Global;

/// The replay job's dedup store (a `ledger` topic of the topology).
pub const REPLAY_LEDGER: &str = "ledger.replay";
/// What audit records and the records replay writes name as their writer.
const WRITER: &str = "replay";
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// A destination schema the registry would refuse.
#[derive(Debug, Serialize)]
pub struct SchemaRefusal {
    pub topic: String,
    pub subject: String,
    pub reason: String,
}

/// Checks each selected purpose's destination schema under `policy`
/// against what the registry holds.
pub fn schema_refusals(
    conn: &Connection,
    policy: &Topology,
    purposes: &BTreeSet<String>,
) -> anyhow::Result<Vec<SchemaRefusal>> {
    let registry = RegistryClient::for_connection(conn)?;
    let mut out = Vec::new();
    for topic in destination_topics(policy, purposes) {
        let Some(schema) = conn.schema_text(policy, &topic) else {
            continue;
        };
        let subject = conn.subject(&topic);
        if !registry.subject_exists(&subject)? {
            continue;
        }
        match registry.check_compatible(&subject, &schema, consentry_runtime::admin::COMPATIBILITY)
        {
            Ok(()) => {}
            Err(RegistryError::Incompatible { reason, .. }) => out.push(SchemaRefusal {
                topic,
                subject,
                reason,
            }),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn destination_topics(policy: &Topology, purposes: &BTreeSet<String>) -> BTreeSet<String> {
    purposes
        .iter()
        .filter_map(|p| policy.purposes.get(p))
        .map(|p| p.topic.clone())
        .collect()
}

/// What an apply wrote, by kind.
#[derive(Debug, Default, Serialize)]
struct Applied {
    corrections: u64,
    retractions: u64,
    backfills: u64,
    /// Units an earlier run of the same replay wrote.
    already_written: u64,
    /// Wall time of the writing (the history read and replayed before it
    /// not included).
    write_seconds: f64,
}

pub fn apply(global: &Global, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let conn = global.connection()?;
    args.plan.services.check_transport(&conn)?;
    let ring = args.plan.services.required_key_ring()?;
    let audit_keys = Arc::new(AuditKeys::new(&ring)?);
    let (services, vault) = args.plan.services.services(ring)?;
    anyhow::ensure!(
        vault.is_some(),
        "replay apply needs the token vault (--vault or CONSENTRY_VAULT): corrections and backfills carry the tokens the live pipeline issued"
    );
    let stop = consentry_runtime::shutdown::install()?;
    let w = work_out(global, &args.plan, Some(services))?;
    let refusals = schema_refusals(&conn, &w.policy, &w.purposes)?;
    if !refusals.is_empty() {
        super::print::print_refusals(&refusals);
        anyhow::bail!(
            "the schema registry would refuse {} destination schema(s); nothing was written",
            refusals.len()
        );
    }
    let id = replay_id(
        &w.current.policy_version,
        &w.policy.policy_version,
        &w.policy_bytes,
        &format!("{} purposes={:?}", w.selection.describe(), w.purposes),
    );
    let total = w.plan.actions.len();
    let mut applied = Applied::default();
    if total > 0 {
        let writer = Writer::open(&conn, &w, &id, audit_keys)?;
        let pace = Pace {
            batch_size: args.batch_size as usize,
            max_rate: args.max_rate.filter(|r| r.is_finite() && *r > 0.0),
        };
        applied = writer.run(&w, &pace, args.plan.json, &stop)?;
    }
    let stopped = stop.load(Ordering::SeqCst);
    if args.plan.json {
        println!(
            "{}",
            serde_json::json!({
                "replay_id": id,
                "policy_before": w.current.policy_version,
                "policy_after": w.policy.policy_version,
                "planned": total,
                "applied": applied,
                "complete": !stopped,
            })
        );
    } else {
        println!(
            "replay {id}: policy {} -> {}: {} corrections, {} retractions, {} backfills written; {} written by an earlier run",
            w.current.policy_version,
            w.policy.policy_version,
            applied.corrections,
            applied.retractions,
            applied.backfills,
            applied.already_written
        );
        if stopped {
            println!("stopped before the end: run the same command to resume.");
        } else if total == 0 {
            println!("nothing to apply: every destination is in line with the new policy.");
        } else {
            println!("verify the trail with: consentry audit verify");
        }
    }
    Ok(if stopped {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// How fast an apply writes.
struct Pace {
    batch_size: usize,
    /// Units per second.
    max_rate: Option<f64>,
}

/// The job and what it encodes with.
struct Writer {
    job: TransactionalJob,
    audit_keys: Arc<AuditKeys>,
    id: String,
    /// The new policy's destination schemas (registered before any write).
    codec: Codec,
    /// The current policy's, for retractions at a destination the new
    /// policy no longer has.
    old_codec: Codec,
    route_state: Option<String>,
}

impl Writer {
    fn open(
        conn: &Connection,
        w: &Worked,
        id: &str,
        audit_keys: Arc<AuditKeys>,
    ) -> anyhow::Result<Writer> {
        anyhow::ensure!(
            w.current.topics.contains_key(REPLAY_LEDGER),
            "the topology has no '{REPLAY_LEDGER}' topic (the replay's dedup store): add `{REPLAY_LEDGER}: {{ role: ledger, partitions: 3, cleanup: compact }}` and run `consentry topics apply`"
        );
        let registry = RegistryClient::for_connection(conn)?;
        let new_topics = destination_topics(&w.policy, &w.purposes);
        let mut registered = HashMap::new();
        for topic in &new_topics {
            if let Some(schema) = conn.schema_text(&w.policy, topic) {
                let id = registry.register(
                    &conn.subject(topic),
                    &schema,
                    consentry_runtime::admin::COMPATIBILITY,
                )?;
                registered.insert(topic.clone(), id);
            }
        }
        let mut outputs: Vec<String> = new_topics.iter().cloned().collect();
        outputs.push(w.policy.disclosure_topic.clone());
        let codec = Codec::for_stage_with(conn, &w.policy, &outputs, &[], &registered)?;
        // Destinations the new policy retires keep their schema: their
        // retraction notices are written with it.
        let retired: Vec<String> = destination_topics(&w.current, &w.purposes)
            .into_iter()
            .filter(|t| !new_topics.contains(t))
            .collect();
        let old_codec = Codec::for_stage(conn, &w.current, &retired, &[])?;
        let audit_schema_id = codec
            .audit_schema_id()
            .ok_or_else(|| anyhow::anyhow!("the audit topic has no registered schema"))?;
        let job = TransactionalJob::open(
            conn,
            JobOptions {
                writer_id: format!("{WRITER}/{id}"),
                dedup_topic: REPLAY_LEDGER.into(),
                audit_topic: w.current.audit_topic.clone(),
                audit_heads_topic: w.current.audit_heads_topic.clone(),
                audit_schema_id,
                service: format!("consentry/{WRITER}@{}", env!("CARGO_PKG_VERSION")),
                audit_keys: Arc::clone(&audit_keys),
            },
        )?;
        Ok(Writer {
            job,
            audit_keys,
            id: id.to_string(),
            codec,
            old_codec,
            route_state: w
                .current
                .stage(StageName::Route.as_str())
                .and_then(|s| s.state.clone()),
        })
    }

    fn run(
        mut self,
        w: &Worked,
        pace: &Pace,
        json: bool,
        stop: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<Applied> {
        let mut applied = Applied::default();
        let mut progress = Progress::new(&self.id, w.plan.actions.len(), json);
        let started = Instant::now();
        let mut attempted = 0usize;
        for chunk in w.plan.actions.chunks(pace.batch_size) {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let mut units = Vec::with_capacity(chunk.len());
            let mut kinds = Vec::with_capacity(chunk.len());
            for action in chunk {
                let unit = self.unit(w, action)?;
                if self.job.is_done(&unit.dedup_key) {
                    applied.already_written += 1;
                } else {
                    units.push(unit);
                    kinds.push(action);
                }
            }
            self.job.commit(units)?;
            for a in kinds {
                match a {
                    Action::Correct { .. } => applied.corrections += 1,
                    Action::Retract { .. } => applied.retractions += 1,
                    Action::Backfill { .. } => applied.backfills += 1,
                }
            }
            progress.advance(chunk.len());
            attempted += chunk.len();
            if let Some(rate) = pace.max_rate {
                let due = Duration::from_secs_f64(attempted as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        progress.finish();
        self.job.checkpoint(&w.policy.policy_version)?;
        applied.write_seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        Ok(applied)
    }

    /// What one action writes.
    fn unit(&self, w: &Worked, action: &Action) -> anyhow::Result<JobUnit> {
        let now = super::super::now_ms();
        let key = action.key();
        let (purpose, event) = (key.0.as_str(), key.1.as_str());
        let mut audit = AuditRecord {
            stage: WRITER.into(),
            policy_version: w.policy.policy_version.as_str().into(),
            event_id: Some(event.into()),
            reason_code: ReasonCode::Ok.as_str().into(),
            purpose: Some(purpose.into()),
            source_topic: "replay".into(),
            replay_id: Some(self.id.as_str().into()),
            ..Default::default()
        };
        let mut records = Vec::new();
        let replay_headers = |supersedes: Option<&str>| -> Pairs {
            let mut h = vec![(headers::REPLAY_ID, self.id.as_bytes().to_vec())];
            if let Some(s) = supersedes {
                h.push((headers::SUPERSEDES, s.as_bytes().to_vec()));
            }
            h
        };
        let (output, mut disclosure, phi) = match action {
            Action::Correct { .. } | Action::Backfill { .. } => {
                let written = w.replayed.written.get(key).ok_or_else(|| {
                    anyhow::anyhow!("no record for a planned write (purpose {purpose})")
                })?;
                let disclosure = w
                    .replayed
                    .records
                    .get(key)
                    .map(|r| r.disclosure.clone())
                    .ok_or_else(|| anyhow::anyhow!("no disclosure for a planned write"))?;
                let phi = w
                    .policy
                    .purposes
                    .get(purpose)
                    .is_none_or(|p| p.profile.is_phi());
                if let Action::Correct { supersedes, .. } = action {
                    audit.decision = Decision::Correction;
                    audit.supersedes = Some(supersedes.disclosure_id.clone());
                    audit.previous_policy_version = Some(supersedes.policy_version.clone());
                } else {
                    audit.decision = Decision::Backfill;
                    // What route would have recorded of the subject at the
                    // destination, for later revocation notices.
                    if let Some(topic) = &self.route_state {
                        for s in &written.state {
                            records.push(JobRecord {
                                topic: topic.clone(),
                                key: s.key.clone(),
                                payload: s.value.clone().unwrap_or_default(),
                                headers: Vec::new(),
                            });
                        }
                    }
                }
                audit.profile = Some(disclosure.profile.clone());
                (written.output.clone(), disclosure, phi)
            }
            Action::Retract { supersedes, .. } => {
                let held = w.history.held.get(supersedes.disclosure_id.as_str());
                let allow = w
                    .policy
                    .purposes
                    .get(purpose)
                    .or_else(|| w.current.purposes.get(purpose))
                    .map(|p| p.allow.clone())
                    .unwrap_or_default();
                let notice = retraction_notice(
                    supersedes,
                    held.map_or("", |h| h.key.as_str()),
                    held.map_or("", |h| h.correlation_id.as_str()),
                    &w.policy.policy_version,
                    &allow,
                );
                let disclosure = Disclosure {
                    disclosure_id: notice.idempotency_key.clone(),
                    event_type: RECORD_RETRACTED.into(),
                    policy_version: w.policy.policy_version.as_str().into(),
                    phi: false,
                    fields: consentry_stages::replay::fields_of(&notice.event)
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                    consent_reference: None,
                    consent_version: None,
                    ..(**supersedes).clone()
                };
                audit.decision = Decision::Retraction;
                audit.supersedes = Some(supersedes.disclosure_id.clone());
                audit.previous_policy_version = Some(supersedes.policy_version.clone());
                (notice, disclosure, false)
            }
        };
        let supersedes = audit.supersedes.as_deref().map(String::from);
        let codec = if w.policy.purposes.contains_key(purpose) {
            &self.codec
        } else {
            &self.old_codec
        };
        let payload = codec.encode_event(&output.topic, &output.event)?;
        let mut h = identity(&output.idempotency_key, &output.correlation_id);
        h.push((headers::PHI, headers::phi_value(phi).as_bytes().to_vec()));
        h.extend(replay_headers(supersedes.as_deref()));
        audit.correlation_id = Some(disclosure.correlation_id.clone());
        audit.event_time_ms = output.event.event_time_ms;
        audit.outputs = vec![AuditOutput {
            topic: output.topic.clone(),
            idempotency_key: output.idempotency_key.clone(),
            // Of the Avro body: the same content under a re-registered
            // schema id is the same record.
            fingerprint: self
                .audit_keys
                .fingerprint(payload.get(5..).unwrap_or_default())
                .as_str()
                .into(),
            correlation_id: Some(output.correlation_id.clone()),
            event_id: Some(output.event.event_id.clone()),
        }];
        records.push(JobRecord {
            topic: output.topic.to_string(),
            key: output.key.to_string(),
            payload,
            headers: h,
        });
        disclosure.disclosed_at_ms = now;
        let mut dh = identity(&disclosure.disclosure_id, &disclosure.correlation_id);
        dh.extend(replay_headers(supersedes.as_deref()));
        records.push(JobRecord {
            topic: w.policy.disclosure_topic.clone(),
            key: disclosure.subject_token.to_string(),
            payload: self
                .codec
                .encode_disclosure(&w.policy.disclosure_topic, &disclosure)?,
            headers: dh,
        });
        let dedup_key = output.idempotency_key.to_string();
        audit.audit_id = keys::audit_id(WRITER, &w.policy.policy_version, &dedup_key);
        audit.idempotency_key = audit.audit_id.clone();
        Ok(JobUnit {
            dedup_key,
            records,
            audit,
        })
    }
}

fn identity(idempotency_key: &str, correlation_id: &str) -> Pairs {
    vec![
        (
            headers::IDEMPOTENCY_KEY,
            idempotency_key.as_bytes().to_vec(),
        ),
        (headers::CORRELATION_ID, correlation_id.as_bytes().to_vec()),
        (headers::STAGE, WRITER.as_bytes().to_vec()),
    ]
}

/// Progress on stderr: a line redrawn in place on a terminal, else one
/// JSON line every few seconds.
struct Progress<'a> {
    id: &'a str,
    total: usize,
    done: usize,
    started: Instant,
    last: Instant,
    terminal: bool,
}

impl<'a> Progress<'a> {
    fn new(id: &'a str, total: usize, json: bool) -> Progress<'a> {
        let now = Instant::now();
        Progress {
            id,
            total,
            done: 0,
            started: now,
            last: now,
            terminal: !json && std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, n: usize) {
        self.done += n;
        if self.last.elapsed() >= PROGRESS_EVERY || self.terminal {
            self.last = Instant::now();
            self.show();
        }
    }

    fn show(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let eta = (self.total - self.done.min(self.total)) as f64 / rate.max(1e-9);
        if self.terminal {
            eprint!(
                "\r{}: {}/{} units, {rate:.0}/s, ETA {eta:.0} s   ",
                self.id, self.done, self.total
            );
        } else {
            eprintln!(
                "{}",
                serde_json::json!({
                    "progress": self.id,
                    "done": self.done,
                    "total": self.total,
                    "per_second": (rate * 10.0).round() / 10.0,
                    "eta_seconds": eta.round(),
                })
            );
        }
    }

    fn finish(&self) {
        self.show();
        if self.terminal {
            eprintln!();
        }
    }
}
