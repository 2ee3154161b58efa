//! A transactional job outside the stage loop (`consentry replay apply`):
//! units of records, each with its audit record linked into the job's own
//! chain, written exactly once and resumable after a kill.
//!
//! The same recipe as the runner's, without a consumer: per batch, one
//! transaction in which the audit records are sent and acknowledged first
//! (nothing is seen without its decision), then the records, acknowledged;
//! then the job's dedup entries (key → digest of what the unit wrote) and
//! chain head, so none vouches for a missing record (see `crate::dedup`);
//! then the commit. Signed checkpoints close the chain every so often and
//! at the end. A job run again with the same transactional id fences its
//! predecessor, reads its dedup store, and skips every unit already
//! written.

use crate::dedup::{DedupStore, Seen};
use crate::kafka::kafka_headers;
use crate::produce::{self, CountingProducer, DeliveryErrors};
use crate::Connection;
use consentry_core::audit::{AuditRecord, Decision};
use consentry_core::chain::{ChainWriter, SignedHead};
use consentry_core::headers::{self, Pairs};
use consentry_core::keys;
use consentry_core::ReasonCode;
use consentry_crypto::audit::AuditKeys;
use rdkafka::producer::{BaseRecord, Producer};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a job writes and who it is.
pub struct JobOptions {
    /// What the job's audit records name as their stage (`replay`).
    pub name: String,
    /// The job's chain (`replay/<replay id>`), also its transactional id.
    pub writer_id: String,
    /// The job's dedup store (logical topic).
    pub dedup_topic: String,
    pub audit_topic: String,
    pub audit_heads_topic: String,
    /// The audit topic's registry id.
    pub audit_schema_id: u32,
    /// `consentry/<job>@<version>`, stamped on each audit record.
    pub service: String,
    /// The policy version the job writes under (its checkpoints').
    pub policy_version: String,
    /// The `stage` header of its audit records: the stage whose records
    /// the job writes (a `StageName`, as every reader expects).
    pub header_stage: String,
    pub audit_keys: Arc<AuditKeys>,
}

/// One record a unit writes (logical topic; payload already encoded).
pub struct JobRecord {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Pairs,
}

/// What one unit of work writes, under its idempotency key.
pub struct JobUnit {
    pub dedup_key: String,
    /// A digest of what the unit writes that stays the same when it is
    /// written again (no timestamps): a unit found written with another
    /// digest is a conflict, not a duplicate.
    pub digest: [u8; 32],
    pub records: Vec<JobRecord>,
    pub audit: AuditRecord,
}

pub struct TransactionalJob {
    conn: Connection,
    producer: CountingProducer,
    dedup: DedupStore,
    chain: ChainWriter,
    /// Records committed since the last checkpoint (or a resumed chain,
    /// whose last record may not be one).
    uncovered: bool,
    last_checkpoint: Instant,
    opts: JobOptions,
}

impl TransactionalJob {
    /// Fences any earlier run of the job, reads its dedup store and
    /// resumes its chain.
    pub fn open(conn: &Connection, opts: JobOptions) -> anyhow::Result<TransactionalJob> {
        let producer: CountingProducer = conn
            .transactional_producer(&opts.writer_id)
            .create_with_context(DeliveryErrors::default())?;
        producer.init_transactions(TXN_TIMEOUT)?;
        let dedup = DedupStore::open(conn, &conn.physical(&opts.dedup_topic), TXN_TIMEOUT)?;
        let head = dedup.chain_head(&opts.writer_id);
        let chain = ChainWriter::new(
            &opts.writer_id,
            head.as_ref().map(|(seq, hash)| (*seq, hash.as_str())),
        );
        // A resumed chain whose head is a checkpoint needs none: the
        // store says which head was one.
        let uncovered = head.as_ref().is_some_and(|(seq, hash)| {
            dedup.check(&checkpointed_key(&opts.writer_id), &head_digest(*seq, hash)) != Seen::Same
        });
        Ok(TransactionalJob {
            conn: conn.clone(),
            producer,
            dedup,
            uncovered,
            chain,
            last_checkpoint: Instant::now(),
            opts,
        })
    }

