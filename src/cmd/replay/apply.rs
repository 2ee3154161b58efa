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

use super::progress::Progress;
use super::{work_out, ApplyArgs, Worked};

use consentry_core::audit::{AuditOutput, AuditRecord, Decision};
use consentry_core::disclosure::Disclosure;
use consentry_core::headers::{self, Pairs};
use consentry_core::keys;
use consentry_core::stage::{Output, StageName};
use consentry_core::topology::Topology;
use consentry_core::ReasonCode;
use consentry_crypto::audit::AuditKeys;
use consentry_runtime::codec::Codec;
use consentry_runtime::dedup::Seen;
use consentry_runtime::job::{JobOptions, JobRecord, JobUnit, TransactionalJob};
use consentry_runtime::kafka::log_ends;
use consentry_runtime::registry::{RegistryClient, RegistryError};
use consentry_runtime::Connection;
use consentry_stages::replay::{
    replay_id, retraction_notice, write_key, Action, RECORD_RETRACTED, WRITER,
};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cmd::Global;

/// The replay job's dedup store (a `ledger` topic of the topology).
pub const REPLAY_LEDGER: &str = "ledger.replay";
/// How often a long apply vouches for what it wrote with a signed
/// checkpoint (as the stages do), besides once at the end.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

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
    let setup = super::setup(global, &args.plan)?;
    let refusals = schema_refusals(&conn, &setup.policy, &setup.purposes)?;
    if !refusals.is_empty() {
        super::print::print_refusals(&refusals);
        anyhow::bail!(
            "the schema registry would refuse {} destination schema(s); nothing was written",
            refusals.len()
        );
    }
    let id = replay_id(
        &setup.current.policy_version,
        &setup.policy.policy_version,
        &setup.policy_bytes,
        &format!(
            "{} purposes={:?}",
            setup.selection.describe(|b| audit_keys.fingerprint(b)),
            setup.purposes
        ),
    );
    anyhow::ensure!(
        setup.current.topics.contains_key(REPLAY_LEDGER),
        "the topology has no '{REPLAY_LEDGER}' topic (the replay's dedup store): add `{REPLAY_LEDGER}: {{ role: ledger, partitions: 3, cleanup: compact }}` and run `consentry topics apply`"
    );
    // The job first: opening it fences an earlier run of the same replay
    // and ends its open transaction, so the history read next never holds
    // half of one (a disclosure without the audit record beside it).
    let audit_schema_id = Codec::for_stage(&conn, &setup.current, &[], &[])?
        .audit_schema_id()
        .ok_or_else(|| anyhow::anyhow!("the audit topic has no registered schema"))?;
    let mut job = open_job(&conn, &setup, &id, &audit_keys, audit_schema_id)?;
    let w = work_out(&conn, &args.plan, setup, Some(services))?;
    let total = w.plan.actions.len();
    let mut applied = Applied::default();
    if total == 0 {
        // Nothing left to do; but a run killed after its last batch left
        // its chain without a checkpoint.
        job.checkpoint()?;
    } else {
        let writer = Writer::open(&conn, &w, &id, audit_keys, job)?;
        let pace = Pace {
            batch_size: args.batch_size as usize,
            max_rate: args.max_rate.filter(|r| r.is_finite() && *r > 0.0),
        };
        applied = writer.run(&conn, &w, &pace, args.plan.json, &stop)?;
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
    /// The consent table's topic, watched while applying.
    consent_table: Option<String>,
}

