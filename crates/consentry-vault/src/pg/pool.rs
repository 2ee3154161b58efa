//! The connection pool: how the store reaches PostgreSQL (plain or TLS
//! against one CA, timeouts that surface an outage within seconds), idle
//! connections kept for reuse, and the retry loop that moves an operation
//! which lost its connection onto a new one until `reconnect_for` passes.

use super::err;
use crate::StoreError;
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

enum Connector {
    Plain,
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

pub(super) struct Pool {
    config: postgres::Config,
    connector: Connector,
    idle: Mutex<Vec<Client>>,
    options: PgOptions,
    /// Whether the last attempt to reach the database succeeded.
    pub(super) reachable: AtomicBool,
}

/// A pooled connection, back to the pool when dropped unless it died.
pub(super) struct Pooled<'a> {
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
    pub(super) fn new(params: &str, options: PgOptions) -> Result<Pool, StoreError> {
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
    pub(super) fn get(&self) -> Result<Pooled<'_>, StoreError> {
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
    pub(super) fn run<T>(
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
