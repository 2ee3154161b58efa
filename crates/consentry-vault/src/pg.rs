//! The PostgreSQL backend: the production choice (replicated, backed up,
//! shared by vault replicas). Tables live in one schema, created if absent.

use crate::{StoreError, TokenEntry, VaultStore};
use postgres::{Client, NoTls};
use std::sync::Mutex;

pub struct PgStore {
    client: Mutex<Client>,
    schema: String,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        backend: "postgres",
        detail: e.to_string(),
    }
}

impl PgStore {
    /// Connects (a libpq-style string: `host=127.0.0.1 user=postgres
    /// dbname=vault`) and creates the schema's tables if absent. `schema`
    /// is an SQL identifier: lower-case letters, digits and `_`.
    pub fn connect(params: &str, schema: &str) -> Result<PgStore, StoreError> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && schema.as_bytes()[0].is_ascii_lowercase()
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(StoreError::Backend {
                backend: "postgres",
                detail: format!("schema name {schema:?}: use a-z, 0-9 and _"),
            });
        }
        let mut client = Client::connect(params, NoTls).map_err(err)?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.subject_keys (
                     subject text NOT NULL,
                     domain text NOT NULL,
                     wrapped bytea NOT NULL,
                     PRIMARY KEY (subject, domain));
                 CREATE TABLE IF NOT EXISTS {schema}.tokens (
                     token text PRIMARY KEY,
                     domain text NOT NULL,
                     subject text NOT NULL,
                     sealed bytea NOT NULL,
                     created_ms bigint NOT NULL);
                 CREATE INDEX IF NOT EXISTS tokens_by_subject
                     ON {schema}.tokens (subject, domain);
                 CREATE TABLE IF NOT EXISTS {schema}.subject_tokens (
                     subject text NOT NULL,
                     domain text NOT NULL,
                     token text NOT NULL,
                     PRIMARY KEY (subject, domain));
                 CREATE TABLE IF NOT EXISTS {schema}.tombstones (
                     subject text NOT NULL,
                     domain text NOT NULL,
                     shredded boolean NOT NULL,
                     PRIMARY KEY (subject, domain));"
            ))
            .map_err(err)?;
        Ok(PgStore {
            client: Mutex::new(client),
            schema: schema.to_string(),
        })
    }

    fn client(&self) -> std::sync::MutexGuard<'_, Client> {
        // A panic while holding the lock leaves the connection usable.
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serializes creation against shredding for one (subject, domain): a
/// transaction-scoped advisory lock, shared for the subject's `*`. Under
/// READ COMMITTED a tombstone committed while an insert waits would
/// otherwise not be seen by it.
fn lock_subject(
    txn: &mut postgres::Transaction<'_>,
    subject: &str,
    domain: &str,
) -> Result<(), StoreError> {
    if domain == crate::EVERY_DOMAIN {
        txn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/*', 0))",
            &[&subject],
        )
        .map_err(err)?;
        return Ok(());
    }
    txn.execute(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1 || '/*', 0)),
                pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))",
        &[&subject, &domain],
    )
    .map_err(err)?;
    Ok(())
}

/// Whether (subject, domain) is tombstoned: its own row decides (a
/// reinstated domain of a subject shredded everywhere has one saying
/// `false`), else the subject's `*` row.
const TOMBSTONED: &str = "SELECT coalesce(
        (SELECT shredded FROM {s}.tombstones WHERE subject = $1 AND domain = $2),
        EXISTS (SELECT 1 FROM {s}.tombstones WHERE subject = $1 AND domain = '*'))";

/// Whether (subject, domain) has a tombstone, in `txn` (after its lock).
fn tombstoned_in(
    txn: &mut postgres::Transaction<'_>,
    schema: &str,
    subject: &str,
    domain: &str,
) -> Result<bool, StoreError> {
    let row = txn
        .query_one(&TOMBSTONED.replace("{s}", schema), &[&subject, &domain])
        .map_err(err)?;
    Ok(row.get(0))
}

impl VaultStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn subject_key_or_insert(
        &self,
        subject: &str,
        domain: &str,
        wrapped: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let s = &self.schema;
        let mut c = self.client();
        let mut txn = c.transaction().map_err(err)?;
        lock_subject(&mut txn, subject, domain)?;
        if tombstoned_in(&mut txn, s, subject, domain)? {
            return Err(StoreError::Shredded);
        }
        // Insert-or-nothing, then read: the first writer's key wins.
        txn.execute(
            &format!(
                "INSERT INTO {s}.subject_keys (subject, domain, wrapped) VALUES ($1, $2, $3)
                 ON CONFLICT (subject, domain) DO NOTHING"
            ),
            &[&subject, &domain, &wrapped],
        )
        .map_err(err)?;
        let row = txn
            .query_one(
                &format!("SELECT wrapped FROM {s}.subject_keys WHERE subject = $1 AND domain = $2"),
                &[&subject, &domain],
            )
            .map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(row.get(0))
    }

    fn subject_key(&self, subject: &str, domain: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let s = &self.schema;
        let row = self
            .client()
            .query_opt(
                &format!("SELECT wrapped FROM {s}.subject_keys WHERE subject = $1 AND domain = $2"),
                &[&subject, &domain],
            )
            .map_err(err)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn put_token(&self, token: &str, entry: &TokenEntry) -> Result<(), StoreError> {
        let s = &self.schema;
        let mut c = self.client();
        let mut txn = c.transaction().map_err(err)?;
        lock_subject(&mut txn, &entry.subject, &entry.domain)?;
        if tombstoned_in(&mut txn, s, &entry.subject, &entry.domain)? {
            return Err(StoreError::Shredded);
        }
        let inserted = txn
            .execute(
                &format!(
                    "INSERT INTO {s}.tokens (token, domain, subject, sealed, created_ms)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token) DO NOTHING"
                ),
                &[
                    &token,
                    &entry.domain,
                    &entry.subject,
                    &entry.sealed,
                    &entry.created_ms,
                ],
            )
            .map_err(err)?;
        txn.commit().map_err(err)?;
        if inserted == 1 {
            return Ok(());
        }
        drop(c);
        match self.token(token)? {
            Some(existing) if &existing == entry => Ok(()),
            _ => Err(StoreError::TokenConflict),
        }
    }

    fn token(&self, token: &str) -> Result<Option<TokenEntry>, StoreError> {
        let s = &self.schema;
        let row = self
            .client()
            .query_opt(
                &format!(
                    "SELECT domain, subject, sealed, created_ms FROM {s}.tokens WHERE token = $1"
                ),
                &[&token],
            )
            .map_err(err)?;
        Ok(row.map(|r| TokenEntry {
            domain: r.get(0),
            subject: r.get(1),
            sealed: r.get(2),
            created_ms: r.get(3),
        }))
    }

    fn subject_token(&self, subject: &str, domain: &str) -> Result<Option<String>, StoreError> {
        let s = &self.schema;
        let row = self
            .client()
            .query_opt(
                &format!("SELECT token FROM {s}.subject_tokens WHERE subject = $1 AND domain = $2"),
                &[&subject, &domain],
            )
            .map_err(err)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn subject_token_or_insert(
        &self,
        subject: &str,
        domain: &str,
        token: &str,
        entry: &TokenEntry,
    ) -> Result<String, StoreError> {
        let s = &self.schema;
        let mut c = self.client();
        let mut txn = c.transaction().map_err(err)?;
        lock_subject(&mut txn, subject, domain)?;
        if tombstoned_in(&mut txn, s, subject, domain)? {
            return Err(StoreError::Shredded);
        }
        let inserted = txn
            .execute(
                &format!(
                    "INSERT INTO {s}.subject_tokens (subject, domain, token) VALUES ($1, $2, $3)
                     ON CONFLICT (subject, domain) DO NOTHING"
                ),
                &[&subject, &domain, &token],
            )
            .map_err(err)?;
        if inserted == 0 {
            drop(txn);
            drop(c);
            // Another writer's token is stored (and committed: the insert
            // waited for it).
            return self
                .subject_token(subject, domain)?
                .ok_or(StoreError::Malformed);
        }
        txn.execute(
            &format!(
                "INSERT INTO {s}.tokens (token, domain, subject, sealed, created_ms)
                 VALUES ($1, $2, $3, $4, $5)"
            ),
            &[
                &token,
                &entry.domain,
                &entry.subject,
                &entry.sealed,
                &entry.created_ms,
            ],
        )
        .map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(token.to_string())
    }

    fn shred(&self, subject: &str, domain: Option<&str>) -> Result<usize, StoreError> {
        let s = &self.schema;
        let mut c = self.client();
        let mut txn = c.transaction().map_err(err)?;
        let tomb = domain.unwrap_or(crate::EVERY_DOMAIN);
        lock_subject(&mut txn, subject, tomb)?;
        if domain.is_none() {
            // Every domain: earlier rows (and exceptions) are moot.
            txn.execute(
                &format!("DELETE FROM {s}.tombstones WHERE subject = $1"),
                &[&subject],
            )
            .map_err(err)?;
        }
        txn.execute(
            &format!(
                "INSERT INTO {s}.tombstones (subject, domain, shredded) VALUES ($1, $2, true)
                 ON CONFLICT (subject, domain) DO UPDATE SET shredded = true"
            ),
            &[&subject, &tomb],
        )
        .map_err(err)?;
        txn.execute(
            &format!(
                "DELETE FROM {s}.subject_tokens WHERE subject = $1 AND ($2::text IS NULL OR domain = $2)"
            ),
            &[&subject, &domain],
        )
        .map_err(err)?;
        // `domain IS NULL` in the parameter means every domain.
        let keys = txn
            .execute(
                &format!(
                    "DELETE FROM {s}.subject_keys WHERE subject = $1 AND ($2::text IS NULL OR domain = $2)"
                ),
                &[&subject, &domain],
            )
            .map_err(err)?;
        txn.execute(
            &format!(
                "DELETE FROM {s}.tokens WHERE subject = $1 AND ($2::text IS NULL OR domain = $2)"
            ),
            &[&subject, &domain],
        )
        .map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(keys as usize)
    }

    fn count_tokens(&self, subject: &str, domain: &str) -> Result<usize, StoreError> {
        let s = &self.schema;
        let row = self
            .client()
            .query_one(
                &format!("SELECT count(*) FROM {s}.tokens WHERE subject = $1 AND domain = $2"),
                &[&subject, &domain],
            )
            .map_err(err)?;
        Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    fn is_shredded(&self, subject: &str, domain: &str) -> Result<bool, StoreError> {
        let row = self
            .client()
            .query_one(
                &TOMBSTONED.replace("{s}", &self.schema),
                &[&subject, &domain],
            )
            .map_err(err)?;
        Ok(row.get(0))
    }

    fn reinstate(&self, subject: &str, domain: &str) -> Result<(), StoreError> {
        let s = &self.schema;
        let mut c = self.client();
        let mut txn = c.transaction().map_err(err)?;
        lock_subject(&mut txn, subject, domain)?;
        // Under a `*` tombstone the subject's other domains stay shredded:
        // this domain gets an exception row; otherwise its row goes.
        txn.execute(
            &format!(
                "INSERT INTO {s}.tombstones (subject, domain, shredded)
                 SELECT $1, $2, false
                 WHERE EXISTS (SELECT 1 FROM {s}.tombstones WHERE subject = $1 AND domain = '*')
                 ON CONFLICT (subject, domain) DO UPDATE SET shredded = false"
            ),
            &[&subject, &domain],
        )
        .map_err(err)?;
        txn.execute(
            &format!(
                "DELETE FROM {s}.tombstones WHERE subject = $1 AND domain = $2
                 AND NOT EXISTS (SELECT 1 FROM {s}.tombstones WHERE subject = $1 AND domain = '*')"
            ),
            &[&subject, &domain],
        )
        .map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server the tests use: CONSENTRY_TEST_POSTGRES, else the local
    /// one `.ci/run` starts. A missing server fails the test: the suite
    /// must run against both backends.
    fn params() -> String {
        std::env::var("CONSENTRY_TEST_POSTGRES")
            .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into())
    }

    #[test]
    fn postgres_backend_passes_the_vault_suite() {
        let schema = format!(
            "vault_test_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or_default()
        );
        let store = PgStore::connect(&params(), &schema).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {:?} is required for this suite: {e}",
                params()
            )
        });
        crate::suite::exercise(&store, &|| {
            Box::new(PgStore::connect(&params(), &schema).expect("reconnects"))
        });
        // A dump of the database, without the key ring, maps no token to an
        // MRN: every table as text holds no MRN and no subject key.
        let ring =
            consentry_crypto::KeyRing::generate(consentry_crypto::Environment::NonProduction)
                .unwrap();
        let vault = crate::Vault::new(
            &ring,
            consentry_crypto::Environment::NonProduction,
            Box::new(PgStore::connect(&params(), &schema).expect("connects")),
        )
        .unwrap();
        let mrns: Vec<String> = (0..100)
            .map(|i| format!("MRN{:07}", 5_000_000 + i))
            .collect();
        let subjects = crate::suite::fill_with_subjects(&vault, &mrns);
        let mut dump = Vec::new();
        for table in ["subject_keys", "tokens", "subject_tokens", "tombstones"] {
            for row in store
                .client()
                .query(&format!("SELECT t::text FROM {schema}.{table} t"), &[])
                .unwrap()
            {
                dump.extend_from_slice(row.get::<_, String>(0).as_bytes());
            }
        }
        assert!(dump.windows(11).any(|w| w == b"tok:trial:r"));
        assert_eq!(crate::suite::findable(&dump, &mrns, &subjects), 0);
        store
            .client()
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .unwrap();
        assert!(PgStore::connect(&params(), "Bad-Name").is_err());
    }
}
