//! One batch's transaction, in the order of the recipe in `mod.rs`: decode
//! and process each input, check each outcome against the dedup store,
//! send what is new through the outbox, then the dedup entries, state
//! writes and offsets, and commit; or abort and rewind.

use super::counts::{BatchCounts, BatchPhases};
use super::outbox::Prepared;
use super::{now_ms, StageLoop, TXN_TIMEOUT};
use crate::codec::DecodeError;
use crate::dedup::Seen;
use crate::{panics, produce};
use consentry_core::audit::Decision;
use consentry_core::envelope::Text;
use consentry_core::headers;
use consentry_core::keys::{self, ContentDigest};
use consentry_core::stage::{InputMeta, Outcome, StageInput};
use consentry_core::ReasonCode;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;
use tracing::{debug, info_span, warn};

pub(super) struct Pending {
    pub(super) dedup_key: String,
    pub(super) digest: [u8; 32],
}

/// What one open transaction has done so far.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) pending: Vec<Pending>,
    /// Keys handled earlier in this (uncommitted) batch, with their digests.
    pub(super) in_batch: HashMap<String, [u8; 32]>,
    pub(super) offsets: BTreeMap<(String, i32), i64>,
    pub(super) counts: BatchCounts,
    /// Audit records, sent and acknowledged before anything else.
    pub(super) audit: Vec<Prepared>,
    /// Outputs and quarantine records, sent once the audit records are in.
    pub(super) records: Vec<Prepared>,
    /// The batch's processing time, in its audit records.
    pub(super) now_ms: i64,
}

impl StageLoop {
    /// One transaction: the state work first, then the polled inputs. Reads
    /// as the recipe in `mod.rs`.
    pub(super) fn process_batch(
        &mut self,
        inputs: &[OwnedMessage],
        work: Vec<Outcome>,
    ) -> anyhow::Result<()> {
        let name = self.name();
        let span = info_span!(
            "batch",
            stage = name,
            records = inputs.len(),
            work = work.len()
        );
        let _enter = span.enter();
        // 1. Begin.
        self.producer.begin_transaction()?;
        self.producer.context().reset();
        let mut b = Batch {
            now_ms: now_ms(),
            ..Default::default()
        };
        let mut phases = BatchPhases::new();
        // 2. Process: table work, then each input; dedup per unit.
        for unit in work {
            self.handle_unit(unit, None, &mut b)?;
        }
        for m in inputs {
            self.process_input(m, &mut b)?;
        }
        phases.mark("process");
        // 3. Audit acknowledged, before anything it describes.
        self.send_audit_acknowledged(&mut b)?;
        phases.mark("audit_acked");
        // 4. Records acknowledged: outputs, disclosures, quarantine.
        self.send_prepared(std::mem::take(&mut b.records))?;
        self.flush_and_check()?;
        phases.mark("outputs_acked");
        // 5. The chain head, dedup entries and state writes, vouching only
        //    for what is in.
        self.write_dedup_and_state(&b)?;
        // 6. Offsets.
        self.send_offsets(&b.offsets)?;
        phases.mark("dedup_and_offsets");
        // 7. Commit, then count.
        produce::commit(&self.producer, TXN_TIMEOUT)?;
        self.check_deliveries()?;
        let commit = phases.mark("committed");
        phases.warn_if_slow(name, inputs.len());
        self.committed(b, commit);
        debug!(stage = name, "batch committed");
        Ok(())
    }

