//! A stage's state table: a compacted topic held in memory, with the open
//! batch's writes kept apart until the batch commits.
//!
//! The table is read to its end before the stage sees any input (fail
//! closed: a stage never decides on a partial table) and caught up again
//! before every batch, so writes by other instances of the stage become
//! visible. The batch's own writes go to an overlay: visible to the rest of
//! the batch, merged on commit, dropped on abort. A committed write comes
//! back later through the catch-up (its echo): echoes of this instance's
//! own writes are recognised and skipped, so a late echo never puts back a
//! value this instance has since replaced.

use consentry_core::keys::ContentDigest;
use consentry_core::stage::{StateView, StateWrite};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::Duration;

use crate::table::TableReader;
use crate::Connection;

/// Past this many changed keys, a stage is told "anything may have changed"
/// and rescans, instead of receiving the list.
const MAX_CHANGED_KEYS: usize = 10_000;

/// Records read per `tail`, so one busy table cannot starve the batch.
const TAIL_MAX: usize = 10_000;

pub struct StateStore {
    reader: TableReader,
    table: Table,
}

/// The table in memory: what the topic holds, the open batch's writes,
/// and what the stage has not been told yet. No Kafka here.
#[derive(Default)]
struct Table {
    base: BTreeMap<String, Vec<u8>>,
    base_bytes: usize,
    /// The open batch's writes in order (all of them go to the topic)...
    staged: Vec<StateWrite>,
    /// ...and their net effect, which the rest of the batch reads.
    overlay: BTreeMap<String, Option<Vec<u8>>>,
    /// Keys changed since the stage was last told, or `None` for "many".
    changed: Option<BTreeSet<String>>,
    /// Digests of committed own writes whose echo has not been read yet.
    own_echoes: HashMap<String, Vec<[u8; 32]>>,
}

/// The digest of a write (a value, or a deletion), to recognise its echo.
fn write_digest(value: Option<&[u8]>) -> [u8; 32] {
    let mut d = ContentDigest::new();
    match value {
        Some(v) => {
            d.update(b"v");
            d.update(v);
        }
        None => d.update(b"tombstone"),
    }
    d.finish()
}

impl StateStore {
    pub fn open(
        conn: &Connection,
        physical_topic: &str,
        timeout: Duration,
    ) -> anyhow::Result<StateStore> {
        let mut store = StateStore {
            reader: TableReader::open(conn, physical_topic, "state")?,
            table: Table::default(),
        };
        store.catch_up(timeout)?;
        // Everything is new to the stage at start-up.
        store.table.changed = None;
        Ok(store)
    }

    pub fn topic(&self) -> &str {
        self.reader.topic()
    }

    /// How far the table is behind its topic (`TableReader::lag`).
    pub fn lag(&mut self, timeout: std::time::Duration) -> crate::table::Lag {
        self.reader.lag(timeout)
    }

    pub fn len(&self) -> usize {
        self.table.base.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.base.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.table.base_bytes
    }

    /// Reads everything appended so far (by any instance): at start-up
    /// and after a rebalance, before the stage decides anything.
    pub fn catch_up(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.reader
            .catch_up(timeout, |k, v| self.table.apply(k, v))?;
        Ok(())
    }

    /// Applies what other instances wrote and the fetcher has brought,
    /// without waiting: before every batch.
    pub fn tail(&mut self) -> anyhow::Result<()> {
        self.reader.tail(TAIL_MAX, |k, v| self.table.apply(k, v))?;
        Ok(())
    }

    /// Stages a write of the open batch.
    pub fn write(&mut self, w: StateWrite) {
        self.table.write(w);
    }

    /// The open batch's writes, in order, to produce to the topic.
    pub fn staged(&self) -> &[StateWrite] {
        &self.table.staged
    }

    /// The open batch committed: its writes become the table.
    pub fn commit(&mut self) {
        self.table.commit();
    }

    /// The open batch aborted: forget its writes, and make the stage look
    /// at everything again (work it produced in the batch is undone too).
    pub fn abort(&mut self) {
        self.table.staged.clear();
        self.table.overlay.clear();
        self.table.changed = None;
    }

    /// Asks for a full rescan (a new partition assignment).
    pub fn rescan(&mut self) {
        self.table.changed = None;
    }

    /// Takes the keys changed since the last call: `Some(empty)` when
    /// nothing changed, `None` when anything may have.
    pub fn take_changed(&mut self) -> Option<Vec<String>> {
        self.table
            .changed
            .replace(BTreeSet::new())
            .map(|s| s.into_iter().collect())
    }

    pub fn has_changes(&self) -> bool {
        self.table.changed.as_ref().is_none_or(|s| !s.is_empty())
    }
}

impl Table {
    fn write(&mut self, w: StateWrite) {
        self.overlay.insert(w.key.clone(), w.value.clone());
        self.staged.push(w);
    }

