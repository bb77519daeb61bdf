//! The contents of one queue: ready messages, unacked messages, consumers.
//!
//! This is the rabbit_fifo of Warren: pure state with the dispatch rule in one
//! place. The runtime (a queue actor today, a replicated state machine later)
//! feeds it publishes, acks and consumer changes, and asks it for deliveries.
//!
//! Order: ready messages are kept in publish order (`seq`). A requeued message
//! goes back to its original position, so unacked messages of a closed channel
//! reappear in their original order ahead of newer ones, as in RabbitMQ.

use std::collections::{BTreeMap, HashMap};

use super::ready::ReadyList;
pub use super::seq::Seq;
use crate::{AmqpError, Message, Name};

/// A consumer's node-unique id, chosen by the runtime.
pub type ConsumerId = u64;

/// Identifies one opening of a channel on this node. A channel number that is
/// closed and opened again gets a new `id`, so nothing addressed to the old
/// channel (a delivery, a confirm) can reach the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    /// Node-unique id of this opening of the channel.
    pub id: u64,
    /// The channel number within the connection.
    pub channel: u16,
}

/// A message in the queue.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Position in the queue.
    pub seq: Seq,
    /// The message.
    pub msg: Message,
    /// Delivered before (and requeued, or recovered after a restart).
    pub redelivered: bool,
}

/// What a consumer asked for in `basic.consume` (plus the channel's prefetch).
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// Node-unique id.
    pub id: ConsumerId,
    /// The consumer tag (unique within its channel).
    pub tag: Name,
    /// The channel it belongs to.
    pub channel: ChannelKey,
    /// Per-consumer prefetch count; 0 is unlimited.
    pub prefetch: u32,
    /// Auto-ack: messages are settled when sent.
    pub no_ack: bool,
    /// `exclusive` flag of `basic.consume`.
    pub exclusive: bool,
    /// `x-priority`; higher is served first.
    pub priority: i32,
}

#[derive(Debug)]
struct Consumer {
    spec: ConsumerSpec,
    unacked: u32,
}

impl Consumer {
    fn has_credit(&self) -> bool {
        self.spec.no_ack || self.spec.prefetch == 0 || self.unacked < self.spec.prefetch
    }
}

#[derive(Debug)]
struct Unacked {
    entry: Entry,
    channel: ChannelKey,
    consumer: Option<ConsumerId>,
}

/// A message handed to a consumer.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Who gets it.
    pub consumer: ConsumerId,
    /// The consumer's channel.
    pub channel: ChannelKey,
    /// The consumer tag to put in `basic.deliver`.
    pub tag: Name,
    /// Whether it needs an ack (false: already settled).
    pub needs_ack: bool,
    /// The message and its position.
    pub entry: Entry,
}

/// A message dropped from the head of a full queue.
#[derive(Clone, Debug)]
pub enum Dropped {
    /// Its body was in memory.
    Entry(Entry),
    /// It was paged: its seq, and its body if that was still pinned in
    /// memory (else it is only on disk).
    Paged(Seq, Option<Message>),
}

/// Ready list, unacked set and consumers of one queue.
#[derive(Debug, Default)]
pub struct QueueState {
    /// Ready messages: in memory, and past the memory budget paged (see
    /// [`super::paged::PagedTail`]), in one or more priority levels.
    ready: ReadyList,
    /// Bytes of ready bodies kept in memory before new ones are paged.
    budget: usize,
    unacked: HashMap<Seq, Unacked>,
    consumers: Vec<Consumer>,
    /// How many consumers have each `x-priority` (the levels a pick visits,
    /// highest first).
    levels: BTreeMap<i32, usize>,
    next_consumer: usize,
    next_seq: Seq,
    ready_bytes: usize,
    /// Body bytes of the in-memory ready messages (`x-max-length-bytes`).
    ready_body: u64,
    /// `x-single-active-consumer`: only the oldest consumer gets messages.
    single_active: bool,
    unacked_bytes: usize,
}

fn body_len(msg: &Message) -> u64 {
    msg.body().len() as u64
}

impl QueueState {
    /// An empty queue whose first message gets seq 1.
    pub fn new() -> Self {
        Self {
            next_seq: 1,
            budget: usize::MAX,
            ..Default::default()
        }
    }

    /// Limits the bytes of ready bodies held in memory. Past it, new messages
    /// join the paged tail: their bodies are kept only until the runtime says
    /// they are on disk ([`QueueState::unpin`]), then read back on demand. Only
    /// a queue whose messages are written to disk should get a budget.
    pub fn set_page_budget(&mut self, bytes: usize) {
        self.budget = bytes;
    }

