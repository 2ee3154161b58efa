//! `consentry quarantine`: what the quarantine topic holds (`list`, which
//! shows only PHI-free headers), one record opened through the vault
//! (`show`), and one record sent back through its stage (`redrive`).
//!
//! Quarantined payloads are sealed (`consentry_crypto::quarantine`); this
//! command holds no key. `show` and `redrive` ask the vault's API to open a
//! payload, stating purpose and justification, so every opening is
//! authorized by the caller's scope and audited by the vault before the
//! payload comes back. The credential comes from the environment
//! (CONSENTRY_VAULT_CREDENTIAL), never from the command line.

use clap::{Args, Subcommand};
use consentry_core::headers::{self, QuarantineHeaders, RedriveHeaders};
use consentry_core::stage::StageName;
use consentry_core::topology::TopicRole;
use consentry_core::ReasonCode;
use consentry_runtime::codec::SchemaCache;
use consentry_runtime::kafka::{read_all, Outgoing, Publisher, Record};
use consentry_vault::api::{
    QuarantineOpenBody, PURPOSE_QUARANTINE_REDRIVE, PURPOSE_QUARANTINE_REVIEW, QUARANTINE_OPEN_PATH,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use zeroize::Zeroizing;

use super::Global;

#[derive(Subcommand)]
pub enum QuarantineCmd {
    /// List quarantined records: id, stage, reason, path, source position
    /// (no payload, nothing that is PHI).
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Open one quarantined record through the vault (audited) and print it.
    Show {
        /// Its quarantine id (`list` shows them), or a unique prefix.
        id: String,
        #[command(flatten)]
        vault: VaultCall,
    },
    /// Send quarantined records back through their stage: one by id, or
    /// every one a selection matches (after a policy change, e.g. all
    /// `schema_drift` at `segment ZPD` once the site lists ZPD). Each is
    /// opened through the vault (audited, one call per record) and written
    /// to its stage's input at its original partition with a `redrive-of`
    /// header. The stage handles each as new work once; redriving the same
    /// id again is a duplicate.
    Redrive {
        /// One record's quarantine id, or a unique prefix.
        #[arg(required_unless_present = "reason", conflicts_with = "reason")]
        id: Option<String>,
        /// Every record quarantined for this reason code.
        #[arg(long, value_parser = parse_reason)]
        reason: Option<ReasonCode>,
        /// With --reason: only records whose detail (the path, e.g.
        /// "segment ZPD") is this.
        #[arg(long, requires = "reason")]
        path: Option<String>,
        /// With --reason: only records this stage quarantined.
        #[arg(long, requires = "reason")]
        stage: Option<StageName>,
        #[command(flatten)]
        vault: VaultCall,
    },
}

#[derive(Args)]
pub struct VaultCall {
    /// Why this record is opened; recorded in the vault's audit record.
    #[arg(long, required = true)]
    pub justification: String,
    /// Open outside the caller's purposes (its scope must allow
    /// break-glass); audited at high severity.
    #[arg(long)]
    pub break_glass: bool,
    /// The vault's API.
    #[arg(
        long,
        env = "CONSENTRY_VAULT_URL",
        default_value = "http://127.0.0.1:8200"
    )]
    pub vault_url: String,
    /// The CA (PEM) that signs the vault's certificate (https with a
    /// private CA).
    #[arg(long, env = "CONSENTRY_VAULT_API_CA")]
    pub vault_api_ca: Option<PathBuf>,
    /// A client certificate (PEM) for a vault that requires mutual TLS.
    #[arg(
        long,
        env = "CONSENTRY_VAULT_CLIENT_CERT",
        requires = "vault_client_key"
    )]
    pub vault_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "CONSENTRY_VAULT_CLIENT_KEY",
        requires = "vault_client_cert"
    )]
    pub vault_client_key: Option<PathBuf>,
}