    fn commit(&mut self) {
        for w in std::mem::take(&mut self.staged) {
            self.own_echoes
                .entry(w.key)
                .or_default()
                .push(write_digest(w.value.as_deref()));
        }
        for (k, v) in std::mem::take(&mut self.overlay) {
            self.note_changed(&k);
            self.put(&k, v);
        }
    }

    /// Applies one record read from the topic, unless it is the echo of a
    /// write this instance committed (already applied then).
    fn apply(&mut self, k: &str, v: Option<&[u8]>) {
        if let Some(pending) = self.own_echoes.get_mut(k) {
            let d = write_digest(v);
            if let Some(i) = pending.iter().position(|p| *p == d) {
                pending.swap_remove(i);
                if pending.is_empty() {
                    self.own_echoes.remove(k);
                }
                return;
            }
        }
        self.put(k, v.map(<[u8]>::to_vec));
        self.note_changed(k);
    }

    fn put(&mut self, k: &str, v: Option<Vec<u8>>) {
        let old = match v {
            Some(v) => {
                self.base_bytes += v.len();
                self.base.insert(k.to_string(), v)
            }
            None => self.base.remove(k),
        };
        if let Some(old) = old {
            self.base_bytes -= old.len();
        }
    }

    fn note_changed(&mut self, k: &str) {
        if let Some(set) = &mut self.changed {
            if set.len() >= MAX_CHANGED_KEYS {
                self.changed = None;
            } else {
                set.insert(k.to_string());
            }
        }
    }
}

impl StateView for StateStore {
    fn get(&self, key: &str) -> Option<&[u8]> {
        match self.table.overlay.get(key) {
            Some(v) => v.as_deref(),
            None => self.table.base.get(key).map(Vec::as_slice),
        }
    }

    fn scan(&self, prefix: &str) -> Vec<(&str, &[u8])> {
        let from = || (Bound::Included(prefix.to_string()), Bound::Unbounded);
        let mut out: BTreeMap<&str, &[u8]> = self
            .table
            .base
            .range::<String, _>(from())
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        for (k, v) in self
            .table
            .overlay
            .range::<String, _>(from())
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            match v {
                Some(v) => out.insert(k.as_str(), v.as_slice()),
                None => out.remove(k.as_str()),
            };
        }
        out.into_iter().collect()
    }

    fn value_bytes(&self) -> usize {
        let staged: usize = self.table.overlay.values().flatten().map(Vec::len).sum();
        self.table.base_bytes + staged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(k: &str, v: Option<&[u8]>) -> StateWrite {
        StateWrite {
            key: k.into(),
            value: v.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn bookkeeping_of_bytes_and_changes() {
        let mut t = Table {
            changed: Some(BTreeSet::new()),
            ..Default::default()
        };
        t.put("a", Some(vec![1, 2, 3]));
        t.put("a", Some(vec![1]));
        t.put("b", Some(vec![1, 2]));
        assert_eq!(t.base_bytes, 3);
        t.put("a", None);
        t.put("zz", None);
        assert_eq!(t.base_bytes, 2);

        for i in 0..MAX_CHANGED_KEYS {
            t.note_changed(&i.to_string());
        }
        assert!(t.changed.is_some());
        t.note_changed("one more");
        assert!(t.changed.is_none(), "too many keys become a rescan");
        assert_ne!(write_digest(None), write_digest(Some(b"")));
        assert_ne!(write_digest(Some(b"a")), write_digest(Some(b"b")));
    }

    #[test]
    fn own_echoes_are_skipped_and_never_undo_a_later_write() {
        let mut t = Table {
            changed: Some(BTreeSet::new()),
            ..Default::default()
        };
        // Batch 1 holds a record; batch 2 releases it; both commit before
        // the first echo is read.
        t.write(w("held/x", Some(b"r")));
        t.commit();
        t.write(w("held/x", None));
        t.commit();
        assert!(!t.base.contains_key("held/x"));
        t.changed = Some(BTreeSet::new());
        t.apply("held/x", Some(b"r"));
        assert!(
            !t.base.contains_key("held/x"),
            "a late echo is not re-applied"
        );
        t.apply("held/x", None);
        assert!(t.own_echoes.is_empty());
        assert_eq!(
            t.changed.as_ref().map(BTreeSet::len),
            Some(0),
            "echoes are not changes"
        );
        // Another instance's write is applied and reported.
        t.apply("idx/Patient/p", Some(b"ids"));
        assert_eq!(
            t.base.get("idx/Patient/p").map(Vec::as_slice),
            Some(&b"ids"[..])
        );
        assert!(t
            .changed
            .as_ref()
            .is_some_and(|c| c.contains("idx/Patient/p")));
    }
}
