//! The ready list of a queue: one FIFO, or, for a queue declared with
//! `x-max-priority`, one FIFO per priority level, the highest served first
//! (RabbitMQ's `rabbit_priority_queue`).
//!
//! A message's level is its `priority` property capped at the queue's
//! maximum (absent: 0), as in RabbitMQ. Within a level, order is publish
//! order, and a requeued message goes back to its place in its level. Every
//! operation of the state that takes "the head" takes the head of the
//! highest non-empty level: delivery, `basic.get`, expiry, and `drop-head`
//! (which in RabbitMQ's priority queue, too, drops from the highest level).
//! Levels are only kept while they hold messages, so the head is found in
//! one step.
//!
//! Each level is an in-memory head and a [`PagedTail`] (bodies on disk
//! only), so a priority queue's backlog is paged like any other: memory
//! stays bounded however many levels fill. The invariant of the tail holds
//! per level (every paged seq is greater than every seq of its level's
//! head). The highest level is served first even when its messages are all
//! paged: then nothing is served until the runtime pages them in
//! ([`ReadyList::needs_page_in`]), never a lower level's message ahead of
//! them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

use super::paged::PagedTail;
use super::seq::Seq;
use super::state::{Dropped, Entry};
use crate::Message;

/// One priority level (or the whole of a queue without priorities).
#[derive(Debug, Default)]
pub(crate) struct Level {
    /// Ready messages with their bodies in memory, in serving order.
    head: VecDeque<Entry>,
    /// Ready messages after the head whose bodies are on disk (or pinned).
    tail: PagedTail,
}

impl Level {
    fn is_empty(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty()
    }
}

/// Ready messages, in the order they are to be served.
#[derive(Debug)]
pub(crate) enum ReadyList {
    /// Publish order.
    Fifo(Level),
    /// Highest level first, publish order within a level.
    Priority {
        /// The queue's `x-max-priority`.
        max: u8,
        /// Non-empty levels only.
        levels: BTreeMap<Reverse<u8>, Level>,
        /// Messages in the levels' in-memory heads.
        len: usize,
    },
}

impl Default for ReadyList {
    fn default() -> Self {
        ReadyList::Fifo(Level::default())
    }
}

/// Puts `e` at its place by seq in `q` (usually at the front: requeued
/// messages precede the ready ones).
fn insert_by_seq(q: &mut VecDeque<Entry>, e: Entry) {
    if q.front().is_none_or(|f| e.seq < f.seq) {
        q.push_front(e);
    } else {
        let pos = q.partition_point(|r| r.seq < e.seq);
        q.insert(pos, e);
    }
}

impl ReadyList {
    /// A list with priority levels up to `max`.
    pub(crate) fn with_priorities(max: u8) -> Self {
        ReadyList::Priority {
            max,
            levels: BTreeMap::new(),
            len: 0,
        }
    }

    /// The level `msg` belongs to, created if missing.
    fn level_of(&mut self, msg: &Message) -> &mut Level {
        match self {
            ReadyList::Fifo(l) => l,
            ReadyList::Priority { max, levels, .. } => {
                levels.entry(Reverse(msg.priority.min(*max))).or_default()
            }
        }
    }

    /// The level served next: the highest one holding anything.
    fn top(&self) -> Option<&Level> {
        match self {
            ReadyList::Fifo(l) => Some(l),
            ReadyList::Priority { levels, .. } => levels.values().next(),
        }
    }

    /// Runs `f` on the level served next, then forgets that level if `f`
    /// emptied it, and keeps the count of in-memory messages.
    fn with_top<T>(&mut self, f: impl FnOnce(&mut Level) -> T) -> Option<T> {
        match self {
            ReadyList::Fifo(l) => Some(f(l)),
            ReadyList::Priority { levels, len, .. } => {
                let mut top = levels.first_entry()?;
                let before = top.get().head.len();
                let out = f(top.get_mut());
                *len = *len + top.get().head.len() - before;
                if top.get().is_empty() {
                    top.remove();
                }
                Some(out)
            }
        }
    }

