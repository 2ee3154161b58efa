//! Revocation latency while events flow: every stage in one process on the
//! local broker, HL7 ADT events produced at a fixed rate (5,000/s by
//! default) for subjects who consented to research (HRESCH: two purposes),
//! and a revocation of one of them every 100 ms once the flow is on. The
//! figure is `consentry_revocation_latency_seconds`: from the revocation's
//! arrival on `consent.events` to its notices committed to the destinations
//! (p50 and p99 from the histogram's buckets), next to the rate the events
//! were produced and consumed at in the same run.
//!
//! Needs the local stack (`make stack-up`). Runs only under `cargo bench`.

use consentry_core::avro::{self, SchemaRef};
use consentry_core::consent::{ConsentEntry, ConsentEvent};
use consentry_core::topology::Topology;
use consentry_crypto::{AuditKeys, Environment, KeyRing, QuarantineKeys};
use consentry_runtime::admin::{self, ApplyReport};
use consentry_runtime::codec::SchemaCache;
use consentry_runtime::inspect::read_topic;
use consentry_runtime::produce::{self, CountingProducer, DeliveryErrors};
use consentry_runtime::rdkafka::message::Message;
use consentry_runtime::rdkafka::producer::BaseRecord;
use consentry_runtime::registry::RegistryClient;
use consentry_runtime::runner::{run_stages, RunOptions};
use consentry_runtime::{Connection, Metrics};
use consentry_vault::{FileStore, Vault};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SYSTEM: &str = "urn:oid:2.16.840.1.113883.3.7777.1";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mrn(i: usize) -> String {
    format!("CS{:07}", 5_000_000 + i)
}

