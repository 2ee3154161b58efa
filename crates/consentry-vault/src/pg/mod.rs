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
//!
//! Here: the store and how it connects. The pool and its retry are in
//! `pool`, the tables in `schema`, the store's operations in `store`.

mod pool;
mod schema;
mod store;
#[cfg(test)]
mod tests;

pub use pool::PgOptions;

use crate::StoreError;
use pool::Pool;

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
        if !schema::valid_name(schema) {
            return Err(StoreError::Backend {
                backend: "postgres",
                detail: format!("schema name {schema:?}: use a-z, 0-9 and _"),
            });
        }
        let pool = Pool::new(params, options)?;
        pool.run(|client| schema::create(client, schema))?;
        Ok(PgStore {
            pool,
            schema: schema.to_string(),
        })
    }
}
