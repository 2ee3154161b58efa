//! Command-line surface: global connection options and the subcommands.

use clap::{Args, Parser, Subcommand};
use consentry_core::topology::Topology;
use consentry_runtime::security::{KafkaSecurity, RegistryAccess, RegistryAuth, Secret};
use consentry_runtime::Connection;
use std::path::PathBuf;
use std::process::ExitCode;

mod audit;
mod keys;
mod quarantine;
mod replay;
mod report;
mod run;
mod services;
mod summary;
mod synth;
mod tls;
mod topics;
mod topology;
mod vault;

#[derive(Parser)]
#[command(
    name = "consentry",
    version,
    about = "Consent-checked, de-identified, tokenized EHR streams on Kafka"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// The topology file.
    #[arg(
        long,
        global = true,
        env = "CONSENTRY_TOPOLOGY",
        default_value = "topology.yaml"
    )]
    pub topology: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, global = true, env = "CONSENTRY_BOOTSTRAP", default_value = consentry_runtime::config::DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    /// Confluent-compatible schema registry URL.
    #[arg(long = "schema-registry", global = true, env = "CONSENTRY_SCHEMA_REGISTRY", default_value = consentry_runtime::config::DEFAULT_REGISTRY)]
    pub schema_registry: String,
    /// Prefix for every topic, consumer group, transactional id and subject.
    #[arg(
        long,
        global = true,
        env = "CONSENTRY_TOPIC_PREFIX",
        default_value = ""
    )]
    pub topic_prefix: String,
    /// Consumer session timeout (group joins take about half of it on tansu).
    #[arg(
        long,
        global = true,
        env = "CONSENTRY_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub session_timeout_ms: u32,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// TLS and SASL for Kafka, TLS and credentials for the schema registry.
/// Secrets only from files or the environment (CONSENTRY_KAFKA_SASL_PASSWORD,
/// CONSENTRY_KAFKA_KEY_PASSWORD, CONSENTRY_SCHEMA_REGISTRY_PASSWORD,
/// CONSENTRY_SCHEMA_REGISTRY_TOKEN), never flags.
#[derive(Args, Clone, Debug, Default)]
pub struct SecurityArgs {
    /// Kafka security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(long, global = true, env = "CONSENTRY_KAFKA_SECURITY_PROTOCOL")]
    pub kafka_security_protocol: Option<String>,
    /// Kafka SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default).
    #[arg(long, global = true, env = "CONSENTRY_KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,
    #[arg(long, global = true, env = "CONSENTRY_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// A file holding the SASL password (or CONSENTRY_KAFKA_SASL_PASSWORD).
    #[arg(long, global = true, env = "CONSENTRY_KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,
    /// The CA (PEM) that signs the brokers' certificates.
    #[arg(long, global = true, env = "CONSENTRY_KAFKA_CA")]
    pub kafka_ca: Option<PathBuf>,
    /// A client certificate (PEM) for brokers that require one.
    #[arg(long, global = true, env = "CONSENTRY_KAFKA_CERTIFICATE")]
    pub kafka_certificate: Option<PathBuf>,
    /// The client certificate's key (PEM); its password, if any, in
    /// CONSENTRY_KAFKA_KEY_PASSWORD.
    #[arg(long, global = true, env = "CONSENTRY_KAFKA_KEY")]
    pub kafka_key: Option<PathBuf>,
    /// The CA (PEM) of an https:// schema registry with a private CA.
    #[arg(long, global = true, env = "CONSENTRY_SCHEMA_REGISTRY_CA")]
    pub schema_registry_ca: Option<PathBuf>,
    /// Basic auth for the registry: this user, with the password in
    /// CONSENTRY_SCHEMA_REGISTRY_PASSWORD or --schema-registry-password-file.
    #[arg(long, global = true, env = "CONSENTRY_SCHEMA_REGISTRY_USERNAME")]
    pub schema_registry_username: Option<String>,
    #[arg(long, global = true, env = "CONSENTRY_SCHEMA_REGISTRY_PASSWORD_FILE")]
    pub schema_registry_password_file: Option<PathBuf>,
    /// A file holding a bearer token for the registry (or
    /// CONSENTRY_SCHEMA_REGISTRY_TOKEN).
    #[arg(long, global = true, env = "CONSENTRY_SCHEMA_REGISTRY_TOKEN_FILE")]
    pub schema_registry_token_file: Option<PathBuf>,
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// A secret from a file, else from an environment variable.
fn secret(file: Option<&PathBuf>, var: &str) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = file {
        return Secret::from_file(path)
            .map(Some)
            .map_err(anyhow::Error::msg);
    }
    Ok(std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new))
}