impl Writer {
    fn open(
        conn: &Connection,
        w: &Worked,
        id: &str,
        audit_keys: Arc<AuditKeys>,
        job: TransactionalJob,
    ) -> anyhow::Result<Writer> {
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
            consent_table: w
                .current
                .stage(StageName::ConsentGate.as_str())
                .and_then(|s| s.reads.clone()),
        })
    }

    fn run(
        mut self,
        conn: &Connection,
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
            self.consent_unchanged(conn, w)?;
            let mut units = Vec::with_capacity(chunk.len());
            let mut kinds = Vec::with_capacity(chunk.len());
            for action in chunk {
                let unit = self.unit(w, action)?;
                match self.job.seen(&unit.dedup_key, &unit.digest) {
                    Seen::New => {
                        units.push(unit);
                        kinds.push(action);
                    }
                    Seen::Same => applied.already_written += 1,
                    Seen::Different => anyhow::bail!(
                        "{} was written by an earlier run with other content (the policy changed under the same policy_version, or the history did); nothing more was written: give the policy a version of its own and plan again",
                        unit.dedup_key
                    ),
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
            self.job.checkpoint_every(CHECKPOINT_EVERY)?;
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
        self.job.checkpoint()?;
        applied.write_seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        Ok(applied)
    }

    /// Only a plan made with today's consent is applied: a consent change
    /// since the plan read the table (a revocation above all) stops the
    /// job before its next batch. Running the command again plans with the
    /// new table; what was written stays written, once.
    fn consent_unchanged(&self, conn: &Connection, w: &Worked) -> anyhow::Result<()> {
        let Some(table) = &self.consent_table else {
            return Ok(());
        };
        let now = log_ends(conn, &conn.physical(table))?;
        anyhow::ensure!(
            now == w.history.consent_ends,
            "the consent table changed while applying; stopped before the next batch: run the same command again to plan with today's consent and go on"
        );
        Ok(())
    }

    /// What one action writes.
    fn unit(&self, w: &Worked, action: &Action) -> anyhow::Result<JobUnit> {
        let (purpose, event) = (action.key().0.as_str(), action.key().1.as_str());
        let supersedes = action.supersedes();
        let mut audit = AuditRecord {
            stage: WRITER.into(),
            policy_version: w.policy.policy_version.as_str().into(),
            event_id: Some(event.into()),
            reason_code: ReasonCode::Ok.as_str().into(),
            purpose: Some(purpose.into()),
            source_topic: WRITER.into(),
            replay_id: Some(self.id.as_str().into()),
            supersedes: supersedes.map(|d| d.disclosure_id.clone()),
            previous_policy_version: supersedes.map(|d| d.policy_version.clone()),
            ..Default::default()
        };
        let shaped = match action {
            Action::Correct { .. } | Action::Backfill { .. } => self.record(w, action)?,
            Action::Retract { supersedes, .. } => self.retraction(w, supersedes)?,
        };
        audit.decision = match action {
            Action::Correct { .. } => Decision::Correction,
            Action::Retract { .. } => Decision::Retraction,
            Action::Backfill { .. } => Decision::Backfill,
        };
        let Shaped {
            output,
            mut disclosure,
            phi,
            state,
        } = shaped;
        let codec = if w.policy.purposes.contains_key(purpose) {
            &self.codec
        } else {
            &self.old_codec
        };
        let payload = codec.encode_event(&output.topic, &output.event)?;
        let mut digest = keys::ContentDigest::new();
        digest.update(&payload);
        let replay_headers = || {
            let mut h = vec![(headers::REPLAY_ID, self.id.as_bytes().to_vec())];
            if let Some(d) = supersedes {
                h.push((headers::SUPERSEDES, d.disclosure_id.as_bytes().to_vec()));
            }
            h
        };
        let mut h = identity(&output.idempotency_key, &output.correlation_id);
        h.push((headers::PHI, headers::phi_value(phi).as_bytes().to_vec()));
        h.extend(replay_headers());
        audit.profile = Some(disclosure.profile.clone());
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
        let mut records = vec![JobRecord {
            topic: output.topic.to_string(),
            key: output.key.to_string(),
            payload,
            headers: h,
        }];
        disclosure.disclosed_at_ms = super::super::now_ms();
        let mut dh = identity(&disclosure.disclosure_id, &disclosure.correlation_id);
        dh.extend(replay_headers());
        records.push(JobRecord {
            topic: w.policy.disclosure_topic.clone(),
            key: disclosure.subject_token.to_string(),
            payload: self
                .codec
                .encode_disclosure(&w.policy.disclosure_topic, &disclosure)?,
            headers: dh,
        });
        if let Some(topic) = &self.route_state {
            for (key, value) in state {
                digest.update(key.as_bytes());
                records.push(JobRecord {
                    topic: topic.clone(),
                    key,
                    payload: value,
                    headers: Vec::new(),
                });
            }
        }
        let dedup_key = output.idempotency_key.to_string();
        audit.audit_id = keys::audit_id(WRITER, &w.policy.policy_version, &dedup_key);
        audit.idempotency_key = audit.audit_id.clone();
        Ok(JobUnit {
            dedup_key,
            digest: digest.finish(),
            records,
            audit,
        })
    }

    /// Route's record under the new policy (a correction or a backfill),
    /// under replay's own key.
    fn record(&self, w: &Worked, action: &Action) -> anyhow::Result<Shaped> {
        let key = action.key();
        let purpose = key.0.as_str();
        let written =
            w.replayed.written.get(key).ok_or_else(|| {
                anyhow::anyhow!("no record for a planned write (purpose {purpose})")
            })?;
        let mut disclosure = w
            .replayed
            .records
            .get(key)
            .map(|r| r.disclosure.clone())
            .ok_or_else(|| anyhow::anyhow!("no disclosure for a planned write"))?;
        let mut output = written.output.clone();
        output.idempotency_key = write_key(
            &w.policy.policy_version,
            &output.idempotency_key,
            action.supersedes().map(|d| d.disclosure_id.as_str()),
        );
        disclosure.disclosure_id = output.idempotency_key.clone();
        // What route records of whom each destination holds, for later
        // revocation notices: only where it records nothing yet (its own
        // entry may name more than this record does).
        let state = written
            .state
            .iter()
            .filter(|s| !w.history.route_state.contains(&s.key))
            .filter_map(|s| Some((s.key.clone(), s.value.clone()?)))
            .collect();
        Ok(Shaped {
            phi: purpose_phi(w, purpose),
            output,
            disclosure,
            state,
        })
    }

    /// A notice that the record `supersedes` names is no longer sent.
    fn retraction(&self, w: &Worked, supersedes: &Disclosure) -> anyhow::Result<Shaped> {
        let purpose = supersedes.purpose.as_str();
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
            fields: consentry_stages::replay::fields_of(&notice.event)
                .into_iter()
                .map(Into::into)
                .collect(),
            consent_reference: None,
            consent_version: None,
            ..supersedes.clone()
        };
        Ok(Shaped {
            // As the destination's records say (route's revocation notices
            // do the same): a notice of an identified purpose names the
            // subject by a token that is PHI there.
            phi: purpose_phi(w, purpose),
            output: notice,
            disclosure,
            state: Vec::new(),
        })
    }
}

