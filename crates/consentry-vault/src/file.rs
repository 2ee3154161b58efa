//! The embedded backend: one redb file (a crash-safe B-tree with ACID
//! transactions), the default for development and single-node vaults.

use crate::{StoreError, TokenEntry, VaultStore};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

/// (subject, domain) -> wrapped data key.
const KEYS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("subject_keys");
/// token -> encoded `TokenEntry`.
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// (subject, domain, token) -> (): the tokens to delete when shredding.
const BY_SUBJECT: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("tokens_by_subject");
/// (subject, domain) -> the subject's linkage token in the domain.
const LINKS: TableDefinition<(&str, &str), &str> = TableDefinition::new("subject_tokens");
/// (subject, domain or `*`) -> 1: shredded, and not granted again since;
/// 0: granted again in this domain although the subject's `*` stands.
const TOMBSTONES: TableDefinition<(&str, &str), u8> = TableDefinition::new("tombstones");
/// `shredded_token_digest` of every token shredded -> ().
const SHREDDED: TableDefinition<&str, ()> = TableDefinition::new("shredded_tokens");

pub struct FileStore {
    db: Database,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        backend: "file",
        detail: e.to_string(),
    }
}

impl FileStore {
    /// Opens the vault file, creating it (and its tables) if absent.
    pub fn open(path: &Path) -> Result<FileStore, StoreError> {
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(KEYS).map_err(err)?;
        txn.open_table(TOKENS).map_err(err)?;
        txn.open_table(BY_SUBJECT).map_err(err)?;
        txn.open_table(LINKS).map_err(err)?;
        txn.open_table(TOMBSTONES).map_err(err)?;
        txn.open_table(SHREDDED).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(FileStore { db })
    }
}

/// `created_ms`, then length-prefixed domain and subject, then the sealed bytes.
fn encode(e: &TokenEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + e.domain.len() + e.subject.len() + e.sealed.len());
    out.extend_from_slice(&e.created_ms.to_be_bytes());
    for s in [&e.domain, &e.subject] {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(&e.sealed);
    out
}

fn decode(b: &[u8]) -> Result<TokenEntry, StoreError> {
    let created_ms = i64::from_be_bytes(
        b.get(..8)
            .and_then(|x| x.try_into().ok())
            .ok_or(StoreError::Malformed)?,
    );
    let mut rest = &b[8..];
    let mut text = || -> Result<String, StoreError> {
        let n = u32::from_be_bytes(
            rest.get(..4)
                .and_then(|x| x.try_into().ok())
                .ok_or(StoreError::Malformed)?,
        ) as usize;
        let s = rest.get(4..4 + n).ok_or(StoreError::Malformed)?;
        let s = String::from_utf8(s.to_vec()).map_err(|_| StoreError::Malformed)?;
        rest = &rest[4 + n..];
        Ok(s)
    };
    let domain = text()?;
    let subject = text()?;
    Ok(TokenEntry {
        domain,
        subject,
        sealed: rest.to_vec(),
        created_ms,
    })
}

/// Whether (subject, domain) has a tombstone, read in `txn` (redb has one
/// writer at a time: a check in a write transaction holds until its commit).
fn tombstoned_in(
    txn: &redb::WriteTransaction,
    subject: &str,
    domain: &str,
) -> Result<bool, StoreError> {
    tombstoned(&txn.open_table(TOMBSTONES).map_err(err)?, subject, domain)
}

/// The domain's own row decides (1 shredded, 0 reinstated); else the
/// subject's `*` row.
fn tombstoned(
    t: &impl ReadableTable<(&'static str, &'static str), u8>,
    subject: &str,
    domain: &str,
) -> Result<bool, StoreError> {
    match t.get((subject, domain)).map_err(err)? {
        Some(v) => Ok(v.value() == 1),
        None => Ok(t
            .get((subject, crate::EVERY_DOMAIN))
            .map_err(err)?
            .is_some()),
    }
}

/// The domains `subject` has rows in, in a (subject, domain) table, that
/// `wanted` keeps.
fn domains_of<V: redb::Value + 'static>(
    table: &redb::Table<'_, (&'static str, &'static str), V>,
    subject: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<String>, StoreError> {
    Ok(table
        .range((subject, "")..)
        .map_err(err)?
        .map_while(|r| r.ok())
        .map(|(k, _)| {
            let (s, d) = k.value();
            (s.to_string(), d.to_string())
        })
        .take_while(|(s, _)| s == subject)
        .filter(|(_, d)| wanted(d))
        .map(|(_, d)| d)
        .collect())
}