impl SecurityArgs {
    fn kafka(&self) -> anyhow::Result<KafkaSecurity> {
        let security = KafkaSecurity {
            protocol: non_empty(&self.kafka_security_protocol)
                .map(str::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            sasl_mechanism: non_empty(&self.kafka_sasl_mechanism)
                .map(str::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            sasl_username: self.kafka_sasl_username.clone().filter(|s| !s.is_empty()),
            sasl_password: secret(
                self.kafka_sasl_password_file.as_ref(),
                "CONSENTRY_KAFKA_SASL_PASSWORD",
            )?,
            ca: self.kafka_ca.clone(),
            certificate: self.kafka_certificate.clone(),
            key: self.kafka_key.clone(),
            key_password: secret(None, "CONSENTRY_KAFKA_KEY_PASSWORD")?,
        };
        security.check().map_err(anyhow::Error::msg)?;
        Ok(security)
    }

    fn registry(&self) -> anyhow::Result<RegistryAccess> {
        let token = secret(
            self.schema_registry_token_file.as_ref(),
            "CONSENTRY_SCHEMA_REGISTRY_TOKEN",
        )?;
        let auth = match (&self.schema_registry_username, token) {
            (Some(_), Some(_)) => anyhow::bail!(
                "the schema registry takes a username and password or a bearer token, not both"
            ),
            (Some(user), None) => Some(RegistryAuth::Basic {
                username: user.clone(),
                password: secret(
                    self.schema_registry_password_file.as_ref(),
                    "CONSENTRY_SCHEMA_REGISTRY_PASSWORD",
                )?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--schema-registry-username needs CONSENTRY_SCHEMA_REGISTRY_PASSWORD or --schema-registry-password-file"
                    )
                })?,
            }),
            (None, Some(token)) => Some(RegistryAuth::Bearer(token)),
            (None, None) => None,
        };
        Ok(RegistryAccess {
            ca: self.schema_registry_ca.clone(),
            auth,
        })
    }
}

impl Global {
    /// Where and how to reach Kafka and the registry; secrets are read
    /// here, once.
    pub fn connection(&self) -> anyhow::Result<Connection> {
        Ok(Connection {
            bootstrap: self.bootstrap.clone(),
            registry_url: self.schema_registry.clone(),
            topic_prefix: self.topic_prefix.clone(),
            session_timeout_ms: self.session_timeout_ms,
            kafka_security: self.security.kafka()?,
            registry_access: self.security.registry()?,
        })
    }

    /// Loads and validates the topology; an invalid one stops the command.
    pub fn load_topology(&self) -> anyhow::Result<Topology> {
        Topology::load(&self.topology)
            .map_err(|e| anyhow::anyhow!("invalid topology (nothing was started):\n{e}"))
    }
}

/// Wall-clock time in ms since the epoch (0 before it, saturated past i64).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Subcommand)]
pub enum Command {
    /// Validate and inspect topology.yaml.
    #[command(subcommand)]
    Topology(topology::TopologyCmd),
    /// Create topics and register schemas.
    #[command(subcommand)]
    Topics(topics::TopicsCmd),
    /// Run one stage, several, or all six in one process.
    Run(run::RunArgs),
    /// Publish (or write) a deterministic synthetic EHR feed.
    Synth(synth::SynthArgs),
    /// Count what every topic holds: per stage, per destination, audit, quarantine.
    Summary(summary::SummaryArgs),
    /// The token key ring: init, rotate, retire, list.
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// The token vault: its resolve API, its callers.
    #[command(subcommand)]
    Vault(vault::VaultCmd),
    /// Quarantined records: list them, open one through the vault, redrive one.
    #[command(subcommand)]
    Quarantine(quarantine::QuarantineCmd),
    /// The audit trail: verify its hash chains, trace an event, account for disclosures.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// After a policy change: what it would change at each destination.
    #[command(subcommand)]
    Replay(replay::ReplayCmd),
    /// The compliance report: consent validated, PHI outside the source,
    /// detokenizations, time to revoke, audit completeness, denials, k.
    Report(report::ReportArgs),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Topology(c) => topology::execute(&cli.global, c),
        Command::Topics(c) => topics::execute(&cli.global, c),
        Command::Run(a) => run::execute(&cli.global, a),
        Command::Synth(a) => synth::execute(&cli.global, a),
        Command::Summary(a) => summary::execute(&cli.global, a),
        Command::Keys(c) => keys::execute(c),
        Command::Vault(c) => vault::execute(&cli.global, c),
        Command::Quarantine(c) => quarantine::execute(&cli.global, c),
        Command::Audit(c) => audit::execute(&cli.global, c),
        Command::Replay(c) => replay::execute(&cli.global, c),
        Command::Report(a) => report::execute(&cli.global, a),
    }
}
