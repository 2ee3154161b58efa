//! The store's tables, all in one schema named by the deployment and
//! created if absent: wrapped subject keys, token entries, each subject's
//! token per domain, tombstones, and the digests of shredded tokens.

use super::err;
use crate::StoreError;
use postgres::Client;

/// Whether `schema` is a name the store accepts: an SQL identifier of
/// lower-case letters, digits and `_` (it is spliced into statements).
pub(super) fn valid_name(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema.as_bytes()[0].is_ascii_lowercase()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Creates the schema and its tables where absent.
pub(super) fn create(client: &mut Client, schema: &str) -> Result<(), StoreError> {
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
                 PRIMARY KEY (subject, domain));
             CREATE TABLE IF NOT EXISTS {schema}.shredded_tokens (
                 digest text PRIMARY KEY);"
        ))
        .map_err(err)
}
