//! What queues (and the store writer's completions) send to a connection.

use std::sync::Arc;

use tokio::sync::mpsc;
use warren_core::queue::ChannelKey;
use warren_core::{Message, Name, QueueId};

use super::flow::ConsumerFlow;

/// Sends events to one connection. Unbounded by type, bounded by credit: see
/// [`super::flow`].
pub type ConnTx = mpsc::UnboundedSender<ConnEvent>;

/// A message for one of the connection's consumers.
#[derive(Debug)]
pub struct DeliverEvent {
    /// The consumer's channel (number and opening).
    pub channel: ChannelKey,
    /// Consumer tag.
    pub tag: Name,
    /// The queue it comes from (for acks).
    pub queue: QueueId,
    /// Its seq in that queue.
    pub seq: u64,
    /// False for auto-ack consumers.
    pub needs_ack: bool,
    /// Delivered before.
    pub redelivered: bool,
    /// The message.
    pub msg: Message,
    /// The consumer's credit, released once the delivery is written.
    pub flow: Arc<ConsumerFlow>,
}

/// An event for a connection.
#[derive(Debug)]
pub enum ConnEvent {
    /// A delivery.
    Deliver(DeliverEvent),
    /// A queue took these publishes on its own terms: enqueued, and written
    /// to disk first when they are persistent in a durable queue.
    Accepted {
        /// (channel, publish seq)
        confirms: Vec<(ChannelKey, u64)>,
        /// False: the queue could not take them (a write failed, its home is
        /// unreachable): nack them.
        ok: bool,
    },
    /// The queue of a consumer went away: send `basic.cancel`.
    Cancelled {
        /// The consumer's channel.
        channel: ChannelKey,
        /// Consumer tag.
        tag: Name,
    },
}
