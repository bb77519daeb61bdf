//! Bodies a quorum queue's state machine has applied but the writer may not
//! have written yet.
//!
//! Applying an entry puts its bodies in the `quorum_bodies` column family,
//! and an apply used to wait for that write before it answered: a second
//! trip through the writer thread for every entry, on the way to every
//! confirm and delivery (a fifth of a single queue's throughput). Now the
//! apply hands the write over and answers at once; until the writer has
//! written it, the bodies stay here, where a later apply that delivers one
//! of them finds it. Everything else that reads the column family goes
//! through the writer first (a snapshot is stored with a synced write, the
//! log is purged after it), and the writer keeps the order it was given,
//! so it sees every earlier write.
//!
//! Bounded: a generation (one apply's writes) leaves once the writer has
//! written it, and the writer takes at most its queue's depth of requests
//! before `submit` waits.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use warren_core::Message;
use warren_core::quorum::MsgId;

use crate::writer::WriteDone;

/// Bodies waiting for the writer, by message id.
#[derive(Debug, Default)]
pub(super) struct Unwritten {
    bodies: HashMap<MsgId, Message>,
    /// The ids each generation added, oldest first.
    generations: VecDeque<(u64, Vec<MsgId>)>,
    /// Ids added since the last [`Unwritten::seal`].
    current: Vec<MsgId>,
    next: u64,
    /// The newest generation the writer has written.
    written: Arc<AtomicU64>,
    /// A write failed: the state machine must stop.
    failed: Arc<AtomicBool>,
}

impl Unwritten {
    /// Drops the bodies the writer has written since the last call.
    pub(super) fn prune(&mut self) {
        let written = self.written.load(Ordering::Acquire);
        while self.generations.front().is_some_and(|(g, _)| *g <= written) {
            if let Some((_, ids)) = self.generations.pop_front() {
                for id in ids {
                    self.bodies.remove(&id);
                }
            }
        }
    }

    /// Whether a write handed over earlier failed.
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(super) fn get(&self, id: MsgId) -> Option<&Message> {
        self.bodies.get(&id)
    }

    pub(super) fn insert(&mut self, id: MsgId, message: Message) {
        self.bodies.insert(id, message);
        self.current.push(id);
    }

    /// The message was removed: nothing will read its body again.
    pub(super) fn remove(&mut self, id: MsgId) {
        self.bodies.remove(&id);
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
mod tests {
    use super::*;

    fn msg(body: &'static [u8]) -> Message {
        Message::new(
            "".into(),
            "q",
            &[],
            [body],
            warren_core::message::MessageFlags::default(),
        )
    }

    #[test]
    fn bodies_stay_until_their_write_is_done() {
        let mut u = Unwritten::default();
        u.insert(1, msg(b"a"));
        let first = u.seal();
        u.insert(2, msg(b"b"));
        let second = u.seal();
        u.prune();
        assert!(u.get(1).is_some() && u.get(2).is_some());
        first(Ok(()));
        u.prune();
        assert!(u.get(1).is_none(), "written: read from the store");
        assert!(u.get(2).is_some(), "not written yet");
        second(Ok(()));
        u.prune();
        assert!(u.get(2).is_none());
        assert!(u.generations.is_empty() && u.bodies.is_empty());
    }

    #[test]
    fn a_later_write_done_first_releases_the_earlier_ones() {
        // The writer runs requests in order; a later completion means the
        // earlier ones are written too.
        let mut u = Unwritten::default();
        u.insert(1, msg(b"a"));
        let _first = u.seal();
        u.insert(2, msg(b"b"));
        u.seal()(Ok(()));
        u.prune();
        assert!(u.get(1).is_none() && u.get(2).is_none());
    }

    #[test]
    fn a_failed_write_is_reported() {
        let mut u = Unwritten::default();
        u.insert(1, msg(b"a"));
        u.seal()(Err(crate::StoreError::Stopped));
        assert!(u.failed());
        u.prune();
        assert!(u.get(1).is_some(), "never written: kept");
    }
}
