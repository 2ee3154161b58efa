//! The vault's audit records: one per answered call, acknowledged by the
//! broker before the call is answered; and, for what was refused before
//! a caller was known (no or a wrong credential, a peer over its limits,
//! slow or oversized requests), one record per peer and reason per
//! interval, so a flood of bad calls cannot become a flood of synchronous
//! audit writes.

use consentry_core::audit::{AuditRecord, Decision, Transformation};
use consentry_core::chain::ChainWriter;
use consentry_core::envelope::Text;
use consentry_core::keys;
use consentry_crypto::AuditKeys;
use consentry_runtime::codec::Codec;
use consentry_runtime::produce::AckedProducer;
use consentry_stages::scrub::Scrubber;
use consentry_vault::api::{CallDecision, CallRecord};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The audit records' stage name for vault calls.
pub const STAGE: &str = "vault";

/// Writes the vault's audit records on its own chain. Each call waits for
/// its own record only, so concurrent calls share the broker's round
/// trips, and a delivery failure is this call's.
pub struct AuditWriter {
    pub producer: AckedProducer,
    pub codec: Codec,
    pub topic: String,
    pub policy_version: String,
    pub scrubber: Scrubber,
    pub sequence: AtomicI64,
    /// This process's audit chain (`vault/<host>/<start>`): linked and
    /// queued under the lock, so the partition holds it in order.
    pub chain: Mutex<ChainWriter>,
    pub keys: Arc<AuditKeys>,
    /// Where the chain's signed checkpoints are copied (one per writer).
    pub heads_topic: String,
    /// The sequence of the last checkpoint written, if any.
    pub checkpointed: Mutex<Option<i64>>,
}

impl AuditWriter {
    fn base(&self, now_ms: i64) -> AuditRecord {
        let seq = self.sequence.fetch_add(1, Ordering::SeqCst);
        let id = keys::idempotency_key(
            STAGE,
            &self.policy_version,
            &format!("{now_ms}:{seq}:{}", std::process::id()),
            None,
        );
        AuditRecord {
            audit_id: id.clone(),
            stage: Text::const_new(STAGE),
            policy_version: self.policy_version.as_str().into(),
            idempotency_key: id,
            decision: Decision::Deny,
            source_topic: Text::const_new("vault-api"),
            source_partition: 0,
            source_offset: seq,
            processing_time_ms: now_ms,
            ..Default::default()
        }
    }

    /// The record of one answered call.
    pub fn record(&self, call: &CallRecord, now_ms: i64) -> AuditRecord {
        let decision = match call.decision {
            CallDecision::Allow => Decision::Allow,
            CallDecision::BreakGlass => Decision::BreakGlass,
            CallDecision::Deny => Decision::Deny,
        };
        AuditRecord {
            decision,
            reason_code: Text::const_new(call.reason),
            purpose: call.purpose.as_deref().map(Text::from),
            actor: call.caller.as_deref().map(Text::from),
            severity: call.is_break_glass().then(|| Text::const_new("high")),
            // A justification is the caller's prose: identifier shapes go.
            justification: call
                .justification
                .as_deref()
                .map(|j| Text::from(self.scrubber.scrub(j, &[]).0.as_str())),
            token: call.token.as_deref().map(Text::from),
            quarantine_id: call.quarantine_id.as_deref().map(Text::from),
            ..self.base(now_ms)
        }
    }

    /// The record of `calls` refused from one peer for one reason between
    /// `first_ms` and `last_ms`: the peer as `actor`, the count as an
    /// `aggregate` transformation's parameters.
    pub fn refusals(
        &self,
        peer: &str,
        reason: &'static str,
        tally: &Tally,
        now_ms: i64,
    ) -> AuditRecord {
        AuditRecord {
            reason_code: Text::const_new(reason),
            actor: Some(Text::from(format!("peer:{peer}").as_str())),
            transformations: vec![Transformation::new(
                "vault-api.calls",
                "aggregate",
                &format!(
                    "calls={},first_ms={},last_ms={}",
                    tally.calls, tally.first_ms, tally.last_ms
                ),
            )],
            ..self.base(now_ms)
        }
    }

    /// A signed checkpoint of the vault's chain (when it has grown since
    /// the last), copied to the heads topic: the vault's chain is
    /// checkpointed like every stage's, so cutting its tail, or deleting
    /// it, shows.
    pub fn checkpoint(&self, now_ms: i64) -> anyhow::Result<()> {
        let id = self
            .codec
            .audit_schema_id()
            .ok_or_else(|| anyhow::anyhow!("audit topic has no registered schema"))?;
        let (audit_ack, head_ack) = {
            let mut chain = self
                .chain
                .lock()
                .map_err(|_| anyhow::anyhow!("audit chain lock poisoned"))?;
            let Some(head) = chain.committed() else {
                return Ok(());
            };
            let mut last = self
                .checkpointed
                .lock()
                .map_err(|_| anyhow::anyhow!("checkpoint lock poisoned"))?;
            if *last == Some(head.sequence) {
                return Ok(());
            }
            let mut rec = AuditRecord {
                decision: Decision::Checkpoint,
                reason_code: Text::const_new("ok"),
                checkpoint: vec![head],
                ..self.base(now_ms)
            };
            let keys = &self.keys;
            let payload = chain.link_checkpoint(
                &mut rec,
                id,
                keys.active_version(),
                |b| keys.chain_mac_active(b),
                |m| keys.sign_checkpoint(m),
            )?;
            let audit_ack = self.enqueue_linked(&mut chain, &payload)?;
            *last = Some(rec.sequence);
            let signed = consentry_core::chain::SignedHead::of(&rec, |m| keys.sign_checkpoint(m));
            let head_ack = self.producer.enqueue(
                &self.heads_topic,
                chain.writer_id(),
                &serde_json::to_vec(&signed)?,
                Duration::from_secs(10),
            )?;
            (audit_ack, head_ack)
        };
        audit_ack.wait()?;
        head_ack.wait()
    }

