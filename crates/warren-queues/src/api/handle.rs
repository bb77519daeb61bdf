//! [`QueueHandle`]: what a channel holds to use a queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::{mpsc, oneshot};
use warren_core::queue::{ChannelKey, ConsumerId, ConsumerSpec, Entry};
use warren_core::{AmqpError, Name, QueueId, ReplyCode};

use super::events::ConnTx;
use super::flow::{ByteBudget, ChannelCredit, ConsumerFlow, QueueFlow};
use super::mailbox::{ConsumerLink, PublishBatch, QueueMsg, Verdict};

/// Why a queue's mailbox closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Ending {
    /// Still serving (a closed mailbox then means its task failed).
    Running = 0,
    /// Deleted: its messages are gone, as the metadata says.
    Deleted = 1,
    /// Stopped without being deleted (the node is stopping): its messages
    /// stay, and what reaches it now is refused, never dropped as accepted.
    Stopped = 2,
}

/// See [`QueueHandle::end_mark`].
#[derive(Clone, Debug)]
pub(crate) struct EndMark(Arc<AtomicU8>);

impl EndMark {
    /// Records why the mailbox is about to close.
    pub(crate) fn mark(&self, why: Ending) {
        self.0.store(why as u8, Ordering::Release);
    }
}

/// A queue's address: cheap to clone, held by the registry and by channels.
///
/// Every method is the same for every queue type. A queue that was deleted
/// answers as RabbitMQ does (404 for requests, confirms for publishes routed
/// to it); a queue that stopped or failed refuses (541, nacks).
#[derive(Clone, Debug)]
pub struct QueueHandle {
    id: QueueId,
    name: Name,
    vhost: Name,
    durable: bool,
    tx: mpsc::Sender<QueueMsg>,
    flow: Arc<QueueFlow>,
    ending: Arc<AtomicU8>,
    /// For a queue on another node: the byte budget of the link to it.
    budget: Option<Arc<ByteBudget>>,
}

impl QueueHandle {
    /// A handle on the mailbox `tx` of a queue (for queue types).
    pub(crate) fn new(
        id: QueueId,
        name: Name,
        vhost: Name,
        durable: bool,
        tx: mpsc::Sender<QueueMsg>,
    ) -> Self {
        Self {
            id,
            name,
            vhost,
            durable,
            tx,
            flow: Arc::new(QueueFlow::default()),
            ending: Arc::new(AtomicU8::new(Ending::Running as u8)),
            budget: None,
        }
    }