/// The replay's job: its chain, transactional id and dedup store.
fn open_job(
    conn: &Connection,
    w: &super::Setup,
    id: &str,
    audit_keys: &Arc<AuditKeys>,
    audit_schema_id: u32,
) -> anyhow::Result<TransactionalJob> {
    TransactionalJob::open(
        conn,
        JobOptions {
            name: WRITER.into(),
            writer_id: format!("{WRITER}/{id}"),
            dedup_topic: REPLAY_LEDGER.into(),
            audit_topic: w.current.audit_topic.clone(),
            audit_heads_topic: w.current.audit_heads_topic.clone(),
            audit_schema_id,
            service: format!("consentry/{WRITER}@{}", env!("CARGO_PKG_VERSION")),
            policy_version: w.policy.policy_version.clone(),
            header_stage: StageName::Route.as_str().into(),
            audit_keys: Arc::clone(audit_keys),
        },
    )
}

/// What one action sends to its destination, before encoding.
struct Shaped {
    output: Output,
    disclosure: Disclosure,
    phi: bool,
    /// Route state entries to write (key, value).
    state: Vec<(String, Vec<u8>)>,
}

/// Whether a purpose's records are PHI, under the new policy or, for a
/// purpose it retires, the current one.
fn purpose_phi(w: &Worked, purpose: &str) -> bool {
    w.policy
        .purposes
        .get(purpose)
        .or_else(|| w.current.purposes.get(purpose))
        .is_none_or(|p| p.profile.is_phi())
}

fn identity(idempotency_key: &str, correlation_id: &str) -> Pairs {
    vec![
        (
            headers::IDEMPOTENCY_KEY,
            idempotency_key.as_bytes().to_vec(),
        ),
        (headers::CORRELATION_ID, correlation_id.as_bytes().to_vec()),
        // The records are route's, shaped by route's code under the new
        // policy; `replay-id` says who wrote them.
        (
            headers::STAGE,
            StageName::Route.as_str().as_bytes().to_vec(),
        ),
    ]
}
