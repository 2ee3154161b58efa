//! A stage's dedup store: the compacted topic of idempotency keys it has
//! handled, each with a digest of what it wrote for that key. On the wire
//! it is the stage's `ledger.<stage>` topic (topology role `ledger`); in
//! the code it is the dedup store, so "ledger" alone is never ambiguous.
//!
//! Why a dedup store and not transactions alone: a broker that shows aborted
//! transactional records to `read_committed` readers (tansu does) would let
//! a replayed input be written twice. The store is read with the same
//! isolation as the stage's downstream readers, so "handled" here means
//! exactly "visible downstream", on any broker. The runner writes dedup
//! entries only after the outputs they vouch for have been acknowledged,
//! so a dedup entry never exists for outputs that do not.

use std::collections::HashMap;
use std::time::Duration;

use crate::table::TableReader;
use crate::Connection;

/// What the dedup store knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    /// Handled before with the same outputs.
    Same,
    /// Handled before with different outputs.
    Different,
}

pub struct DedupStore {
    reader: TableReader,
    entries: HashMap<String, [u8; 32]>,
    /// Audit chain heads (`audit-head/<writer>` → sequence and hash), so a
    /// restarted writer continues its chain.
    chain_heads: HashMap<String, (i64, String)>,
}

const CHAIN_HEAD_PREFIX: &str = "audit-head/";

impl DedupStore {
    /// Opens the dedup store on `physical_topic` and reads it to its end.
    pub fn open(
        conn: &Connection,
        physical_topic: &str,
        timeout: Duration,
    ) -> anyhow::Result<DedupStore> {
        let mut store = DedupStore {
            reader: TableReader::open(conn, physical_topic, "ledger")?,
            entries: HashMap::new(),
            chain_heads: HashMap::new(),
        };
        store.catch_up(timeout)?;
        Ok(store)
    }

    /// Reads every entry appended since the last catch-up (by any instance
    /// of the stage). Fails rather than returning a partial view.
    pub fn catch_up(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let entries = &mut self.entries;
        let heads = &mut self.chain_heads;
        self.reader.catch_up(timeout, |k, v| {
            if let Some(writer) = k.strip_prefix(CHAIN_HEAD_PREFIX) {
                let head = v
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.split_once(':'))
                    .and_then(|(seq, hash)| Some((seq.parse().ok()?, hash.to_string())));
                if let Some(h) = head {
                    heads.insert(writer.to_string(), h);
                }
                return;
            }
            if let Some(d) = v.and_then(|v| <[u8; 32]>::try_from(v).ok()) {
                entries.insert(k.to_string(), d);
            }
        })?;
        Ok(())
    }
    /// The last chain head `writer` wrote to this store.
    pub fn chain_head(&self, writer: &str) -> Option<(i64, String)> {
        self.chain_heads.get(writer).cloned()
    }

    /// The dedup-store key of a writer's chain head.
    pub fn chain_head_key(writer: &str) -> String {
        format!("{CHAIN_HEAD_PREFIX}{writer}")
    }

    pub fn check(&self, key: &str, digest: &[u8; 32]) -> Seen {
        match self.entries.get(key) {
            None => Seen::New,
            Some(d) if d == digest => Seen::Same,
            Some(_) => Seen::Different,
        }
    }

    /// Records keys whose outputs were committed.
    pub fn record(&mut self, key: String, digest: [u8; 32]) {
        self.entries.insert(key, digest);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