    pub fn write(&self, rec: &mut AuditRecord) -> anyhow::Result<()> {
        let id = self
            .codec
            .audit_schema_id()
            .ok_or_else(|| anyhow::anyhow!("audit topic has no registered schema"))?;
        let ack = {
            let mut chain = self
                .chain
                .lock()
                .map_err(|_| anyhow::anyhow!("audit chain lock poisoned"))?;
            let keys = &self.keys;
            let payload =
                chain.link(rec, id, keys.active_version(), |b| keys.chain_mac_active(b))?;
            self.enqueue_linked(&mut chain, &payload)?
        };
        ack.wait()
    }

    /// Queues a record just linked into `chain`: committed to the chain if
    /// the producer takes it, rolled back if not (too big, queue full), so
    /// a record never sent never joins the chain.
    fn enqueue_linked(
        &self,
        chain: &mut ChainWriter,
        payload: &[u8],
    ) -> anyhow::Result<consentry_runtime::produce::Ack> {
        match self.producer.enqueue(
            &self.topic,
            chain.writer_id(),
            payload,
            Duration::from_secs(10),
        ) {
            Ok(ack) => {
                chain.commit();
                Ok(ack)
            }
            Err(e) => {
                chain.rollback();
                Err(e)
            }
        }
    }
}

/// Refused calls of one peer for one reason since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub calls: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// At most this many (peer, reason) pairs are tallied between flushes;
/// past it, new peers are tallied together as `peer:*`.
const MAX_TALLIES: usize = 4096;

/// Refused and unauthenticated calls, tallied per peer and reason until
/// the next flush writes them.
#[derive(Default)]
pub struct RefusalLog {
    tallies: Mutex<BTreeMap<(String, &'static str), Tally>>,
}

impl RefusalLog {
    pub fn note(&self, peer: IpAddr, reason: &'static str, now_ms: i64) {
        let Ok(mut tallies) = self.tallies.lock() else {
            return;
        };
        // Peers as the server's limits count them: an IPv6 host rotating
        // through its /64 is one peer here too.
        let mut key = (consentry_runtime::http::peer_key(peer).to_string(), reason);
        if tallies.len() >= MAX_TALLIES && !tallies.contains_key(&key) {
            key.0 = "*".to_string();
        }
        let t = tallies.entry(key).or_insert(Tally {
            calls: 0,
            first_ms: now_ms,
            last_ms: now_ms,
        });
        t.calls += 1;
        t.last_ms = t.last_ms.max(now_ms);
    }

    /// Writes one audit record per tally; at the first that cannot be
    /// written, it and the rest are kept for the next flush (a broker that
    /// is down costs one timeout per flush, not one per tally).
    pub fn flush(&self, audit: &AuditWriter, now_ms: i64) {
        let taken = match self.tallies.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return,
        };
        let mut unwritten = taken.into_iter();
        for ((peer, reason), tally) in unwritten.by_ref() {
            let mut rec = audit.refusals(&peer, reason, &tally, now_ms);
            if let Err(e) = audit.write(&mut rec) {
                tracing::error!(error = %e, reason, "vault: refused calls not audited yet; kept for the next flush");
                self.put_back(std::iter::once(((peer, reason), tally)).chain(unwritten));
                return;
            }
        }
    }

    fn put_back(&self, tallies: impl Iterator<Item = ((String, &'static str), Tally)>) {
        let Ok(mut t) = self.tallies.lock() else {
            return;
        };
        for ((peer, reason), tally) in tallies {
            let key = if t.len() >= MAX_TALLIES && !t.contains_key(&(peer.clone(), reason)) {
                ("*".to_string(), reason)
            } else {
                (peer, reason)
            };
            let kept = t.entry(key).or_insert(Tally { calls: 0, ..tally });
            kept.calls += tally.calls;
            kept.first_ms = kept.first_ms.min(tally.first_ms);
            kept.last_ms = kept.last_ms.max(tally.last_ms);
        }
    }

    #[cfg(test)]
    fn snapshot(&self) -> BTreeMap<(String, &'static str), Tally> {
        self.tallies.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_tallied_per_peer_and_reason_and_bounded() {
        let log = RefusalLog::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for t in 0..5 {
            log.note(a, "unauthenticated", 100 + t);
        }
        log.note(a, "peer_rate_limited", 200);
        log.note(b, "unauthenticated", 300);
        // Two addresses of one IPv6 /64 are one peer.
        log.note("2001:db8:1:2::1".parse().unwrap(), "unauthenticated", 1);
        log.note("2001:db8:1:2::ffff".parse().unwrap(), "unauthenticated", 2);
        let s = log.snapshot();
        assert_eq!(
            s[&("192.0.2.1".to_string(), "unauthenticated")],
            Tally {
                calls: 5,
                first_ms: 100,
                last_ms: 104
            }
        );
        assert_eq!(
            s[&("2001:db8:1:2::".to_string(), "unauthenticated")].calls,
            2
        );
        assert_eq!(s.len(), 4);
        for i in 0..(MAX_TALLIES as u32 + 50) {
            log.note(IpAddr::from(i.to_be_bytes()), "unauthenticated", 400);
        }
        let s = log.snapshot();
        assert!(s.len() <= MAX_TALLIES + 1, "{}", s.len());
        assert!(s[&("*".to_string(), "unauthenticated")].calls >= 50);
    }
}
