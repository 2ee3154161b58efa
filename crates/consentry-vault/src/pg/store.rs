//! The store's operations (`VaultStore` for `PgStore`). Every creation
//! runs in one transaction that takes the subject's advisory lock and
//! checks its tombstone first, so a shred committed meanwhile is seen and
//! nothing is created for a shredded subject.

use super::{err, PgStore};
use crate::{StoreError, TokenEntry, VaultStore};
use postgres::types::FromSql;
use postgres::Transaction;
use std::sync::atomic::Ordering;

/// Serializes creation against shredding for one (subject, domain): a
/// transaction-scoped advisory lock, shared for the subject's `*`. Under
/// READ COMMITTED a tombstone committed while an insert waits would
/// otherwise not be seen by it.
fn lock_subject(txn: &mut Transaction<'_>, subject: &str, domain: &str) -> Result<(), StoreError> {
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
    txn: &mut Transaction<'_>,
    schema: &str,
    subject: &str,
    domain: &str,
) -> Result<bool, StoreError> {
    let row = txn
        .query_one(&TOMBSTONED.replace("{s}", schema), &[&subject, &domain])
        .map_err(err)?;
    Ok(row.get(0))
}

impl PgStore {
    /// Runs `body` (which commits) in a transaction that may create rows
    /// for (subject, domain): the subject's lock taken, then `Shredded` if
    /// a tombstone forbids creating. Retried as `Pool::run` retries.
    fn creating<T>(
        &self,
        subject: &str,
        domain: &str,
        mut body: impl FnMut(Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let s = &self.schema;
        self.pool.run(|c| {
            let mut txn = c.transaction().map_err(err)?;
            lock_subject(&mut txn, subject, domain)?;
            if tombstoned_in(&mut txn, s, subject, domain)? {
                return Err(StoreError::Shredded);
            }
            body(txn)
        })
    }

    /// `column` of `table`'s row for (subject, domain), if there is one.
    fn by_subject<T: for<'a> FromSql<'a>>(
        &self,
        column: &str,
        table: &str,
        subject: &str,
        domain: &str,
    ) -> Result<Option<T>, StoreError> {
        let s = &self.schema;
        self.pool.run(|c| {
            let row = c
                .query_opt(
                    &format!("SELECT {column} FROM {s}.{table} WHERE subject = $1 AND domain = $2"),
                    &[&subject, &domain],
                )
                .map_err(err)?;
            Ok(row.map(|r| r.get(0)))
        })
    }
}

/// Inserts `token`'s entry in `txn`, with `on_conflict` (empty: a
/// conflict is an error); the rows inserted.
fn insert_token(
    txn: &mut Transaction<'_>,
    schema: &str,
    token: &str,
    entry: &TokenEntry,
    on_conflict: &str,
) -> Result<u64, StoreError> {
    txn.execute(
        &format!(
            "INSERT INTO {schema}.tokens (token, domain, subject, sealed, created_ms)
             VALUES ($1, $2, $3, $4, $5) {on_conflict}"
        ),
        &[
            &token,
            &entry.domain,
            &entry.subject,
            &entry.sealed,
            &entry.created_ms,
        ],
    )
    .map_err(err)
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
        self.creating(subject, domain, |mut txn| {
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
        self.by_subject("wrapped", "subject_keys", subject, domain)
    }

    fn put_token(&self, token: &str, entry: &TokenEntry) -> Result<(), StoreError> {
        let s = &self.schema;
        let inserted = self.creating(&entry.subject, &entry.domain, |mut txn| {
            let inserted =
                insert_token(&mut txn, s, token, entry, "ON CONFLICT (token) DO NOTHING")?;
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
        self.by_subject("token", "subject_tokens", subject, domain)
    }

    fn subject_token_or_insert(
        &self,
        subject: &str,
        domain: &str,
        token: &str,
        entry: &TokenEntry,
    ) -> Result<String, StoreError> {
        let s = &self.schema;
        let inserted = self.creating(subject, domain, |mut txn| {
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
            insert_token(&mut txn, s, token, entry, "")?;
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
            let deleted: Vec<String> = txn
                .query(
                    &format!(
                        "DELETE FROM {s}.tokens WHERE subject = $1 AND ($2::text IS NULL OR domain = $2) RETURNING token"
                    ),
                    &[&subject, &domain],
                )
                .map_err(err)?
                .iter()
                .map(|r| crate::shredded_token_digest(r.get::<_, &str>(0)))
                .collect();
            txn.execute(
                &format!(
                    "INSERT INTO {s}.shredded_tokens (digest) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"
                ),
                &[&deleted],
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

    fn was_shredded(&self, token: &str) -> Result<bool, StoreError> {
        let query = format!(
            "SELECT EXISTS (SELECT 1 FROM {}.shredded_tokens WHERE digest = $1)",
            self.schema
        );
        let digest = crate::shredded_token_digest(token);
        self.pool.run(|c| {
            let row = c.query_one(&query, &[&digest]).map_err(err)?;
            Ok(row.get(0))
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