/// An agent for the vault's API: its CA and the caller's certificate when
/// given. Errors name files, never their content.
fn vault_agent(call: &VaultCall) -> anyhow::Result<ureq::Agent> {
    use ureq::tls::{
        parse_pem, Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig,
    };
    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {}", path.display(), e.kind()))
    };
    let certs = |path: &PathBuf| -> anyhow::Result<Vec<Certificate<'static>>> {
        let pem = read(path)?;
        let certs: Vec<_> = parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        anyhow::ensure!(
            !certs.is_empty(),
            "{} holds no PEM certificate",
            path.display()
        );
        Ok(certs)
    };
    let mut tls = TlsConfig::builder();
    if let Some(ca) = &call.vault_api_ca {
        tls = tls.root_certs(RootCerts::new_with_certs(&certs(ca)?));
    }
    if let (Some(cert), Some(key)) = (&call.vault_client_cert, &call.vault_client_key) {
        let key = PrivateKey::from_pem(&read(key)?)
            .map_err(|_| anyhow::anyhow!("{} holds no PEM private key", key.display()))?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&certs(cert)?, key)));
    }
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .tls_config(tls.build())
        .build()
        .into())
}

/// The vault credential's variable (a bearer credential from
/// `consentry vault caller add`).
const CREDENTIAL_VAR: &str = "CONSENTRY_VAULT_CREDENTIAL";

