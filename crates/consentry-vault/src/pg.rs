//! The PostgreSQL backend: the production choice (replicated, backed up,
//! shared by vault replicas). Tables live in one schema, created if absent.
//!
//! Connections come from a small pool that reconnects: a connection found
//! dead is dropped, and an operation that lost its connection (or could
//! not get one) is retried on a new one with back-off until
//! `PgOptions::reconnect_for` has passed. Every operation is safe to run
//! twice (inserts are insert-or-nothing then read, shredding is
//! idempotent), so a commit whose answer was lost is harmless to repeat.
//! With a CA (`PgOptions::ca`) the connection is TLS, verified against
//! that CA and the host name, whatever `sslmode` says; without one it is
//! plain, which production refuses.

use crate::{StoreError, TokenEntry, VaultStore};
use postgres::{Client, NoTls};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the store reaches PostgreSQL.
#[derive(Clone)]
pub struct PgOptions {
    /// The CA (PEM) that signs the server's certificate: TLS required.
    pub ca: Option<PathBuf>,
    /// How long an operation keeps trying to reach the database.
    pub reconnect_for: Duration,
    /// Idle connections kept for reuse.
    pub max_idle: usize,
    /// The password, from a file (not in the connection string).
    pub password: Option<zeroize::Zeroizing<String>>,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            ca: None,
            password: None,
            reconnect_for: Duration::from_secs(10),
            max_idle: 16,
        }
    }
}

pub struct PgStore {
    pool: Pool,
    schema: String,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        backend: "postgres",
        detail: e.to_string(),
    }
}

enum Connector {
    Plain,
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

struct Pool {
    config: postgres::Config,
    connector: Connector,
    idle: Mutex<Vec<Client>>,
    options: PgOptions,
    /// Whether the last attempt to reach the database succeeded.
    reachable: AtomicBool,
}

/// A pooled connection, back to the pool when dropped unless it died.
struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < self.pool.options.max_idle {
                    idle.push(c);
                }
            }
        }
    }
}

impl Pool {
    fn new(params: &str, options: PgOptions) -> Result<Pool, StoreError> {
        let mut config: postgres::Config = params.parse().map_err(|_| StoreError::Backend {
            backend: "postgres",
            // The parser's message may quote the string, password and all.
            detail: "the connection string does not parse".into(),
        })?;
        if let Some(p) = &options.password {
            config.password(p.as_bytes());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A connection that stops answering (a failover, a partition)
        // fails within seconds, not at TCP's own timeout of minutes: a
        // vault call or a stage's batch blocked on it would hold its slot
        // and keep the health probe from reporting the outage.
        config
            .tcp_user_timeout(Duration::from_secs(15))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(2);
        if config.get_options().is_none() {
            config.options(
                "-c statement_timeout=15000 -c lock_timeout=10000 -c idle_in_transaction_session_timeout=60000",
            );
        }
        let connector = match &options.ca {
            Some(ca) => {
                config.ssl_mode(postgres::config::SslMode::Require);
                Connector::Tls(tls_connector(ca)?)
            }
            None if config.get_ssl_mode() == postgres::config::SslMode::Require => {
                return Err(StoreError::Backend {
                    backend: "postgres",
                    detail: "sslmode=require needs the CA that signs the server's certificate (--vault-ca)".into(),
                })
            }
            None => {
                config.ssl_mode(postgres::config::SslMode::Disable);
                Connector::Plain
            }
        };
        Ok(Pool {
            config,
            connector,
            idle: Mutex::new(Vec::new()),
            options,
            reachable: AtomicBool::new(false),
        })
    }

    fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.connector {
            Connector::Plain => self.config.connect(NoTls),
            Connector::Tls(tls) => self.config.connect(tls.clone()),
        }
    }

