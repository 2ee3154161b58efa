//! A transactional job outside the stage loop (`consentry replay apply`):
//! units of records, each with its audit record linked into the job's own
//! chain, written exactly once and resumable after a kill.
//!
//! The same recipe as the runner's, without a consumer: per batch, one
//! transaction holding the audit records, then the records, all
//! acknowledged; then the job's dedup entries and chain head (so none
//! vouches for a missing record, see `crate::dedup`); then the commit. A
//! job run again with the same transactional id fences its predecessor,
//! reads its dedup store, and skips every unit already written.

use crate::dedup::{DedupStore, Seen};
use crate::kafka::kafka_headers;
use crate::produce::{self, CountingProducer, DeliveryErrors};
use crate::Connection;
use consentry_core::audit::{AuditRecord, ChainHead, Decision};
use consentry_core::chain::{ChainWriter, SignedHead};
use consentry_core::headers::{self, Pairs};
use consentry_core::keys;
use consentry_core::ReasonCode;
use consentry_crypto::audit::AuditKeys;
use rdkafka::producer::{BaseRecord, Producer};
use std::sync::Arc;
use std::time::Duration;

const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a job writes and who it is.
pub struct JobOptions {
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
    pub records: Vec<JobRecord>,
    pub audit: AuditRecord,
}

pub struct TransactionalJob {
    conn: Connection,
    producer: CountingProducer,
    dedup: DedupStore,
    chain: ChainWriter,
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
        Ok(TransactionalJob {
            conn: conn.clone(),
            producer,
            dedup,
            chain,
            opts,
        })
    }

    /// Whether a unit was written (by this run or an earlier one).
    pub fn is_done(&self, dedup_key: &str) -> bool {
        self.dedup.check(dedup_key, &[0; 32]) != Seen::New
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
        let keys: Vec<String> = units.iter().map(|u| u.dedup_key.clone()).collect();
        let result = self.write(units);
        match result {
            Ok(()) => {
                self.chain.commit();
                for k in keys {
                    self.dedup.record(k, [0; 32]);
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
        let mut keys = Vec::with_capacity(units.len());
        for mut u in units {
            let payload = self.link(&mut u.audit, now)?;
            let headers = kafka_headers(&[
                (
                    headers::IDEMPOTENCY_KEY,
                    u.audit.audit_id.as_bytes().to_vec(),
                ),
                (
                    headers::CORRELATION_ID,
                    u.audit
                        .correlation_id
                        .as_deref()
                        .unwrap_or("")
                        .as_bytes()
                        .to_vec(),
                ),
                (headers::STAGE, u.audit.stage.as_bytes().to_vec()),
            ]);
            // Audit first: a record is never seen without its decision.
            produce::send(
                &self.producer,
                BaseRecord::to(&audit_topic)
                    .key(self.chain.writer_id())
                    .payload(&payload)
                    .headers(headers),
            )?;
            records.extend(u.records);
            keys.push(u.dedup_key);
        }
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
        for k in &keys {
            produce::send(
                &self.producer,
                BaseRecord::to(&dedup_topic)
                    .key(k.as_str())
                    .payload(&[0u8; 32][..]),
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

    /// Closes the job's chain with a signed checkpoint (in a transaction
    /// of its own), its signed head then copied to the heads topic.
    pub fn checkpoint(&mut self, policy_version: &str) -> anyhow::Result<()> {
        let Some(head) = self.chain.committed() else {
            return Ok(());
        };
        let writer = self.chain.writer_id().to_string();
        let basis = format!("checkpoint/{writer}/{}", head.sequence + 1);
        let id = keys::idempotency_key("replay", policy_version, &basis, None);
        let mut rec = AuditRecord {
            audit_id: id.clone(),
            idempotency_key: id,
            stage: "replay".into(),
            policy_version: policy_version.into(),
            decision: Decision::Checkpoint,
            reason_code: ReasonCode::Ok.as_str().into(),
            checkpoint: vec![ChainHead { ..head }],
            ..Default::default()
        };
        rec.service = self.opts.service.as_str().into();
        rec.processing_time_ms = now_ms();
        let keys = Arc::clone(&self.opts.audit_keys);
        let payload = self.chain.link_checkpoint(
            &mut rec,
            self.opts.audit_schema_id,
            keys.active_version(),
            |body| keys.chain_mac_active(body),
            |m| keys.sign_checkpoint(m),
        )?;
        self.producer.begin_transaction()?;
        self.producer.context().reset();
        let audit_topic = self.conn.physical(&self.opts.audit_topic);
        let dedup_topic = self.conn.physical(&self.opts.dedup_topic);
        let result = (|| {
            produce::send(
                &self.producer,
                BaseRecord::to(&audit_topic)
                    .key(writer.as_str())
                    .payload(&payload),
            )?;
            produce::flush(&self.producer, TXN_TIMEOUT)?;
            self.producer.context().check()?;
            self.write_chain_head(&dedup_topic)?;
            produce::commit(&self.producer, TXN_TIMEOUT)?;
            self.producer.context().check()
        })();
        if let Err(e) = result {
            self.abort();
            return Err(e);
        }
        self.chain.commit();
        let signed = SignedHead::of(&rec, |m| keys.sign_checkpoint(m));
        let heads = produce::AckedProducer::new(&self.conn.producer())?;
        heads
            .enqueue(
                &self.conn.physical(&self.opts.audit_heads_topic),
                &writer,
                &serde_json::to_vec(&signed)?,
                TXN_TIMEOUT,
            )?
            .wait()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
