//! The messages a queue's mailbox takes: the protocol every queue type
//! serves. Channels do not send them directly; [`super::QueueHandle`] does.

use std::sync::Arc;

use tokio::sync::oneshot;
use warren_core::queue::{ChannelKey, ConsumerId, ConsumerSpec, Entry};
use warren_core::{AmqpError, Message};

use super::events::{ConnEvent, ConnTx};
use super::flow::{ChannelCredit, ConsumerFlow};

/// Messages from one connection for one queue.
#[derive(Debug)]
pub struct PublishBatch {
    /// The publishing connection (for confirms), with its id.
    pub from: Option<(u64, ConnTx)>,
    /// Each message with its confirm (channel, seq) when the publisher waits
    /// for this queue to write it.
    pub items: Vec<(Message, Option<(ChannelKey, u64)>)>,
    /// The share of a link's [`super::ByteBudget`] the batch holds until it
    /// is encoded for the wire (`None` for local queues).
    pub budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl PublishBatch {
    /// The batch will not be enqueued: its publishers are answered now,
    /// confirmed (`ok`, a queue deleted after routing) or nacked.
    pub fn release(self, ok: bool) {
        let confirms: Vec<(ChannelKey, u64)> = self.items.iter().filter_map(|(_, c)| *c).collect();
        if let (false, Some((_, tx))) = (confirms.is_empty(), self.from) {
            let _ = tx.send(ConnEvent::Accepted { confirms, ok });
        }
    }
}

/// How a queue reaches one consumer.
#[derive(Debug, Clone)]
pub struct ConsumerLink {
    /// The consumer's connection.
    pub out: ConnTx,
    /// Per-consumer delivery credit.
    pub flow: Arc<ConsumerFlow>,
    /// The channel's prefetch credit and flow switch.
    pub credit: Arc<ChannelCredit>,
}

/// Result of `basic.get`: the entry and how many messages remain ready.
pub type GetReply = Result<Option<(Entry, u32)>, AmqpError>;

/// What a consumer's answer does with messages it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `basic.ack`: done with.
    Ack,
    /// `basic.reject`/`basic.nack` with requeue: back to their places.
    Requeue,
    /// `basic.reject`/`basic.nack` without requeue: dropped, or
    /// dead-lettered by a queue with a dead-letter exchange.
    Reject,
}

/// The mailbox protocol of a queue.
#[derive(Debug)]
pub enum QueueMsg {
    /// Publishes.
    Publish(PublishBatch),
    /// `basic.consume`.
    Consume {
        /// The consumer.
        spec: ConsumerSpec,
        /// How to reach it.
        link: ConsumerLink,
        /// Ok, or 403 for exclusivity conflicts.
        reply: oneshot::Sender<Result<(), AmqpError>>,
    },
    /// `basic.cancel`.
    Cancel {
        /// The consumer.
        consumer: ConsumerId,
        /// Answered once the consumer is gone.
        reply: Option<oneshot::Sender<()>>,
    },
    /// `basic.ack`, `basic.reject` or `basic.nack`.
    Settle {
        /// The channel the messages were delivered on.
        channel: ChannelKey,
        /// Their seqs.
        seqs: Vec<u64>,
        /// Done with, put back, or refused.
        verdict: Verdict,
    },
    /// A channel closed: drop its consumers, requeue its unacked messages.
    ChannelClosed(ChannelKey),
    /// `basic.get`.
    Get {
        /// The channel asking.
        channel: ChannelKey,
        /// Settle on delivery.
        no_ack: bool,
        /// The answer.
        reply: oneshot::Sender<GetReply>,
    },
    /// `queue.purge`: answers with the number of messages removed.
    Purge(oneshot::Sender<u32>),
    /// Message and consumer counts.
    Status(oneshot::Sender<(u32, u32)>),
    /// Before `queue.delete` is proposed: checks its conditions and counts
    /// the ready messages. Changes nothing.
    CheckDelete {
        /// Refuse while it has consumers.
        if_unused: bool,
        /// Refuse while it has ready messages.
        if_empty: bool,
        /// The ready count, or the 406.
        reply: oneshot::Sender<Result<u32, AmqpError>>,
    },
    /// The queue left the metadata: its consumers are cancelled, its
    /// messages and their disk copies go, its task ends.
    Delete,
    /// Credit came back somewhere: try to dispatch.
    Wake,
    /// The node is stopping: exit (messages stay on disk if durable).
    Stop,
}

/// Why a queue cannot take a message it was sent.
#[derive(Debug)]
pub enum Absent {
    /// It was deleted: publishes are confirmed (RabbitMQ confirms messages
    /// routed to a queue being deleted), a delete succeeds with 0.
    Deleted(AmqpError),
    /// Its home node is unreachable: publishes are nacked, a delete fails.
    Unreachable(AmqpError),
}

impl QueueMsg {
    /// Answers this message as a queue that is not there would.
    pub fn answer_absent(self, why: &Absent) {
        let (err, deleted) = match why {
            Absent::Deleted(e) => (e, true),
            Absent::Unreachable(e) => (e, false),
        };
        match self {
            QueueMsg::Publish(b) => b.release(deleted),
            QueueMsg::Consume { reply, .. } => {
                let _ = reply.send(Err(err.clone()));
            }
            QueueMsg::Cancel { reply: Some(r), .. } => {
                let _ = r.send(());
            }
            QueueMsg::Get { reply, .. } => {
                let _ = reply.send(Err(err.clone()));
            }
            QueueMsg::Purge(r) => {
                let _ = r.send(0);
            }
            QueueMsg::Status(r) => {
                let _ = r.send((0, 0));
            }
            QueueMsg::CheckDelete { reply, .. } => {
                let _ = reply.send(if deleted { Ok(0) } else { Err(err.clone()) });
            }
            _ => {}
        }
    }
}