    /// An idle connection, or a new one.
    fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match reused {
            Some(c) => c,
            None => self.connect().map_err(|e| err(connect_detail(&e)))?,
        };
        Ok(Pooled {
            pool: self,
            client: Some(client),
        })
    }

    /// Runs `op` on a connection; an operation that could not reach the
    /// database, or lost its connection, is tried again on a new one until
    /// `reconnect_for` has passed. Other errors are `op`'s answer.
    fn run<T>(
        &self,
        mut op: impl FnMut(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.options.reconnect_for;
        let mut pause = Duration::from_millis(50);
        loop {
            let failed = match self.get() {
                Ok(mut c) => match op(&mut c) {
                    Ok(v) => {
                        self.reachable.store(true, Ordering::SeqCst);
                        return Ok(v);
                    }
                    // A verdict (shredded, a conflict) is the answer, and
                    // so is an error from a database still there.
                    Err(e)
                        if !matches!(e, StoreError::Backend { .. })
                            || (!c.is_closed() && c.is_valid(Duration::from_secs(2)).is_ok()) =>
                    {
                        self.reachable.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                    Err(e) => {
                        // Dead: never back into the pool.
                        if let Some(dead) = c.client.take() {
                            drop(dead);
                        }
                        e
                    }
                },
                Err(e) => e,
            };
            self.reachable.store(false, Ordering::SeqCst);
            if Instant::now() + pause > deadline {
                return Err(failed);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// A connection error without the connection string (never a password).
fn connect_detail(e: &postgres::Error) -> String {
    use std::error::Error;
    match e.source() {
        Some(source) => format!("cannot connect: {source}"),
        None => format!("cannot connect: {e}"),
    }
}

fn tls_connector(
    ca: &std::path::Path,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |detail: String| StoreError::Backend {
        backend: "postgres",
        detail: format!("CA {}: {detail}", ca.display()),
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|_| bad("cannot be read as PEM".into()))?;
    for cert in certs {
        let cert = cert.map_err(|_| bad("is not valid PEM".into()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl PgStore {
    /// Connects (a libpq-style string: `host=127.0.0.1 user=postgres
    /// dbname=vault`) with the default options (plain, 10 s of reconnect)
    /// and creates the schema's tables if absent.
    pub fn connect(params: &str, schema: &str) -> Result<PgStore, StoreError> {
        PgStore::connect_with(params, schema, PgOptions::default())
    }

    /// Connects with `options`. `schema` is an SQL identifier: lower-case
    /// letters, digits and `_`.
    pub fn connect_with(
        params: &str,
        schema: &str,
        options: PgOptions,
    ) -> Result<PgStore, StoreError> {
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
        let pool = Pool::new(params, options)?;
        pool.run(|client| {
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
                .map_err(err)
        })?;
        Ok(PgStore {
            pool,
            schema: schema.to_string(),
        })
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

    fn ping(&self) -> Result<(), StoreError> {
        let outcome = self
            .pool
            .get()
            .and_then(|mut c| c.simple_query("SELECT 1").map(|_| ()).map_err(err));
        self.pool.reachable.store(outcome.is_ok(), Ordering::SeqCst);
        outcome
    }

    fn subject_key_or_insert(
        &self,
        subject: &str,
        domain: &str,
        wrapped: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let s = &self.schema;
        self.pool.run(|c| {
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
                    &format!(
                        "SELECT wrapped FROM {s}.subject_keys WHERE subject = $1 AND domain = $2"
                    ),
                    &[&subject, &domain],
                )
                .map_err(err)?;
            txn.commit().map_err(err)?;
            Ok(row.get(0))
        })
    }

    fn subject_key(&self, subject: &str, domain: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let s = &self.schema;
        self.pool.run(|c| {
            let row = c
                .query_opt(
                    &format!(
                        "SELECT wrapped FROM {s}.subject_keys WHERE subject = $1 AND domain = $2"
                    ),
                    &[&subject, &domain],
                )
                .map_err(err)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn put_token(&self, token: &str, entry: &TokenEntry) -> Result<(), StoreError> {
        let s = &self.schema;
        let inserted = self.pool.run(|c| {
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
            Ok(inserted)
        })?;
        if inserted == 1 {
            return Ok(());
        }
        // Already there (another writer's, or this one's whose commit
        // answer was lost): the same entry is success.
        match self.token(token)? {
            Some(existing) if &existing == entry => Ok(()),
            _ => Err(StoreError::TokenConflict),
        }
    }

    fn token(&self, token: &str) -> Result<Option<TokenEntry>, StoreError> {
        let s = &self.schema;
        self.pool.run(|c| {
            let row = c
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
        })
    }

    fn subject_token(&self, subject: &str, domain: &str) -> Result<Option<String>, StoreError> {
        let s = &self.schema;
        self.pool.run(|c| {
            let row = c
                .query_opt(
                    &format!(
                        "SELECT token FROM {s}.subject_tokens WHERE subject = $1 AND domain = $2"
                    ),
                    &[&subject, &domain],
                )
                .map_err(err)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn subject_token_or_insert(
        &self,
        subject: &str,
        domain: &str,
        token: &str,
        entry: &TokenEntry,
    ) -> Result<String, StoreError> {
        let s = &self.schema;
        let inserted = self.pool.run(|c| {
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
                return Ok(false);
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
            Ok(true)
        })?;
        if inserted {
            return Ok(token.to_string());
        }
        // Another writer's token is stored (and committed: the insert
        // waited for it), or this one's whose commit answer was lost.
        self.subject_token(subject, domain)?
            .ok_or(StoreError::Malformed)
    }

    fn shred(&self, subject: &str, domain: Option<&str>) -> Result<usize, StoreError> {
        let s = &self.schema;
        let tomb = domain.unwrap_or(crate::EVERY_DOMAIN);
        self.pool.run(|c| {
            let mut txn = c.transaction().map_err(err)?;
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
        })
    }

    fn count_tokens(&self, subject: &str, domain: &str) -> Result<usize, StoreError> {
        let s = &self.schema;
        self.pool.run(|c| {
            let row = c
                .query_one(
                    &format!("SELECT count(*) FROM {s}.tokens WHERE subject = $1 AND domain = $2"),
                    &[&subject, &domain],
                )
                .map_err(err)?;
            Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
    }

    fn is_shredded(&self, subject: &str, domain: &str) -> Result<bool, StoreError> {
        let query = TOMBSTONED.replace("{s}", &self.schema);
        self.pool.run(|c| {
            let row = c.query_one(&query, &[&subject, &domain]).map_err(err)?;
            Ok(row.get(0))
        })
    }

    fn reinstate(&self, subject: &str, domain: &str) -> Result<(), StoreError> {
        let s = &self.schema;
        self.pool.run(|c| {
            let mut txn = c.transaction().map_err(err)?;
            lock_subject(&mut txn, subject, domain)?;
            // Under a `*` tombstone the subject's other domains stay
            // shredded: this domain gets an exception row; otherwise its
            // row goes.
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
        })
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
                .pool
                .get()
                .unwrap()
                .query(&format!("SELECT t::text FROM {schema}.{table} t"), &[])
                .unwrap()
            {
                dump.extend_from_slice(row.get::<_, String>(0).as_bytes());
            }
        }
        assert!(dump.windows(11).any(|w| w == b"tok:trial:r"));
        assert_eq!(crate::suite::findable(&dump, &mrns, &subjects), 0);
        store
            .pool
            .get()
            .unwrap()
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .unwrap();
        assert!(PgStore::connect(&params(), "Bad-Name").is_err());
    }

    #[test]
    fn a_connection_the_server_kills_is_replaced_and_the_operation_retried() {
        let app = format!("consentry_pool_test_{}", std::process::id());
        let schema = format!("{app}_s");
        let conninfo = format!("{} application_name={app}", params());
        let store = PgStore::connect(&conninfo, &schema).expect("connects");
        assert_eq!(store.subject_key("s", "d").unwrap(), None);
        assert!(store.ping().is_ok());
        // The server ends every connection of the pool (a restart, a
        // failover, an idle timeout on a proxy).
        let mut admin = postgres::Client::connect(&params(), NoTls).unwrap();
        let killed = admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .unwrap();
        assert!(killed >= 1, "the pool held a connection");
        let wrapped = b"wrapped-key".to_vec();
        assert_eq!(
            store.subject_key_or_insert("s", "d", &wrapped).unwrap(),
            wrapped,
            "answered on a new connection"
        );
        assert_eq!(store.subject_key("s", "d").unwrap(), Some(wrapped));
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .unwrap();
        // A plain connection string asking for TLS without a CA is refused,
        // naming the flag and never the string.
        let e = PgStore::connect(
            &format!("{} sslmode=require password=s3cret", params()),
            "x",
        )
        .err()
        .expect("refused")
        .to_string();
        assert!(e.contains("--vault-ca") && !e.contains("s3cret"), "{e}");
        let e = PgStore::connect("host=127.0.0.1 password=s3cret bogus_option=1", "x")
            .err()
            .expect("refused")
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