    /// Publishes through this handle take their bytes from `budget` (a
    /// queue link's) before they enter the mailbox.
    pub(crate) fn with_budget(mut self, budget: Arc<ByteBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Records why the queue's mailbox is about to close (for queue types).
    pub(crate) fn mark(&self, why: Ending) {
        self.end_mark().mark(why);
    }

    /// Where the task serving the mailbox records why it ends; unlike a
    /// handle, it does not keep the mailbox open.
    pub(crate) fn end_mark(&self) -> EndMark {
        EndMark(self.ending.clone())
    }

    /// Why the queue's mailbox closed, if it did.
    pub fn ending(&self) -> Ending {
        match self.ending.load(Ordering::Acquire) {
            1 => Ending::Deleted,
            2 => Ending::Stopped,
            _ => Ending::Running,
        }
    }

    /// The queue's id (unique in the cluster).
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// The queue's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Durable: persistent messages routed to it wait for its disk write
    /// before they are confirmed.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// The signal the queue gives its publishers when consumers fall behind.
    pub fn flow(&self) -> &Arc<QueueFlow> {
        &self.flow
    }

    /// The mailbox, for the queue types of this crate.
    pub(crate) fn mailbox(&self) -> &mpsc::Sender<QueueMsg> {
        &self.tx
    }

    /// The answer to a request the queue can no longer take.
    fn gone(&self) -> AmqpError {
        match self.ending() {
            Ending::Deleted => AmqpError::not_found("queue", &self.name, &self.vhost),
            Ending::Stopped | Ending::Running => AmqpError::new(
                ReplyCode::InternalError,
                format!(
                    "queue '{}' in vhost '{}' is not running on this node",
                    self.name, self.vhost
                ),
            )
            .on_channel(),
        }
    }

    /// Sends the request `msg` builds around its reply channel and waits
    /// for the answer.
    async fn ask<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<T>) -> QueueMsg,
    ) -> Result<T, AmqpError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(msg(reply)).await.map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())
    }

    /// Hands a batch of messages to the queue. Waits while its mailbox is
    /// full: that is the backpressure that eventually stops the publishing
    /// connection from reading its socket. A queue deleted after routing
    /// drops the batch and confirms it, as RabbitMQ does; a queue that
    /// stopped nacks it.
    pub async fn publish(&self, mut batch: PublishBatch) {
        if let Some(budget) = &self.budget {
            let bytes = batch.items.iter().map(|(m, _)| m.memory_size()).sum();
            batch.budget = budget.take(bytes).await;
        }
        if let Err(mpsc::error::SendError(QueueMsg::Publish(b))) =
            self.tx.send(QueueMsg::Publish(batch)).await
        {
            b.release(self.ending() == Ending::Deleted);
        }
    }

    /// `basic.consume`: deliveries go to `out`, within the channel's
    /// `credit` and a delivery window of their own. Fails with 403 on an
    /// exclusivity conflict, 404 if the queue is gone.
    pub async fn consume(
        &self,
        spec: ConsumerSpec,
        out: ConnTx,
        credit: Arc<ChannelCredit>,
    ) -> Result<(), AmqpError> {
        let link = ConsumerLink {
            out,
            flow: Arc::new(ConsumerFlow::new(self.tx.clone())),
            credit,
        };
        self.ask(|reply| QueueMsg::Consume { spec, link, reply })
            .await?
    }

    /// `basic.cancel`: returns once the consumer is gone (at once if the
    /// queue is).
    pub async fn cancel(&self, consumer: ConsumerId) {
        let _ = self
            .ask(|tx| QueueMsg::Cancel {
                consumer,
                reply: Some(tx),
            })
            .await;
    }

    /// Acks, requeues or rejects messages delivered on `channel`. A queue
    /// that is gone has nothing left to settle.
    pub async fn settle(&self, channel: ChannelKey, seqs: Vec<u64>, verdict: Verdict) {
        let msg = QueueMsg::Settle {
            channel,
            seqs,
            verdict,
        };
        let _ = self.tx.send(msg).await;
    }

    /// A channel that used the queue closed: its consumers go, its unacked
    /// messages return to the queue.
    pub async fn channel_closed(&self, channel: ChannelKey) {
        let _ = self.tx.send(QueueMsg::ChannelClosed(channel)).await;
    }

    /// `basic.get`: the next ready message, if any, with the count left.
    /// An error when the queue could not answer (its leader changed, its
    /// home is unreachable): never an empty answer it did not mean.
    pub async fn get(
        &self,
        channel: ChannelKey,
        no_ack: bool,
    ) -> Result<Option<(Entry, u32)>, AmqpError> {
        self.ask(|reply| QueueMsg::Get {
            channel,
            no_ack,
            reply,
        })
        .await?
    }

    /// `queue.purge`: the number of ready messages removed.
    pub async fn purge(&self) -> Result<u32, AmqpError> {
        self.ask(QueueMsg::Purge).await
    }

    /// Ready messages and consumers (for `queue.declare-ok`).
    pub async fn status(&self) -> Result<(u32, u32), AmqpError> {
        self.ask(QueueMsg::Status).await
    }

    /// Before `queue.delete` is proposed: 406 under `if_unused` /
    /// `if_empty`, else the ready count. Changes nothing: the queue is
    /// deleted once the metadata change is applied on its home, so a delete
    /// that fails to commit leaves it whole.
    pub async fn check_delete(&self, if_unused: bool, if_empty: bool) -> Result<u32, AmqpError> {
        self.ask(|reply| QueueMsg::CheckDelete {
            if_unused,
            if_empty,
            reply,
        })
        .await?
    }

    /// Credit came back (prefetch released, `channel.flow` on): the queue
    /// tries to dispatch. Never waits; a full mailbox wakes the queue anyway.
    pub fn wake(&self) {
        let _ = self.tx.try_send(QueueMsg::Wake);
    }

    /// The queue left the metadata: its contents go, its consumers are
    /// cancelled. Does not wait for the queue to answer.
    pub(crate) async fn discard(&self) {
        let _ = self.tx.send(QueueMsg::Delete).await;
    }

    /// The node is stopping, or the queue left this node's registry
    /// without being deleted: its task ends (messages stay on disk).
    pub(crate) async fn stop(&self) {
        let _ = self.tx.send(QueueMsg::Stop).await;
    }
}
