//! Direct reply-to: RabbitMQ's `amq.rabbitmq.reply-to` pseudo-queue.
//!
//! An RPC client consumes from `amq.rabbitmq.reply-to` (no-ack) and
//! publishes its requests with `reply_to` set to that name; its channel
//! rewrites the property to an [`Address`] naming the channel, and a
//! server's reply published to the default exchange with that address as
//! routing key goes straight to the client's channel, without a queue. As
//! in RabbitMQ, replies are not stored anywhere: one whose requester is gone
//! is dropped.
//!
//! The address carries the channel's cluster-unique id (whose top bits name
//! its node) and a random key, so a reply published on any node finds the
//! channel (through the queue link to its node when it is elsewhere) and a
//! guessed address reaches nobody.
//!
//! [`ReplyConsumers`] holds this node's reply consumers. Deliveries to one
//! take the same per-consumer credit as a queue's ([`ConsumerFlow`]): a
//! requester whose connection has [`crate::api::DELIVERY_WINDOW`] replies
//! not yet written (its client does not read its socket) loses the next
//! ones, with a warning, rather than have the node buffer them without
//! bound. RabbitMQ buffers them in the channel's mailbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;
use warren_core::queue::{ChannelKey, connection_node};
use warren_core::{Message, Name, NodeId, QueueId};

use crate::api::{ConnEvent, ConnTx, ConsumerFlow, DeliverEvent};

/// The pseudo-queue's name.
pub const PSEUDO_QUEUE: &str = "amq.rabbitmq.reply-to";
/// What every address starts with.
pub const PREFIX: &str = "amq.rabbitmq.reply-to.";

/// Queue ids at or above this one are never a queue's (metadata counts up
/// from 1): `REPLY_IDS_START + node` carries replies to `node` over the
/// queue link, as if it were a queue homed there.
const REPLY_IDS_START: QueueId = u64::MAX - 0xffff;

/// The pseudo queue id that carries replies to `node`.
pub fn link_id(node: NodeId) -> QueueId {
    REPLY_IDS_START + (node & 0xffff)
}

/// Whether `id` is a [`link_id`], not a queue.
pub fn is_link_id(id: QueueId) -> bool {
    id >= REPLY_IDS_START
}

/// Where replies to one channel's reply consumer go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    /// The channel's cluster-unique id.
    pub channel: u64,
    /// The random key of this consumer.
    pub key: u128,
}

impl Address {
    /// The routing key a reply is published with.
    pub fn name(&self) -> String {
        format!("{PREFIX}{:016x}.{:032x}", self.channel, self.key)
    }

    /// The address named by `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(PREFIX)?;
        let (channel, key) = rest.split_once('.')?;
        if channel.len() != 16 || key.len() != 32 {
            return None;
        }
        Some(Self {
            channel: u64::from_str_radix(channel, 16).ok()?,
            key: u128::from_str_radix(key, 16).ok()?,
        })
    }

    /// The node of the channel.
    pub fn node(&self) -> NodeId {
        connection_node(self.channel)
    }
}

/// A reply consumer: the channel and its connection.
#[derive(Debug)]
struct ReplyConsumer {
    key: u128,
    tag: Name,
    channel: ChannelKey,
    out: ConnTx,
    flow: Arc<ConsumerFlow>,
}

/// What became of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handed {
    /// On its way to the consumer's connection.
    Delivered,
    /// No such consumer on this node (gone, or never was).
    NoConsumer,
    /// The consumer's connection has a full window of unwritten replies.
    Dropped,
}

/// The reply consumers of this node, by channel id.
#[derive(Debug)]
pub struct ReplyConsumers {
    me: NodeId,
    by_channel: Mutex<HashMap<u64, ReplyConsumer>>,
}

