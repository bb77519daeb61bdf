//! Bodies of a quorum queue's live messages that are not in the
//! `quorum_bodies` column family (yet): kept in memory, where a later apply
//! that delivers one finds it.
//!
//! A body's log entry is durable before the entry is applied, and the log
//! is purged only behind a snapshot. So a body needs a second copy in the
//! column family only once its entry may be purged while the message still
//! lives: when a snapshot is built ([`Unwritten::spill_all`]), or when the
//! bodies kept here pass their memory bound ([`Unwritten::spill`]). A message
//! consumed and acked between two snapshots, the steady state of a queue
//! whose consumers keep up, is written once, in its log entry (writing
//! every body twice was RocksDB's largest share of a single queue's CPU:
//! copies into the write batch, the WAL and the memtable).
//! After a crash openraft re-applies the entries after the last snapshot,
//! which keeps their bodies here again.
//!
//! A spilled body is handed to the writer without a sync and stays here
//! until the writer has written it ([`Unwritten::prune`]); everything else
//! that reads the column family goes through the writer first (a snapshot
//! is stored with a synced write after its spill), and the writer keeps the
//! order it was given, so it sees every earlier write.
//!
//! Bounded: at most [`GROUP_KEPT_BYTES`] a group, and once the node's
//! groups together keep [`NODE_KEPT_BYTES`], every group spills what it
//! keeps at its next apply. Spilling takes the oldest bodies first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use warren_core::Message;
use warren_core::quorum::MsgId;

use super::{GroupId, key};
use crate::codec::encode_message;
use crate::writer::WriteDone;
use crate::{Op, RaftCf};

/// Body bytes one group keeps in memory before it spills the oldest.
pub(super) const GROUP_KEPT_BYTES: usize = 8 << 20;
/// Body bytes all groups of this process keep before each spills its own.
pub(super) const NODE_KEPT_BYTES: usize = 64 << 20;

/// What every group of this process keeps ([`NODE_KEPT_BYTES`]).
static NODE_KEPT: AtomicUsize = AtomicUsize::new(0);

/// Bodies not in the column family, by message id.
#[derive(Debug, Default)]
pub(super) struct Unwritten {
    /// Bodies whose log entry is their only stored copy, oldest first.
    kept: BTreeMap<MsgId, Message>,
    /// Body bytes in `kept` (counted in [`NODE_KEPT`] too).
    kept_bytes: usize,
    /// Bodies handed to the writer, until it wrote them.
    spilled: HashMap<MsgId, Message>,
    /// The ids each generation handed over, oldest first.
    generations: VecDeque<(u64, Vec<MsgId>)>,
    /// Ids handed over since the last [`Unwritten::seal`].
    current: Vec<MsgId>,
    next: u64,
    /// The newest generation the writer has written.
    written: Arc<AtomicU64>,
    /// A write failed: the state machine must stop.
    failed: Arc<AtomicBool>,
}

impl Drop for Unwritten {
    fn drop(&mut self) {
        NODE_KEPT.fetch_sub(self.kept_bytes, Ordering::AcqRel);
    }
}

impl Unwritten {
    /// Drops the spilled bodies the writer has written since the last call.
    pub(super) fn prune(&mut self) {
        let written = self.written.load(Ordering::Acquire);
        while self.generations.front().is_some_and(|(g, _)| *g <= written) {
            if let Some((_, ids)) = self.generations.pop_front() {
                for id in ids {
                    self.spilled.remove(&id);
                }
            }
        }
    }

    /// Whether a write handed over earlier failed.
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(super) fn get(&self, id: MsgId) -> Option<&Message> {
        self.kept.get(&id).or_else(|| self.spilled.get(&id))
    }

    /// A message was enqueued: its body stays in memory only.
    pub(super) fn keep(&mut self, id: MsgId, message: Message) {
        let bytes = message.body().len();
        if let Some(old) = self.kept.insert(id, message) {
            self.forget(old.body().len());
        }
        self.kept_bytes += bytes;
        NODE_KEPT.fetch_add(bytes, Ordering::AcqRel);
    }

    /// The message was removed: nothing will read its body again. Returns
    /// whether its body was kept here (this process never wrote it).
    pub(super) fn remove(&mut self, id: MsgId) -> bool {
        match self.kept.remove(&id) {
            Some(m) => {
                self.forget(m.body().len());
                true
            }
            None => {
                self.spilled.remove(&id);
                false
            }
        }
    }

    /// Forgets everything kept: a snapshot installed replaced the state,
    /// and its bodies are in the column family.
    pub(super) fn clear_kept(&mut self) {
        self.forget(self.kept_bytes);
        self.kept.clear();
    }

    fn forget(&mut self, bytes: usize) {
        self.kept_bytes -= bytes;
        NODE_KEPT.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Hands the oldest kept bodies to `writes` while this group or the node
    /// keeps more than its bound.
    pub(super) fn spill(&mut self, group: GroupId, writes: &mut Vec<Op>) {
        while self.kept_bytes > GROUP_KEPT_BYTES
            || (self.kept_bytes > 0 && NODE_KEPT.load(Ordering::Acquire) > NODE_KEPT_BYTES)
        {
            let Some((id, message)) = self.kept.pop_first() else {
                break;
            };
            self.hand_over(group, id, message, writes);
        }
    }

    /// Hands every kept body to `writes`: a snapshot is about to let the
    /// log be purged.
    pub(super) fn spill_all(&mut self, group: GroupId, writes: &mut Vec<Op>) {
        while let Some((id, message)) = self.kept.pop_first() {
            self.hand_over(group, id, message, writes);
        }
    }

    fn hand_over(&mut self, group: GroupId, id: MsgId, message: Message, writes: &mut Vec<Op>) {
        self.forget(message.body().len());
        // Encoded straight into the write's own buffer: no copy.
        let mut body = Vec::new();
        encode_message(&message, &mut body);
        writes.push(Op::RaftPut(RaftCf::Bodies, key::entry(group, id), body));
        self.spilled.insert(id, message);
        self.current.push(id);
    }

    /// Closes the generation of the writes about to be handed over; the
    /// returned completion, run by the writer once they are written,
    /// releases its bodies.
    pub(super) fn seal(&mut self) -> WriteDone {
        self.next += 1;
        let generation = self.next;
        self.generations
            .push_back((generation, std::mem::take(&mut self.current)));
        let written = self.written.clone();
        let failed = self.failed.clone();
        Box::new(move |result| match result {
            Ok(()) => {
                written.fetch_max(generation, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::error!(cause = %e, "writing a quorum queue's bodies failed");
                failed.store(true, Ordering::Release);
            }
        })
    }
}

#[cfg(test)]
#[path = "unwritten_test.rs"]
mod tests;
