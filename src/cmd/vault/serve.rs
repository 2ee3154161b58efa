//! `consentry vault serve`: the resolve API and the opening of quarantined
//! records on the project's HTTP server (`consentry_runtime::http`), over
//! TLS (mutual with `--client-ca`); without TLS only outside production.
//!
//! Every call a caller makes is answered only after its audit record is on
//! the audit topic (acknowledged by the broker); if that write fails the
//! caller gets 503 and no identity (fail closed). Calls without a valid
//! credential and everything the server refuses before a handler are
//! counted at once and audited in aggregate (see `audit`). Logs carry
//! status, caller id and reason code only: never a token's identity, a
//! justification or a credential.

use consentry_core::chain::ChainWriter;
use consentry_crypto::keyring::Environment;
use consentry_crypto::AuditKeys;
use consentry_runtime::codec::Codec;
use consentry_runtime::http::{self, Handler, Limits, Refusal, Server, TlsFiles};
use consentry_runtime::produce::AckedProducer;
use consentry_runtime::{shutdown, Metrics};
use consentry_stages::scrub::Scrubber;
use consentry_vault::access::Policy;
use consentry_vault::api::{Api, Response, QUARANTINE_OPEN_PATH, RESOLVE_PATH};
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::audit::{AuditWriter, RefusalLog};
use super::{read_callers, ServeArgs};
use crate::cmd::{now_ms, Global};

/// The biggest request body read: a quarantined payload to open, hex-encoded
/// (twice its size) with its headers (a resolve call is a few hundred bytes).
const MAX_BODY: usize = 2 * consentry_crypto::quarantine::MAX_SEALED_PAYLOAD + 64 * 1024;

struct VaultHandler {
    api: Api,
    audit: Arc<AuditWriter>,
    metrics: Arc<Metrics>,
    refusals: Arc<RefusalLog>,
}

/// The largest resolve body read (a token, a purpose, a justification).
const MAX_RESOLVE_BODY: usize = 64 * 1024;

fn unauthenticated() -> http::Response {
    http::Response::json(
        401,
        r#"{"error":"unauthenticated","reason":"unauthenticated","detail":"a valid bearer credential is required: Authorization: Bearer <credential>"}"#,
    )
    .with_header("www-authenticate", "Bearer")
}

impl Handler for VaultHandler {
    /// No body is read for a caller the vault does not know (answered
    /// 401 at once, counted and audited in aggregate), and a resolve's
    /// body is small: only a known caller opening a quarantined record
    /// may send the largest body.
    fn admit(&self, head: &http::Head<'_>) -> http::Admission {
        if !self.api.authenticates(head.authorization) {
            self.metrics.vault_unauthenticated.inc();
            self.metrics
                .vault_requests
                .with_label_values(&["401", "deny"])
                .inc();
            self.refusals.note(head.peer, "unauthenticated", now_ms());
            return http::Admission::Answer(unauthenticated());
        }
        http::Admission::Read(match head.path {
            QUARANTINE_OPEN_PATH => MAX_BODY,
            RESOLVE_PATH => MAX_RESOLVE_BODY,
            _ => 1024,
        })
    }

