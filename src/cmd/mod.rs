//! Command-line surface: global connection options and the subcommands.

use clap::{Args, Parser, Subcommand};
use consentry_core::topology::Topology;
use consentry_runtime::Connection;
use std::path::PathBuf;
use std::process::ExitCode;

mod audit;
mod keys;
mod quarantine;
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
}

impl Global {
    pub fn connection(&self) -> Connection {
        Connection {
            bootstrap: self.bootstrap.clone(),
            registry_url: self.schema_registry.clone(),
            topic_prefix: self.topic_prefix.clone(),
            session_timeout_ms: self.session_timeout_ms,
        }
    }

    /// Loads and validates the topology; an invalid one stops the command.
    pub fn load_topology(&self) -> anyhow::Result<Topology> {
        Topology::load(&self.topology)
            .map_err(|e| anyhow::anyhow!("invalid topology (nothing was started):\n{e}"))
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Validate and inspect topology.yaml.
    #[command(subcommand)]
    Topology(topology::TopologyCmd),
    /// Create topics and register schemas.
    #[command(subcommand)]
    Topics(topics::TopicsCmd),
    /// Run one stage, or all five in one process.
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
    }
}
