//! `consentry vault`: the token vault's HTTP API (`serve`) and its callers
//! file (`caller add`).
//!
//! Every call is answered only after its audit record is on the audit
//! topic (acknowledged by the broker); if that write fails the caller gets
//! 503 and no identity (fail closed). Logs carry status, caller id and
//! reason code only: never a token's identity, a justification or a
//! credential.

use clap::{Args, Subcommand};
use consentry_core::audit::{decision, AuditRecord};
use consentry_core::chain::ChainWriter;
use consentry_core::envelope::Text;
use consentry_core::keys;
use consentry_crypto::AuditKeys;
use consentry_runtime::codec::Codec;
use consentry_runtime::produce::AckedProducer;
use consentry_runtime::{shutdown, Metrics};
use consentry_stages::scrub::Scrubber;
use consentry_vault::access::Credentials;
use consentry_vault::api::{Api, CallRecord, CallerEntry, CallersFile, Response};
use rand::RngCore;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::services::ServiceArgs;
use super::Global;

/// The audit records' stage name for vault calls.
const STAGE: &str = "vault";

#[derive(Subcommand)]
pub enum VaultCmd {
    /// Serve the resolve API (POST /v1/resolve) and the opening of quarantined
    /// records (POST /v1/quarantine/open), auditing every call.
    Serve(ServeArgs),
    /// Manage the callers file.
    #[command(subcommand)]
    Caller(CallerCmd),
}

#[derive(Args)]
pub struct ServeArgs {
    /// Where to listen.
    #[arg(long, env = "CONSENTRY_VAULT_LISTEN", default_value = "127.0.0.1:8200")]
    pub listen: String,
    /// The callers file (`consentry vault caller add`).
    #[arg(long, env = "CONSENTRY_VAULT_CALLERS")]
    pub callers: PathBuf,
    /// Worker threads answering calls.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Where to serve Prometheus metrics (port 0 picks a free port).
    #[arg(long, env = "CONSENTRY_METRICS_ADDR", default_value = "127.0.0.1:9465")]
    pub metrics_addr: String,
    #[command(flatten)]
    pub services: ServiceArgs,
}

#[derive(Subcommand)]
pub enum CallerCmd {
    /// Add a caller with a new random credential, printed once (only its
    /// digest is stored).
    Add {
        #[arg(long, env = "CONSENTRY_VAULT_CALLERS")]
        callers: PathBuf,
        #[arg(long)]
        id: String,
        /// Token domains the caller may resolve (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        domains: Vec<String>,
        /// Purposes the caller may resolve for (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        purposes: Vec<String>,
        /// May resolve outside its purposes (never its domains) with a
        /// long justification, audited at high severity.
        #[arg(long)]
        break_glass: bool,
        #[arg(long, default_value_t = 600)]
        rate_per_minute: u32,
    },
}