    fn handle(&self, request: http::Request) -> http::Response {
        let started = Instant::now();
        let now = now_ms();
        let (mut response, call) = self.api.handle(
            &request.method,
            &request.path,
            request.authorization.as_deref(),
            &request.body,
            started,
        );
        // The decision label: what was audited (`deny` when the call went
        // unanswered for want of its audit record).
        let decision = if call.caller.is_none() {
            // Nobody to hold to account but the peer: counted now, audited
            // in aggregate.
            self.metrics.vault_unauthenticated.inc();
            self.refusals.note(request.peer, call.reason, now);
            "deny"
        } else {
            // Fail closed: no answer (and no identity) without its record.
            let mut record = self.audit.record(&call, now);
            match self.audit.write(&mut record) {
                Ok(()) => call.decision.as_str(),
                Err(e) => {
                    tracing::error!(error = %e, "vault: audit record not written; refusing the call");
                    response = Response {
                        status: 503,
                        body: r#"{"error":"unavailable","reason":"audit_unavailable","detail":"the call could not be audited; retry"}"#.into(),
                        retry_after_s: Some(1),
                    };
                    "deny"
                }
            }
        };
        let status = response.status.to_string();
        self.metrics
            .vault_requests
            .with_label_values(&[&status, decision])
            .inc();
        // Who resolves what, for which purpose: callers are configured ids
        // and purposes the topology's (anything else is `other`).
        if let (RESOLVE_PATH, Some(caller)) = (request.path.as_str(), call.caller.as_deref()) {
            let purpose = self
                .api
                .purpose_label(call.purpose.as_deref().unwrap_or_default());
            self.metrics
                .vault_resolves
                .with_label_values(&[caller, purpose, decision])
                .inc();
            if call.reason == "shredded" {
                self.metrics
                    .vault_resolves_after_revocation
                    .with_label_values(&[caller, purpose])
                    .inc();
            }
        }
        if call.is_break_glass() && response.status == 200 {
            self.metrics
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
        self.metrics
            .vault_request_seconds
            .with_label_values(&[&status])
            .observe(started.elapsed().as_secs_f64());
        let mut out = http::Response::json(response.status, response.body);
        if let Some(s) = response.retry_after_s {
            out = out.with_header("retry-after", s.to_string());
        }
        if response.status == 401 {
            out = out.with_header("www-authenticate", "Bearer");
        }
        out
    }

    fn refused(&self, peer: IpAddr, why: Refusal) {
        self.metrics.http_refused("vault", why);
        self.refusals.note(peer, why.code(), now_ms());
    }
}

pub fn serve(global: &Global, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let production = args.services.environment == Environment::Production;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(http::server_tls(&TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.client_ca.clone(),
        })?),
        _ if production => anyhow::bail!(
            "the vault does not serve without TLS in production: pass --tls-cert and --tls-key (and --client-ca for mutual TLS)"
        ),
        _ => None,
    };
    let justification = match &args.justification_pattern {
        Some(p) => Some(
            regex::Regex::new(p)
                .map_err(|e| anyhow::anyhow!("--justification-pattern is not a regular expression: {e}"))?,
        ),
        None if production => anyhow::bail!(
            "the vault needs --justification-pattern in production (what a justification must reference, e.g. a ticket)"
        ),
        None => None,
    };
    let conn = global.connection()?;
    args.services.check_transport(&conn)?;
    let topology = global.load_topology()?;
    let policy = Policy {
        purpose_domains: topology
            .purposes
            .values()
            .map(|p| (p.name.clone(), p.token_domain.clone()))
            .collect(),
        justification,
    };
    let ring = args.services.key_ring()?.ok_or_else(|| {
        anyhow::anyhow!("the vault needs the key ring: pass --key-file (or CONSENTRY_MASTER_KEY in development)")
    })?;
    let vault = args.services.vault(&ring)?.ok_or_else(|| {
        anyhow::anyhow!("pass --vault (a vault file, or a PostgreSQL connection string)")
    })?;
    let credentials = read_callers(&args.callers)?
        .credentials()
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.callers.display()))?;

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
        heads_topic: conn.physical(&topology.audit_heads_topic),
        checkpointed: Mutex::new(None),
    });
    let stop = shutdown::install()?;
    let metrics = Metrics::new();
    let maddr = metrics.serve(&args.metrics_addr, args.metrics_tls.config()?)?;
    let refusals = Arc::new(RefusalLog::default());
    let handler = Arc::new(VaultHandler {
        api: Api::new(vault, credentials, policy),
        audit: Arc::clone(&audit),
        metrics: Arc::clone(&metrics),
        refusals: Arc::clone(&refusals),
    });
    let limits = Limits {
        max_in_flight: args.threads.max(1),
        max_connections: args.max_connections.max(1),
        max_connections_per_peer: args.max_connections_per_peer.max(1),
        peer_rate_per_second: args.peer_rate_per_second.max(0.1),
        peer_burst: (2.0 * args.peer_rate_per_second).max(1.0),
        ..Limits::api(MAX_BODY)
    };
    {
        let handler = Arc::clone(&handler);
        metrics.watch_dependency("vault_store", move || handler.api.vault().ping_store());
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = Server::start(
        "vault",
        &args.listen,
        tls,
        limits,
        handler as Arc<dyn Handler>,
    )?;
    let addr = server.local_addr();
    tracing::info!(%addr, scheme, metrics = %maddr, "vault serving POST /v1/resolve and POST /v1/quarantine/open");
    eprintln!("vault: listening on {scheme}://{addr} (metrics on {maddr})");
    let interval = Duration::from_secs_f64(args.refusal_audit_interval_s.clamp(0.1, 3600.0));
    let checkpoint_every = Duration::from_secs_f64(args.checkpoint_secs.clamp(0.1, 3600.0));
    let (mut last_flush, mut last_checkpoint) = (Instant::now(), Instant::now());
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if last_flush.elapsed() >= interval {
            refusals.flush(&audit, now_ms());
            last_flush = Instant::now();
        }
        if last_checkpoint.elapsed() >= checkpoint_every {
            if let Err(e) = audit.checkpoint(now_ms()) {
                tracing::error!(error = %e, "vault: checkpoint not written; retried next time");
            }
            last_checkpoint = Instant::now();
        }
    }
    server.shutdown();
    refusals.flush(&audit, now_ms());
    if let Err(e) = audit.checkpoint(now_ms()) {
        tracing::error!(error = %e, "vault: final checkpoint not written");
    }
    Ok(ExitCode::SUCCESS)
}
