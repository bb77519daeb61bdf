//! What a quorum queue's leader adds to its deliveries: the
//! `x-delivery-count` header, and holding back those that wait for their
//! channel's shared prefetch (`basic.qos` with `global=true`).
//!
//! RabbitMQ refuses a global prefetch on quorum queues; Warren honours it
//! per leader node. The state machine cannot see a channel's other queues
//! (they are other groups), so it gives each consumer up to the channel's
//! limit; the leader then sends a delivery only while the channel has
//! credit left on this node, and keeps the rest here, in order per
//! channel, until an ack wakes the queue. They are at most the limit per
//! consumer, so what waits here is bounded like a prefetch is.

use std::collections::{HashMap, VecDeque};

use warren_core::Message;
use warren_core::quorum::{ConsumerKey, Delivery, MsgId};

/// `msg` as delivered after `count` returns: with the `x-delivery-count`
/// header RabbitMQ's quorum queues add (the first delivery has none).
pub(super) fn counted(msg: &Message, count: u32) -> Message {
    if count == 0 {
        return msg.clone();
    }
    let value = warren_amqp::amq_protocol::types::AMQPValue::LongLongInt(i64::from(count));
    match warren_amqp::properties::with_header(msg.raw_properties(), "x-delivery-count", value) {
        Some(props) => Message::new(
            msg.exchange.clone(),
            msg.routing_key(),
            &props,
            [msg.body()],
            msg.flags(),
        ),
        None => msg.clone(),
    }
}

/// One delivery held back, with the body it was read with.
pub(super) struct Waiting {
    pub(super) d: Delivery,
    pub(super) redelivered: bool,
    pub(super) msg: Message,
}

/// Held-back deliveries by channel id, oldest first.
#[derive(Default)]
pub(super) struct Stalled(HashMap<u64, VecDeque<Waiting>>);

impl Stalled {
    /// Whether deliveries to `channel` wait (a new one must queue behind
    /// them, or a consumer would see its queue's messages out of order).
    pub(super) fn has(&self, channel: u64) -> bool {
        self.0.contains_key(&channel)
    }

    /// Holds `w` back until its channel has credit.
    pub(super) fn push(&mut self, w: Waiting) {
        self.0.entry(w.d.consumer.channel).or_default().push_back(w);
    }

    /// Puts `w` back at the head of its channel's line (no credit yet).
    pub(super) fn push_front(&mut self, w: Waiting) {
        self.0
            .entry(w.d.consumer.channel)
            .or_default()
            .push_front(w);
    }

    /// The channels with deliveries waiting.
    pub(super) fn channels(&self) -> Vec<u64> {
        self.0.keys().copied().collect()
    }

    /// The oldest delivery waiting for `channel`.
    pub(super) fn pop(&mut self, channel: u64) -> Option<Waiting> {
        let q = self.0.get_mut(&channel)?;
        let w = q.pop_front();
        if q.is_empty() {
            self.0.remove(&channel);
        }
        w
    }

    /// Drops what waits for the channels `gone` matches (the state
    /// machine returns what they held).
    pub(super) fn drop_channels(&mut self, gone: impl Fn(u64) -> bool) {
        self.0.retain(|ch, _| !gone(*ch));
    }

    /// Takes what waits for consumer `key` (cancelled): the ids to return
    /// to the queue, which it would otherwise hold until its channel
    /// closes.
    pub(super) fn take_consumer(&mut self, key: &ConsumerKey) -> Vec<MsgId> {
        let Some(q) = self.0.get_mut(&key.channel) else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        q.retain(|w| {
            let mine = w.d.consumer.tag == key.tag;
            if mine {
                ids.push(w.d.msg.id);
            }
            !mine
        });
        if q.is_empty() {
            self.0.remove(&key.channel);
        }
        ids
    }
}
