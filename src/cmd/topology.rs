//! `consentry topology check [FILE]`: validate a topology file and say
//! exactly what to change. `topology matrix`: the minimum-necessary matrix
//! (purpose × field → class, allowed or not). `topology diff OLD NEW`: what
//! a policy change would newly release or withhold.

use clap::Subcommand;
use consentry_core::policy::{self, Change};
use consentry_core::topology::Topology;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use super::Global;

#[derive(Subcommand)]
pub enum TopologyCmd {
    /// Validate a topology file (default: --topology).
    Check { file: Option<PathBuf> },
    /// Print the minimum-necessary matrix: purpose × field → class, allowed or not.
    Matrix {
        /// Machine-readable: one object per purpose and field.
        #[arg(long)]
        json: bool,
    },
    /// Show what NEW would newly release or withhold compared with OLD.
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn load(path: &Path) -> anyhow::Result<Topology> {
    Topology::load(path).map_err(|e| anyhow::anyhow!("invalid topology {}:\n{e}", path.display()))
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
        TopologyCmd::Matrix { json } => {
            let t = global.load_topology()?;
            let cells = policy::matrix(&t);
            if json {
                println!("{}", serde_json::to_string_pretty(&cells)?);
                return Ok(ExitCode::SUCCESS);
            }
            let purposes: Vec<&str> = t.purposes.keys().map(String::as_str).collect();
            println!(
                "minimum-necessary matrix, policy {} (+ allowed, . withheld)",
                t.policy_version
            );
            print!("{:<34} {:<18}", "field", "class");
            for p in &purposes {
                print!(" {:>19}", p);
            }
            println!();
            print!("{:<34} {:<18}", "", "profile");
            for p in t.purposes.values() {
                print!(" {:>19}", p.profile.as_str());
            }
            println!();
            for (field, class) in &t.fields {
                print!("{:<34} {:<18}", field, class.as_str());
                for p in t.purposes.values() {
                    print!(" {:>19}", if p.allow.contains(field) { "+" } else { "." });
                }
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
        TopologyCmd::Diff { old, new, json } => {
            let (a, b) = (load(&old)?, load(&new)?);
            let changes = policy::diff(&a, &b);
            if json {
                println!("{}", serde_json::to_string_pretty(&changes)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "policy {} -> {}: {} change(s), {} releasing more",
                a.policy_version,
                b.policy_version,
                changes.len(),
                changes.iter().filter(|c| c.releases()).count()
            );
            for c in &changes {
                let line = match c {
                    Change::Released {
                        purpose,
                        field,
                        class,
                    } => {
                        format!("RELEASE   {purpose}: {field} ({class})")
                    }
                    Change::Withheld { purpose, field } => format!("WITHHOLD  {purpose}: {field}"),
                    Change::PurposeAdded { purpose, fields } => {
                        format!("RELEASE   new purpose {purpose} ({fields} fields)")
                    }
                    Change::PurposeRemoved { purpose } => {
                        format!("WITHHOLD  purpose {purpose} removed")
                    }
                    Change::Profile { purpose, from, to } => {
                        format!("PROFILE   {purpose}: {from} -> {to}")
                    }
                    Change::Class { field, from, to } => {
                        format!("CLASS     {field}: {from} -> {to}")
                    }
                };
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
