//! The state machine of one quorum queue's Raft group: Warren's rabbit_fifo.
//!
//! Every replica of a quorum queue applies the same log of [`Command`]s to its
//! own [`QuorumState`], so [`QuorumState::apply`] is a function of the state
//! and the command alone: no clock, no randomness, no hash-map order. That is
//! why dispatch lives here and not in a runtime: which consumer holds which
//! message is part of the replicated state, so a new leader knows exactly what
//! was in flight (and redelivers it with `redelivered` set) instead of
//! guessing.
//!
//! The state holds ids and sizes, never bodies: a message is 16 bytes here
//! ([`QMsg`]), and its body is the runtime's (written once at apply, read for
//! a delivery, deleted when [`Applied::removed`] names it). The runtime's
//! order for an [`Applied`]: read the bodies the reply and the deliveries
//! need, then delete the removed ones (a message can be delivered and removed
//! by the same command, as a `basic.get` with no-ack is).
//!
//! Rules, as rabbit_fifo has them:
//! - Enqueues carry their publisher's channel and confirm sequence number; a
//!   number not above the last one seen from that channel is a re-send after
//!   a leader change and is dropped (still confirmed). This relies on one
//!   thing the runtime guarantees: a node proposes a channel's enqueues in
//!   sequence order and re-sends from its oldest unconfirmed one.
//! - Settle, return and discard name message ids and the consumer holding
//!   them; an id the consumer does not hold is ignored, so every one of them
//!   is idempotent (a re-sent ack after a leader change changes nothing).
//! - A returned message goes back to its original place (ahead of newer ones,
//!   as a classic queue does) with its delivery count raised; past the
//!   queue's `x-delivery-limit` it is dropped instead.
//! - A cancelled consumer gets nothing more but keeps what it holds until it
//!   settles or returns it, as AMQP allows acks after `basic.cancel`; a
//!   channel or node that goes returns everything its consumers held.
//! - Time is the log's: a [`Command::Clock`] the leader puts at the head of
//!   every entry carries its wall clock, and expiry (`x-message-ttl`, a
//!   message's `expiration`) compares deadlines with the last one applied,
//!   at the head of the queue as the classic queue does (`expiry`).
//! - With `x-single-active-consumer` only the oldest consumer (not
//!   cancelled) takes deliveries; the next takes over when it goes
//!   (`active`).
//! - Dead-lettering is at least once: a message a dead-lettering queue
//!   rejects, expires or drops leaves the ready list and the consumers but
//!   stays in the state (`dead_letters`, bodies kept) until the leader has
//!   it re-published and proposes [`Command::DeadLettered`]; a new leader
//!   asks for them all again ([`Command::DeadLetterAgain`]).
//! - Credit is the consumer's prefetch (0: unlimited). A no-ack consumer
//!   holds its deliveries too, until its node settles them once written to
//!   the client: the runtime gives it a window, so an auto-ack consumer
//!   cannot pull a whole backlog into one command's effects.
//!
//! - `command`: [`Command`], [`Reply`], [`Applied`], [`Delivery`].
//! - `apply`: [`QuorumState::apply`], one method per command, and dispatch.
//! - `snapshot`: [`QuorumSnapshot`], snapshot and restore, canonical order.
//!
//! This file holds the state and its read side.

mod active;
mod apply;
mod command;
mod expiry;
mod snapshot;

use std::collections::{BTreeMap, VecDeque};

pub use command::{Applied, Command, Delivery, Publisher, Reply};
pub use snapshot::{ConsumerSnapshot, QuorumSnapshot};

use crate::{Name, NodeId};

/// A message's id in its queue: the order of enqueue, never reused.
pub type MsgId = u64;

/// A message as the state machine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QMsg {
    /// Its id.
    pub id: MsgId,
    /// Body size in bytes (what `x-max-length-bytes` counts in RabbitMQ).
    pub size: u32,
    /// How many times it was returned (requeued, or its consumer went).
    pub delivery_count: u32,
}