    /// Turns on `x-max-priority`: ready messages are served highest
    /// priority first (see [`super::ready`]), each level paged on its own.
    /// Only for an empty queue.
    pub fn set_max_priority(&mut self, max: u8) {
        debug_assert!(self.ready_len() == 0);
        self.ready = ReadyList::with_priorities(max);
    }

    /// Turns on `x-single-active-consumer`: of the consumers, the one that
    /// came first takes every delivery and the others wait; when it goes
    /// (cancel, or its channel closes), the next takes over.
    pub fn set_single_active(&mut self) {
        self.single_active = true;
    }

    /// Appends a published message; returns its seq.
    pub fn publish(&mut self, msg: Message) -> Seq {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (memory, body) = (msg.memory_size(), body_len(&msg));
        if self.ready.publish(seq, msg, self.ready_bytes > self.budget) {
            self.ready_bytes += memory;
            self.ready_body += body;
        }
        seq
    }

    /// New messages get seqs after `seq` (taken on disk by a record that
    /// was not recovered).
    pub fn skip_seqs_to(&mut self, seq: Seq) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
    }

    /// Restores a message recovered from disk. Recovered messages must come in
    /// seq order; they are marked redelivered because they may have been
    /// delivered before the restart. Past the budget only the seq and the
    /// deadline are kept (`keep_body` false: the runtime chose not to hold it).
    pub fn recover(&mut self, seq: Seq, msg: Message, keep_body: bool) {
        self.next_seq = self.next_seq.max(seq + 1);
        let (memory, body) = (msg.memory_size(), body_len(&msg));
        let keep = keep_body && self.ready_bytes <= self.budget;
        if self.ready.recover(seq, msg, keep) {
            self.ready_bytes += memory;
            self.ready_body += body;
        }
    }

    /// True when recovery should stop reading bodies (the budget is spent).
    pub fn over_budget(&self) -> bool {
        self.ready_bytes > self.budget
    }

    /// Messages ready for delivery (in memory or paged).
    pub fn ready_len(&self) -> usize {
        self.ready.len() + self.ready.paged_len()
    }

    /// Messages ready for delivery and their body bytes: what a length
    /// limit counts.
    pub fn ready(&self) -> super::limits::Ready {
        super::limits::Ready {
            len: self.ready_len(),
            bytes: self.ready_body + self.ready.paged_body_bytes(),
        }
    }

    /// Drops the bodies of paged messages with seq <= `durable_upto` for which
    /// `on_disk` holds: their writes have completed and they can be read back.
    pub fn unpin(&mut self, durable_upto: Seq, on_disk: impl Fn(&Message) -> bool) {
        self.ready.unpin(durable_upto, on_disk);
    }

    /// True when the in-memory head of the messages served next (their
    /// priority level's) has fewer than `low` messages and more are paged:
    /// the runtime should call [`QueueState::page_in`].
    pub fn needs_page_in(&self, low: usize) -> bool {
        self.ready.needs_page_in(low)
    }

    /// Seqs among the next `batch` paged messages whose bodies must be read
    /// from disk (the others are pinned in memory).
    pub fn paged_to_read(&self, batch: usize) -> Vec<Seq> {
        self.ready.to_read(batch)
    }

    /// Moves up to `batch` paged messages into the in-memory head, bodies from
    /// the pins or from `read`. Returns seqs that could not be found (a fault the
    /// runtime should report; they are dropped from the queue).
    pub fn page_in(
        &mut self,
        batch: usize,
        read: std::collections::BTreeMap<Seq, Message>,
    ) -> Vec<Seq> {
        let (memory, body, missing) = self.ready.page_in(batch, read);
        self.ready_bytes += memory;
        self.ready_body += body;
        missing
    }

    /// Messages of the paged tail (their bodies are on disk or pinned).
    pub fn paged_len(&self) -> usize {
        self.ready.paged_len()
    }

    /// Messages delivered and not yet acked.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Number of consumers.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Bytes held by the queue's messages (see [`Message::memory_size`]).
    pub fn memory_bytes(&self) -> usize {
        self.ready_bytes + self.unacked_bytes + self.ready.paged_memory_bytes()
    }

    /// True when `id` is a consumer of this queue.
    pub fn has_consumer(&self, id: ConsumerId) -> bool {
        self.consumers.iter().any(|c| c.spec.id == id)
    }

    /// Adds a consumer. An exclusive consumer needs a queue without consumers,
    /// and nobody may join a queue with an exclusive consumer (403, as RabbitMQ).
    pub fn consume(
        &mut self,
        spec: ConsumerSpec,
        queue: &str,
        vhost: &str,
    ) -> Result<(), AmqpError> {
        // RabbitMQ refuses an exclusive consume of a single-active-consumer
        // queue with the same 403.
        if (spec.exclusive && (self.single_active || !self.consumers.is_empty()))
            || self.consumers.iter().any(|c| c.spec.exclusive)
        {
            return Err(AmqpError::access_refused(format!(
                "queue '{queue}' in vhost '{vhost}' in exclusive use"
            )));
        }
        *self.levels.entry(spec.priority).or_default() += 1;
        self.consumers.push(Consumer { spec, unacked: 0 });
        Ok(())
    }

    /// Removes a consumer; its unacked messages stay unacked (owned by its
    /// channel), as in RabbitMQ. Returns false when it was not a consumer.
    pub fn cancel(&mut self, id: ConsumerId) -> bool {
        let before = self.consumers.len();
        self.remove_consumers(|c| c.spec.id == id);
        for u in self.unacked.values_mut() {
            if u.consumer == Some(id) {
                u.consumer = None;
            }
        }
        before != self.consumers.len()
    }

    /// The next delivery, if a consumer has credit and a message is ready.
    ///
    /// `gate` lets the runtime veto a consumer for reasons the queue cannot see
    /// (the channel's global prefetch, a connection that is behind on writing).
    /// It is asked about candidates in the order they would be served and the
    /// first it accepts gets the message, so a gate that reserves credit reserves
    /// it exactly once. Order: highest `x-priority` first, round-robin among equals.
    pub fn next_delivery(
        &mut self,
        gate: &mut impl FnMut(&ConsumerSpec) -> bool,
    ) -> Option<Delivery> {
        if self.ready.front().is_none() || self.consumers.is_empty() {
            return None;
        }
        let i = self.pick(gate)?;
        let n = self.consumers.len();
        self.next_consumer = (i + 1) % n;
        let entry = self.ready.pop_front()?;
        let size = entry.msg.memory_size();
        self.ready_bytes -= size;
        self.ready_body -= body_len(&entry.msg);
        let c = &mut self.consumers[i];
        let delivery = Delivery {
            consumer: c.spec.id,
            channel: c.spec.channel,
            tag: c.spec.tag.clone(),
            needs_ack: !c.spec.no_ack,
            entry: entry.clone(),
        };
        if !c.spec.no_ack {
            c.unacked += 1;
            self.unacked_bytes += size;
            self.unacked.insert(
                entry.seq,
                Unacked {
                    entry,
                    channel: c.spec.channel,
                    consumer: Some(c.spec.id),
                },
            );
        }
        Some(delivery)
    }

    /// The consumer the next message goes to: the highest priority first,
    /// round-robin from `next_consumer` among equals, the first with credit
    /// that `gate` accepts. No allocation and no sort (before, every
    /// delivery collected and sorted all consumers): the levels in use are
    /// kept in `levels` and visited from the highest down, and the first
    /// consumer that takes the message ends the search. With one level and
    /// consumers that have credit, a pick looks at one or a few of them
    /// however many there are; a level whose consumers are all full costs a
    /// pass of comparisons over the consumers, never a gate question each.
    fn pick(&self, gate: &mut impl FnMut(&ConsumerSpec) -> bool) -> Option<usize> {
        if self.single_active {
            // Consumers are kept in the order they came: the first is active.
            let c = self.consumers.first()?;
            return (c.has_credit() && gate(&c.spec)).then_some(0);
        }
        let n = self.consumers.len();
        for &level in self.levels.keys().rev() {
            for k in 0..n {
                let i = (self.next_consumer + k) % n;
                let c = &self.consumers[i];
                if c.spec.priority == level && c.has_credit() && gate(&c.spec) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Removes the consumers `gone` selects, keeping the priority levels.
    fn remove_consumers(&mut self, gone: impl Fn(&Consumer) -> bool) {
        let levels = &mut self.levels;
        self.consumers.retain(|c| {
            if !gone(c) {
                return true;
            }
            if let Some(count) = levels.get_mut(&c.spec.priority) {
                *count -= 1;
                if *count == 0 {
                    levels.remove(&c.spec.priority);
                }
            }
            false
        });
    }

    /// `basic.get`: the first ready message, moved to unacked unless `no_ack`.
    pub fn get(&mut self, channel: ChannelKey, no_ack: bool) -> Option<Entry> {
        let entry = self.ready.pop_front()?;
        let size = entry.msg.memory_size();
        self.ready_bytes -= size;
        self.ready_body -= body_len(&entry.msg);
        if !no_ack {
            self.unacked_bytes += size;
            self.unacked.insert(
                entry.seq,
                Unacked {
                    entry: entry.clone(),
                    channel,
                    consumer: None,
                },
            );
        }
        Some(entry)
    }

    fn take_unacked(&mut self, channel: ChannelKey, seq: Seq) -> Option<Entry> {
        match self.unacked.get(&seq) {
            Some(u) if u.channel == channel => {}
            _ => return None,
        }
        let u = self.unacked.remove(&seq)?;
        self.unacked_bytes -= u.entry.msg.memory_size();
        if let Some(id) = u.consumer
            && let Some(c) = self.consumers.iter_mut().find(|c| c.spec.id == id)
        {
            c.unacked = c.unacked.saturating_sub(1);
        }
        Some(u.entry)
    }

    /// Settles messages (ack, or reject/nack without requeue). Returns the
    /// removed entries so the runtime can delete persisted copies.
    pub fn settle(&mut self, channel: ChannelKey, seqs: &[Seq]) -> Vec<Entry> {
        seqs.iter()
            .filter_map(|&s| self.take_unacked(channel, s))
            .collect()
    }

    /// Puts unacked messages back at their original positions, marked redelivered.
    pub fn requeue(&mut self, channel: ChannelKey, seqs: &[Seq]) {
        let mut back: Vec<Entry> = seqs
            .iter()
            .filter_map(|&s| self.take_unacked(channel, s))
            .collect();
        back.sort_by_key(|e| e.seq);
        self.restore(back);
    }

    fn restore(&mut self, back: Vec<Entry>) {
        for mut e in back.into_iter().rev() {
            e.redelivered = true;
            self.ready_bytes += e.msg.memory_size();
            self.ready_body += body_len(&e.msg);
            self.ready.restore(e);
        }
    }

    /// A channel closed: its consumers go and its unacked messages are
    /// requeued in their original order. Returns the removed consumers' ids.
    pub fn channel_closed(&mut self, channel: ChannelKey) -> Vec<ConsumerId> {
        let gone: Vec<ConsumerId> = self
            .consumers
            .iter()
            .filter(|c| c.spec.channel == channel)
            .map(|c| c.spec.id)
            .collect();
        self.remove_consumers(|c| c.spec.channel == channel);
        if self.next_consumer >= self.consumers.len() {
            self.next_consumer = 0;
        }
        let mut seqs: Vec<Seq> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.channel == channel)
            .map(|(s, _)| *s)
            .collect();
        seqs.sort_unstable();
        self.requeue(channel, &seqs);
        gone
    }

    /// Drops every ready message (unacked ones stay, as in RabbitMQ);
    /// returns the in-memory ones and the paged seqs so persisted copies can
    /// be deleted.
    pub fn purge(&mut self) -> (Vec<Entry>, Vec<Seq>) {
        self.ready_bytes = 0;
        self.ready_body = 0;
        self.ready.drain()
    }

    /// Removes the oldest ready message (the `drop-head` overflow of a full
    /// queue): from the in-memory head, or from the paged tail when the
    /// head is empty, as its seq only.
    pub fn drop_head(&mut self) -> Option<Dropped> {
        let dropped = self.ready.drop_front()?;
        if let Dropped::Entry(e) = &dropped {
            self.ready_bytes -= e.msg.memory_size();
            self.ready_body -= body_len(&e.msg);
        }
        Some(dropped)
    }

    /// The deadline of the oldest ready message (in memory or paged), if it
    /// has one: when the runtime should look at the head again.
    pub fn head_expires(&self) -> Option<u64> {
        self.ready.front_expires()
    }

    /// Removes the oldest ready message if it has expired at `now` (see
    /// [`super::expiry`]); the runtime calls it until it answers `None`
    /// before a delivery, a fetch or a count, and when the head's deadline
    /// passes.
    pub fn expire_head(&mut self, now: u64) -> Option<Dropped> {
        if super::expiry::expired(self.head_expires(), now) {
            self.drop_head()
        } else {
            None
        }
    }

    /// Consumers' specs, for cancel notifications when the queue goes away.
    pub fn consumers(&self) -> impl Iterator<Item = &ConsumerSpec> {
        self.consumers.iter().map(|c| &c.spec)
    }

    /// Every message still held (ready and unacked), for deletion of the queue.
    pub fn drain_all(&mut self) -> Vec<Entry> {
        let (mut all, _paged) = self.ready.drain();
        all.extend(self.unacked.drain().map(|(_, u)| u.entry));
        self.ready_bytes = 0;
        self.ready_body = 0;
        self.unacked_bytes = 0;
        all
    }
}

#[cfg(test)]
#[path = "state_test.rs"]
mod tests;
