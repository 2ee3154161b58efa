//! `consentry topology check [FILE]`: validate a topology file and say
//! exactly what to change.

use clap::Subcommand;
use consentry_core::topology::Topology;
use std::path::PathBuf;
use std::process::ExitCode;

use super::Global;

#[derive(Subcommand)]
pub enum TopologyCmd {
    /// Validate a topology file (default: --topology).
    Check { file: Option<PathBuf> },
}

pub fn execute(global: &Global, cmd: TopologyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TopologyCmd::Check { file } => {
            let path = file.unwrap_or_else(|| global.topology.clone());
            match Topology::load(&path) {
                Ok(t) => {
                    println!(
                        "{}: valid (format 1, policy {}, {} topics, {} stages, {} purposes, {} classified fields)",
                        path.display(),
                        t.policy_version,
                        t.topics.len(),
                        t.stages.len(),
                        t.purposes.len(),
                        t.fields.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!(
                        "{}: {} problem(s); nothing will start on this topology",
                        path.display(),
                        e.errors.len()
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
