//! The in-memory ready list of a queue: one FIFO, or, for a queue declared
//! with `x-max-priority`, one FIFO per priority level, the highest served
//! first (RabbitMQ's `rabbit_priority_queue`).
//!
//! A message's level is its `priority` property capped at the queue's
//! maximum (absent: 0), as in RabbitMQ. Within a level, order is publish
//! order, and a requeued message goes back to its place in its level. Every
//! operation of the state that takes "the head" takes the head of the
//! highest non-empty level: delivery, `basic.get`, expiry, and `drop-head`
//! (which in RabbitMQ's priority queue, too, drops from the highest level).
//! Levels are only kept while they hold messages, so the head is found in
//! one step.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

use super::state::Entry;

/// Ready messages in memory, in the order they are to be served.
#[derive(Debug)]
pub(crate) enum ReadyList {
    /// Publish order.
    Fifo(VecDeque<Entry>),
    /// Highest level first, publish order within a level.
    Priority {
        /// The queue's `x-max-priority`.
        max: u8,
        /// Non-empty levels only.
        levels: BTreeMap<Reverse<u8>, VecDeque<Entry>>,
        /// Messages in all levels.
        len: usize,
    },
}

impl Default for ReadyList {
    fn default() -> Self {
        ReadyList::Fifo(VecDeque::new())
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

    fn level(max: u8, e: &Entry) -> Reverse<u8> {
        Reverse(e.msg.priority.min(max))
    }

    /// Messages held.
    pub(crate) fn len(&self) -> usize {
        match self {
            ReadyList::Fifo(q) => q.len(),
            ReadyList::Priority { len, .. } => *len,
        }
    }

    /// True when nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a newly published (or recovered, or paged-in) message.
    pub(crate) fn push_back(&mut self, e: Entry) {
        match self {
            ReadyList::Fifo(q) => q.push_back(e),
            ReadyList::Priority { max, levels, len } => {
                levels
                    .entry(Self::level(*max, &e))
                    .or_default()
                    .push_back(e);
                *len += 1;
            }
        }
    }

    /// Puts a requeued message back at its place.
    pub(crate) fn restore(&mut self, e: Entry) {
        match self {
            ReadyList::Fifo(q) => insert_by_seq(q, e),
            ReadyList::Priority { max, levels, len } => {
                insert_by_seq(levels.entry(Self::level(*max, &e)).or_default(), e);
                *len += 1;
            }
        }
    }

    /// The message to serve next.
    pub(crate) fn front(&self) -> Option<&Entry> {
        match self {
            ReadyList::Fifo(q) => q.front(),
            ReadyList::Priority { levels, .. } => levels.values().next().and_then(|q| q.front()),
        }
    }

    /// Takes the message to serve next.
    pub(crate) fn pop_front(&mut self) -> Option<Entry> {
        match self {
            ReadyList::Fifo(q) => q.pop_front(),
            ReadyList::Priority { levels, len, .. } => {
                let mut top = levels.first_entry()?;
                let e = top.get_mut().pop_front();
                if top.get().is_empty() {
                    top.remove();
                }
                if e.is_some() {
                    *len -= 1;
                }
                e
            }
        }
    }

    /// Takes everything, in serving order.
    pub(crate) fn drain(&mut self) -> Vec<Entry> {
        match self {
            ReadyList::Fifo(q) => q.drain(..).collect(),
            ReadyList::Priority { levels, len, .. } => {
                *len = 0;
                std::mem::take(levels).into_values().flatten().collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use crate::message::MessageFlags;

    fn entry(seq: u64, priority: u8) -> Entry {
        Entry {
            seq,
            msg: Message::new(
                "".into(),
                "q",
                &[0, 0],
                [&b"x"[..]],
                MessageFlags {
                    priority,
                    ..MessageFlags::default()
                },
            ),
            redelivered: false,
        }
    }

    fn order(r: &mut ReadyList) -> Vec<u64> {
        std::iter::from_fn(|| r.pop_front())
            .map(|e| e.seq)
            .collect()
    }

    #[test]
    fn the_highest_level_first_publish_order_within_one() {
        let mut r = ReadyList::with_priorities(5);
        for (seq, p) in [(1, 0), (2, 5), (3, 1), (4, 5), (5, 9), (6, 0)] {
            r.push_back(entry(seq, p));
        }
        assert_eq!(r.len(), 6);
        assert_eq!(r.front().map(|e| e.seq), Some(2));
        // Priority 9 counts as the maximum, 5: after 2 and 4, which came first.
        assert_eq!(order(&mut r), vec![2, 4, 5, 3, 1, 6]);
        assert!(r.is_empty());
    }

    #[test]
    fn a_requeued_message_goes_back_to_its_place_in_its_level() {
        let mut r = ReadyList::with_priorities(3);
        for (seq, p) in [(1, 2), (2, 2), (3, 0), (4, 2)] {
            r.push_back(entry(seq, p));
        }
        let first = r.pop_front().expect("1");
        let second = r.pop_front().expect("2");
        r.restore(second);
        r.restore(first);
        assert_eq!(order(&mut r), vec![1, 2, 4, 3]);
        let mut fifo = ReadyList::default();
        for seq in [1, 2, 3] {
            fifo.push_back(entry(seq, 9));
        }
        let one = fifo.pop_front().expect("1");
        fifo.restore(one);
        assert_eq!(
            order(&mut fifo),
            vec![1, 2, 3],
            "no levels without x-max-priority"
        );
    }
}