/// Writes a token entry in `txn`; `false` when the same entry is already
/// there (nothing to commit).
fn put_token_in(
    txn: &redb::WriteTransaction,
    token: &str,
    entry: &TokenEntry,
) -> Result<bool, StoreError> {
    if tombstoned_in(txn, &entry.subject, &entry.domain)? {
        return Err(StoreError::Shredded);
    }
    let bytes = encode(entry);
    let mut tokens = txn.open_table(TOKENS).map_err(err)?;
    let existing = tokens.get(token).map_err(err)?.map(|v| v.value().to_vec());
    match existing {
        Some(e) if e == bytes => return Ok(false),
        Some(_) => return Err(StoreError::TokenConflict),
        None => {
            tokens.insert(token, bytes.as_slice()).map_err(err)?;
        }
    }
    let mut by_subject = txn.open_table(BY_SUBJECT).map_err(err)?;
    by_subject
        .insert((entry.subject.as_str(), entry.domain.as_str(), token), ())
        .map_err(err)?;
    Ok(true)
}

impl VaultStore for FileStore {
    fn backend(&self) -> &'static str {
        "file"
    }

    fn subject_key_or_insert(
        &self,
        subject: &str,
        domain: &str,
        wrapped: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        if tombstoned_in(&txn, subject, domain)? {
            return Err(StoreError::Shredded);
        }
        let stored = {
            let mut keys = txn.open_table(KEYS).map_err(err)?;
            let existing = keys
                .get((subject, domain))
                .map_err(err)?
                .map(|v| v.value().to_vec());
            match existing {
                Some(k) => k,
                None => {
                    keys.insert((subject, domain), wrapped).map_err(err)?;
                    wrapped.to_vec()
                }
            }
        };
        txn.commit().map_err(err)?;
        Ok(stored)
    }

    fn subject_key(&self, subject: &str, domain: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let keys = txn.open_table(KEYS).map_err(err)?;
        Ok(keys
            .get((subject, domain))
            .map_err(err)?
            .map(|v| v.value().to_vec()))
    }

    fn put_token(&self, token: &str, entry: &TokenEntry) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        if put_token_in(&txn, token, entry)? {
            txn.commit().map_err(err)?;
        }
        Ok(())
    }

    fn subject_token(&self, subject: &str, domain: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let links = txn.open_table(LINKS).map_err(err)?;
        Ok(links
            .get((subject, domain))
            .map_err(err)?
            .map(|v| v.value().to_string()))
    }

    fn subject_token_or_insert(
        &self,
        subject: &str,
        domain: &str,
        token: &str,
        entry: &TokenEntry,
    ) -> Result<String, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        if tombstoned_in(&txn, subject, domain)? {
            return Err(StoreError::Shredded);
        }
        {
            let mut links = txn.open_table(LINKS).map_err(err)?;
            let existing = links
                .get((subject, domain))
                .map_err(err)?
                .map(|v| v.value().to_string());
            if let Some(t) = existing {
                return Ok(t);
            }
            links.insert((subject, domain), token).map_err(err)?;
        }
        put_token_in(&txn, token, entry)?;
        txn.commit().map_err(err)?;
        Ok(token.to_string())
    }

    fn token(&self, token: &str) -> Result<Option<TokenEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let tokens = txn.open_table(TOKENS).map_err(err)?;
        let bytes = tokens.get(token).map_err(err)?.map(|v| v.value().to_vec());
        bytes.map(|b| decode(&b)).transpose()
    }

    fn shred(&self, subject: &str, domain: Option<&str>) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        let deleted = {
            let mut keys = txn.open_table(KEYS).map_err(err)?;
            let mut tokens = txn.open_table(TOKENS).map_err(err)?;
            let mut by_subject = txn.open_table(BY_SUBJECT).map_err(err)?;
            let wanted = |d: &str| domain.is_none_or(|w| w == d);
            // The subject's rows, found by range on the key's first part.
            let doomed_keys = domains_of(&keys, subject, wanted)?;
            for d in &doomed_keys {
                keys.remove((subject, d.as_str())).map_err(err)?;
            }
            let doomed_tokens: Vec<(String, String)> = by_subject
                .range((subject, "", "")..)
                .map_err(err)?
                .map_while(|r| r.ok())
                .map(|(k, _)| {
                    let (s, d, t) = k.value();
                    (s.to_string(), d.to_string(), t.to_string())
                })
                .take_while(|(s, _, _)| s == subject)
                .filter(|(_, d, _)| wanted(d))
                .map(|(_, d, t)| (d, t))
                .collect();
            let mut links = txn.open_table(LINKS).map_err(err)?;
            let mut shredded = txn.open_table(SHREDDED).map_err(err)?;
            for (d, t) in &doomed_tokens {
                shredded
                    .insert(crate::shredded_token_digest(t).as_str(), ())
                    .map_err(err)?;
                tokens.remove(t.as_str()).map_err(err)?;
                by_subject
                    .remove((subject, d.as_str(), t.as_str()))
                    .map_err(err)?;
                links.remove((subject, d.as_str())).map_err(err)?;
            }
            // Linkage tokens whose entries went with another domain's key.
            let doomed_links = domains_of(&links, subject, wanted)?;
            for d in &doomed_links {
                links.remove((subject, d.as_str())).map_err(err)?;
            }
            let mut tombstones = txn.open_table(TOMBSTONES).map_err(err)?;
            if domain.is_none() {
                // Every domain: earlier rows (and exceptions) are moot.
                for d in domains_of(&tombstones, subject, |_| true)? {
                    tombstones.remove((subject, d.as_str())).map_err(err)?;
                }
            }
            tombstones
                .insert((subject, domain.unwrap_or(crate::EVERY_DOMAIN)), 1)
                .map_err(err)?;
            doomed_keys.len()
        };
        txn.commit().map_err(err)?;
        Ok(deleted)
    }

    fn count_tokens(&self, subject: &str, domain: &str) -> Result<usize, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let by_subject = txn.open_table(BY_SUBJECT).map_err(err)?;
        let n = by_subject
            .range((subject, domain, "")..)
            .map_err(err)?
            .map_while(|r| r.ok())
            .take_while(|(k, _)| {
                let (s, d, _) = k.value();
                s == subject && d == domain
            })
            .count();
        Ok(n)
    }

    fn was_shredded(&self, token: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let shredded = txn.open_table(SHREDDED).map_err(err)?;
        let digest = crate::shredded_token_digest(token);
        Ok(shredded.get(digest.as_str()).map_err(err)?.is_some())
    }

    fn is_shredded(&self, subject: &str, domain: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        tombstoned(&txn.open_table(TOMBSTONES).map_err(err)?, subject, domain)
    }

    fn reinstate(&self, subject: &str, domain: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut t = txn.open_table(TOMBSTONES).map_err(err)?;
            let every = t
                .get((subject, crate::EVERY_DOMAIN))
                .map_err(err)?
                .is_some();
            if every {
                // The subject's other domains stay shredded.
                t.insert((subject, domain), 0).map_err(err)?;
            } else {
                t.remove((subject, domain)).map_err(err)?;
            }
        }
        txn.commit().map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_backend_passes_the_vault_suite() {
        let dir = std::env::temp_dir().join(format!("consentry-vault-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vault.redb");
        let _ = std::fs::remove_file(&path);
        {
            let store = FileStore::open(&path).unwrap();
            // redb allows one open handle per file: a restart is a reopen
            // after this handle is gone, so the suite gets a second path
            // view through a copy taken at that moment.
            crate::suite::exercise(&store, &|| {
                let copy = dir.join(format!("copy-{}.redb", rand_suffix()));
                std::fs::copy(&path, &copy).unwrap();
                Box::new(FileStore::open(&copy).unwrap())
            });
        }
        // And a real reopen of the file itself.
        let store = FileStore::open(&path).unwrap();
        assert!(store.subject_key("s2", "crm").unwrap().is_some());
        assert_eq!(store.token("tok:crm:r1:a").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn entries_encode_and_reject_truncation() {
        let e = TokenEntry {
            domain: "crm".into(),
            subject: "s".into(),
            sealed: vec![1, 2, 3],
            created_ms: -5,
        };
        let b = encode(&e);
        assert_eq!(decode(&b).unwrap(), e);
        for n in 0..15 {
            assert!(decode(&b[..n]).is_err(), "{n}");
        }
    }
}