impl ReplyConsumers {
    /// None yet, on node `me`.
    pub fn new(me: NodeId) -> Self {
        Self {
            me,
            by_channel: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ReplyConsumer>> {
        self.by_channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `tag` the reply consumer of `channel`, whose connection takes
    /// events on `out`; `key` must be random (it is what keeps replies from
    /// reaching a channel that did not ask). Lasts until the returned
    /// registration drops.
    pub fn register(
        self: &Arc<Self>,
        channel: ChannelKey,
        tag: Name,
        key: u128,
        out: ConnTx,
    ) -> Registration {
        // Nothing wakes on a reply consumer's credit: it has no queue.
        let (wake, _) = mpsc::channel(1);
        let consumer = ReplyConsumer {
            key,
            tag: tag.clone(),
            channel,
            out,
            flow: Arc::new(ConsumerFlow::new(wake)),
        };
        self.map().insert(channel.id, consumer);
        Registration {
            address: Address {
                channel: channel.id,
                key,
            },
            tag,
            consumers: self.clone(),
        }
    }

    /// Whether `address` names a reply consumer of this node.
    pub fn exists(&self, address: &Address) -> bool {
        self.map()
            .get(&address.channel)
            .is_some_and(|c| c.key == address.key)
    }

    /// Hands `msg`, published to `address`, to its consumer here.
    pub fn deliver(&self, address: &Address, msg: Message) -> Handed {
        let map = self.map();
        let Some(c) = map.get(&address.channel).filter(|c| c.key == address.key) else {
            return Handed::NoConsumer;
        };
        if !c.flow.try_acquire() {
            tracing::warn!(
                channel = address.channel,
                "a direct reply-to consumer's connection has a full window of unwritten \
                 replies; a reply is dropped"
            );
            return Handed::Dropped;
        }
        let ev = DeliverEvent {
            channel: c.channel,
            tag: c.tag.clone(),
            queue: link_id(self.me),
            seq: 0,
            needs_ack: false,
            redelivered: false,
            msg,
            flow: c.flow.clone(),
        };
        match c.out.send(ConnEvent::Deliver(ev)) {
            Ok(()) => Handed::Delivered,
            // The connection is going: its channel's registration goes too.
            Err(_) => Handed::NoConsumer,
        }
    }

    /// Hands a reply that came over a queue link to its consumer here.
    pub fn deliver_routed(&self, msg: Message) {
        match Address::parse(msg.routing_key()) {
            Some(a) => {
                self.deliver(&a, msg);
            }
            None => tracing::debug!("a reply over a link names no reply address"),
        }
    }
}

/// A channel's reply consumer, registered until this drops.
#[derive(Debug)]
pub struct Registration {
    address: Address,
    tag: Name,
    consumers: Arc<ReplyConsumers>,
}

impl Registration {
    /// Where replies to it go.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Its consumer tag.
    pub fn tag(&self) -> &Name {
        &self.tag
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.consumers.map();
        if map
            .get(&self.address.channel)
            .is_some_and(|c| c.key == self.address.key)
        {
            map.remove(&self.address.channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use warren_core::message::MessageFlags;
    use warren_core::queue::connection_id;

    use super::*;

    fn msg(rk: &str) -> Message {
        Message::new(
            "".into(),
            rk,
            &[0, 0],
            [&b"reply"[..]],
            MessageFlags::default(),
        )
    }

    #[test]
    fn an_address_names_its_channel_and_node_and_parses_back() {
        let a = Address {
            channel: connection_id(3, 9, 77),
            key: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        };
        let name = a.name();
        assert!(name.starts_with(PREFIX));
        assert_eq!(Address::parse(&name), Some(a));
        assert_eq!(a.node(), 3);
        for bad in [
            PSEUDO_QUEUE,
            "amq.rabbitmq.reply-to.",
            "amq.rabbitmq.reply-to.zz",
            "amq.rabbitmq.reply-to.0000000000000001.short",
            "amq.rabbitmq.reply-to.000000000000000g.00000000000000000000000000000001",
            "rpc_queue",
        ] {
            assert_eq!(Address::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn link_ids_are_not_queue_ids() {
        assert!(is_link_id(link_id(0)));
        assert!(is_link_id(link_id(65_535)));
        assert!(!is_link_id(1 << 40));
        assert_ne!(link_id(1), link_id(2));
    }

    #[tokio::test]
    async fn a_reply_reaches_its_consumer_only_with_the_right_key_and_while_registered() {
        let consumers = Arc::new(ReplyConsumers::new(1));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let key = ChannelKey {
            id: connection_id(1, 1, 5),
            channel: 2,
        };
        let reg = consumers.register(key, "amq.ctag-r".into(), 42, tx);
        let a = *reg.address();
        assert!(consumers.exists(&a));
        let forged = Address { key: 43, ..a };
        assert!(!consumers.exists(&forged));
        assert_eq!(consumers.deliver(&forged, msg("x")), Handed::NoConsumer);
        assert_eq!(consumers.deliver(&a, msg(&a.name())), Handed::Delivered);
        match rx.try_recv() {
            Ok(ConnEvent::Deliver(d)) => {
                assert_eq!(d.channel, key);
                assert_eq!(&*d.tag, "amq.ctag-r");
                assert!(!d.needs_ack);
                assert_eq!(d.msg.routing_key(), a.name());
            }
            other => panic!("expected a delivery, got {other:?}"),
        }
        drop(reg);
        assert!(!consumers.exists(&a));
        assert_eq!(consumers.deliver(&a, msg("x")), Handed::NoConsumer);
    }

    #[tokio::test]
    async fn replies_beyond_the_window_are_dropped_until_written() {
        let consumers = Arc::new(ReplyConsumers::new(1));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let key = ChannelKey { id: 7, channel: 1 };
        let reg = consumers.register(key, "t".into(), 1, tx);
        let a = *reg.address();
        for _ in 0..crate::api::DELIVERY_WINDOW {
            assert_eq!(consumers.deliver(&a, msg("x")), Handed::Delivered);
        }
        assert_eq!(consumers.deliver(&a, msg("x")), Handed::Dropped);
        // The connection writes one: there is room again.
        if let Ok(ConnEvent::Deliver(d)) = rx.try_recv() {
            d.flow.release();
        }
        assert_eq!(consumers.deliver(&a, msg("x")), Handed::Delivered);
    }
}
