//! Producing with backpressure and counted delivery failures, shared by
//! the stage runner and the tools that publish (synthetic feed).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A producer context that counts failed deliveries.
#[derive(Default)]
pub struct DeliveryErrors {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl DeliveryErrors {
    pub fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
    }

    /// Fails if any delivery failed since the last reset.
    pub fn check(&self) -> anyhow::Result<()> {
        let n = self.count.load(Ordering::SeqCst);
        if n > 0 {
            let first = self
                .first
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_default();
            anyhow::bail!("{n} records were not delivered (first error: {first})");
        }
        Ok(())
    }
}

impl ClientContext for DeliveryErrors {}

impl ProducerContext for DeliveryErrors {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.count.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut f) = self.first.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

pub type CountingProducer = BaseProducer<DeliveryErrors>;

/// Sends one record, waiting for queue space rather than failing.
pub fn send<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &CountingProducer,
    mut record: BaseRecord<'_, K, P>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}
