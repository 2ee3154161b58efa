//! `consentry vault`: the token vault's HTTP API (`serve`) and its callers
//! file (`caller add`).

mod audit;
mod serve;

use clap::{Args, Subcommand};
use consentry_vault::access::Credentials;
use consentry_vault::api::{CallerEntry, CallersFile};
use rand::RngCore;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::services::ServiceArgs;
use super::tls::MetricsTlsArgs;
use super::Global;

#[derive(Subcommand)]
pub enum VaultCmd {
    /// Serve the resolve API (POST /v1/resolve) and the opening of quarantined
    /// records (POST /v1/quarantine/open), auditing every call.
    Serve(Box<ServeArgs>),
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
    /// Calls handled at once (each may wait on the store and on its audit
    /// record); more wait up to 5 s, then get 503.
    #[arg(long, default_value_t = 16)]
    pub threads: usize,
    /// The server's certificate chain (PEM). Required in production.
    #[arg(long, env = "CONSENTRY_VAULT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "CONSENTRY_VAULT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require callers to present a certificate signed by this CA (PEM):
    /// mutual TLS, on top of their bearer credential.
    #[arg(long, env = "CONSENTRY_VAULT_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// A regular expression every justification must match (searched,
    /// not anchored), e.g. a ticket reference: '\b[A-Z]{2,10}-[0-9]+\b'.
    /// Required in production.
    #[arg(long, env = "CONSENTRY_VAULT_JUSTIFICATION_PATTERN")]
    pub justification_pattern: Option<String>,
    /// Connections open at once, from all peers.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections open at once from one peer (an IPv6 peer is its /64).
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_peer: usize,
    /// Requests per second one peer may sustain before authentication
    /// (bursts of twice as many).
    #[arg(long, default_value_t = 200.0)]
    pub peer_rate_per_second: f64,
    /// How often refused and unauthenticated calls are audited, in
    /// aggregate per peer and reason.
    #[arg(long, default_value_t = 10.0)]
    pub refusal_audit_interval_s: f64,
    /// How often the vault's audit chain is checkpointed (signed, and
    /// copied to the heads topic), when it has grown.
    #[arg(long, default_value_t = 10.0)]
    pub checkpoint_secs: f64,
    /// Where to serve Prometheus metrics (port 0 picks a free port).
    #[arg(long, env = "CONSENTRY_METRICS_ADDR", default_value = "127.0.0.1:9465")]
    pub metrics_addr: String,
    #[command(flatten)]
    pub metrics_tls: MetricsTlsArgs,
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
        VaultCmd::Serve(args) => serve::serve(global, *args),
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