pub fn execute(global: &Global, cmd: QuarantineCmd) -> anyhow::Result<ExitCode> {
    let topology = global.load_topology()?;
    let conn = global.connection()?;
    let records = read_all(
        &conn,
        &conn.physical(&topology.quarantine_topic),
        Duration::from_secs(60),
    )?;
    match cmd {
        QuarantineCmd::List { json } => {
            list(&records, json);
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCmd::Show { id, vault } => {
            let record = find(&records, &id)?;
            let h = held(record)?;
            let payload = open(record, &h, &vault, PURPOSE_QUARANTINE_REVIEW)?;
            println!("quarantine id:  {}", h.quarantine_id);
            println!("stage:          {}", h.identity.stage);
            println!("reason:         {} ({})", h.reason_code, h.reason_detail);
            println!(
                "source:         {}[{}]@{}",
                h.source_topic, h.source_partition, h.source_offset
            );
            println!("correlation id: {}", h.identity.correlation_id);
            println!("--- payload ({} bytes) ---", payload.len());
            println!("{}", render(&payload, &conn));
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCmd::Redrive {
            id,
            reason,
            path,
            stage,
            vault,
        } => {
            let publisher = Publisher::new(&conn)?;
            if let Some(id) = id {
                let record = find(&records, &id)?;
                let h = held(record)?;
                let to = redrive(&publisher, &conn, &topology, record, &h, &vault)?;
                publisher.finish(Duration::from_secs(30))?;
                println!(
                    "redriven: {} -> {to} for stage {}; its outcome appears in the audit topic (and here, if it is quarantined again)",
                    h.quarantine_id, h.identity.stage
                );
                return Ok(ExitCode::SUCCESS);
            }
            let Some(reason) = reason else {
                anyhow::bail!("give a quarantine id or --reason");
            };
            // Each quarantine id once (a retried write shows it twice).
            let mut seen = std::collections::HashSet::new();
            let (mut sent, mut not_held, mut unreadable) = (0u64, 0u64, 0u64);
            let mut failed: Vec<String> = Vec::new();
            for record in &records {
                let Ok(h) = held(record) else {
                    unreadable += 1;
                    continue;
                };
                let selected = h.reason_code == reason
                    && stage.is_none_or(|s| h.identity.stage == s)
                    && path
                        .as_deref()
                        .is_none_or(|p| names_path(&h.reason_detail, p));
                if !selected || !seen.insert(h.quarantine_id.clone()) {
                    continue;
                }
                if record.payload().is_none() || h.sealed.is_none() {
                    not_held += 1;
                    continue;
                }
                // One refusal (a rate limit, a record of a topic no longer
                // in the topology) stops neither the others nor the count.
                match redrive(&publisher, &conn, &topology, record, &h, &vault) {
                    Ok(_) => sent += 1,
                    Err(e) => {
                        eprintln!("{}: not redriven: {e}", h.quarantine_id);
                        failed.push(h.quarantine_id.clone());
                    }
                }
            }
            publisher.finish(Duration::from_secs(60))?;
            println!(
                "redriven: {sent} records quarantined for {reason}{}{}; {not_held} matching records hold no payload (read them at their source offsets); {} failed; their outcomes appear in the audit topic (and here, if quarantined again)",
                path.map(|p| format!(" at '{p}'")).unwrap_or_default(),
                stage.map(|s| format!(" by {s}")).unwrap_or_default(),
                failed.len(),
            );
            if unreadable > 0 {
                eprintln!("{unreadable} quarantine records with unreadable headers were not considered (`quarantine list` names them)");
            }
            if !failed.is_empty() {
                anyhow::bail!(
                    "{} of {} selected records were not redriven; running the same command again redrives them (the others are duplicates to their stage)",
                    failed.len(),
                    failed.len() as u64 + sent
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Whether a record's detail names `path`: the detail is the path, or the
/// path followed by a note (`segment ZPD; payload not held …`).
fn names_path(detail: &str, path: &str) -> bool {
    detail
        .strip_prefix(path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(';'))
}

fn parse_reason(s: &str) -> Result<ReasonCode, String> {
    ReasonCode::parse(s).ok_or_else(|| format!("unknown reason code '{s}'"))
}

/// Opens one record through the vault and queues it on its stage's input,
/// at its original partition; returns where it went.
fn redrive(
    publisher: &Publisher,
    conn: &consentry_runtime::Connection,
    topology: &consentry_core::topology::Topology,
    record: &Record,
    h: &QuarantineHeaders,
    vault: &VaultCall,
) -> anyhow::Result<String> {
    let input = topology.topic(&h.source_topic).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: its source topic '{}' is not in the topology",
            h.quarantine_id,
            h.source_topic
        )
    })?;
    let payload = open(record, h, vault, PURPOSE_QUARANTINE_REDRIVE)?;
    // Between stages the input's idempotency key travels on; a raw feed's
    // record had none (the key shown is the stage's own).
    let nonempty = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let headers = RedriveHeaders {
        redrive_of: h.quarantine_id.clone(),
        correlation_id: nonempty(&h.identity.correlation_id),
        idempotency_key: nonempty(&h.identity.idempotency_key)
            .filter(|_| input.role == TopicRole::Internal),
    }
    .to_pairs();
    publisher.send(
        &conn.physical(&input.name),
        Outgoing {
            key: None,
            payload: payload.as_slice(),
            partition: Some(h.source_partition),
            headers: &headers,
        },
    )?;
    Ok(format!("{}[{}]", input.name, h.source_partition))
}

/// A quarantine record's headers, as the runner wrote them.
fn held(m: &Record) -> anyhow::Result<QuarantineHeaders> {
    QuarantineHeaders::from_lookup(|name| m.header_bytes(name)).map_err(|e| {
        anyhow::anyhow!(
            "quarantine record at partition {} offset {}: {e}",
            m.partition,
            m.offset
        )
    })
}

fn list(records: &[Record], json: bool) {
    if !json {
        println!(
            "{:<38} {:<13} {:<22} {:<30} {:<28} sealed",
            "id", "stage", "reason", "detail", "source"
        );
    }
    for m in records {
        let h = match held(m) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("{e}");
                continue;
            }
        };
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "id": h.quarantine_id, "stage": h.identity.stage.as_str(), "reason": h.reason_code.as_str(), "detail": h.reason_detail,
                    "source_topic": h.source_topic, "source_partition": h.source_partition,
                    "source_offset": h.source_offset, "correlation_id": h.identity.correlation_id,
                    "sealed": h.sealed, "bytes": m.payload().map_or(0, <[u8]>::len),
                })
            );
        } else {
            println!(
                "{:<38} {:<13} {:<22} {:<30} {:<28} {}",
                h.quarantine_id,
                h.identity.stage,
                h.reason_code,
                h.reason_detail,
                format!(
                    "{}[{}]@{}",
                    h.source_topic, h.source_partition, h.source_offset
                ),
                h.sealed.as_deref().unwrap_or("-")
            );
        }
    }
}

