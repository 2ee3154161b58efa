//! The outbox: turns a unit's outcome into the records that leave — its
//! outputs (with the `phi` header), its disclosure-ledger records, its
//! sealed quarantine record — each with its identity headers, and queues
//! them behind the unit's audit record.

use super::transaction::Batch;
use super::StageLoop;
use crate::kafka::kafka_headers;
use crate::produce;
use consentry_core::envelope::Text;
use consentry_core::headers::{self, IdentityHeaders, QuarantineHeaders};
use consentry_core::keys;
use consentry_core::stage::StageName;
use consentry_core::stage::{Outcome, Quarantine};
use consentry_core::ReasonCode;
use consentry_crypto::quarantine::MAX_SEALED_PAYLOAD;
use consentry_crypto::QuarantineContext;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage, ToBytes};
use rdkafka::producer::{BaseRecord, Producer};
use std::sync::Arc;

/// A record ready to send (physical topic).
pub(super) struct Prepared {
    pub(super) topic: String,
    pub(super) key: String,
    pub(super) payload: Option<Vec<u8>>,
    pub(super) headers: OwnedHeaders,
}

impl StageLoop {
    /// Queues everything a unit writes: its outputs, its disclosure-ledger
    /// records and its quarantine record, then its audit record (which the
    /// batch sends first).
    pub(super) fn send_outcome(
        &mut self,
        outcome: &mut Outcome,
        encoded: Vec<Vec<u8>>,
        input: Option<(&OwnedMessage, Option<&Text>)>,
        b: &mut Batch,
    ) -> anyhow::Result<()> {
        let keys = Arc::clone(&self.opts.audit_keys);
        let input_payload = input.and_then(|(m, _)| m.payload());
        outcome.audit.input_fingerprint = match (input, outcome.held_payload.as_deref()) {
            (Some((_, Some(fingerprint))), _) => Some(fingerprint.clone()),
            (_, Some(held)) => Some(keys.fingerprint(held).as_str().into()),
            _ => None,
        };
        if outcome.audit.event_time_ms.is_none() {
            outcome.audit.event_time_ms =
                outcome.outputs.first().and_then(|o| o.event.event_time_ms);
        }
        self.queue_outputs(outcome, encoded, b);
        for r in &outcome.released {
            b.counts.released(r);
        }
        self.queue_disclosures(outcome, b)?;
        if let Some(q) = &outcome.quarantine {
            self.queue_quarantine(outcome, q, input_payload, b);
        }
        let now = b.now_ms;
        self.prepare_audit(&mut outcome.audit, now, b)
    }

    /// The unit's outputs, each fingerprinted into its audit record.
    fn queue_outputs(&self, outcome: &mut Outcome, encoded: Vec<Vec<u8>>, b: &mut Batch) {
        let keys = &self.opts.audit_keys;
        for (out, payload) in outcome.outputs.iter().zip(encoded) {
            // Fingerprint the Avro body: the same content under a
            // re-registered schema id is the same record.
            let fingerprint = keys.fingerprint(payload.get(5..).unwrap_or_default());
            if let Some(a) = outcome
                .audit
                .outputs
                .iter_mut()
                .find(|a| a.idempotency_key == out.idempotency_key && a.topic == out.topic)
            {
                a.fingerprint = fingerprint.as_str().into();
            }
            let mut headers =
                identity_headers(&out.idempotency_key, &out.correlation_id, self.stage_name());
            // Whether the record is still PHI, for consumers that route on
            // headers: from its purpose's profile only, never from a label's
            // value. A destination's records always say it; an internal
            // record once de-identify has labelled it (before that, no
            // header: it is PHI whatever the purpose).
            let phi = self
                .destination_phi
                .get(out.topic.as_str())
                .copied()
                .or_else(|| {
                    let labelled = out
                        .event
                        .security_labels
                        .iter()
                        .any(|l| keys::is_reserved_label(l));
                    let purpose = out.event.purpose.as_deref()?;
                    labelled.then(|| self.purpose_phi.get(purpose).copied().unwrap_or(true))
                });
            if let Some(phi) = phi {
                headers = headers.insert(Header {
                    key: headers::PHI,
                    value: Some(headers::phi_value(phi)),
                });
            }
            // Records whose footprint route counted (not revocation
            // notices): sizes and fields per record count the same records.
            let counted = !outcome.released.is_empty();
            if let (Some(purpose), true) =
                (self.destination_purpose.get(out.topic.as_str()), counted)
            {
                b.counts.destination_record(purpose, payload.len());
            }
            b.records.push(Prepared {
                topic: self.conn.physical(&out.topic),
                key: out.key.to_string(),
                payload: Some(payload),
                headers,
            });
            b.counts.output(&out.topic);
        }
    }