    /// Decodes one input and asks the stage what to make of it. A record
    /// that makes the stage panic is a bad record, not a dead stage: it
    /// goes to quarantine (`malformed`, with where the code gave up, never
    /// the panic's message, which may quote the input) and the batch goes on.
    fn process_input(&mut self, m: &OwnedMessage, b: &mut Batch) -> anyhow::Result<()> {
        let name = self.name();
        b.offsets
            .insert((m.topic().to_string(), m.partition()), m.offset() + 1);
        let logical = self
            .conn
            .logical(m.topic())
            .unwrap_or(m.topic())
            .to_string();
        b.counts.input(&logical);
        let meta = input_meta(&logical, m, b.now_ms);
        let decided = panic::catch_unwind(AssertUnwindSafe(|| {
            match self.codec.decode(&logical, m.payload()) {
                Ok(body) => Ok(self.stage.process(
                    &StageInput {
                        meta: meta.clone(),
                        body,
                    },
                    &self.tables(),
                )),
                Err(DecodeError::Record { reason, detail }) => Ok(vec![Outcome::quarantined(
                    self.stage_name(),
                    &self.policy_version,
                    &meta,
                    None,
                    reason,
                    detail,
                )]),
                Err(e @ DecodeError::Registry(_)) => Err(e),
            }
        }));
        let units = match decided {
            Ok(Ok(units)) => units,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                let at = panics::last_location().unwrap_or_else(|| "unknown".into());
                self.metrics.stage_panics.with_label_values(&[name]).inc();
                vec![Outcome::quarantined(
                    self.stage_name(),
                    &self.policy_version,
                    &meta,
                    None,
                    ReasonCode::Malformed,
                    format!("{name} panicked at {at}"),
                )]
            }
        };
        let redrive_of = crate::inspect::header(m, headers::REDRIVE_OF);
        // Once per input, whatever number of units it yields (a Bundle).
        let fingerprint = m
            .payload()
            .map(|p| Text::from(self.opts.audit_keys.fingerprint(p).as_str()));
        for mut unit in units {
            if let Some(qid) = redrive_of {
                rekey_for_redrive(&mut unit, name, &self.policy_version, qid);
                b.counts.redriven += 1;
            }
            self.handle_unit(unit, Some((m, fingerprint.as_ref())), b)?;
        }
        Ok(())
    }

    /// Fail closed: the audit records first, acknowledged, and only then
    /// what they describe. A trail that cannot be written stops the batch
    /// before any output leaves (on every broker, including one that shows
    /// aborted transactions).
    fn send_audit_acknowledged(&mut self, b: &mut Batch) -> anyhow::Result<()> {
        self.send_prepared(std::mem::take(&mut b.audit))?;
        if let Err(e) = self.flush_and_check() {
            self.metrics
                .audit_write_failures
                .with_label_values(&[self.name()])
                .inc();
            return Err(e.context("audit records not acknowledged; nothing else written"));
        }
        Ok(())
    }

    /// Flushes (`produce::flush`, not rdkafka's, which sleeps in 100 ms
    /// steps) and checks every delivery.
    fn flush_and_check(&self) -> anyhow::Result<()> {
        produce::flush(&self.producer, TXN_TIMEOUT)?;
        self.check_deliveries()
    }

    /// The chain head, the batch's dedup entries and the state writes, in
    /// that order: only after every output is acknowledged (see
    /// `crate::dedup`), since none may vouch for a missing record.
    fn write_dedup_and_state(&self, b: &Batch) -> anyhow::Result<()> {
        self.write_chain_head()?;
        let dedup_topic = self.conn.physical(&self.dedup_topic);
        for p in &b.pending {
            self.send(
                BaseRecord::to(&dedup_topic)
                    .key(&p.dedup_key)
                    .payload(&p.digest[..]),
            )?;
        }
        if let Some(state) = &self.state {
            let topic = state.topic().to_string();
            for w in state.staged() {
                let mut rec = BaseRecord::<str, [u8]>::to(&topic).key(w.key.as_str());
                if let Some(v) = &w.value {
                    rec = rec.payload(v.as_slice());
                }
                self.send(rec)?;
            }
        }
        Ok(())
    }

    /// The inputs' next offsets, committed with the transaction.
    fn send_offsets(&self, offsets: &BTreeMap<(String, i32), i64>) -> anyhow::Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| anyhow::anyhow!("consumer has no group metadata"))?;
        self.producer
            .send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)?;
        Ok(())
    }

    /// After the commit: what the batch did becomes the stage's memory
    /// (dedup entries, state, chain head) and its metrics.
    fn committed(&mut self, b: Batch, commit: Duration) {
        let name = self.name();
        self.metrics
            .commit_seconds
            .with_label_values(&[name])
            .observe(commit.as_secs_f64());
        self.metrics
            .transactions
            .with_label_values(&[name, "committed"])
            .inc();
        self.report.transactions_committed += 1;
        self.chain_committed();
        self.unchecked_commits += 1;
        for p in b.pending {
            self.dedup.record(p.dedup_key, p.digest);
        }
        if let Some(state) = self.state.as_mut() {
            state.commit();
        }
        self.metrics
            .dedup_keys
            .with_label_values(&[name])
            .set(self.dedup.len() as i64);
        b.counts.commit(name, &self.metrics, &mut self.report);
    }

    /// Deduplicates one unit of work and, if it is new, sends its records
    /// and stages its state writes.
    pub(super) fn handle_unit(
        &mut self,
        unit: Outcome,
        input: Option<(&OwnedMessage, Option<&Text>)>,
        b: &mut Batch,
    ) -> anyhow::Result<()> {
        let name = self.name();
        // A dependency that did not answer is no verdict on the record:
        // abort the batch and retry it (fail closed, nothing written).
        if let Some(q) = unit
            .quarantine
            .as_ref()
            .filter(|q| q.reason == ReasonCode::Unavailable)
        {
            anyhow::bail!("{name}: {}", q.detail);
        }
        // Encoded once: the same bytes are digested and sent. Under
        // `catch_unwind` like `process`: what a stage made of a record is
        // the record's doing, and may not stop the stage either.
        let encoding = panic::catch_unwind(AssertUnwindSafe(|| {
            unit.outputs
                .iter()
                .map(|o| self.codec.encode_event(&o.topic, &o.event))
                .collect::<Result<Vec<_>, _>>()
        }));
        let (unit, encoded) = match encoding {
            Ok(encoded) => (unit, encoded?),
            Err(_) => {
                let at = panics::last_location().unwrap_or_else(|| "unknown".into());
                self.metrics.stage_panics.with_label_values(&[name]).inc();
                let meta = source_of(&unit);
                let mut q = Outcome::quarantined_with_key(
                    self.stage_name(),
                    &self.policy_version,
                    &meta,
                    unit.dedup_key.clone(),
                    unit.audit.event_id.clone(),
                    ReasonCode::Malformed,
                    format!("{name} output encoding panicked at {at}"),
                );
                q.held_payload = unit.held_payload;
                (q, Vec::new())
            }
        };
        let digest = outcome_digest(&unit, &encoded);
        let dedup = &self.dedup;
        let in_batch = &b.in_batch;
        let seen = |key: &str| match in_batch.get(key) {
            Some(d) if *d == digest => Seen::Same,
            Some(_) => Seen::Different,
            None => dedup.check(key, &digest),
        };
        let (mut unit, encoded) = match seen(&unit.dedup_key) {
            Seen::Same => {
                b.counts.duplicates += 1;
                return Ok(());
            }
            Seen::New => (unit, encoded),
            Seen::Different => {
                // Same key, other content: never overwrite what left
                // already; hold the newcomer for review instead. Its state
                // writes are not applied: they belong to the content held.
                let key = keys::idempotency_key(
                    name,
                    &self.policy_version,
                    &unit.dedup_key,
                    Some(&hex::encode(&digest[..8])),
                );
                if seen(&key) != Seen::New {
                    b.counts.duplicates += 1;
                    return Ok(());
                }
                let meta = source_of(&unit);
                let mut conflict = Outcome::quarantined_with_key(
                    self.stage_name(),
                    &self.policy_version,
                    &meta,
                    key,
                    unit.audit.event_id.clone(),
                    ReasonCode::IdempotencyConflict,
                    "idempotency-key",
                );
                conflict.held_payload = unit.held_payload;
                (conflict, Vec::new())
            }
        };
        self.send_outcome(&mut unit, encoded, input, b)?;
        if unit.audit.decision == Decision::Redrive {
            b.counts.redriven += 1;
        }
        b.counts.consent(&unit.audit);
        match self.state.as_mut() {
            Some(state) => {
                for w in unit.state {
                    state.write(w);
                }
            }
            // A table the stage only reads is never written by it.
            None if !unit.state.is_empty() => {
                anyhow::bail!("{name} wrote to a table it only reads")
            }
            None => {}
        }
        b.in_batch.insert(unit.dedup_key.to_string(), digest);
        b.pending.push(Pending {
            dedup_key: unit.dedup_key.into(),
            digest,
        });
        Ok(())
    }

    /// Aborts the open transaction and moves the consumer back to the
    /// batch's first offsets, so the batch is processed again.
    pub(super) fn abort_and_rewind(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        let name = self.name();
        // A batch that failed while sending has records in flight; abort
        // needs their delivery reports polled first (a BaseProducer polls
        // only when asked), or it times out and the stage stops.
        if let Err(e) = produce::flush(&self.producer, TXN_TIMEOUT) {
            warn!(stage = name, error = %e, "flush before abort failed");
        }
        if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
            // A fatal producer error (e.g. fenced by a newer instance): stop.
            anyhow::bail!("cannot abort the transaction: {e}");
        }
        if let Some(state) = self.state.as_mut() {
            state.abort();
        }
        self.chain.rollback();
        self.metrics
            .transactions
            .with_label_values(&[name, "aborted"])
            .inc();
        self.report.transactions_aborted += 1;
        let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for m in batch {
            first
                .entry((m.topic().to_string(), m.partition()))
                .or_insert(m.offset());
        }
        for ((topic, partition), offset) in first {
            if let Err(e) = self.consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            ) {
                warn!(stage = name, error = %e, "seek after abort failed; rejoining from committed offsets");
                self.consumer.unsubscribe();
                let physical: Vec<String> = self
                    .spec
                    .inputs
                    .iter()
                    .map(|t| self.conn.physical(t))
                    .collect();
                self.consumer
                    .subscribe(&physical.iter().map(String::as_str).collect::<Vec<_>>())?;
                break;
            }
        }
        Ok(())
    }
}

