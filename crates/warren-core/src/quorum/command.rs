//! The replicated protocol of a quorum queue: what a log entry asks
//! ([`Command`]) and what applying it produced ([`Applied`]).

use super::{ConsumerKey, MsgId, QMsg};
use crate::NodeId;

/// A publisher's identity for de-duplication: its channel and the confirm
/// sequence number of this publish on that channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Publisher {
    /// The channel's cluster-unique id.
    pub channel: u64,
    /// The publish's sequence number on it.
    pub seq: u64,
}

/// One change of a quorum queue. The body of an enqueue is not here: the
/// runtime's log entry carries it beside the command and stores it under the
/// id the reply names.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// A published message of `size` bytes; `publisher` is absent for
    /// messages that need no de-duplication (no confirms asked).
    Enqueue {
        /// Who published it, for de-duplication of re-sends.
        publisher: Option<Publisher>,
        /// Its size in bytes.
        size: u32,
        /// Its own deadline (publish time plus `expiration`), Unix ms;
        /// the queue's `x-message-ttl` may make it earlier.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires: Option<u64>,
    },
    /// The leader's wall clock (Unix ms) when it proposed the entry this
    /// heads, and the nudge that expires messages at the head when nothing
    /// else happens. The log's clock only moves forward.
    Clock {
        /// The time.
        now: u64,
    },
    /// `basic.consume`, or a change of its prefetch.
    Checkout {
        /// The consumer.
        consumer: ConsumerKey,
        /// The node of its channel.
        node: NodeId,
        /// How many it may hold (0: unlimited).
        prefetch: u32,
        /// Auto-ack.
        no_ack: bool,
    },
    /// `basic.cancel`: no more deliveries; what it holds stays until settled.
    Cancel {
        /// The consumer.
        consumer: ConsumerKey,
    },
    /// `basic.ack`: the messages are done.
    Settle {
        /// The channel they were delivered on (any of its consumers, or
        /// its `basic.get`, may hold them).
        channel: u64,
        /// Which.
        ids: Vec<MsgId>,
    },
    /// `basic.reject`/`basic.nack` with requeue: back to their places.
    Return {
        /// The channel they were delivered on (any of its consumers, or
        /// its `basic.get`, may hold them).
        channel: u64,
        /// Which.
        ids: Vec<MsgId>,
    },
    /// `basic.reject`/`basic.nack` without requeue: dropped, or
    /// dead-lettered by a queue with a dead-letter exchange.
    Discard {
        /// The channel they were delivered on (any of its consumers, or
        /// its `basic.get`, may hold them).
        channel: u64,
        /// Which.
        ids: Vec<MsgId>,
    },
    /// `basic.get` from the channel `channel` on `node`.
    Dequeue {
        /// The channel's cluster-unique id.
        channel: u64,
        /// Its node.
        node: NodeId,
        /// Settled at once (`no_ack`), or held under [`ConsumerKey::get`].
        no_ack: bool,
    },
    /// `queue.purge`: every ready message goes (held ones stay, as in RabbitMQ).
    Purge,
    /// A channel closed: its consumers go, what they held is returned, and
    /// its publisher record is forgotten.
    ChannelDown {
        /// The channel's cluster-unique id.
        channel: u64,
    },
    /// A node left or died: every consumer of its channels goes, as above.
    NodeDown {
        /// The node.
        node: NodeId,
    },
    /// Dead letters the node's publisher re-published (every queue they
    /// were routed to accepted them) or had nowhere to send: they go.
    DeadLettered {
        /// Which.
        ids: Vec<MsgId>,
    },
    /// A new leader's ask for every dead letter not yet re-published: the
    /// old leader may have died with them on their way.
    DeadLetterAgain,
    /// The queue's settings as its arguments give them now, from a new
    /// leader: a group created by a version that knew fewer arguments
    /// takes up the ones it ignored (messages already queued keep the
    /// deadlines they were given).
    Configure {
        /// The settings.
        config: super::QuorumConfig,
    },
}

/// What a command answers to whoever proposed it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    /// An enqueue: its id, or `None` for a duplicate (confirm it anyway).
    Enqueued(Option<MsgId>),
    /// An enqueue a full queue refused (`x-overflow: reject-publish`):
    /// nack it.
    Rejected,
    /// A dequeue: the message and how many are left ready, or nothing.
    Got(Option<(QMsg, u64)>),
    /// A purge: how many messages went.
    Purged(u64),
    /// Anything else.
    Done,
}

/// A message for a consumer, sent by the leader to the consumer's node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    /// Who gets it.
    pub consumer: ConsumerKey,
    /// The node of its channel.
    pub node: NodeId,
    /// The message.
    pub msg: QMsg,
    /// The consumer is auto-ack: no delivery tag to wait for.
    pub no_ack: bool,
}

/// What applying one command produced. Every replica computes the same; the
/// leader sends `deliveries`, every replica deletes the bodies of `removed`
/// (after reading those the reply and the deliveries need).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The answer to the proposer.
    pub reply: Reply,
    /// Messages now held by consumers, in the order they were given.
    pub deliveries: Vec<Delivery>,
    /// Messages gone for good (settled, discarded, purged, over the
    /// delivery limit, dead letters re-published).
    pub removed: Vec<MsgId>,
    /// Messages to dead-letter, and why (only for a queue whose settings
    /// say it dead-letters): the leader re-publishes them and proposes
    /// [`Command::DeadLettered`] once they are accepted. They are not in
    /// `removed`: their bodies stay until then.
    pub dead: Vec<(MsgId, crate::dead_letter::Reason)>,
}

impl Applied {
    pub(super) fn new(reply: Reply) -> Self {
        Self {
            reply,
            deliveries: Vec::new(),
            removed: Vec::new(),
            dead: Vec::new(),
        }
    }
}