    /// Whether a unit was written (by this run or an earlier one), and
    /// with the same content.
    pub fn seen(&self, dedup_key: &str, digest: &[u8; 32]) -> Seen {
        self.dedup.check(dedup_key, digest)
    }

    /// Writes `units` in one transaction. On failure nothing of them
    /// counts as written (the chain rolls back; a broker that shows
    /// aborted records shows no dedup entry for them either way, since
    /// entries are written only after every record is acknowledged).
    pub fn commit(&mut self, units: Vec<JobUnit>) -> anyhow::Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        self.producer.begin_transaction()?;
        self.producer.context().reset();
        let entries: Vec<(String, [u8; 32])> = units
            .iter()
            .map(|u| (u.dedup_key.clone(), u.digest))
            .collect();
        let result = self.write(units);
        match result {
            Ok(()) => {
                self.chain.commit();
                self.uncovered = true;
                for (k, d) in entries {
                    self.dedup.record(k, d);
                }
                Ok(())
            }
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }

    fn write(&mut self, units: Vec<JobUnit>) -> anyhow::Result<()> {
        let now = now_ms();
        let audit_topic = self.conn.physical(&self.opts.audit_topic);
        let mut records = Vec::new();
        let mut entries = Vec::with_capacity(units.len());
        for mut u in units {
            let payload = self.link(&mut u.audit, now)?;
            let headers = self.audit_headers(&u.audit);
            // Audit first: a record is never seen without its decision.
            produce::send(
                &self.producer,
                BaseRecord::to(&audit_topic)
                    .key(self.chain.writer_id())
                    .payload(&payload)
                    .headers(headers),
            )?;
            records.extend(u.records);
            entries.push((u.dedup_key, u.digest));
        }
        // Every decision acknowledged before anything it describes is sent.
        produce::flush(&self.producer, TXN_TIMEOUT)?;
        self.producer.context().check()?;
        for r in records {
            let topic = self.conn.physical(&r.topic);
            produce::send(
                &self.producer,
                BaseRecord::to(&topic)
                    .key(r.key.as_str())
                    .payload(r.payload.as_slice())
                    .headers(kafka_headers(&r.headers)),
            )?;
        }
        produce::flush(&self.producer, TXN_TIMEOUT)?;
        self.producer.context().check()?;
        let dedup_topic = self.conn.physical(&self.opts.dedup_topic);
        for (k, digest) in &entries {
            produce::send(
                &self.producer,
                BaseRecord::to(&dedup_topic)
                    .key(k.as_str())
                    .payload(&digest[..]),
            )?;
        }
        self.write_chain_head(&dedup_topic)?;
        produce::commit(&self.producer, TXN_TIMEOUT)?;
        self.producer.context().check()
    }

    fn link(&mut self, rec: &mut AuditRecord, now: i64) -> anyhow::Result<Vec<u8>> {
        rec.service = self.opts.service.as_str().into();
        rec.processing_time_ms = now;
        let keys = Arc::clone(&self.opts.audit_keys);
        Ok(self.chain.link(
            rec,
            self.opts.audit_schema_id,
            keys.active_version(),
            |body| keys.chain_mac_active(body),
        )?)
    }

    fn write_chain_head(&self, dedup_topic: &str) -> anyhow::Result<()> {
        if let Some((seq, hash)) = self.chain.pending_head() {
            let key = DedupStore::chain_head_key(self.chain.writer_id());
            let value = format!("{seq}:{hash}");
            produce::send(
                &self.producer,
                BaseRecord::to(dedup_topic)
                    .key(key.as_str())
                    .payload(value.as_bytes()),
            )?;
        }
        Ok(())
    }

    fn abort(&mut self) {
        self.chain.rollback();
        let _ = produce::flush(&self.producer, TXN_TIMEOUT);
        let _ = self.producer.abort_transaction(TXN_TIMEOUT);
    }

