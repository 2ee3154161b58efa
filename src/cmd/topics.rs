//! `consentry topics apply`: create every topic and register every schema.

use clap::Subcommand;
use consentry_runtime::admin::{self, ApplyReport};
use std::process::ExitCode;

use super::Global;

#[derive(Subcommand)]
pub enum TopicsCmd {
    /// Create the topology's topics and register its Avro schemas (BACKWARD).
    Apply {
        /// Replication factor for new topics; -1 uses the broker's default.
        #[arg(long, default_value_t = -1)]
        replication_factor: i32,
    },
}

pub fn execute(global: &Global, cmd: TopicsCmd) -> anyhow::Result<ExitCode> {
    let TopicsCmd::Apply { replication_factor } = cmd;
    let topology = global.load_topology()?;
    let conn = global.connection()?;
    let mut report = ApplyReport::default();
    admin::create_topics(&conn, &topology, replication_factor, &mut report)?;
    admin::register_schemas(&conn, &topology, &mut report)?;
    println!(
        "topics: {} created, {} already present",
        report.created.len(),
        report.existing.len()
    );
    for w in &report.warnings {
        println!("warning: {w}");
    }
    for (subject, id) in &report.schemas {
        println!("schema: {subject} -> id {id} ({})", admin::COMPATIBILITY);
    }
    Ok(ExitCode::SUCCESS)
}