/// A record `consentry quarantine redrive` sent back is new work, whatever
/// the ledger says of the input it once was: each of its units gets a key
/// of its own, derived from the quarantine id. So the redrive of one id is
/// handled once (sending it again is a duplicate), and a record that fails
/// again gets a new quarantine id rather than vanishing as a duplicate of
/// its first failure. Output keys are the stage's own, so what downstream
/// stages already have stays a duplicate there.
pub(super) fn rekey_for_redrive(
    unit: &mut Outcome,
    stage: &str,
    policy_version: &str,
    quarantine_id: &str,
) {
    let key = keys::idempotency_key(
        stage,
        policy_version,
        &unit.dedup_key,
        Some(&format!("redrive:{quarantine_id}")),
    );
    unit.audit.audit_id = keys::audit_id(stage, policy_version, &key);
    unit.audit.idempotency_key = key.clone();
    unit.dedup_key = key;
}

/// Where a unit came from, to quarantine it in its place.
pub(super) fn source_of(unit: &Outcome) -> InputMeta {
    InputMeta {
        topic: unit.audit.source_topic.to_string(),
        partition: unit.audit.source_partition,
        offset: unit.audit.source_offset,
        correlation_id: unit.correlation_id.as_deref().map(String::from),
        ..Default::default()
    }
}

