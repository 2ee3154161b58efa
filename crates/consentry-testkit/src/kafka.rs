//! The test environment's Kafka side: publishing (plain, to a partition,
//! a synthetic feed in order), transactional producers, and reading topics
//! back as records, canonical events, audit records or opened quarantine
//! payloads.

use crate::env::Env;
use consentry_core::{AuditRecord, CanonicalEvent};
use consentry_crypto::{KeyFile, KeyProvider, QuarantineContext, QuarantineKeys};
use consentry_runtime::codec::SchemaCache;
use consentry_runtime::inspect::{header, read_topic};
use consentry_runtime::produce::{self, CountingProducer, DeliveryErrors};
use consentry_runtime::rdkafka::consumer::Consumer;
use consentry_runtime::rdkafka::message::OwnedMessage;
use consentry_runtime::rdkafka::producer::{BaseRecord, Producer};
use consentry_runtime::rdkafka::Message;
use consentry_synth::{Feed, SynthRecord};
use std::time::Duration;

impl Env {
    /// Sends what `send` sends with one producer, then checks every
    /// delivery.
    fn produce(&self, send: impl FnOnce(&CountingProducer)) {
        let producer: CountingProducer = self
            .conn
            .producer()
            .create_with_context(DeliveryErrors::default())
            .expect("producer");
        send(&producer);
        produce::flush(&producer, Duration::from_secs(30)).expect("flush");
        producer.context().check().expect("all delivered");
    }

    /// A transactional producer under this test's prefix, its
    /// transactions initialised.
    pub fn transactional_producer(&self, transactional_id: &str) -> CountingProducer {
        let producer: CountingProducer = self
            .conn
            .transactional_producer(transactional_id)
            .create_with_context(DeliveryErrors::default())
            .expect("transactional producer");
        producer
            .init_transactions(Duration::from_secs(30))
            .expect("init transactions");
        producer
    }

    pub fn publish(&self, logical_topic: &str, records: &[(Option<&str>, &[u8])]) {
        let topic = self.physical(logical_topic);
        self.produce(|producer| {
            for (key, payload) in records {
                let mut r = BaseRecord::to(&topic).payload(*payload);
                if let Some(k) = key {
                    r = r.key(*k);
                }
                produce::send(producer, r).expect("send");
            }
        });
    }

    /// Publishes one record to an explicit partition.
    pub fn publish_to(&self, logical_topic: &str, partition: i32, payload: &[u8]) {
        let topic = self.physical(logical_topic);
        self.produce(|producer| {
            let r = BaseRecord::<(), [u8]>::to(&topic)
                .partition(partition)
                .payload(payload);
            produce::send(producer, r).expect("send");
        });
    }

    /// Publishes synthetic records to their source topics: the consents
    /// first, read into the consent table by the consent ledger, then the
    /// EHR records (so no event meets a consent still on its way).
    pub fn publish_synth(&self, records: &[SynthRecord]) {
        let consents: Vec<(Option<&str>, &[u8])> = records
            .iter()
            .filter(|r| r.feed == Feed::Consent)
            .map(|r| (Some(r.key.as_str()), r.payload.as_slice()))
            .collect();
        if !consents.is_empty() {
            self.publish("consent.events", &consents);
            self.run_ok(&["run", "consent-ledger", "--exit-when-idle", "2"]);
        }
        for (feed, topic) in [(Feed::Hl7v2, "ehr.hl7v2"), (Feed::Fhir, "ehr.fhir")] {
            let batch: Vec<(Option<&str>, &[u8])> = records
                .iter()
                .filter(|r| r.feed == feed)
                .map(|r| (Some(r.key.as_str()), r.payload.as_slice()))
                .collect();
            self.publish(topic, &batch);
        }
    }

    pub fn read(&self, logical_topic: &str) -> Vec<OwnedMessage> {
        read_topic(
            &self.conn,
            &self.physical(logical_topic),
            Duration::from_secs(60),
        )
        .expect("topic readable")
    }

    /// Sum of high watermarks: a cheap progress signal (it counts
    /// transaction markers too, so it is never used for assertions).
    pub fn watermark(&self, logical_topic: &str) -> i64 {
        let c = self.conn.create_reader().expect("reader");
        (0..3)
            .map(|p| {
                c.fetch_watermarks(&self.physical(logical_topic), p, Duration::from_secs(5))
                    .map(|w| w.1)
                    .unwrap_or(0)
            })
            .sum()
    }

    /// (idempotency key, event) for every record of an event topic.
    pub fn events(&self, logical_topic: &str) -> Vec<(String, CanonicalEvent)> {
        let mut cache = SchemaCache::new(&self.conn.registry_url);
        self.read(logical_topic)
            .iter()
            .map(|m| {
                let key = header(m, "idempotency-key")
                    .expect("idempotency-key header")
                    .to_string();
                let ev = cache
                    .decode_event(m.payload().expect("payload"))
                    .expect("decodes");
                (key, ev)
            })
            .collect()
    }

    pub fn audits(&self) -> Vec<AuditRecord> {
        let mut cache = SchemaCache::new(&self.conn.registry_url);
        self.read("audit")
            .iter()
            .map(|m| {
                cache
                    .decode_audit(m.payload().expect("payload"))
                    .expect("audit decodes")
            })
            .collect()
    }

    /// A quarantine record's payload, opened in process with this test's
    /// key ring under the record's own headers (`None`: it holds none).
    /// Panics if the payload is not sealed or does not open.
    pub fn open_quarantined(&self, m: &OwnedMessage) -> Option<Vec<u8>> {
        let sealed = m.payload()?;
        assert!(
            header(m, "sealed").is_some_and(|s| s.starts_with("aes-256-gcm/v")),
            "a quarantined payload is sealed"
        );
        let ring = KeyFile::new(self.dir.join("keys.json"))
            .key_ring()
            .expect("key ring");
        let keys = QuarantineKeys::new(&ring).expect("quarantine keys");
        let h = |n: &str| header(m, n).unwrap_or_default();
        let context = QuarantineContext {
            id: h("quarantine-id"),
            stage: h("stage"),
            source_topic: h("source-topic"),
            source_partition: h("source-partition").parse().expect("partition"),
            source_offset: h("source-offset").parse().expect("offset"),
            reason: h("reason-code"),
        };
        let plain = keys
            .open(&context, sealed)
            .expect("sealed payload opens under its headers");
        Some(plain.to_vec())
    }
}
