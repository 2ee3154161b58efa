//! Producing with backpressure and counted delivery failures, shared by
//! the stage runner and the tools that publish (synthetic feed), and the
//! acknowledged sends the vault's audit records need (`AckedProducer`).

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// A producer each of whose records can be waited on alone, from many
/// threads at once: the vault answers a call only once that call's audit
/// record is acknowledged, while other calls' records are in flight (a
/// flush under a lock would make every call wait for all of them, one at a
/// time). A background thread polls for acknowledgements.
pub struct AckedProducer {
    inner: ThreadedProducer<AckContext>,
}

pub struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<SyncSender<Result<(), String>>>;
    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        // The waiter may have timed out and gone; nothing to tell then.
        let _ = ack.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()));
    }
}

impl AckedProducer {
    /// From a producer configuration; `linger.ms` is lowered to 1 ms, since
    /// a waiting caller pays for every millisecond a record lingers.
    pub fn new(config: &ClientConfig) -> KafkaResult<AckedProducer> {
        let mut config = config.clone();
        config.set("linger.ms", "1");
        Ok(AckedProducer {
            inner: config.create_with_context(AckContext)?,
        })
    }

    /// Sends one record and waits for the broker to acknowledge it.
    pub fn send_acked(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.enqueue(topic, key, payload, timeout)?.wait()
    }

    /// Queues one record; [`Ack::wait`] waits for its acknowledgement. A
    /// caller that must keep records in order enqueues them in order (under
    /// its own lock) and waits outside it.
    pub fn enqueue(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<Ack> {
        let (tx, rx) = sync_channel(1);
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(tx))
            .key(key)
            .payload(payload);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.inner.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if std::time::Instant::now() < deadline =>
                {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        Ok(Ack {
            rx,
            deadline,
            timeout,
        })
    }
}

/// One queued record's acknowledgement.
pub struct Ack {
    rx: std::sync::mpsc::Receiver<Result<(), String>>,
    deadline: std::time::Instant,
    timeout: Duration,
}

impl Ack {
    pub fn wait(self) -> anyhow::Result<()> {
        match self.rx.recv_timeout(
            self.deadline
                .saturating_duration_since(std::time::Instant::now()),
        ) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => anyhow::bail!("record not delivered: {e}"),
            Err(_) => anyhow::bail!("no acknowledgement within {:?}", self.timeout),
        }
    }
}

/// How long [`flush`] sleeps between looks at the in-flight count.
const FLUSH_NAP: Duration = Duration::from_micros(200);

/// Waits until every record sent is acknowledged (or failed), serving
/// delivery reports as they come.
///
/// Why not `Producer::flush`: rdkafka 0.39's flush polls in 100 ms steps,
/// and each poll lasts its whole step even once the queue is empty, so a
/// flush with anything in flight costs at least 100 ms however fast the
/// broker answers. A stage flushes twice per transaction and commits
/// (which begins with a flush): ~300 ms of sleep per batch. A short
/// `poll` is no cure either: it rounds its wait down to whole
/// milliseconds and spins. So: serve reports without waiting, then nap.
pub fn flush<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    // Wakes the broker threads, so records queued so far go out without
    // waiting out linger.ms (only while this call runs: a record queued
    // after it may still linger).
    producer.flush(Duration::ZERO).or_else(|e| match e {
        KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => Ok(()),
        e => Err(e),
    })?;
    loop {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        std::thread::sleep(FLUSH_NAP);
    }
}

/// Commits the producer's transaction after a [`flush`], so the commit's
/// own flush finds nothing in flight and returns at once.
pub fn commit<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> KafkaResult<()> {
    flush(producer, timeout)?;
    producer.commit_transaction(timeout)
}