pub(super) fn input_meta(logical_topic: &str, m: &OwnedMessage, now_ms: i64) -> InputMeta {
    let header = |name: &str| crate::inspect::header(m, name).map(String::from);
    InputMeta {
        topic: logical_topic.to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(String::from),
        idempotency_key: header(headers::IDEMPOTENCY_KEY),
        correlation_id: header(headers::CORRELATION_ID),
        timestamp_ms: m.timestamp().to_millis(),
        now_ms,
    }
}

/// The digest of what an outcome writes downstream: its outputs, or its
/// quarantine verdict. Audit records are left out: they name the input's
/// position, which differs between two deliveries of the same event.
pub(super) fn outcome_digest(o: &Outcome, encoded: &[Vec<u8>]) -> [u8; 32] {
    let mut d = ContentDigest::new();
    for (out, payload) in o.outputs.iter().zip(encoded) {
        d.update(out.topic.as_bytes());
        d.update(out.key.as_bytes());
        d.update(out.idempotency_key.as_bytes());
        // Skip the 5-byte wire header: a re-registered schema id is not a content change.
        d.update(payload.get(5..).unwrap_or_default());
    }
    if let Some(q) = &o.quarantine {
        d.update(q.reason.as_str().as_bytes());
        d.update(q.detail.as_bytes());
    }
    // The ledger record's id and subject, not its time of writing.
    for x in &o.disclosures {
        d.update(x.disclosure_id.as_bytes());
        d.update(x.subject_token.as_bytes());
    }
    d.finish()
}
