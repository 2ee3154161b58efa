//! Vault resolve latency under load (issue 4), on the local stack:
//! `consentry vault serve` over each store (the embedded file, PostgreSQL),
//! CLIENTS threads resolving random tokens back to back for a few seconds;
//! p50, p99, p99.9 and calls/s. Every answered call waits for its audit
//! record to be acknowledged by the broker, so the same run also measures
//! that alone (an audit-sized record produced and acknowledged, from as
//! many threads): the ratio says what the vault adds to the audit write.
//!
//! Needs the stack (`make stack-up`) and PostgreSQL on 127.0.0.1:5432.

use consentry_core::topology::Topology;
use consentry_crypto::{Environment, KeyFile, KeyProvider, KeyRing};
use consentry_runtime::produce::AckedProducer;
use consentry_runtime::Connection;
use consentry_vault::{FileStore, PgStore, Vault, VaultStore};
use rand::Rng;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKENS: usize = 2_000;
const CLIENTS: usize = 8;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
const WHY: &str = "patient called about programme enrolment";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs benches once as tests: nothing to do.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("consentry-bench-vault-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let prefix = format!("bench-vault-{pid}.");
    let conn = Connection {
        bootstrap: std::env::var("CONSENTRY_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        registry_url: std::env::var("CONSENTRY_SCHEMA_REGISTRY")
            .unwrap_or_else(|_| "http://127.0.0.1:8081".into()),
        topic_prefix: prefix.clone(),
        session_timeout_ms: 6000,
        ..Default::default()
    };
    let keys = dir.join("keys.json");
    KeyFile::new(&keys).save(&KeyRing::generate(Environment::NonProduction)?)?;
    let ring = KeyFile::new(&keys).key_ring()?;
    consentry(&conn, &keys, &["topics", "apply"])?;
    let out = consentry(
        &conn,
        &keys,
        &[
            "vault",
            "caller",
            "add",
            "--callers",
            path(&dir.join("callers.json")),
            "--id",
            "bench",
            "--domains",
            "crm",
            "--purposes",
            "patient-support",
            "--rate-per-minute",
            "1000000000",
        ],
    )?;
    let credential = out
        .lines()
        .find_map(|l| l.split("store it now): ").nth(1))
        .ok_or_else(|| anyhow::anyhow!("no credential printed"))?
        .trim()
        .to_string();

    println!("vault benchmark ({CLIENTS} clients, {TOKENS} tokens, {MEASURE:?} per run)");
    let schema = format!("bench_vault_{pid}");
    let file = dir.join("vault.redb");
    let mut lines = Vec::new();
    for (backend, spec) in [
        ("file", path(&file).to_string()),
        ("postgres", PG.to_string()),
    ] {
        let store: Box<dyn VaultStore> = match backend {
            "file" => Box::new(FileStore::open(&file)?),
            _ => Box::new(PgStore::connect(PG, &schema)?),
        };
        let vault = Vault::new(&ring, Environment::NonProduction, store)?;
        let tokens: Vec<String> = (0..TOKENS)
            .map(|i| {
                vault.issue(
                    "crm",
                    &format!("subject-{i:05}"),
                    format!("urn:mrn|BENCH{i:06}").as_bytes(),
                    0,
                )
            })
            .collect::<Result<_, _>>()?;
        drop(vault); // the file store admits one process
        let port = free_port()?;
        let _server = Killed(
            command(&conn, &keys)
                .env("CONSENTRY_VAULT", &spec)
                .env("CONSENTRY_VAULT_SCHEMA", &schema)
                .args([
                    "vault",
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--callers",
                    path(&dir.join("callers.json")),
                    "--metrics-addr",
                    "127.0.0.1:0",
                    // Every client is 127.0.0.1: the per-peer limit would
                    // measure itself.
                    "--peer-rate-per-second",
                    "1000000",
                ])
                .stdout(Stdio::null())
                .spawn()?,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the vault did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let tokens = Arc::new(tokens);
        let url = format!("http://127.0.0.1:{port}/v1/resolve");
        let r = load(|| {
            let (tokens, url, credential) = (Arc::clone(&tokens), url.clone(), credential.clone());
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            move || {
                let token = &tokens[rand::rng().random_range(0..tokens.len())];
                let body = serde_json::json!({
                    "token": token, "purpose": "patient-support", "justification": WHY,
                });
                let resp = agent
                    .post(&url)
                    .header("Authorization", &format!("Bearer {credential}"))
                    .send_json(&body);
                matches!(resp, Ok(r) if r.status() == 200)
            }
        })?;
        lines.push(r.line(&format!("vault resolve ({backend} store)")));
        println!("{}", lines.last().map_or("", String::as_str));
    }

    // The audit write alone: what every answered call waits for.
    let topology = Topology::load(Path::new("topology.yaml"))?;
    let topic = conn.physical(&topology.audit_topic);
    let producer = Arc::new(AckedProducer::new(
        conn.producer().set("message.timeout.ms", "10000"),
    )?);
    let audit_sized = vec![b'a'; 420];
    let base = load(|| {
        let (producer, topic, payload) =
            (Arc::clone(&producer), topic.clone(), audit_sized.clone());
        move || {
            let key = format!("{:016x}", rand::rng().random::<u64>());
            producer
                .send_acked(&topic, &key, &payload, Duration::from_secs(10))
                .is_ok()
        }
    })?;
    lines.push(base.line("audit write alone (produce + ack)"));
    println!("{}", lines.last().map_or("", String::as_str));
    drop_schema(&schema);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

struct Figures {
    calls: usize,
    failed: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

impl Figures {
    fn line(&self, what: &str) -> String {
        format!(
            "  {what:<36} {:>7.0} calls/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  failed {}",
            self.calls as f64 / self.seconds,
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            self.failed
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CLIENTS threads calling `make()`'s closure back to back: a warm-up,
/// then MEASURE of recorded latencies.
fn load<F, C>(make: F) -> anyhow::Result<Figures>
where
    F: Fn() -> C,
    C: FnMut() -> bool + Send + 'static,
{
    let start = Instant::now();
    let (warm, end) = (start + WARM_UP, start + WARM_UP + MEASURE);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut call = make();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut failed = 0;
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    let ok = call();
                    if t >= warm {
                        lat.push(t.elapsed());
                        failed += usize::from(!ok);
                    }
                }
                (lat, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for t in threads {
        let (lat, f) = t.join().map_err(|_| anyhow::anyhow!("a client panicked"))?;
        all.extend(lat);
        failed += f;
    }
    all.sort();
    anyhow::ensure!(!all.is_empty(), "no calls measured");
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Ok(Figures {
        calls: all.len(),
        failed,
        seconds: MEASURE.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
    })
}

fn command(conn: &Connection, keys: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_consentry"));
    c.env("CONSENTRY_TOPIC_PREFIX", &conn.topic_prefix)
        .env("CONSENTRY_BOOTSTRAP", &conn.bootstrap)
        .env("CONSENTRY_SCHEMA_REGISTRY", &conn.registry_url)
        .env("CONSENTRY_KEY_FILE", keys)
        .env_remove("CONSENTRY_MASTER_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    c
}

fn consentry(conn: &Connection, keys: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = command(conn, keys).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "consentry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn drop_schema(schema: &str) {
    if let Ok(mut c) = postgres::Client::connect(PG, postgres::NoTls) {
        let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    }
}
