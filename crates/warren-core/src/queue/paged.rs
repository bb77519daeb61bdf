//! The paged tail of a queue: ready messages whose bodies live only on disk.
//!
//! A queue keeps the head of its ready list in memory and, past a budget, only
//! the seqs of the rest (DESIGN.md: "in-memory queue state holds ids and sizes,
//! with a bounded cache of bodies, so a backlog bigger than memory works").
//! Invariant: every paged seq is greater than every seq of the in-memory head.
//!
//! Bodies that cannot be read back from disk yet are *pinned* here: a message
//! published while the tail exists joins the tail with its body until its write
//! is durable ([`PagedTail::unpin`]); a transient message stays pinned.

use std::collections::{BTreeMap, VecDeque};

use super::seq::Seq;
use crate::Message;

/// Bytes of bookkeeping per paged message (the seq entry), for accounting.
pub const PAGED_OVERHEAD: usize = 16;

#[derive(Clone, Copy, Debug)]
struct PagedSeq {
    seq: Seq,
    redelivered: bool,
    /// The message's deadline (see [`Message::expires`]): a paged message
    /// expires at the head without its body being read.
    expires: Option<u64>,
    /// Its body's size, for `x-max-length-bytes`.
    size: u32,
}

/// Messages of the ready list that are not in memory (or only pinned).
#[derive(Debug, Default)]
pub struct PagedTail {
    seqs: VecDeque<PagedSeq>,
    pinned: BTreeMap<Seq, Message>,
    pinned_bytes: usize,
    unpinned_upto: Seq,
    /// Body bytes of every paged message (what `x-max-length-bytes` counts).
    body_bytes: u64,
}

fn body_size(msg: &Message) -> u32 {
    u32::try_from(msg.body().len()).unwrap_or(u32::MAX)
}

impl PagedTail {
    /// Number of messages in the tail.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// True when the whole ready list is in memory.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Body bytes of the paged messages.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Memory this tail holds: pinned bodies and seq entries.
    pub fn memory_bytes(&self) -> usize {
        self.pinned_bytes + self.seqs.len() * PAGED_OVERHEAD
    }

    /// Appends a message whose body stays in memory until unpinned.
    pub(crate) fn push_pinned(&mut self, seq: Seq, msg: Message, redelivered: bool) {
        self.pinned_bytes += msg.memory_size();
        let expires = msg.expires();
        let size = body_size(&msg);
        self.pinned.insert(seq, msg);
        self.push(PagedSeq {
            seq,
            redelivered,
            expires,
            size,
        });
    }

    /// Appends a message known to be on disk only (recovery); only its
    /// seq, deadline and size stay in memory.
    pub(crate) fn push_on_disk(&mut self, seq: Seq, redelivered: bool, msg: &Message) {
        self.push(PagedSeq {
            seq,
            redelivered,
            expires: msg.expires(),
            size: body_size(msg),
        });
    }

    fn push(&mut self, p: PagedSeq) {
        self.body_bytes += u64::from(p.size);
        self.seqs.push_back(p);
    }

    fn pop(&mut self) -> Option<PagedSeq> {
        let p = self.seqs.pop_front()?;
        self.body_bytes -= u64::from(p.size);
        Some(p)
    }

    /// The deadline of the first paged message, if it has one.
    pub(crate) fn front_expires(&self) -> Option<u64> {
        self.seqs.front().and_then(|p| p.expires)
    }

    /// Drops pinned bodies with seq <= `durable_upto` that `on_disk` says are
    /// written: they can be read back now.
    pub(crate) fn unpin(&mut self, durable_upto: Seq, on_disk: impl Fn(&Message) -> bool) {
        if durable_upto <= self.unpinned_upto {
            return;
        }
        let from = self.unpinned_upto + 1;
        let gone: Vec<Seq> = self
            .pinned
            .range(from..=durable_upto)
            .filter(|(_, m)| on_disk(m))
            .map(|(s, _)| *s)
            .collect();
        for s in gone {
            if let Some(m) = self.pinned.remove(&s) {
                self.pinned_bytes -= m.memory_size();
            }
        }
        self.unpinned_upto = durable_upto;
    }

    /// Seqs among the first `max` paged messages that must be read from disk.
    pub fn to_read(&self, max: usize) -> Vec<Seq> {
        self.seqs
            .iter()
            .take(max)
            .filter(|p| !self.pinned.contains_key(&p.seq))
            .map(|p| p.seq)
            .collect()
    }

    /// Takes the first `max` paged messages, with bodies from the pins or from
    /// `read` (what the runtime read for [`PagedTail::to_read`]). A seq found in
    /// neither is returned in the second list (lost from disk: a fault).
    pub(crate) fn take(
        &mut self,
        max: usize,
        mut read: BTreeMap<Seq, Message>,
    ) -> (Vec<(Seq, Message, bool)>, Vec<Seq>) {
        let mut out = Vec::with_capacity(max.min(self.seqs.len()));
        let mut missing = Vec::new();
        for _ in 0..max {
            let Some(p) = self.pop() else {
                break;
            };
            let msg = match self.pinned.remove(&p.seq) {
                Some(m) => {
                    self.pinned_bytes -= m.memory_size();
                    Some(m)
                }
                None => read.remove(&p.seq),
            };
            match msg {
                Some(m) => out.push((p.seq, m, p.redelivered)),
                None => missing.push(p.seq),
            }
        }
        (out, missing)
    }

    /// Removes the first paged message; returns its seq and its body if it
    /// was pinned.
    pub(crate) fn pop_front(&mut self) -> Option<(Seq, Option<Message>)> {
        let p = self.pop()?;
        let body = self.pinned.remove(&p.seq);
        if let Some(m) = &body {
            self.pinned_bytes -= m.memory_size();
        }
        Some((p.seq, body))
    }

    /// Removes everything; returns the seqs (for deletion from disk).
    pub(crate) fn drain(&mut self) -> Vec<Seq> {
        self.pinned.clear();
        self.pinned_bytes = 0;
        self.body_bytes = 0;
        self.seqs.drain(..).map(|p| p.seq).collect()
    }
}
