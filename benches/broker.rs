//! normalize on the broker against a raw consume-produce pass-through on the
//! same broker, same input, same batch size, measured in one run. The ratio
//! is the figure to watch; absolute numbers depend on the machine.
//!
//! Needs the local stack (`make stack-up`). Runs only under `cargo bench`
//! (`cargo test --all-targets` builds it but skips it).

use consentry_core::topology::Topology;
use consentry_crypto::{AuditKeys, Environment, KeyRing, QuarantineKeys};
use consentry_runtime::admin::{self, ApplyReport};
use consentry_runtime::produce::{self, CountingProducer, DeliveryErrors};
use consentry_runtime::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use consentry_runtime::rdkafka::client::DefaultClientContext;
use consentry_runtime::rdkafka::consumer::{BaseConsumer, Consumer};
use consentry_runtime::rdkafka::message::Message;
use consentry_runtime::rdkafka::producer::{BaseRecord, Producer};
use consentry_runtime::rdkafka::{Offset, TopicPartitionList};
use consentry_runtime::runner::{run_stages, RunOptions};
use consentry_runtime::{Connection, Metrics};
use consentry_synth::{generate, Feed, SynthConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 500;

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let records: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let topology = Arc::new(
        Topology::load(std::path::Path::new("topology.yaml"))
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let conn = Connection {
        bootstrap: std::env::var("CONSENTRY_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        registry_url: std::env::var("CONSENTRY_SCHEMA_REGISTRY")
            .unwrap_or_else(|_| "http://127.0.0.1:8081".into()),
        topic_prefix: format!("bench-{stamp}."),
        session_timeout_ms: 6000,
        ..Default::default()
    };
    let mut report = ApplyReport::default();
    admin::create_topics(&conn, &topology, -1, &mut report)?;
    admin::register_schemas(&conn, &topology, &mut report)?;
    let sink = conn.physical("bench.passthrough");
    let adm: AdminClient<DefaultClientContext> = conn.admin().create()?;
    futures_executor::block_on(adm.create_topics(
        &[NewTopic::new(&sink, 3, TopicReplication::Fixed(-1))],
        &AdminOptions::new(),
    ))?;

    // Input: HL7 ADT messages only (the stage's hot path).
    let feed = generate(&SynthConfig::new(99, records.div_ceil(3)));
    let hl7: Vec<_> = feed
        .iter()
        .filter(|r| r.feed == Feed::Hl7v2)
        .take(records)
        .collect();
    let n = hl7.len();
    let input = conn.physical("ehr.hl7v2");
    let producer: CountingProducer = conn
        .producer()
        .create_with_context(DeliveryErrors::default())?;
    for r in &hl7 {
        produce::send(
            &producer,
            BaseRecord::to(&input).key(&r.key).payload(&r.payload),
        )?;
    }
    producer.flush(Duration::from_secs(60))?;
    producer.context().check()?;
    eprintln!("bench: {n} HL7 records on {input}");

    let (pt_wall, pt_busy) = passthrough(&conn, &input, &sink, n)?;
    let (st_wall, st_busy) = stage(&conn, &topology, n)?;

    let rate = |secs: f64| n as f64 / secs;
    println!("broker benchmark ({n} HL7 ADT records, batches of {BATCH}, transactional, same broker, one run)");
    println!(
        "  {:<34} {:>10} {:>14} {:>14}",
        "", "wall s", "records/s", "busy records/s"
    );
    println!(
        "  {:<34} {:>10.2} {:>14.0} {:>14.0}",
        "raw consume-produce pass-through",
        pt_wall,
        rate(pt_wall),
        rate(pt_busy)
    );
    println!(
        "  {:<34} {:>10.2} {:>14.0} {:>14.0}",
        "normalize stage (outputs+audit+ledger)",
        st_wall,
        rate(st_wall),
        rate(st_busy)
    );
    println!(
        "  normalize / pass-through throughput ratio: {:.2} (wall), {:.2} (busy)",
        pt_wall / st_wall,
        pt_busy / st_busy
    );
    Ok(())
}

/// A consume-produce loop with the same transaction shape and no stage:
/// the floor any stage is measured against. Returns (wall, busy) seconds
/// from the first record received to the last commit.
fn passthrough(conn: &Connection, input: &str, sink: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let consumer: BaseConsumer = conn.consumer("bench-passthrough").create()?;
    consumer.subscribe(&[input])?;
    let producer: CountingProducer = conn
        .transactional_producer("bench-passthrough-0")
        .create_with_context(DeliveryErrors::default())?;
    producer.init_transactions(Duration::from_secs(30))?;
    let (mut done, mut busy) = (0usize, 0f64);
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while done < n {
        anyhow::ensure!(Instant::now() < deadline, "pass-through did not finish");
        let mut batch = Vec::new();
        let until = Instant::now() + Duration::from_millis(100);
        while batch.len() < BATCH && Instant::now() < until {
            if let Some(m) = consumer.poll(Duration::from_millis(20)) {
                batch.push(m?.detach());
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        first.get_or_insert(started);
        producer.begin_transaction()?;
        let mut offsets = TopicPartitionList::new();
        for m in &batch {
            let mut r = BaseRecord::to(sink).payload(m.payload().unwrap_or_default());
            if let Some(k) = m.key() {
                r = r.key(k);
            }
            produce::send(&producer, r)?;
            offsets.add_partition_offset(
                m.topic(),
                m.partition(),
                Offset::Offset(m.offset() + 1),
            )?;
        }
        // The runner's flush and commit, so the ratio compares the stage's
        // work, not two ways of waiting for acknowledgements.
        produce::flush(&producer, Duration::from_secs(30))?;
        let group = consumer
            .group_metadata()
            .ok_or_else(|| anyhow::anyhow!("no group metadata"))?;
        producer.send_offsets_to_transaction(&offsets, &group, Duration::from_secs(30))?;
        produce::commit(&producer, Duration::from_secs(30))?;
        producer.context().check()?;
        busy += started.elapsed().as_secs_f64();
        done += batch.len();
    }
    let wall = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
    Ok((wall, busy))
}

/// The real normalize stage through the runner. Returns (wall, busy).
fn stage(conn: &Connection, topology: &Arc<Topology>, n: usize) -> anyhow::Result<(f64, f64)> {
    let metrics = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    let stages = vec![consentry_stages::build(
        consentry_core::stage::StageName::Normalize,
        topology,
        &consentry_stages::Services::default(),
    )
    .map_err(|e| anyhow::anyhow!(e))?];
    let ring = KeyRing::generate(Environment::NonProduction)?;
    let opts = RunOptions {
        conn: conn.clone(),
        instance: "bench".into(),
        batch_max: BATCH,
        batch_wait: Duration::from_millis(100),
        exit_when_idle: None,
        quarantine_keys: Arc::new(QuarantineKeys::new(&ring)?),
        audit_keys: Arc::new(AuditKeys::new(&ring)?),
        checkpoint_every: Duration::from_secs(10),
    };
    let (t, m, s) = (
        Arc::clone(topology),
        Arc::clone(&metrics),
        Arc::clone(&stop),
    );
    let handle = std::thread::spawn(move || run_stages(t, stages, opts, m, s));
    let in_total = || Metrics::total(&metrics.records_in, "normalize") as usize;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<Instant> = None;
    while in_total() < n {
        anyhow::ensure!(
            Instant::now() < deadline && !handle.is_finished(),
            "normalize did not finish"
        );
        // Records are counted when their batch commits: the first count
        // marks the end of the first batch, so add that batch's time back.
        if first.is_none() && in_total() > 0 {
            first = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let end = Instant::now();
    stop.store(true, Ordering::SeqCst);
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("stage thread panicked"))??;
    let h = metrics.batch_seconds.with_label_values(&["normalize"]);
    let (busy, batches) = (h.get_sample_sum(), h.get_sample_count().max(1));
    let first_batch = busy / batches as f64;
    let wall = first
        .map(|f| (end - f).as_secs_f64() + first_batch)
        .unwrap_or(busy);
    Ok((wall, busy))
}
