//! The tail of a group's Raft log, kept in memory.
//!
//! Two readers ask for an entry moments after it was appended: the state
//! machine, to apply it once committed, and a leader's replication, to send
//! it to the followers. Read from RocksDB, every such read built an iterator
//! and decoded the entry again (2.5 % of a quorum queue's broker CPU went to
//! iterator set-up alone). Kept here, a read is a clone of entries whose
//! bodies are shared buffers.
//!
//! The tail also lets `append` return before its write, as openraft's
//! storage API allows: the entries must be readable when it returns, and
//! the flush callback must come once they are durable. The entries are
//! readable here at once; the writer's completion then marks them written
//! and calls the callback. (openraft 0.9's core awaits that callback right
//! after `append`, so this overlaps nothing yet; 0.10's core does not wait.)
//!
//! Invariants, which make a read from here and RocksDB together exact:
//! - the tail holds a suffix of the log (appends extend it; `truncate` and
//!   `purge` cut both the log and the tail, after their write);
//! - every entry below the tail's first index is written: an entry leaves
//!   the front only once the writer wrote it.
//!
//! Bounds: per group [`GROUP_BYTES`], per node a shared budget
//! ([`NODE_BYTES`]); past them written entries leave the front. Entries not
//! yet written stay whatever the bounds, and those are bounded by the
//! writer's queue depth (its `submit` waits when the disk is behind).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::{Entry, LogId, RaftTypeConfig};

/// Encoded bytes of entries one group keeps.
const GROUP_BYTES: usize = 4 << 20;
/// Encoded bytes of entries all groups of the node keep together.
pub const NODE_BYTES: usize = 16 << 20;

/// A group's log tail; clones share it (the log store and its readers).
pub struct RecentLog<C: RaftTypeConfig> {
    inner: Arc<Mutex<Tail<C>>>,
}

impl<C: RaftTypeConfig> Clone for RecentLog<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Tail<C: RaftTypeConfig> {
    /// Entries with their encoded size, in index order, contiguous.
    entries: VecDeque<(Entry<C>, usize)>,
    /// Encoded bytes of `entries`.
    bytes: usize,
    /// The highest index the writer wrote (entries up to it may leave).
    written: Option<u64>,
    /// Bytes held by every group's tail on this node.
    node: Arc<AtomicUsize>,
}

impl<C: RaftTypeConfig> Tail<C> {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    fn pop_front(&mut self) {
        if let Some((_, n)) = self.entries.pop_front() {
            self.bytes -= n;
            self.node.fetch_sub(n, Ordering::Relaxed);
        }
    }

    fn pop_back(&mut self) {
        if let Some((_, n)) = self.entries.pop_back() {
            self.bytes -= n;
            self.node.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Lets written entries go from the front while over a bound.
    fn trim(&mut self) {
        while let (Some(first), Some(written)) = (self.first(), self.written) {
            let over = self.bytes > GROUP_BYTES || self.node.load(Ordering::Relaxed) > NODE_BYTES;
            if first > written || !over {
                break;
            }
            self.pop_front();
        }
    }
}

impl<C: RaftTypeConfig> Drop for Tail<C> {
    fn drop(&mut self) {
        self.node.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl<C: RaftTypeConfig> RecentLog<C> {
    /// An empty tail, counted against the node's shared `node` bytes.
    pub fn new(node: Arc<AtomicUsize>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Tail {
                entries: VecDeque::new(),
                bytes: 0,
                written: None,
                node,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tail<C>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Entries being appended (with their encoded sizes), readable from
    /// now on. Entries that do not follow the tail replace it (openraft
    /// truncates before it overwrites, so this only guards the invariant).
    pub fn admit(&self, entries: Vec<(Entry<C>, usize)>) {
        let mut t = self.lock();
        let Some(next) = entries.first().map(|(e, _)| e.log_id.index) else {
            return;
        };
        if t.last()
            .is_some_and(|last| last.checked_add(1) != Some(next))
        {
            while t.last().is_some() {
                t.pop_back();
            }
        }
        for (e, n) in entries {
            t.bytes += n;
            t.node.fetch_add(n, Ordering::Relaxed);
            t.entries.push_back((e, n));
        }
        t.trim();
    }

    /// The writer wrote every entry up to `index`.
    pub fn written(&self, index: u64) {
        let mut t = self.lock();
        t.written = Some(t.written.map_or(index, |w| w.max(index)));
        t.trim();
    }

    /// The entries from `start` on (up to `end`, exclusive), if the tail
    /// holds any; what it does not hold is below its first index, so in
    /// RocksDB.
    pub fn read(&self, start: u64, end: Option<u64>) -> Tailed<C>
    where
        C::D: Clone,
    {
        let t = self.lock();
        let Some(first) = t.first() else {
            return Tailed::Nothing;
        };
        // Contiguous: `start` sits `start - first` places in.
        let skip = usize::try_from(start.saturating_sub(first)).unwrap_or(usize::MAX);
        let entries: Vec<Entry<C>> = t
            .entries
            .iter()
            .skip(skip)
            .take_while(|(e, _)| end.is_none_or(|end| e.log_id.index < end))
            .map(|(e, _)| e.clone())
            .collect();
        if start >= first {
            Tailed::All(entries)
        } else {
            Tailed::From { first, entries }
        }
    }

    /// The id of the last entry, if the tail holds any (the tail ends
    /// where the log ends, written or not).
    pub fn last_log_id(&self) -> Option<LogId<C::NodeId>> {
        self.lock().entries.back().map(|(e, _)| e.log_id.clone())
    }

    /// The log was truncated from `index` on (and the write is done).
    pub fn truncate(&self, index: u64) {
        let mut t = self.lock();
        while t.last().is_some_and(|last| last >= index) {
            t.pop_back();
        }
        let below = index.checked_sub(1);
        t.written = match (t.written, below) {
            (Some(w), Some(b)) => Some(w.min(b)),
            _ => None,
        };
    }

    /// The log was purged up to `index` included (and the write is done).
    pub fn purge(&self, index: u64) {
        let mut t = self.lock();
        while t.first().is_some_and(|first| first <= index) {
            t.pop_front();
        }
    }
}

/// What the tail holds of a read.
pub enum Tailed<C: RaftTypeConfig> {
    /// Nothing: read everything from RocksDB.
    Nothing,
    /// The whole read.
    All(Vec<Entry<C>>),
    /// The read from `first` on; RocksDB has the part below.
    From { first: u64, entries: Vec<Entry<C>> },
}

#[cfg(test)]
#[path = "recent_test.rs"]
mod tests;