/// The one record whose id is `id` or starts with it.
fn find<'a>(records: &'a [Record], id: &str) -> anyhow::Result<&'a Record> {
    let mut hits = records.iter().filter(|m| {
        m.header(headers::QUARANTINE_ID)
            .is_some_and(|q| q.starts_with(id))
    });
    let first = hits
        .next()
        .ok_or_else(|| anyhow::anyhow!("no quarantined record has id '{id}'"))?;
    // The same id twice is a replayed write of one record; two ids are ambiguous.
    let first_id = first.header(headers::QUARANTINE_ID);
    if hits.any(|m| m.header(headers::QUARANTINE_ID) != first_id) {
        anyhow::bail!("'{id}' is the start of several quarantine ids; give more of it");
    }
    Ok(first)
}

/// The record's payload, opened by the vault for `purpose`.
fn open(
    m: &Record,
    h: &QuarantineHeaders,
    call: &VaultCall,
    purpose: &str,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let Some(sealed) = m.payload() else {
        anyhow::bail!("quarantined record {} holds no payload", h.quarantine_id);
    };
    if h.sealed.is_none() {
        anyhow::bail!(
            "quarantined record {} is not sealed (written before sealing); it cannot be opened through the vault",
            h.quarantine_id
        );
    }
    let credential = std::env::var(CREDENTIAL_VAR).map_err(|_| {
        anyhow::anyhow!("set {CREDENTIAL_VAR} to a vault credential (`consentry vault caller add`)")
    })?;
    let body = QuarantineOpenBody {
        id: h.quarantine_id.clone(),
        stage: h.identity.stage.as_str().to_string(),
        source_topic: h.source_topic.clone(),
        source_partition: h.source_partition,
        source_offset: h.source_offset,
        reason: h.reason_code.as_str().to_string(),
        sealed_hex: hex::encode(sealed),
        purpose: purpose.to_string(),
        justification: call.justification.clone(),
        break_glass: call.break_glass,
    };
    let agent = vault_agent(call)?;
    let url = format!(
        "{}{QUARANTINE_OPEN_PATH}",
        call.vault_url.trim_end_matches('/')
    );
    let mut resp = agent
        .post(&url)
        .header("Authorization", &format!("Bearer {credential}"))
        .send_json(&body)
        .map_err(|e| anyhow::anyhow!("the vault at {} did not answer: {e}", call.vault_url))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if status != 200 {
        anyhow::bail!(
            "the vault refused ({status} {}): {}",
            answer["reason"].as_str().unwrap_or("?"),
            answer["detail"].as_str().unwrap_or("")
        );
    }
    let payload = answer["payload_hex"]
        .as_str()
        .and_then(|p| hex::decode(p).ok())
        .ok_or_else(|| anyhow::anyhow!("the vault's answer holds no payload"))?;
    Ok(Zeroizing::new(payload))
}

/// A payload for a person: text as it is (HL7 segments one per line), an
/// Avro envelope decoded through the registry, anything else as hex.
fn render(payload: &[u8], conn: &consentry_runtime::Connection) -> String {
    if payload.first() == Some(&0) && payload.len() > 5 {
        if let Ok(mut cache) = SchemaCache::for_connection(conn) {
            if let Ok(ev) = cache.decode_event(payload) {
                return serde_json::to_string_pretty(&ev).unwrap_or_default();
            }
        }
    }
    match std::str::from_utf8(payload) {
        Ok(text) => text.replace('\r', "\n"),
        Err(_) => hex::encode(payload),
    }
}
