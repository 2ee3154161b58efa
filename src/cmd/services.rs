//! Where a command gets the key ring and the token vault from: the flags
//! and environment shared by `run` (every stage seals quarantine under the
//! key ring; de-identify and tokenize use the vault) and the vault's own
//! commands.

use clap::Args;
use consentry_crypto::keyring::{EnvKey, Environment, KeyFile, KeyProvider, KeyRing};
use consentry_stages::Services;
use consentry_vault::{FileStore, PgOptions, PgStore, Vault, VaultStore};
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
    /// The CA (PEM) that signs the PostgreSQL server's certificate: the
    /// vault's connections are TLS, verified against it and the host name.
    /// Required for PostgreSQL in production.
    #[arg(long, env = "CONSENTRY_VAULT_CA")]
    pub vault_ca: Option<PathBuf>,
    /// A file holding the PostgreSQL password (keep it out of the
    /// connection string on a command line).
    #[arg(long, env = "CONSENTRY_VAULT_PASSWORD_FILE")]
    pub vault_password_file: Option<PathBuf>,
    /// How long a vault operation keeps trying to reach PostgreSQL (it
    /// reconnects by itself) before it fails.
    #[arg(long, env = "CONSENTRY_VAULT_RECONNECT_S", default_value_t = 10.0)]
    pub vault_reconnect_s: f64,
}

impl ServiceArgs {
    /// Production carries PHI to and from Kafka only over TLS.
    pub fn check_transport(&self, conn: &consentry_runtime::Connection) -> anyhow::Result<()> {
        if self.environment == Environment::Production && !conn.kafka_security.is_encrypted() {
            anyhow::bail!(
                "production reaches Kafka only over TLS: set --kafka-security-protocol ssl or sasl_ssl (CONSENTRY_KAFKA_SECURITY_PROTOCOL)"
            );
        }
        Ok(())
    }

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
            // A password on the command line is readable by every user of
            // the host (`ps`); from CONSENTRY_VAULT or a file it is not.
            let from_env = std::env::var("CONSENTRY_VAULT").ok().as_deref() == Some(spec.as_str());
            if !from_env && has_password(spec) {
                anyhow::bail!(
                    "--vault holds a password: pass the connection in CONSENTRY_VAULT, or the password in --vault-password-file"
                );
            }
            if self.environment == Environment::Production && self.vault_ca.is_none() {
                anyhow::bail!(
                    "the vault's PostgreSQL connection must be TLS in production: pass --vault-ca (CONSENTRY_VAULT_CA)"
                );
            }
            let password = match &self.vault_password_file {
                Some(path) => Some(zeroize::Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|e| {
                            anyhow::anyhow!("cannot read {}: {}", path.display(), e.kind())
                        })?
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                )),
                None => None,
            };
            let options = PgOptions {
                ca: self.vault_ca.clone(),
                password,
                reconnect_for: std::time::Duration::from_secs_f64(
                    self.vault_reconnect_s.clamp(0.0, 3600.0),
                ),
                ..PgOptions::default()
            };
            Box::new(PgStore::connect_with(spec, &self.vault_schema, options)?)
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

    /// What the stages get: the key ring and, if configured, the vault
    /// (also returned as itself, for health checks).
    pub fn services(&self, ring: KeyRing) -> anyhow::Result<(Services, Option<Arc<Vault>>)> {
        let vault = self.vault(&ring)?.map(Arc::new);
        let services = Services {
            keys: Some(Arc::new(ring)),
            vault: vault
                .clone()
                .map(|v| v as Arc<dyn consentry_crypto::TokenVault>),
        };
        Ok((services, vault))
    }
}

/// Whether a PostgreSQL connection string carries a password
/// (`password=` in key-value form, `user:password@` in a URL).
fn has_password(spec: &str) -> bool {
    if let Some(rest) = spec
        .strip_prefix("postgres://")
        .or_else(|| spec.strip_prefix("postgresql://"))
    {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        return authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
            || rest.contains("password=");
    }
    spec.split_whitespace()
        .any(|kv| kv.trim_start().to_ascii_lowercase().starts_with("password"))
}

#[cfg(test)]
mod tests {
    use super::has_password;

    #[test]
    fn passwords_in_connection_strings_are_recognised() {
        for with in [
            "host=db user=v password=x",
            "host=db PASSWORD = x",
            "postgres://v:x@db/vault",
            "postgresql://db/vault?password=x",
        ] {
            assert!(has_password(with), "{with}");
        }
        for without in [
            "host=db user=v dbname=vault",
            "postgres://v@db/vault",
            "postgresql://db:5432/vault",
        ] {
            assert!(!has_password(without), "{without}");
        }
    }
}