    fn levels(&self) -> impl Iterator<Item = &Level> {
        let (one, many) = match self {
            ReadyList::Fifo(l) => (Some(l), None),
            ReadyList::Priority { levels, .. } => (None, Some(levels.values())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Messages held in memory.
    pub(crate) fn len(&self) -> usize {
        match self {
            ReadyList::Fifo(l) => l.head.len(),
            ReadyList::Priority { len, .. } => *len,
        }
    }

    /// Messages of the paged tails.
    pub(crate) fn paged_len(&self) -> usize {
        self.levels().map(|l| l.tail.len()).sum()
    }

    /// Body bytes of the paged messages.
    pub(crate) fn paged_body_bytes(&self) -> u64 {
        self.levels().map(|l| l.tail.body_bytes()).sum()
    }

    /// Memory the paged tails hold (pinned bodies and seq entries).
    pub(crate) fn paged_memory_bytes(&self) -> usize {
        self.levels().map(|l| l.tail.memory_bytes()).sum()
    }

    /// Adds a newly published message: to its level's head, unless that
    /// level pages already or `page` says memory is spent, then to its tail
    /// with the body pinned until it is on disk. Returns whether it went to
    /// memory.
    pub(crate) fn publish(&mut self, seq: Seq, msg: Message, page: bool) -> bool {
        let level = self.level_of(&msg);
        if page || !level.tail.is_empty() {
            level.tail.push_pinned(seq, msg, false);
            return false;
        }
        level.head.push_back(Entry {
            seq,
            msg,
            redelivered: false,
        });
        self.counted(1);
        true
    }

    /// Adds a message recovered from disk (in seq order, redelivered): to
    /// its level's head when `keep` and that level does not page yet, else
    /// as a seq of its tail. Returns whether it went to memory.
    pub(crate) fn recover(&mut self, seq: Seq, msg: Message, keep: bool) -> bool {
        let level = self.level_of(&msg);
        if !keep || !level.tail.is_empty() {
            level.tail.push_on_disk(seq, true, &msg);
            return false;
        }
        level.head.push_back(Entry {
            seq,
            msg,
            redelivered: true,
        });
        self.counted(1);
        true
    }

    fn counted(&mut self, added: usize) {
        if let ReadyList::Priority { len, .. } = self {
            *len += added;
        }
    }

    /// Puts a requeued message back at its place in its level's head (it
    /// was served from there, so it precedes the level's tail).
    pub(crate) fn restore(&mut self, e: Entry) {
        insert_by_seq(&mut self.level_of(&e.msg).head, e);
        self.counted(1);
    }

    /// The message to serve next, if its body is in memory.
    pub(crate) fn front(&self) -> Option<&Entry> {
        self.top()?.head.front()
    }

    /// Takes the message to serve next, if its body is in memory (`None`
    /// while the highest level's messages are all paged).
    pub(crate) fn pop_front(&mut self) -> Option<Entry> {
        self.with_top(|l| l.head.pop_front()).flatten()
    }

    /// Takes the message to serve next wherever it is: from memory, or its
    /// seq (and its body if still pinned) from the tail.
    pub(crate) fn drop_front(&mut self) -> Option<Dropped> {
        self.with_top(|l| match l.head.pop_front() {
            Some(e) => Some(Dropped::Entry(e)),
            None => l
                .tail
                .pop_front()
                .map(|(seq, body)| Dropped::Paged(seq, body)),
        })
        .flatten()
    }

    /// The deadline of the message served next, in memory or paged.
    pub(crate) fn front_expires(&self) -> Option<u64> {
        let top = self.top()?;
        match top.head.front() {
            Some(e) => e.msg.expires(),
            None => top.tail.front_expires(),
        }
    }

    /// Drops pinned bodies now on disk, in every level.
    pub(crate) fn unpin(&mut self, durable_upto: Seq, on_disk: impl Fn(&Message) -> bool) {
        match self {
            ReadyList::Fifo(l) => l.tail.unpin(durable_upto, on_disk),
            ReadyList::Priority { levels, .. } => {
                for l in levels.values_mut() {
                    l.tail.unpin(durable_upto, &on_disk);
                }
            }
        }
    }

    /// Whether the level served next has fewer than `low` messages in
    /// memory and more paged.
    pub(crate) fn needs_page_in(&self, low: usize) -> bool {
        self.top()
            .is_some_and(|l| !l.tail.is_empty() && l.head.len() < low)
    }

    /// Seqs to read from disk for the next [`ReadyList::page_in`].
    pub(crate) fn to_read(&self, batch: usize) -> Vec<Seq> {
        self.top().map_or_else(Vec::new, |l| l.tail.to_read(batch))
    }

    /// Moves up to `batch` paged messages of the level served next into its
    /// head, bodies from the pins or from `read`. Returns the bodies' memory
    /// and body bytes brought in, and the seqs found nowhere.
    pub(crate) fn page_in(
        &mut self,
        batch: usize,
        read: BTreeMap<Seq, Message>,
    ) -> (usize, u64, Vec<Seq>) {
        self.with_top(|l| {
            let (loaded, missing) = l.tail.take(batch, read);
            let (mut memory, mut body) = (0, 0);
            for (seq, msg, redelivered) in loaded {
                memory += msg.memory_size();
                body += msg.body().len() as u64;
                l.head.push_back(Entry {
                    seq,
                    msg,
                    redelivered,
                });
            }
            (memory, body, missing)
        })
        .unwrap_or_default()
    }

    /// Takes everything: the in-memory messages in serving order, and the
    /// paged seqs.
    pub(crate) fn drain(&mut self) -> (Vec<Entry>, Vec<Seq>) {
        let levels = match self {
            ReadyList::Fifo(l) => vec![std::mem::take(l)],
            ReadyList::Priority { levels, len, .. } => {
                *len = 0;
                std::mem::take(levels).into_values().collect()
            }
        };
        let (mut entries, mut paged) = (Vec::new(), Vec::new());
        for mut l in levels {
            entries.extend(l.head.drain(..));
            paged.extend(l.tail.drain());
        }
        (entries, paged)
    }
}

#[cfg(test)]
#[path = "ready_test.rs"]
mod tests;
