//! Shared helpers for the integration tests. Each test gets its own topic
//! prefix (and so its own topics, groups, transactional ids and subjects)
//! on the stack `make stack-up` started; nothing here starts a server.
#![allow(dead_code)]

pub mod consent_feed;

use consentry_core::stage::{Body, InputMeta, StageInput};
use consentry_core::topology::Topology;
use consentry_core::{AuditRecord, CanonicalEvent};
use consentry_crypto::{
    Environment, KeyFile, KeyProvider, KeyRing, QuarantineContext, QuarantineKeys,
};
use consentry_runtime::codec::SchemaCache;
use consentry_runtime::inspect::{header, read_topic};
use consentry_runtime::produce::{self, CountingProducer, DeliveryErrors};
use consentry_runtime::Connection;
use consentry_stages::Services;
use consentry_synth::{Feed, SynthRecord};
use consentry_vault::{FileStore, Vault};
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const SESSION_TIMEOUT_MS: u32 = 6000;

pub struct Env {
    pub prefix: String,
    pub conn: Connection,
    pub topology: Topology,
    /// This test's files: the key ring (`keys.json`) and the vault
    /// (`vault.redb`) its children use, and spawned children's logs.
    pub dir: PathBuf,
    /// Logs of the children `spawn` started, shown if the test fails.
    child_logs: std::cell::RefCell<Vec<PathBuf>>,
}

