//! When route last released each subject's data to each purpose, kept in
//! memory for a window: a revocation's fan-out flags its notice when data
//! left after the revocation had arrived (route's consent table was
//! behind), whether or not it was the subject's first record there.
//!
//! Bounded: entries older than `WINDOW_MS` are dropped (a consent table
//! that far behind is an alert of its own), and at most `MAX_ENTRIES`
//! pairs are held (past it, new pairs are not remembered). A restart
//! forgets; the report (`consentry report`) counts every such disclosure
//! from the ledger.

use std::collections::HashMap;
use std::sync::Mutex;

/// How long a release is remembered.
pub(super) const WINDOW_MS: i64 = 15 * 60 * 1000;
/// At most this many (subject, purpose) pairs (about 120 bytes each).
pub(super) const MAX_ENTRIES: usize = 200_000;
/// Old entries are swept every this many notes.
const SWEEP_EVERY: u32 = 10_000;

#[derive(Default)]
pub(super) struct RecentReleases {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    last: HashMap<(String, String), i64>,
    notes: u32,
}

impl RecentReleases {
    /// `subject`'s data left for `purpose` at `at_ms`.
    pub(super) fn note(&self, subject: &str, purpose: &str, at_ms: i64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.notes = inner.notes.wrapping_add(1);
        if inner.notes % SWEEP_EVERY == 0 {
            inner.last.retain(|_, t| *t >= at_ms - WINDOW_MS);
        }
        let key = (subject.to_string(), purpose.to_string());
        if inner.last.len() < MAX_ENTRIES || inner.last.contains_key(&key) {
            let t = inner.last.entry(key).or_insert(at_ms);
            *t = (*t).max(at_ms);
        }
    }

    /// When `subject`'s data last left for `purpose`, if within the window.
    pub(super) fn last(&self, subject: &str, purpose: &str) -> Option<i64> {
        let inner = self.inner.lock().ok()?;
        inner
            .last
            .get(&(subject.to_string(), purpose.to_string()))
            .copied()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.last.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_release_and_forgets_past_the_window() {
        let r = RecentReleases::default();
        r.note("s1", "p", 10);
        r.note("s1", "p", 5);
        assert_eq!(r.last("s1", "p"), Some(10));
        assert_eq!(r.last("s1", "q"), None);
        // A sweep (every SWEEP_EVERY notes) drops what the window left.
        for i in 0..SWEEP_EVERY {
            r.note("s2", "p", WINDOW_MS + 20 + i64::from(i));
        }
        assert_eq!(r.last("s1", "p"), None, "older than the window");
        assert!(r.last("s2", "p").is_some());
        assert_eq!(r.len(), 1);
    }
}