impl QMsg {
    /// Whether a delivery of it sets `redelivered`.
    pub fn redelivered(&self) -> bool {
        self.delivery_count > 0
    }
}

/// A consumer: a channel (its cluster-unique id) and a consumer tag.
/// `basic.get` with acks checks messages out to the channel's key with an
/// empty tag ([`ConsumerKey::get`]), which never takes deliveries.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ConsumerKey {
    /// The channel's cluster-unique id.
    pub channel: u64,
    /// The consumer tag (empty: messages taken by `basic.get`).
    pub tag: Name,
}

impl ConsumerKey {
    /// The key of a consumer.
    pub fn new(channel: u64, tag: &str) -> Self {
        Self {
            channel,
            tag: tag.into(),
        }
    }

    /// The key under which `basic.get` holds messages of `channel`.
    pub fn get(channel: u64) -> Self {
        Self::new(channel, "")
    }

    fn is_get(&self) -> bool {
        self.tag.is_empty()
    }
}

/// A quorum queue's settings, fixed when its group is created.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumConfig {
    /// `x-delivery-limit`: a message returned more often is dropped.
    pub delivery_limit: Option<u32>,
    /// `x-max-length` and `x-overflow`.
    #[serde(default)]
    pub limits: crate::queue::Limits,
    /// `x-message-ttl`, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_ttl: Option<u64>,
    /// `x-single-active-consumer`: one consumer at a time gets messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_active: bool,
    /// `x-dead-letter-exchange` is set: rejected, expired, dropped and
    /// over-limit messages are named in [`Applied::dead`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_letters: bool,
    /// `x-expires`, milliseconds: the queue goes after this long unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Consumer {
    /// The node whose channel it belongs to (deliveries go there).
    node: NodeId,
    /// Prefetch: how many it may hold (0: unlimited).
    prefetch: u32,
    /// Auto-ack (its node settles what it wrote); carried in deliveries.
    no_ack: bool,
    /// `basic.cancel` seen: holds what it has, gets nothing more.
    cancelled: bool,
    /// In the service queue (it can take a message).
    in_service: bool,
    /// The messages it holds.
    checked: BTreeMap<MsgId, QMsg>,
    /// When it checked out, among the queue's consumers (the oldest is the
    /// single active consumer).
    order: u64,
}

impl Consumer {
    fn can_take(&self, key: &ConsumerKey) -> bool {
        !self.cancelled
            && !key.is_get()
            && (self.prefetch == 0 || self.checked.len() < self.prefetch as usize)
    }
}

/// The replicated contents of one quorum queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuorumState {
    config: QuorumConfig,
    /// The id the next enqueue gets.
    next_id: MsgId,
    /// Messages waiting for a consumer, in id order.
    ready: VecDeque<QMsg>,
    /// Bytes of `ready`.
    ready_bytes: u64,
    /// Consumers (and `basic.get` holders) in key order.
    consumers: BTreeMap<ConsumerKey, Consumer>,
    /// Consumers that can take a message, in turn: round-robin.
    service: VecDeque<ConsumerKey>,
    /// The last confirm sequence number enqueued from each channel.
    publishers: BTreeMap<u64, u64>,
    /// Messages held by consumers.
    checked: u64,
    /// The log's clock: the last [`Command::Clock`] applied (0: none yet,
    /// and nothing expires).
    now: u64,
    /// Checkouts so far: the `order` of the next new consumer.
    checkouts: u64,
    /// Deadlines (Unix ms by the log's clock) of the messages that have one,
    /// beside the messages rather than in them: a message stays 16 bytes in
    /// a queue without expiry, ready or held.
    deadlines: BTreeMap<MsgId, u64>,
    /// The log's clock when a consumer last came or went or a `basic.get`
    /// asked (0: not yet known): where `x-expires` counts from.
    last_active: u64,
    /// Messages dead-lettered and not yet re-published, and why.
    dead_letters: BTreeMap<MsgId, crate::dead_letter::Reason>,
}

