//! The audit chain as the runner writes it: each audit record linked into
//! the writer's hash chain and queued ahead of what it describes; the
//! chain head kept in the dedup store in the batch's transaction; and
//! checkpoints (the process's committed heads, signed) in transactions of
//! their own, their signed heads then copied to the heads topic.

use super::outbox::{identity_headers, Prepared};
use super::transaction::Batch;
use super::{now_ms, StageLoop, TXN_TIMEOUT};
use crate::dedup::DedupStore;
use crate::produce;
use consentry_core::audit::{AuditRecord, ChainHead, Decision};
use consentry_core::chain;
use consentry_core::keys;
use consentry_core::ReasonCode;
use rdkafka::producer::{BaseRecord, Producer};
use std::sync::Arc;
use std::time::Instant;
use tracing::warn;

impl StageLoop {
    /// Writes a checkpoint record (the process's committed chain heads) in
    /// a transaction of its own.
    pub(super) fn checkpoint(&mut self) -> anyhow::Result<()> {
        let heads: Vec<ChainHead> = match self.board.lock() {
            Ok(b) => b.values().cloned().collect(),
            Err(_) => anyhow::bail!("chain board poisoned"),
        };
        let name = self.name();
        let mut rec = AuditRecord {
            stage: name.into(),
            policy_version: self.policy_version.as_str().into(),
            decision: Decision::Checkpoint,
            reason_code: ReasonCode::Ok.as_str().into(),
            checkpoint: heads,
            ..Default::default()
        };
        self.producer.begin_transaction()?;
        self.producer.context().reset();
        let result = (|| {
            let mut b = Batch::default();
            let now = now_ms();
            // Unique per chain position: the sequence number is in the id.
            let seq = self.chain.committed().map_or(0, |h| h.sequence + 1);
            let basis = format!("checkpoint/{}/{seq}", self.chain.writer_id());
            rec.audit_id = keys::idempotency_key(name, &self.policy_version, &basis, None);
            rec.idempotency_key = rec.audit_id.clone();
            self.prepare_audit(&mut rec, now, &mut b)?;
            self.send_prepared(b.audit)?;
            produce::flush(&self.producer, TXN_TIMEOUT)?;
            self.check_deliveries()?;
            self.write_chain_head()?;
            produce::commit(&self.producer, TXN_TIMEOUT)?;
            self.check_deliveries()
        })();
        match result {
            Ok(()) => {
                self.chain_committed();
                self.unchecked_commits = 0;
                self.last_checkpoint = Instant::now();
                // The committed checkpoint's signed head, acknowledged.
                // Lost, the heads topic still holds an earlier one: weaker
                // evidence for a while, never a false one.
                if let Some(head) = self.pending_head.take() {
                    let sent = serde_json::to_vec(&head)
                        .map_err(anyhow::Error::from)
                        .and_then(|json| {
                            self.heads_producer.enqueue(
                                &self.conn.physical(&self.audit_heads_topic),
                                &head.writer_id,
                                &json,
                                TXN_TIMEOUT,
                            )
                        })
                        .and_then(|ack| ack.wait());
                    if let Err(e) = sent {
                        warn!(stage = self.name(), error = %e, "checkpoint head not copied to the heads topic");
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.chain.rollback();
                self.pending_head = None;
                let _ = produce::flush(&self.producer, TXN_TIMEOUT);
                self.producer.abort_transaction(TXN_TIMEOUT)?;
                Err(e)
            }
        }
    }

    /// Sets the runtime's fields of an audit record, links it into the
    /// chain and queues it.
    pub(super) fn prepare_audit(
        &mut self,
        rec: &mut AuditRecord,
        now: i64,
        b: &mut Batch,
    ) -> anyhow::Result<()> {
        rec.service = self.service.as_str().into();
        rec.processing_time_ms = now;
        let id = self
            .codec
            .audit_schema_id()
            .ok_or_else(|| anyhow::anyhow!("audit topic has no registered schema"))?;
        let keys = Arc::clone(&self.opts.audit_keys);
        let mac = |body: &[u8]| keys.chain_mac_active(body);
        let payload = if rec.decision == Decision::Checkpoint {
            // Signed, vouching for the records since the last one, and
            // copied to the heads topic: evidence outside this chain.
            let payload = self
                .chain
                .link_checkpoint(rec, id, keys.active_version(), mac, |m| {
                    keys.sign_checkpoint(m)
                })?;
            self.pending_head = Some(chain::SignedHead::of(rec, |m| keys.sign_checkpoint(m)));
            payload
        } else {
            self.chain.link(rec, id, keys.active_version(), mac)?
        };
        let headers = identity_headers(
            &rec.audit_id,
            rec.correlation_id.as_deref().unwrap_or(""),
            self.stage_name(),
        );
        b.audit.push(Prepared {
            topic: self.conn.physical(&self.audit_topic),
            // Keyed by writer: one chain, one partition, in order.
            key: self.chain.writer_id().to_string(),
            payload: Some(payload),
            headers,
        });
        b.counts.audit += 1;
        Ok(())
    }

    /// The chain's head goes to the ledger in the batch's transaction.
    pub(super) fn write_chain_head(&self) -> anyhow::Result<()> {
        let Some((seq, hash)) = self.chain.pending_head() else {
            return Ok(());
        };
        let dedup_topic = self.conn.physical(&self.dedup_topic);
        let key = DedupStore::chain_head_key(self.chain.writer_id());
        let value = format!("{seq}:{hash}");
        self.send(
            BaseRecord::to(&dedup_topic)
                .key(key.as_str())
                .payload(value.as_bytes()),
        )
    }

    pub(super) fn chain_committed(&mut self) {
        self.chain.commit();
        if let Some(head) = self.chain.committed() {
            if let Ok(mut b) = self.board.lock() {
                b.insert(head.writer_id.to_string(), head);
            }
        }
    }
}