    /// A checkpoint if the last one is `every` old and records have been
    /// committed since.
    pub fn checkpoint_every(&mut self, every: Duration) -> anyhow::Result<()> {
        if self.last_checkpoint.elapsed() >= every {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Covers the records committed since the last checkpoint with a
    /// signed one (in a transaction of its own), its signed head then
    /// copied to the heads topic. Nothing if there are none.
    pub fn checkpoint(&mut self) -> anyhow::Result<()> {
        let Some(head) = self.chain.committed().filter(|_| self.uncovered) else {
            return Ok(());
        };
        let writer = self.chain.writer_id().to_string();
        let basis = format!("checkpoint/{writer}/{}", head.sequence + 1);
        let id = keys::idempotency_key(&self.opts.name, &self.opts.policy_version, &basis, None);
        let mut rec = AuditRecord {
            audit_id: id.clone(),
            idempotency_key: id,
            stage: self.opts.name.as_str().into(),
            policy_version: self.opts.policy_version.as_str().into(),
            decision: Decision::Checkpoint,
            reason_code: ReasonCode::Ok.as_str().into(),
            checkpoint: vec![head],
            service: self.opts.service.as_str().into(),
            processing_time_ms: now_ms(),
            ..Default::default()
        };
        self.producer.begin_transaction()?;
        self.producer.context().reset();
        let keys = Arc::clone(&self.opts.audit_keys);
        let result = (|| {
            let payload = self.chain.link_checkpoint(
                &mut rec,
                self.opts.audit_schema_id,
                keys.active_version(),
                |body| keys.chain_mac_active(body),
                |m| keys.sign_checkpoint(m),
            )?;
            produce::send(
                &self.producer,
                BaseRecord::to(&self.conn.physical(&self.opts.audit_topic))
                    .key(writer.as_str())
                    .payload(&payload)
                    .headers(self.audit_headers(&rec)),
            )?;
            produce::flush(&self.producer, TXN_TIMEOUT)?;
            self.producer.context().check()?;
            let dedup_topic = self.conn.physical(&self.opts.dedup_topic);
            self.write_chain_head(&dedup_topic)?;
            if let Some((seq, hash)) = self.chain.pending_head() {
                let marker = head_digest(seq, hash);
                produce::send(
                    &self.producer,
                    BaseRecord::to(&dedup_topic)
                        .key(checkpointed_key(&writer).as_str())
                        .payload(&marker[..]),
                )?;
            }
            produce::commit(&self.producer, TXN_TIMEOUT)?;
            self.producer.context().check()
        })();
        if let Err(e) = result {
            self.abort();
            return Err(e);
        }
        let dedup_key = checkpointed_key(&writer);
        if let Some((seq, hash)) = self.chain.pending_head() {
            self.dedup.record(dedup_key, head_digest(seq, hash));
        }
        self.chain.commit();
        self.uncovered = false;
        self.last_checkpoint = Instant::now();
        // Lost, the heads topic still holds an earlier head: weaker
        // evidence for a while, never a false one (as the runner does).
        let signed = SignedHead::of(&rec, |m| keys.sign_checkpoint(m));
        let copied = serde_json::to_vec(&signed)
            .map_err(anyhow::Error::from)
            .and_then(|json| {
                produce::AckedProducer::new(&self.conn.producer())?
                    .enqueue(
                        &self.conn.physical(&self.opts.audit_heads_topic),
                        &writer,
                        &json,
                        TXN_TIMEOUT,
                    )?
                    .wait()
            });
        if let Err(e) = copied {
            tracing::warn!(writer = %writer, error = %e, "checkpoint head not copied to the heads topic");
        }
        Ok(())
    }

    fn audit_headers(&self, rec: &AuditRecord) -> rdkafka::message::OwnedHeaders {
        kafka_headers(&[
            (headers::IDEMPOTENCY_KEY, rec.audit_id.as_bytes().to_vec()),
            (
                headers::CORRELATION_ID,
                rec.correlation_id
                    .as_deref()
                    .unwrap_or("")
                    .as_bytes()
                    .to_vec(),
            ),
            (headers::STAGE, self.opts.header_stage.as_bytes().to_vec()),
        ])
    }
}

/// The dedup-store key that says which of a writer's heads was its last
/// checkpoint.
fn checkpointed_key(writer: &str) -> String {
    format!("checkpointed/{writer}")
}

fn head_digest(seq: i64, hash: &str) -> [u8; 32] {
    let mut d = keys::ContentDigest::new();
    d.update(seq.to_string().as_bytes());
    d.update(b":");
    d.update(hash.as_bytes());
    d.finish()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