impl QuorumState {
    /// An empty queue; its first message gets id 1.
    pub fn new(config: QuorumConfig) -> Self {
        Self {
            config,
            next_id: 1,
            ..Self::default()
        }
    }

    /// Its settings.
    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    /// The deadline of the oldest ready message, if it has one: when the
    /// leader should put a [`Command::Clock`] in the log.
    pub fn head_expires(&self) -> Option<u64> {
        self.ready
            .front()
            .and_then(|m| self.deadlines.get(&m.id).copied())
    }

    /// When the queue has been unused for its `x-expires` (no consumer, no
    /// `basic.get`), by the log's clock: the leader puts a clock in the log
    /// then, and deletes the queue once [`QuorumState::is_expired`].
    pub fn queue_expires(&self) -> Option<u64> {
        let after = self.config.expires?;
        (self.last_active > 0 && self.consumer_count() == 0)
            .then(|| self.last_active.saturating_add(after))
    }

    /// True when the queue's unused period is over by the log's clock.
    pub fn is_expired(&self) -> bool {
        self.queue_expires().is_some_and(|at| self.now >= at)
    }

    /// Messages waiting for a consumer (the count of `queue.declare-ok`).
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Bytes of the messages waiting for a consumer.
    pub fn ready_bytes(&self) -> u64 {
        self.ready_bytes
    }

    /// Messages held by consumers and `basic.get` callers, not yet settled.
    pub fn checked_len(&self) -> u64 {
        self.checked
    }

    /// Consumers taking deliveries (not cancelled; `basic.get` holders excluded).
    pub fn consumer_count(&self) -> usize {
        self.consumers
            .iter()
            .filter(|(k, c)| !k.is_get() && !c.cancelled)
            .count()
    }

    /// The id the next enqueue gets.
    pub fn next_id(&self) -> MsgId {
        self.next_id
    }

    /// Every message held by a consumer, with the consumer and its node: what
    /// a new leader sends again, since the old one may have died before
    /// sending it (the consumer's node drops ids it already has).
    pub fn in_flight(&self) -> impl Iterator<Item = Delivery> + '_ {
        self.consumers
            .iter()
            .filter(|(k, _)| !k.is_get())
            .flat_map(|(k, c)| {
                c.checked.values().map(move |m| Delivery {
                    consumer: k.clone(),
                    node: c.node,
                    msg: *m,
                    no_ack: c.no_ack,
                })
            })
    }

    /// The messages `key` holds: what a leader sends again when the
    /// consumer attaches to it after a leader change.
    pub fn held_by(&self, key: &ConsumerKey) -> Vec<Delivery> {
        let Some(c) = self.consumers.get(key) else {
            return Vec::new();
        };
        c.checked
            .values()
            .map(|m| Delivery {
                consumer: key.clone(),
                node: c.node,
                msg: *m,
                no_ack: c.no_ack,
            })
            .collect()
    }

    /// The channels of the consumers and `basic.get` holders, each once, in
    /// id order: what the leader asks the channels' nodes about (a channel
    /// whose close never reached a leader would hold its messages forever).
    pub fn channels(&self) -> impl Iterator<Item = u64> + '_ {
        let mut last = None;
        self.consumers.keys().filter_map(move |k| {
            let new = last != Some(k.channel);
            last = Some(k.channel);
            new.then_some(k.channel)
        })
    }

    /// Every message id the queue holds, ready, checked out or waiting to
    /// be dead-lettered, in no particular order: what the runtime keeps
    /// bodies for.
    pub fn ids(&self) -> impl Iterator<Item = MsgId> + '_ {
        self.ready
            .iter()
            .map(|m| m.id)
            .chain(
                self.consumers
                    .values()
                    .flat_map(|c| c.checked.keys().copied()),
            )
            .chain(self.dead_letters.keys().copied())
    }

    /// Dead letters not yet re-published.
    pub fn dead_letters_len(&self) -> usize {
        self.dead_letters.len()
    }
}

#[cfg(test)]
#[path = "quorum_test.rs"]
mod tests;

#[cfg(test)]
#[path = "features_test.rs"]
mod features_tests;
