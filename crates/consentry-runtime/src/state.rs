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

pub struct StateStore {
    reader: TableReader,
    base: BTreeMap<String, Vec<u8>>,
    base_bytes: usize,
    /// Writes of the open batch; `None` deletes.
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
            base: BTreeMap::new(),
            base_bytes: 0,
            overlay: BTreeMap::new(),
            changed: Some(BTreeSet::new()),
            own_echoes: HashMap::new(),
        };
        store.catch_up(timeout)?;
        // Everything is new to the stage at start-up.
        store.changed = None;
        Ok(store)
    }

    pub fn topic(&self) -> &str {
        self.reader.topic()
    }

    pub fn len(&self) -> usize {
        self.base.len()
    }

    pub fn is_empty(&self) -> bool {
        self.base.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.base_bytes
    }

    /// Reads everything appended so far (by any instance): at start-up
    /// and after a rebalance, before the stage decides anything.
    pub fn catch_up(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let (base, bytes, changed, own) = (
            &mut self.base,
            &mut self.base_bytes,
            &mut self.changed,
            &mut self.own_echoes,
        );
        self.reader.catch_up(timeout, |k, v| {
            apply_record(base, bytes, changed, own, k, v)
        })?;
        Ok(())
    }

    /// Applies what other instances wrote and the fetcher has brought,
    /// without waiting: before every batch.
    pub fn tail(&mut self) -> anyhow::Result<()> {
        let (base, bytes, changed, own) = (
            &mut self.base,
            &mut self.base_bytes,
            &mut self.changed,
            &mut self.own_echoes,
        );
        self.reader.tail(TAIL_MAX, |k, v| {
            apply_record(base, bytes, changed, own, k, v)
        })?;
        Ok(())
    }

    /// Stages a write of the open batch.
    pub fn write(&mut self, w: &StateWrite) {
        self.overlay.insert(w.key.clone(), w.value.clone());
    }

    /// The open batch committed: its writes become the table.
    pub fn commit(&mut self, written: &[StateWrite]) {
        for w in written {
            self.own_echoes
                .entry(w.key.clone())
                .or_default()
                .push(write_digest(w.value.as_deref()));
        }
        for (k, v) in std::mem::take(&mut self.overlay) {
            note_changed(&mut self.changed, &k);
            put(&mut self.base, &mut self.base_bytes, &k, v);
        }
    }

    /// The open batch aborted: forget its writes, and make the stage look
    /// at everything again (work it produced in the batch is undone too).
    pub fn abort(&mut self) {
        self.overlay.clear();
        self.changed = None;
    }

    /// Asks for a full rescan (a new partition assignment).
    pub fn rescan(&mut self) {
        self.changed = None;
    }

    /// Takes the keys changed since the last call: `Some(empty)` when
    /// nothing changed, `None` when anything may have.
    pub fn take_changed(&mut self) -> Option<Vec<String>> {
        self.changed
            .replace(BTreeSet::new())
            .map(|s| s.into_iter().collect())
    }

    pub fn has_changes(&self) -> bool {
        self.changed.as_ref().is_none_or(|s| !s.is_empty())
    }
}

/// Records read per `tail`, so one busy table cannot starve the batch.
const TAIL_MAX: usize = 10_000;

/// Applies one record read from the topic, unless it is the echo of a
/// write this instance committed (already applied then).
fn apply_record(
    base: &mut BTreeMap<String, Vec<u8>>,
    bytes: &mut usize,
    changed: &mut Option<BTreeSet<String>>,
    own: &mut HashMap<String, Vec<[u8; 32]>>,
    k: &str,
    v: Option<&[u8]>,
) {
    if let Some(pending) = own.get_mut(k) {
        let d = write_digest(v);
        if let Some(i) = pending.iter().position(|p| *p == d) {
            pending.swap_remove(i);
            if pending.is_empty() {
                own.remove(k);
            }
            return;
        }
    }
    put(base, bytes, k, v.map(<[u8]>::to_vec));
    note_changed(changed, k);
}

fn put(base: &mut BTreeMap<String, Vec<u8>>, bytes: &mut usize, k: &str, v: Option<Vec<u8>>) {
    let old = match v {
        Some(v) => {
            *bytes += v.len();
            base.insert(k.to_string(), v)
        }
        None => base.remove(k),
    };
    if let Some(old) = old {
        *bytes -= old.len();
    }
}

fn note_changed(changed: &mut Option<BTreeSet<String>>, k: &str) {
    if let Some(set) = changed {
        if set.len() >= MAX_CHANGED_KEYS {
            *changed = None;
        } else {
            set.insert(k.to_string());
        }
    }
}

impl StateView for StateStore {
    fn get(&self, key: &str) -> Option<&[u8]> {
        match self.overlay.get(key) {
            Some(v) => v.as_deref(),
            None => self.base.get(key).map(Vec::as_slice),
        }
    }

    fn scan(&self, prefix: &str) -> Vec<(&str, &[u8])> {
        let from = || (Bound::Included(prefix.to_string()), Bound::Unbounded);
        let mut out: BTreeMap<&str, &[u8]> = self
            .base
            .range::<String, _>(from())
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        for (k, v) in self
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
        let staged: usize = self.overlay.values().flatten().map(Vec::len).sum();
        self.base_bytes + staged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_of_bytes_and_changes() {
        let mut base = BTreeMap::new();
        let mut bytes = 0;
        put(&mut base, &mut bytes, "a", Some(vec![1, 2, 3]));
        put(&mut base, &mut bytes, "a", Some(vec![1]));
        put(&mut base, &mut bytes, "b", Some(vec![1, 2]));
        assert_eq!(bytes, 3);
        put(&mut base, &mut bytes, "a", None);
        put(&mut base, &mut bytes, "zz", None);
        assert_eq!(bytes, 2);

        let mut changed = Some(BTreeSet::new());
        for i in 0..MAX_CHANGED_KEYS {
            note_changed(&mut changed, &i.to_string());
        }
        assert!(changed.is_some());
        note_changed(&mut changed, "one more");
        assert!(changed.is_none(), "too many keys become a rescan");
        assert_ne!(write_digest(None), write_digest(Some(b"")));
        assert_ne!(write_digest(Some(b"a")), write_digest(Some(b"b")));
    }
}