pub fn execute(global: &Global, cmd: VaultCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        VaultCmd::Serve(args) => serve(global, args),
        VaultCmd::Caller(CallerCmd::Add {
            callers,
            id,
            domains,
            purposes,
            break_glass,
            rate_per_minute,
        }) => {
            let mut file = read_callers(&callers).or_else(|e| {
                if callers.exists() {
                    Err(e)
                } else {
                    Ok(CallersFile::default())
                }
            })?;
            if file.callers.iter().any(|c| c.id == id) {
                anyhow::bail!("caller '{id}' exists in {}", callers.display());
            }
            let mut secret = [0u8; 32];
            rand::rng().fill_bytes(&mut secret);
            let credential = format!("cvk_{}", hex::encode(secret));
            file.callers.push(CallerEntry {
                id: id.clone(),
                credential_sha256: hex::encode(Credentials::digest(&credential)),
                domains: domains.into_iter().collect(),
                purposes: purposes.into_iter().collect(),
                break_glass,
                rate_per_minute: rate_per_minute.max(1),
            });
            let text = serde_json::to_string_pretty(&file)?;
            let tmp = callers.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &callers)?;
            println!("caller '{id}' added to {}", callers.display());
            println!("credential (shown once, store it now): {credential}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_callers(path: &Path) -> anyhow::Result<CallersFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Writes one audit record per call, acknowledged before the call is
/// answered. Each call waits for its own record only, so concurrent calls
/// share the broker's round trips, and a delivery failure is this call's.
struct AuditWriter {
    producer: AckedProducer,
    codec: Codec,
    topic: String,
    policy_version: String,
    scrubber: Scrubber,
    sequence: AtomicI64,
    /// This process's audit chain (`vault/<host>/<start>`): linked and
    /// queued under the lock, so the partition holds it in order.
    chain: Mutex<ChainWriter>,
    keys: Arc<AuditKeys>,
}

impl AuditWriter {
    fn record(&self, call: &CallRecord, now_ms: i64) -> AuditRecord {
        let seq = self.sequence.fetch_add(1, Ordering::SeqCst);
        let id = keys::idempotency_key(
            STAGE,
            &self.policy_version,
            &format!("{now_ms}:{seq}:{}", std::process::id()),
            None,
        );
        let decision = match call.decision {
            "allow" => decision::ALLOW,
            "break_glass" => decision::BREAK_GLASS,
            _ => decision::DENY,
        };
        AuditRecord {
            audit_id: id.clone(),
            stage: Text::const_new(STAGE),
            policy_version: self.policy_version.as_str().into(),
            correlation_id: None,
            event_id: None,
            idempotency_key: id,
            decision: Text::const_new(decision),
            reason_code: Text::const_new(call.reason),
            placeholder: false,
            purpose: call.purpose.as_deref().map(Text::from),
            profile: None,
            source_topic: Text::const_new("vault-api"),
            source_partition: 0,
            source_offset: seq,
            outputs: Vec::new(),
            transformations: Vec::new(),
            actor: call.caller.as_deref().map(Text::from),
            severity: call.is_break_glass().then(|| Text::const_new("high")),
            // A justification is the caller's prose: identifier shapes go.
            justification: call
                .justification
                .as_deref()
                .map(|j| Text::from(self.scrubber.scrub(j, &[]).0.as_str())),
            token: call.token.as_deref().map(Text::from),
            quarantine_id: call.quarantine_id.as_deref().map(Text::from),
            processing_time_ms: now_ms,
            ..Default::default()
        }
    }

    fn write(&self, rec: &mut AuditRecord) -> anyhow::Result<()> {
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
            chain.commit();
            self.producer.enqueue(
                &self.topic,
                chain.writer_id(),
                &payload,
                Duration::from_secs(10),
            )?
        };
        ack.wait()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn serve(global: &Global, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let topology = global.load_topology()?;
    let ring = args.services.key_ring()?.ok_or_else(|| {
        anyhow::anyhow!("the vault needs the key ring: pass --key-file (or CONSENTRY_MASTER_KEY in development)")
    })?;
    let vault = args.services.vault(&ring)?.ok_or_else(|| {
        anyhow::anyhow!("pass --vault (a vault file, or a PostgreSQL connection string)")
    })?;
    let credentials = read_callers(&args.callers)?
        .credentials()
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.callers.display()))?;
    let conn = global.connection();
    let codec = Codec::for_stage(&conn, &topology, &[], &[])?;
    let producer = AckedProducer::new(conn.producer().set("message.timeout.ms", "10000"))?;
    let writer_id = format!(
        "vault/{}/{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string()),
        now_ms()
    );
    let audit = Arc::new(AuditWriter {
        producer,
        codec,
        topic: conn.physical(&topology.audit_topic),
        policy_version: topology.policy_version.clone(),
        scrubber: Scrubber::new(),
        sequence: AtomicI64::new(0),
        chain: Mutex::new(ChainWriter::new(&writer_id, None)),
        keys: Arc::new(AuditKeys::new(&ring)?),
    });
    let api = Arc::new(Api::new(vault, credentials));
    let stop = shutdown::install()?;
    let metrics = Metrics::new();
    let maddr = metrics.serve(&args.metrics_addr)?;
    let server = Arc::new(
        tiny_http::Server::http(&args.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?,
    );
    tracing::info!(listen = %args.listen, metrics = %maddr, "vault serving POST /v1/resolve and POST /v1/quarantine/open");
    eprintln!("vault: listening on {} (metrics on {maddr})", args.listen);
    let workers: Vec<_> = (0..args.threads.max(1))
        .map(|_| {
            let (server, api, audit, metrics, stop) = (
                Arc::clone(&server),
                Arc::clone(&api),
                Arc::clone(&audit),
                Arc::clone(&metrics),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match server.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(req)) => answer(req, &api, &audit, &metrics),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "vault: receive failed"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(ExitCode::SUCCESS)
}

/// The biggest request body read: a quarantined payload to open, hex-encoded
/// (twice its size) with its headers (a resolve call is a few hundred bytes).
const MAX_BODY: u64 = 2 * consentry_crypto::quarantine::MAX_SEALED_PAYLOAD as u64 + 64 * 1024;

fn answer(mut req: tiny_http::Request, api: &Api, audit: &AuditWriter, metrics: &Metrics) {
    let started = Instant::now();
    let auth = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_string());
    let mut body = Vec::new();
    let read = req.as_reader().take(MAX_BODY).read_to_end(&mut body);
    let method = req.method().as_str().to_string();
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let now = now_ms();
    let (mut response, call) = match read {
        Ok(_) => api.handle(&method, &path, auth.as_deref(), &body, now),
        Err(_) => api.handle(&method, &path, auth.as_deref(), b"", now),
    };
    // Fail closed: no answer (and no identity) without its audit record.
    let mut record = audit.record(&call, now);
    if let Err(e) = audit.write(&mut record) {
        tracing::error!(error = %e, "vault: audit record not written; refusing the call");
        response = Response {
            status: 503,
            body: r#"{"error":"unavailable","reason":"audit_unavailable","detail":"the call could not be audited; retry"}"#.into(),
            retry_after_s: Some(1),
        };
    }
    let status = response.status.to_string();
    metrics
        .vault_requests
        .with_label_values(&[&status, record.decision.as_str()])
        .inc();
    if call.is_break_glass() && response.status == 200 {
        metrics
            .vault_break_glass
            .with_label_values(&[call.caller.as_deref().unwrap_or("")])
            .inc();
        tracing::warn!(
            caller = call.caller.as_deref().unwrap_or(""),
            "vault: break-glass resolution"
        );
    }
    tracing::info!(
        status = response.status,
        caller = call.caller.as_deref().unwrap_or("-"),
        reason = call.reason,
        "vault call"
    );
    let mut r = tiny_http::Response::from_string(response.body).with_status_code(response.status);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
        r = r.with_header(h);
    }
    if let Some(s) = response.retry_after_s {
        if let Ok(h) = tiny_http::Header::from_bytes(&b"Retry-After"[..], s.to_string().as_bytes())
        {
            r = r.with_header(h);
        }
    }
    if response.status == 401 {
        if let Ok(h) = tiny_http::Header::from_bytes(&b"WWW-Authenticate"[..], &b"Bearer"[..]) {
            r = r.with_header(h);
        }
    }
    let _ = req.respond(r);
    metrics
        .vault_request_seconds
        .with_label_values(&[&status])
        .observe(started.elapsed().as_secs_f64());
}