fn adt(i: usize, subjects: usize) -> Vec<u8> {
    format!(
        "MSH|^~\\&|CSEHR|CSHOSP|CONSENTRY|CS|20261001120000||ADT^A08^ADT_A01|BENCH{i:08}|P|2.5\r\
         EVN|A08|20261001120000\r\
         PID|1||{}^^^CSHOSP^MR||Benchperson^Sam||19800101|F\r\
         PV1|1|I\r",
        mrn(i % subjects)
    )
    .into_bytes()
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    // The runner's warnings (a slow batch and its phases) on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rate: usize = env_or("BENCH_EVENTS_PER_SEC", 5_000);
    let seconds: u64 = env_or("BENCH_SECONDS", 15);
    let subjects: usize = env_or("BENCH_SUBJECTS", 2_000);
    let batch_max: usize = env_or("BENCH_BATCH_MAX", 500);
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
        topic_prefix: format!("bench-consent-{stamp}."),
        session_timeout_ms: 6000,
        ..Default::default()
    };
    let mut report = ApplyReport::default();
    admin::create_topics(&conn, &topology, -1, &mut report)?;
    admin::register_schemas(&conn, &topology, &mut report)?;
    let schema_id = RegistryClient::new(&conn.registry_url).lookup(
        &conn.subject("consent.events"),
        SchemaRef::ConsentEvent.source(),
    )?;
    let capture = |i: usize, state: &str, version: i64| -> anyhow::Result<Vec<u8>> {
        let c = ConsentEvent {
            consent_id: format!("bench-{i}"),
            subject_system: SYSTEM.into(),
            subject_value: mrn(i),
            purpose: "HRESCH".into(),
            channel: "*".into(),
            state: state.into(),
            version,
            effective_ms: 0,
            expires_ms: None,
            source: "bench".into(),
            captured_by: None,
            notice_version: None,
        };
        Ok(avro::encode_consent_event(&c, schema_id)?)
    };

    let dir = std::env::temp_dir().join(format!("consentry-bench-consent-{stamp}"));
    std::fs::create_dir_all(&dir)?;
    let ring = KeyRing::generate(Environment::NonProduction)?;
    let vault = Vault::new(
        &ring,
        Environment::NonProduction,
        Box::new(FileStore::open(&dir.join("vault.redb"))?),
    )?;
    let services = consentry_stages::Services {
        keys: Some(Arc::new(ring.clone())),
        vault: Some(Arc::new(vault)),
    };
    let stages =
        consentry_stages::build_all(&topology, &services).map_err(|e| anyhow::anyhow!(e))?;
    let metrics = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions {
        conn: conn.clone(),
        instance: "bench".into(),
        batch_max,
        batch_wait: Duration::from_millis(50),
        exit_when_idle: None,
        quarantine_keys: Arc::new(QuarantineKeys::new(&ring)?),
        audit_keys: Arc::new(AuditKeys::new(&ring)?),
        checkpoint_every: Duration::from_secs(10),
    };
    let (t, m, s) = (
        Arc::clone(&topology),
        Arc::clone(&metrics),
        Arc::clone(&stop),
    );
    let handle = std::thread::spawn(move || run_stages(t, stages, opts, m, s));

    let producer: CountingProducer = conn
        .producer()
        .create_with_context(DeliveryErrors::default())?;
    let consents = conn.physical("consent.events");
    for i in 0..subjects {
        produce::send(
            &producer,
            BaseRecord::to(&consents)
                .key("k")
                .payload(&capture(i, "active", 1)?),
        )?;
    }
    produce::flush(&producer, Duration::from_secs(60))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (Metrics::total(&metrics.records_in, "consent-ledger") as usize) < subjects {
        anyhow::ensure!(
            Instant::now() < deadline && !handle.is_finished(),
            "the consent ledger did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("bench: {subjects} consents in the table; events at {rate}/s for {seconds} s");

    // Events at a fixed rate, in 10 ms slices; a revocation every 100 ms
    // after the first 3 s (subjects in the order their events started).
    let ehr = conn.physical("ehr.hl7v2");
    let start = Instant::now();
    let flow_started_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let normalized_at_start = Metrics::total(&metrics.records_in, "normalize");
    let (mut sent, mut revoked) = (0usize, 0usize);
    while start.elapsed() < Duration::from_secs(seconds) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as usize;
        while sent < due {
            produce::send(
                &producer,
                BaseRecord::to(&ehr).key("k").payload(&adt(sent, subjects)),
            )?;
            sent += 1;
        }
        let revocations_due = ((start.elapsed().as_secs_f64() - 3.0) * 10.0).max(0.0) as usize;
        while revoked < revocations_due.min(subjects) {
            produce::send(
                &producer,
                BaseRecord::to(&consents)
                    .key("k")
                    .payload(&capture(revoked, "revoked", 2)?),
            )?;
            revoked += 1;
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(10));
    }
    produce::flush(&producer, Duration::from_secs(60))?;
    let flow_secs = start.elapsed().as_secs_f64();
    let consumed = Metrics::total(&metrics.records_in, "normalize") - normalized_at_start;
    // Every revoked subject has had events at both HRESCH destinations
    // (its first event came long before its revocation): two notices each.
    // Wait for all of them, so none is left out of the figures.
    let owed = 2 * revoked as u64;
    let notices = || {
        ["trial-recruitment", "registry-research"]
            .iter()
            .map(|p| {
                metrics
                    .revocation_seconds
                    .with_label_values(&[p])
                    .get_sample_count()
            })
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while notices() < owed && Instant::now() < deadline && !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("stages panicked"))??;

    // Both HRESCH purposes' notices, together.
    let mut count = 0u64;
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for purpose in ["trial-recruitment", "registry-research"] {
        let h = metrics.revocation_seconds.with_label_values(&[purpose]);
        let proto = prometheus::core::Collector::collect(&h);
        for mf in proto {
            for m in mf.get_metric() {
                let hist = m.get_histogram();
                count += hist.get_sample_count();
                for (i, b) in hist.get_bucket().iter().enumerate() {
                    match buckets.get_mut(i) {
                        Some(x) => x.1 += b.cumulative_count(),
                        None => buckets.push((b.upper_bound(), b.cumulative_count())),
                    }
                }
            }
        }
    }
    let quantile = |q: f64| {
        let want = (q * count as f64).ceil() as u64;
        buckets
            .iter()
            .find(|(_, c)| *c >= want)
            .map_or(f64::INFINITY, |(le, _)| *le)
    };
    let within_1s = buckets
        .iter()
        .find(|(le, _)| (*le - 1.0).abs() < 1e-9)
        .map_or(0, |(_, c)| *c);
    println!("consent benchmark (every stage in one process, same broker, one run)");
    println!(
        "  events produced: {sent} in {flow_secs:.1} s ({:.0}/s); consumed by normalize meanwhile: {consumed} ({:.0}/s)",
        sent as f64 / flow_secs,
        consumed as f64 / flow_secs
    );
    println!("  revocations: {revoked}; notices owed: {owed}; notices written: {count}");
    println!(
        "  revocation latency (arrival -> notices committed): p50 <= {:.2} s, p99 <= {:.2} s (bucket bounds); {within_1s} of {count} within 1 s (issue 6 target: p99 under 1 s at 5k events/s)",
        quantile(0.5),
        quantile(0.99)
    );
    // Where the time goes: arrival -> the ledger's table write -> route's
    // notice batch starting -> the notice written (medians).
    let read = |t: &str| read_topic(&conn, &conn.physical(t), Duration::from_secs(60));
    let mut written: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    for m in read("consent.state")? {
        if let Some(e) = m.payload().and_then(ConsentEntry::decode) {
            if e.status == consentry_core::consent::ConsentStatus::Revoked {
                written.insert(e.received_ms, m.timestamp().to_millis().unwrap_or(0));
            }
        }
    }
    let mut cache = SchemaCache::new(&conn.registry_url);
    let (mut to_table, mut to_route, mut to_notice) = (Vec::new(), Vec::new(), Vec::new());
    // (arrival -> notice's audit record written, ms; arrival) per notice.
    let mut end_to_end: Vec<(i64, i64)> = Vec::new();
    for m in read(&topology.audit_topic)? {
        let Some(Ok(a)) = m.payload().map(|p| cache.decode_audit(p)) else {
            continue;
        };
        if a.decision != "revocation_notice" {
            continue;
        }
        let Some(arrived) = a.event_time_ms else {
            continue;
        };
        if let Some(table_ts) = written.get(&arrived) {
            let notice_written = m.timestamp().to_millis().unwrap_or(0);
            to_table.push(table_ts - arrived);
            to_route.push(a.processing_time_ms - table_ts);
            to_notice.push(notice_written - a.processing_time_ms);
            end_to_end.push((notice_written - arrived, arrived - flow_started_ms));
        }
    }
    let median = |v: &mut Vec<i64>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    println!(
        "  medians: arrival -> consent table written {} ms; -> route's notice batch begins {} ms; -> audit of the notice written {} ms",
        median(&mut to_table),
        median(&mut to_route),
        median(&mut to_notice)
    );
    end_to_end.sort_unstable_by(|a, b| b.cmp(a));
    let slowest: Vec<String> = end_to_end
        .iter()
        .take(5)
        .map(|(ms, at)| format!("{ms} ms (arrived at +{:.1} s)", *at as f64 / 1000.0))
        .collect();
    println!("  slowest notices: {}", slowest.join(", "));
    for stage in ["consent-ledger", "route"] {
        let c = metrics.commit_seconds.with_label_values(&[stage]);
        let b = metrics.batch_seconds.with_label_values(&[stage]);
        println!(
            "  {stage}: {} batches, mean batch {:.3} s, mean commit {:.3} s",
            b.get_sample_count(),
            b.get_sample_sum() / b.get_sample_count().max(1) as f64,
            c.get_sample_sum() / c.get_sample_count().max(1) as f64
        );
    }
    let route_batch = metrics.batch_seconds.with_label_values(&["route"]);
    let (sum, n) = (
        route_batch.get_sample_sum(),
        route_batch.get_sample_count().max(1),
    );
    println!(
        "  route's mean batch (up to {batch_max} records): {:.2} s over {n} batches; a notice waits for at most the batch in progress",
        sum / n as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
