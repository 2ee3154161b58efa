//! Where a command gets the key ring and the token vault from: the flags
//! and environment shared by `run` (every stage seals quarantine under the
//! key ring; de-identify and tokenize use the vault) and the vault's own
//! commands.

use clap::Args;
use consentry_crypto::keyring::{EnvKey, Environment, KeyFile, KeyProvider, KeyRing};
use consentry_stages::Services;
use consentry_vault::{FileStore, PgStore, Vault, VaultStore};
use std::path::PathBuf;
use std::sync::Arc;

/// The development master-key variable (`EnvKey`).
const MASTER_KEY_VAR: &str = "CONSENTRY_MASTER_KEY";

#[derive(Args, Clone)]
pub struct ServiceArgs {
    /// The key ring file (`consentry keys init`); without it,
    /// CONSENTRY_MASTER_KEY (hex, development only) if set.
    #[arg(long, env = "CONSENTRY_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The environment this service runs in: it refuses keys marked for
    /// another (`production`, or `non-production`).
    #[arg(long, env = "CONSENTRY_ENVIRONMENT", default_value = "non-production")]
    pub environment: Environment,
    /// The token vault's store: a file path (embedded database, the
    /// default kind) or a PostgreSQL connection (`postgresql://…` or
    /// `host=… user=… dbname=…`).
    #[arg(long, env = "CONSENTRY_VAULT")]
    pub vault: Option<String>,
    /// The PostgreSQL schema of the vault's tables.
    #[arg(
        long,
        env = "CONSENTRY_VAULT_SCHEMA",
        default_value = "consentry_vault"
    )]
    pub vault_schema: String,
}

impl ServiceArgs {
    /// The key ring, if one is configured; refused if marked for another
    /// environment.
    pub fn key_ring(&self) -> anyhow::Result<Option<KeyRing>> {
        let ring = match &self.key_file {
            Some(path) => KeyFile::new(path).key_ring()?,
            None if std::env::var_os(MASTER_KEY_VAR).is_some() => {
                EnvKey::new(MASTER_KEY_VAR).key_ring()?
            }
            None => return Ok(None),
        };
        ring.require(self.environment)?;
        Ok(Some(ring))
    }

    /// The vault over the configured store (needs the key ring).
    pub fn vault(&self, ring: &KeyRing) -> anyhow::Result<Option<Vault>> {
        let Some(spec) = &self.vault else {
            return Ok(None);
        };
        let is_pg = spec.starts_with("postgres://")
            || spec.starts_with("postgresql://")
            || spec.contains("host=");
        let store: Box<dyn VaultStore> = if is_pg {
            Box::new(PgStore::connect(spec, &self.vault_schema)?)
        } else {
            let path = PathBuf::from(spec);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            Box::new(FileStore::open(&path)?)
        };
        Ok(Some(Vault::new(ring, self.environment, store)?))
    }

    /// The key ring, which every stage needs (quarantined payloads are
    /// sealed under a key derived from it).
    pub fn required_key_ring(&self) -> anyhow::Result<KeyRing> {
        self.key_ring()?.ok_or_else(|| {
            anyhow::anyhow!(
                "no key ring: pass --key-file or set CONSENTRY_KEY_FILE (CONSENTRY_MASTER_KEY in development); \
                 every stage seals quarantined payloads under a key derived from it"
            )
        })
    }

    /// What the stages get: the key ring and, if configured, the vault.
    pub fn services(&self, ring: KeyRing) -> anyhow::Result<Services> {
        let vault = self.vault(&ring)?;
        Ok(Services {
            keys: Some(Arc::new(ring)),
            vault: vault.map(|v| Arc::new(v) as Arc<dyn consentry_crypto::TokenVault>),
        })
    }
}