    /// The unit's disclosure-ledger records, stamped with the batch's time.
    fn queue_disclosures(&self, outcome: &mut Outcome, b: &mut Batch) -> anyhow::Result<()> {
        for d in &mut outcome.disclosures {
            d.disclosed_at_ms = b.now_ms;
            b.counts.disclosure(&d.purpose, &d.policy_version);
            let payload = self.codec.encode_disclosure(&self.disclosure_topic, d)?;
            b.records.push(Prepared {
                topic: self.conn.physical(&self.disclosure_topic),
                // One subject's disclosures in one partition, in order.
                key: d.subject_token.to_string(),
                payload: Some(payload),
                headers: identity_headers(&d.disclosure_id, &d.correlation_id, self.stage_name()),
            });
        }
        Ok(())
    }

    /// The unit's quarantine record: headers that say why and where from,
    /// and the payload sealed (or, too big to seal, not held).
    fn queue_quarantine(
        &self,
        outcome: &Outcome,
        q: &Quarantine,
        input_payload: Option<&[u8]>,
        b: &mut Batch,
    ) {
        let corr = outcome.correlation_id.clone().unwrap_or_default();
        let qid = outcome.audit.audit_id.as_str();
        // A payload too big to seal into one broker record (a record
        // near the broker's size limit) is not held: the quarantine
        // record would exceed the limit, fail the batch every time and
        // halt the stage. The record stays readable at its source
        // offset, which the headers name, and the detail says so.
        let whole = outcome.held_payload.as_deref().or(input_payload);
        let payload = whole.filter(|p| p.len() <= MAX_SEALED_PAYLOAD);
        let detail = match whole {
            Some(p) if payload.is_none() => format!(
                "{}; payload not held ({} bytes): read it at its source offset",
                q.detail,
                p.len()
            ),
            _ => q.detail.clone(),
        };
        let mut headers = QuarantineHeaders {
            identity: IdentityHeaders {
                idempotency_key: outcome.dedup_key.to_string(),
                correlation_id: corr.to_string(),
                stage: self.stage_name(),
            },
            reason_code: q.reason,
            reason_detail: detail,
            source_topic: outcome.audit.source_topic.to_string(),
            source_partition: outcome.audit.source_partition,
            source_offset: outcome.audit.source_offset,
            quarantine_id: qid.to_string(),
            sealed: None,
        };
        // The payload leaves this process only sealed, bound to the
        // headers that describe it (see consentry_crypto::quarantine).
        let keys = &self.opts.quarantine_keys;
        let sealed = payload.map(|p| keys.seal(&QuarantineContext::of(&headers), p));
        if sealed.is_some() {
            headers.sealed = Some(keys.header());
        }
        let headers = kafka_headers(&headers.to_pairs());
        b.records.push(Prepared {
            topic: self.conn.physical(&self.quarantine_topic),
            key: qid.to_string(),
            payload: sealed,
            headers,
        });
        b.counts.quarantine(q.reason);
        if q.reason == ReasonCode::SchemaDrift {
            let source = self
                .source_formats
                .get(outcome.audit.source_topic.as_str())
                .copied()
                .unwrap_or("internal");
            b.counts.drift(source, &q.detail);
        }
    }

    pub(super) fn send_prepared(&self, records: Vec<Prepared>) -> anyhow::Result<()> {
        for r in records {
            let mut rec = BaseRecord::<str, [u8]>::to(&r.topic)
                .key(r.key.as_str())
                .headers(r.headers);
            if let Some(p) = &r.payload {
                rec = rec.payload(p.as_slice());
            }
            self.send(rec)?;
        }
        Ok(())
    }

    pub(super) fn send<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
        &self,
        record: BaseRecord<'_, K, P>,
    ) -> anyhow::Result<()> {
        produce::send(&self.producer, record)
    }

    pub(super) fn check_deliveries(&self) -> anyhow::Result<()> {
        self.producer.context().check()
    }
}

/// The identity headers every record a stage writes carries.
pub(super) fn identity_headers(
    idempotency_key: &str,
    correlation_id: &str,
    stage: StageName,
) -> OwnedHeaders {
    kafka_headers(
        &IdentityHeaders {
            idempotency_key: idempotency_key.to_string(),
            correlation_id: correlation_id.to_string(),
            stage,
        }
        .to_pairs(),
    )
}
