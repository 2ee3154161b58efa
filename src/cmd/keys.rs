//! `consentry keys`: the token key ring in a key file: create it, rotate it
//! (new tokens use a new version; older ones keep resolving), retire an old
//! version, list versions. Never prints key material.

use clap::Subcommand;
use consentry_crypto::keyring::{Environment, KeyFile, KeyProvider, KeyRing};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a key file with one random key (version 1).
    Init {
        #[arg(long, env = "CONSENTRY_KEY_FILE")]
        file: PathBuf,
        /// `production` or `non-production` (`development`, `test`): a
        /// service refuses a key ring marked for another environment.
        #[arg(long)]
        environment: Environment,
        /// Replace an existing file (its keys, and every token they made, are lost).
        #[arg(long)]
        force: bool,
    },
    /// Start a new key version for new tokens; old versions keep resolving.
    Rotate {
        #[arg(long, env = "CONSENTRY_KEY_FILE")]
        file: PathBuf,
    },
    /// Retire an old version: its tokens stop resolving.
    Retire {
        #[arg(long, env = "CONSENTRY_KEY_FILE")]
        file: PathBuf,
        #[arg(long)]
        version: u32,
        /// Retire the anchor version (the oldest usable one) too, knowing
        /// what derives from it changes: subject pseudonyms (the consent
        /// table and route's record of disclosures), the vault's names for
        /// subjects, date shifts.
        #[arg(long)]
        anchor: bool,
    },
    /// Show the versions (never the keys).
    List {
        #[arg(long, env = "CONSENTRY_KEY_FILE")]
        file: PathBuf,
    },
    /// Write the public keys that verify audit checkpoints (safe to give
    /// an auditor: they verify, and can sign nothing): `audit verify
    /// --public-key FILE`.
    AuditPublicKey {
        #[arg(long, env = "CONSENTRY_KEY_FILE")]
        file: PathBuf,
        /// Where to write them (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn execute(cmd: KeysCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCmd::Init {
            file,
            environment,
            force,
        } => {
            if file.exists() && !force {
                anyhow::bail!(
                    "{} exists: rotate it, or pass --force to replace it (its tokens stop resolving)",
                    file.display()
                );
            }
            let ring = KeyRing::generate(environment)?;
            KeyFile::new(&file).save(&ring)?;
            println!(
                "created {} ({environment}), key version 1 active",
                file.display()
            );
        }
        KeysCmd::Rotate { file } => {
            let kf = KeyFile::new(&file);
            let mut ring = kf.key_ring()?;
            let version = ring.rotate()?;
            kf.save(&ring)?;
            println!("key version {version} active; older versions still resolve until retired");
        }
        KeysCmd::Retire {
            file,
            version,
            anchor,
        } => {
            let kf = KeyFile::new(&file);
            let mut ring = kf.key_ring()?;
            if version == ring.anchor_version() && !anchor {
                anyhow::bail!(
                    "key version {version} is the anchor: subject pseudonyms (the consent table, route.disclosed), the vault's names for subjects and date shifts derive from it; retiring it orphans them until consent.events is replayed into a new table and the vault is re-filled. Pass --anchor to retire it anyway"
                );
            }
            ring.retire(version)?;
            kf.save(&ring)?;
            println!("key version {version} retired: its tokens no longer resolve");
        }
        KeysCmd::AuditPublicKey { file, out } => {
            let ring = KeyFile::new(&file).key_ring()?;
            let text = consentry_crypto::AuditKeys::new(&ring)?
                .checkpoint_public_keys()
                .to_json();
            match out {
                Some(path) => {
                    std::fs::write(&path, format!("{text}\n"))?;
                    println!("audit checkpoint public keys written to {}", path.display());
                }
                None => println!("{text}"),
            }
        }
        KeysCmd::List { file } => {
            let ring = KeyFile::new(&file).key_ring()?;
            println!("{} ({})", file.display(), ring.environment());
            for v in ring.versions() {
                let state = match (v.active, v.retired) {
                    (true, _) => "active",
                    (false, true) => "retired",
                    (false, false) => "resolves",
                };
                println!("  v{}  {state}", v.version);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