impl Drop for Env {
    /// A failing test shows the end of every spawned child's log: a stage
    /// that stopped or stalled says why there.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for path in self.child_logs.borrow().iter() {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(
                std::env::var("CONSENTRY_TEST_LOG_LINES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(60),
            )..];
            eprintln!("--- {} (last {} lines)", path.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Env {
    /// A fresh prefix with the topology's topics created and schemas
    /// registered, and a fresh key ring and vault.
    pub fn new(name: &str) -> Env {
        Env::create(name, None)
    }

    /// A fresh prefix (new, empty topics) with `other`'s key ring and
    /// vault: the same deployment restarted on a replay of its input.
    pub fn sharing_keys(name: &str, other: &Env) -> Env {
        Env::create(name, Some(other.dir.clone()))
    }

    fn create(name: &str, dir: Option<PathBuf>) -> Env {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let prefix = format!(
            "it-{name}-{}-{}.",
            std::process::id(),
            nanos % 1_000_000_000
        );
        let conn = Connection {
            bootstrap: std::env::var("CONSENTRY_BOOTSTRAP")
                .unwrap_or_else(|_| "127.0.0.1:9092".into()),
            registry_url: std::env::var("CONSENTRY_SCHEMA_REGISTRY")
                .unwrap_or_else(|_| "http://127.0.0.1:8081".into()),
            topic_prefix: prefix.clone(),
            session_timeout_ms: SESSION_TIMEOUT_MS,
            ..Default::default()
        };
        let topology =
            Topology::load(&root().join("topology.yaml")).expect("shipped topology is valid");
        let dir = dir.unwrap_or_else(|| {
            let dir = std::env::temp_dir().join(prefix.trim_end_matches('.'));
            std::fs::create_dir_all(&dir).expect("test dir");
            let ring = KeyRing::generate(Environment::NonProduction).expect("key ring");
            KeyFile::new(dir.join("keys.json"))
                .save(&ring)
                .expect("key file");
            dir
        });
        let env = Env {
            prefix,
            conn,
            topology,
            dir,
            child_logs: Default::default(),
        };
        let out = env.run(&["topics", "apply"]);
        assert!(
            out.status.success(),
            "topics apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// The consentry binary, pointed at this test's prefix.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_consentry"));
        c.current_dir(root())
            .env("CONSENTRY_TOPIC_PREFIX", &self.prefix)
            .env("CONSENTRY_BOOTSTRAP", &self.conn.bootstrap)
            .env("CONSENTRY_SCHEMA_REGISTRY", &self.conn.registry_url)
            .env(
                "CONSENTRY_SESSION_TIMEOUT_MS",
                SESSION_TIMEOUT_MS.to_string(),
            )
            .env("CONSENTRY_METRICS_ADDR", "127.0.0.1:0")
            .env("CONSENTRY_KEY_FILE", self.dir.join("keys.json"))
            .env("CONSENTRY_VAULT", self.dir.join("vault.redb"))
            .env_remove("CONSENTRY_MASTER_KEY")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("consentry runs")
    }

    /// Runs to completion and asserts success; returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "consentry {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a child with its stdout piped (the run summary) and its log
    /// in a file: nobody reads a long-running child's stderr, and a pipe
    /// that fills up would block the child's next log line, and with it a
    /// stage. The log is shown if the test fails.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut cmd = self.cmd();
        cmd.args(args);
        self.spawn_command(cmd)
    }

    /// `spawn` for a command of `cmd()` the test has adjusted.
    pub fn spawn_command(&self, mut cmd: Command) -> Child {
        let mut logs = self.child_logs.borrow_mut();
        // Named by prefix too: `sharing_keys` gives two envs one dir.
        let path = self
            .dir
            .join(format!("{}child-{}.log", self.prefix, logs.len()));
        let log = std::fs::File::create(&path).expect("child log file");
        logs.push(path);
        cmd.env(
            "RUST_LOG",
            std::env::var("CONSENTRY_TEST_CHILD_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("consentry starts")
    }

    pub fn physical(&self, logical: &str) -> String {
        self.conn.physical(logical)
    }

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

    /// Waits until `check` is true, or panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Env {
    /// The key ring and vault this test's children use. The vault file is
    /// locked while open: drop the services before a child runs.
    pub fn services(&self) -> Services {
        let (ring, vault) = self.open_vault();
        Services {
            keys: Some(Arc::new(ring)),
            vault: Some(Arc::new(vault)),
        }
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

    /// Adds a vault caller to this test's callers file; returns its
    /// credential (printed once).
    pub fn add_caller(&self, id: &str, extra: &[&str]) -> String {
        let file = self.dir.join("callers.json");
        let mut args = vec![
            "vault",
            "caller",
            "add",
            "--callers",
            file.to_str().expect("utf-8 path"),
            "--id",
            id,
        ];
        args.extend_from_slice(extra);
        let out = self.run_ok(&args);
        out.lines()
            .find_map(|l| l.split("store it now): ").nth(1))
            .expect("credential printed")
            .trim()
            .to_string()
    }

    /// `consentry vault serve` on a free port with this test's callers
    /// file, once it accepts connections. Returns the child and its port.
    pub fn serve_vault(&self) -> (Child, u16) {
        let (port, mport) = (free_port(), free_port());
        let child = self.spawn(&[
            "vault",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--callers",
            self.dir.join("callers.json").to_str().expect("utf-8 path"),
            "--metrics-addr",
            &format!("127.0.0.1:{mport}"),
            // Unauthenticated calls audited in aggregate within a second.
            "--refusal-audit-interval-s",
            "0.5",
        ]);
        self.wait_for("the vault to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        (child, port)
    }

    /// This test's key ring and vault, opened in process (not while a
    /// child holds the vault file).
    pub fn open_vault(&self) -> (KeyRing, Vault) {
        let ring = KeyFile::new(self.dir.join("keys.json"))
            .key_ring()
            .expect("key file");
        let store = FileStore::open(&self.dir.join("vault.redb")).expect("vault file");
        let vault = Vault::new(&ring, Environment::NonProduction, Box::new(store)).expect("vault");
        (ring, vault)
    }

    /// What each stage should write for a synthetic feed (see
    /// `expected_outputs`), with this test's keys and vault: random linkage
    /// tokens issued here are the ones the children find.
    pub fn expected_outputs(
        &self,
        records: &[SynthRecord],
    ) -> BTreeMap<String, BTreeMap<String, CanonicalEvent>> {
        expected_outputs(&self.topology, &self.services(), records)
    }
}

/// What each stage should write for a synthetic feed, computed with the pure
/// stages in-process: (stage output topic) -> idempotency key -> event.
pub fn expected_outputs(
    topology: &Topology,
    services: &Services,
    records: &[SynthRecord],
) -> BTreeMap<String, BTreeMap<String, CanonicalEvent>> {
    let input = |r: &SynthRecord| StageInput {
        meta: InputMeta {
            topic: match r.feed {
                Feed::Hl7v2 => "ehr.hl7v2".into(),
                Feed::Fhir => "ehr.fhir".into(),
                Feed::Consent => "consent.events".into(),
            },
            key: Some(r.key.clone()),
            ..Default::default()
        },
        body: Body::Raw(r.payload.clone()),
    };
    let (consents, sources): (Vec<&SynthRecord>, Vec<&SynthRecord>) =
        records.iter().partition(|r| r.feed == Feed::Consent);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let stages = consentry_stages::run_in_process(
        topology,
        services,
        consents.into_iter().map(input).collect(),
        sources.into_iter().map(input).collect(),
        now_ms,
    )
    .expect("stages build");
    let mut out: BTreeMap<String, BTreeMap<String, CanonicalEvent>> = BTreeMap::new();
    for (_, outcomes) in stages {
        for o in outcomes.into_iter().flat_map(|u| u.outputs) {
            out.entry(o.topic.to_string())
                .or_default()
                .insert(o.idempotency_key.to_string(), *o.event);
        }
    }
    out
}

/// A port nothing listens on now, for a child's metrics endpoint.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The text of a child's `/metrics`, or "" while it does not answer.
pub fn scrape(port: u16) -> String {
    ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()
        .and_then(|r| r.into_body().read_to_string().ok())
        .unwrap_or_default()
}

/// The value of the first metric line starting with `line_prefix`.
pub fn metric_value(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Child processes that are killed when dropped, so a failing test leaves
/// nothing running behind it.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Sends SIGTERM or SIGKILL to a child.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} failed");
}

/// Waits for a child to exit, killing it after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The columns of `stage`'s row in `consentry run`'s summary table: [stage,
/// in, out, quarantined, duplicates, audit, committed, aborted, redriven].
pub fn stage_row(stdout: &str, stage: &str) -> Vec<String> {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .unwrap_or_else(|| panic!("no {stage} row in:\n{stdout}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Every byte of a record a reader gets: key, header values, payload.
pub fn record_bytes(m: &OwnedMessage) -> Vec<u8> {
    use rdkafka::message::Headers;
    let mut b = m.key().unwrap_or_default().to_vec();
    if let Some(h) = m.headers() {
        for x in h.iter() {
            b.extend_from_slice(x.value.unwrap_or_default());
        }
    }
    b.extend_from_slice(m.payload().unwrap_or_default());
    b
}

/// Zeroes every run of 24 or more id characters (`[A-Za-z0-9:_-]`): keyed
/// ids (UUID layout, `ik2-…`, `ev1-…`) and tokens (`tok:…`) are random-
/// looking, and a 5-digit ZIP or a short name turns up in them by chance.
/// No identifier the synthetic feeds carry is that long a run.
pub fn mask_ids(bytes: &mut [u8]) {
    let id = |b: u8| b.is_ascii_alphanumeric() || b":_-".contains(&b);
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && id(bytes[i]) {
            i += 1;
        }
        if i - start >= 24 {
            bytes[start..i].fill(0);
        }
        i = i.max(start + 1);
    }
}

/// The kind of the first `forbidden` value found in `bytes`, after the
/// `allowed` values (a profile may keep them) are blanked out: a family name
/// inside a city the profile keeps ("Lewis" in "Lewistown") is no leak.
pub fn find_leak<'a>(
    bytes: &[u8],
    forbidden: &'a [(&'static str, String)],
    allowed: &[(&'static str, String)],
) -> Option<(&'static str, &'a str)> {
    let mut masked = bytes.to_vec();
    for (_, a) in allowed {
        let a = a.as_bytes();
        if a.is_empty() {
            continue;
        }
        let mut i = 0;
        while i + a.len() <= masked.len() {
            if &masked[i..i + a.len()] == a {
                masked[i..i + a.len()].fill(0);
                i += a.len();
            } else {
                i += 1;
            }
        }
    }
    forbidden
        .iter()
        .find(|(_, v)| !v.is_empty() && masked.windows(v.len()).any(|w| w == v.as_bytes()))
        .map(|(k, v)| (*k, v.as_str()))
}
