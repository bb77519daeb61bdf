//! The home side of queue links: another node's publishes, consumers, acks
//! and requests for the queues this node holds, handed to their actors as
//! if a local connection had sent them.
//!
//! Each link acts like one connection of this node: deliveries, confirms and
//! cancellations the actors send to it are batched into `Down` frames by a
//! pump task. Its consumers get their own delivery credit (returned by the
//! other node as its clients' connections write them) and a prefetch mirror
//! per channel (released by the acks that come back). When the link ends
//! (the other node died or was cut off), every channel it carried is closed
//! on every queue it touched: unacked messages go back to their queues.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use warren_cluster::pb::queues as pb;
use warren_cluster::pb::queues::queues_server::{Queues, QueuesServer};
use warren_core::queue::{ChannelKey, ConsumerId, ConsumerSpec};
use warren_core::{AmqpError, Message, QueueId};

use super::flow_mirror::Reports;
use super::wire::{
    channel_from, channel_to, down_bytes, error_to, frames, message_from, message_to,
};
use crate::api::{
    ChannelCredit, ConnEvent, ConnTx, ConsumerFlow, ConsumerLink, DELIVERY_WINDOW, PublishBatch,
    QueueHandle, QueueMsg, Verdict,
};
use crate::ids::Ids;
use crate::reply_to::{self, ReplyConsumers};

/// Frames buffered towards the other node.
const DOWN_FRAMES: usize = 64;
/// Most items in one `Down` frame.
const FRAME_ITEMS: usize = 512;

/// Where a queue a link names stands on its home.
#[derive(Debug)]
pub enum Lookup {
    /// Served here.
    Here(QueueHandle),
    /// Not in the metadata any more: deleted.
    Gone,
    /// Not served here now (the node is stopping, or its metadata says the
    /// queue lives elsewhere): what is sent to it is refused.
    Unavailable,
}

/// A boxed future of a [`Lookup`].
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Lookup> + Send + 'a>>;

/// What the home side needs of the node: its own queues.
pub trait LocalQueues: Send + Sync + std::fmt::Debug + 'static {
    /// The handle of queue `id` if this node is its home and serves it now.
    fn local(&self, id: QueueId) -> Option<QueueHandle>;
    /// Brings the node's queues in step with the metadata it has applied,
    /// then says where queue `id` stands. For a queue [`Self::local`] did
    /// not find: the other node may have applied its declaration a moment
    /// before this one started it.
    fn catch_up(&self, id: QueueId) -> LookupFuture<'_>;
    /// Whether the node's queues are started (links wait until they are).
    fn is_ready(&self) -> bool;
}

/// Serves queue links for the queues of this node.
#[derive(Debug, Clone)]
pub struct QueuesService {
    registry: Weak<dyn LocalQueues>,
    ids: Arc<Ids>,
    alarm: watch::Receiver<bool>,
    replies: Arc<ReplyConsumers>,
}

impl QueuesService {
    /// The service for the queues of `registry`; each link is a connection
    /// of this node with an id from `ids`, and tells the other node of
    /// `alarm` (this node's own memory alarm). Direct replies that come
    /// over a link go to `replies`.
    pub fn new(
        registry: Weak<dyn LocalQueues>,
        ids: Arc<Ids>,
        alarm: watch::Receiver<bool>,
        replies: Arc<ReplyConsumers>,
    ) -> Self {
        Self {
            registry,
            ids,
            alarm,
            replies,
        }
    }

    /// The tonic server for it.
    pub fn into_server(self) -> QueuesServer<Self> {
        QueuesServer::new(self).max_decoding_message_size(256 << 20)
    }
}

#[tonic::async_trait]
impl Queues for QueuesService {
    type LinkStream = ReceiverStream<Result<pb::Down, Status>>;

    async fn link(
        &self,
        request: Request<Streaming<pb::Up>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let registry = self
            .registry
            .upgrade()
            .ok_or_else(|| Status::unavailable("node stopping"))?;
        if !registry.is_ready() {
            return Err(Status::unavailable("node still starting"));
        }
        let (down_tx, down_rx) = mpsc::channel(DOWN_FRAMES);
        let (conn_tx, conn_rx) = mpsc::unbounded_channel();
        let (reply_tx, reply_rx) = mpsc::unbounded_channel();
        tokio::spawn(pump(conn_rx, reply_rx, self.alarm.clone(), down_tx));
        let link = Link {
            registry: self.registry.clone(),
            conn: self.ids.connection(),
            conn_tx,
            reply_tx,
            replies: self.replies.clone(),
            reports: Reports::default(),
            consumers: HashMap::new(),
            credits: HashMap::new(),
            channels: HashMap::new(),
        };
        tokio::spawn(link.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(down_rx)))
    }
}

/// Publishes of one frame for one queue, in order.
type Batch = (QueueId, Vec<(Message, Option<(ChannelKey, u64)>)>);

/// One link's state on the home side.
struct Link {
    registry: Weak<dyn LocalQueues>,
    /// The id this link has as a "connection" of this node (for confirms).
    conn: u64,
    conn_tx: ConnTx,
    /// Replies to requests and flow reports, for the pump.
    reply_tx: mpsc::UnboundedSender<pb::down_item::Op>,
    /// This node's direct reply-to consumers.
    replies: Arc<ReplyConsumers>,
    /// What the other node was told of each queue's flow signal.
    reports: Reports,
    consumers: HashMap<ConsumerId, (QueueId, ChannelKey, Arc<ConsumerFlow>)>,
    /// Prefetch mirrors of the other node's channels.
    credits: HashMap<ChannelKey, Arc<ChannelCredit>>,
    /// Queues each channel used (closed on them when the link ends).
    channels: HashMap<ChannelKey, HashSet<QueueId>>,
}

fn reply(request: u64, result: pb::reply::Result) -> pb::down_item::Op {
    pb::down_item::Op::Reply(pb::Reply {
        request,
        result: Some(result),
    })
}

fn not_found(q: QueueId) -> pb::reply::Result {
    pb::reply::Result::Error(error_to(&AmqpError::new(
        warren_core::ReplyCode::NotFound,
        format!("no queue with id {q} on this node"),
    )))
}

fn unavailable(q: QueueId) -> pb::reply::Result {
    pb::reply::Result::Error(error_to(
        &AmqpError::new(
            warren_core::ReplyCode::InternalError,
            format!("queue {q} is not served by its home node now"),
        )
        .on_channel(),
    ))
}

impl Link {
    /// Where queue `q` stands here, caught up with the applied metadata.
    async fn find(&self, q: QueueId) -> Lookup {
        let Some(node) = self.registry.upgrade() else {
            return Lookup::Unavailable;
        };
        match node.local(q) {
            Some(h) => Lookup::Here(h),
            None => node.catch_up(q).await,
        }
    }

    /// The handle of queue `q`, or the error to answer a request with.
    async fn queue(&self, q: QueueId) -> Result<QueueHandle, pb::reply::Result> {
        match self.find(q).await {
            Lookup::Here(h) => Ok(h),
            Lookup::Gone => Err(not_found(q)),
            Lookup::Unavailable => Err(unavailable(q)),
        }
    }

    async fn run(mut self, mut inbound: Streaming<pb::Up>) {
        let mut batches: Vec<Batch> = Vec::new();
        while let Ok(Some(frame)) = inbound.message().await {
            for item in frame.items {
                let q = item.queue;
                match item.op {
                    Some(pb::up_item::Op::Publish(p)) => {
                        let Some(msg) = p.message.and_then(message_from) else {
                            continue;
                        };
                        let confirm = channel_from(p.channel).map(|k| (k, p.confirm_seq));
                        match batches.last_mut() {
                            Some((bq, items)) if *bq == q => items.push((msg, confirm)),
                            _ => batches.push((q, vec![(msg, confirm)])),
                        }
                    }
                    Some(op) => {
                        // Order matters within a queue: publishes first.
                        self.flush(&mut batches).await;
                        self.handle(q, op).await;
                    }
                    None => {}
                }
            }
            self.flush(&mut batches).await;
        }
        self.close_all().await;
    }

    async fn flush(&mut self, batches: &mut Vec<Batch>) {
        for (q, items) in batches.drain(..) {
            if reply_to::is_link_id(q) {
                // Direct replies: never confirmed by anyone (the publisher's
                // node confirmed them when it routed them).
                for (msg, _) in items {
                    self.replies.deliver_routed(msg);
                }
                continue;
            }
            let batch = PublishBatch {
                from: Some((self.conn, self.conn_tx.clone())),
                items,
                budget: None,
            };
            match self.find(q).await {
                Lookup::Here(h) => {
                    h.publish(batch).await;
                    self.reports.after_publish(&h, &self.reply_tx);
                }
                // Deleted meanwhile: RabbitMQ confirms such messages.
                Lookup::Gone => batch.release(true),
                // Nothing took them: nacked, never confirmed.
                Lookup::Unavailable => batch.release(false),
            }
        }
    }

    fn track(&mut self, key: ChannelKey, q: QueueId) {
        self.channels.entry(key).or_default().insert(q);
    }

    /// Sends `msg` to queue `q`; the error to answer with when it is not
    /// served here.
    async fn send(&self, q: QueueId, msg: QueueMsg) -> Result<(), pb::reply::Result> {
        let h = self.queue(q).await?;
        h.mailbox().send(msg).await.map_err(|_| unavailable(q))
    }

    /// Answers `request` with what `rx` yields, without holding up the link.
    fn answer<T: Send + 'static>(
        &self,
        request: u64,
        rx: oneshot::Receiver<T>,
        q: QueueId,
        f: impl FnOnce(T) -> pb::reply::Result + Send + 'static,
    ) {
        let tx = self.reply_tx.clone();
        tokio::spawn(async move {
            let r = match rx.await {
                Ok(v) => f(v),
                Err(_) => not_found(q),
            };
            let _ = tx.send(reply(request, r));
        });
    }

    async fn handle(&mut self, q: QueueId, op: pb::up_item::Op) {
        use pb::up_item::Op;
        match op {
            Op::Publish(_) => {}
            Op::Consume(c) => {
                let Some(key) = channel_from(c.channel) else {
                    return;
                };
                let h = match self.queue(q).await {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = self.reply_tx.send(reply(c.request, e));
                        return;
                    }
                };
                let credit = self
                    .credits
                    .entry(key)
                    .or_insert_with(|| {
                        let cr = Arc::new(ChannelCredit::default());
                        cr.set_limit(c.channel_prefetch);
                        cr
                    })
                    .clone();
                let flow = Arc::new(ConsumerFlow::new(h.mailbox().clone()));
                self.consumers.insert(c.consumer, (q, key, flow.clone()));
                self.track(key, q);
                let spec = ConsumerSpec {
                    id: c.consumer,
                    tag: c.tag.into(),
                    channel: key,
                    prefetch: c.prefetch,
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                    priority: c.priority,
                };
                let (tx, rx) = oneshot::channel();
                let link = ConsumerLink {
                    out: self.conn_tx.clone(),
                    flow,
                    credit,
                };
                let msg = QueueMsg::Consume {
                    spec,
                    link,
                    reply: tx,
                };
                if h.mailbox().send(msg).await.is_err() {
                    let _ = self.reply_tx.send(reply(c.request, unavailable(q)));
                    return;
                }
                self.answer(c.request, rx, q, |r: Result<(), AmqpError>| match r {
                    Ok(()) => pb::reply::Result::Done(true),
                    Err(e) => pb::reply::Result::Error(error_to(&e)),
                });
            }
            Op::Cancel(c) => {
                self.consumers.remove(&c.consumer);
                let (tx, rx) = oneshot::channel();
                let want = c.request != 0;
                let msg = QueueMsg::Cancel {
                    consumer: c.consumer,
                    reply: want.then_some(tx),
                };
                let sent = self.send(q, msg).await;
                if want {
                    if sent.is_ok() {
                        self.answer(c.request, rx, q, |()| pb::reply::Result::Done(true));
                    } else {
                        let _ = self
                            .reply_tx
                            .send(reply(c.request, pb::reply::Result::Done(true)));
                    }
                }
            }
            Op::Settle(s) => {
                let Some(key) = channel_from(s.channel) else {
                    return;
                };
                let n = u32::try_from(s.seqs.len()).unwrap_or(u32::MAX);
                let _ = self
                    .send(
                        q,
                        QueueMsg::Settle {
                            channel: key,
                            seqs: s.seqs,
                            verdict: match (s.requeue, s.reject) {
                                (true, _) => Verdict::Requeue,
                                (false, true) => Verdict::Reject,
                                (false, false) => Verdict::Ack,
                            },
                        },
                    )
                    .await;
                if let Some(cr) = self.credits.get(&key)
                    && cr.release(n)
                {
                    // The channel's limit is shared by its queues here:
                    // any of them may have a delivery waiting for it.
                    let used: Vec<QueueId> = self
                        .channels
                        .get(&key)
                        .map(|qs| qs.iter().copied().collect())
                        .unwrap_or_else(|| vec![q]);
                    for u in used {
                        let _ = self.send(u, QueueMsg::Wake).await;
                    }
                }
            }
            Op::ChannelClosed(c) => {
                let Some(key) = channel_from(Some(c)) else {
                    return;
                };
                let _ = self.send(q, QueueMsg::ChannelClosed(key)).await;
                self.consumers
                    .retain(|_, (cq, ck, _)| !(*cq == q && *ck == key));
                if let Some(qs) = self.channels.get_mut(&key) {
                    qs.remove(&q);
                    if qs.is_empty() {
                        self.channels.remove(&key);
                        self.credits.remove(&key);
                    }
                }
            }
            Op::Get(g) => {
                let Some(key) = channel_from(g.channel) else {
                    return;
                };
                self.track(key, q);
                let (tx, rx) = oneshot::channel();
                let msg = QueueMsg::Get {
                    channel: key,
                    no_ack: g.no_ack,
                    reply: tx,
                };
                if let Err(e) = self.send(q, msg).await {
                    let _ = self.reply_tx.send(reply(g.request, e));
                    return;
                }
                self.answer(g.request, rx, q, |r| match r {
                    Ok(Some((e, remaining))) => pb::reply::Result::Entry(pb::Entry {
                        seq: e.seq,
                        redelivered: e.redelivered,
                        message: Some(message_to(&e.msg)),
                        remaining,
                    }),
                    Ok(None) => pb::reply::Result::Empty(true),
                    Err(e) => pb::reply::Result::Error(error_to(&e)),
                });
            }
            Op::Purge(request) => {
                let (tx, rx) = oneshot::channel();
                if let Err(e) = self.send(q, QueueMsg::Purge(tx)).await {
                    let _ = self.reply_tx.send(reply(request, e));
                    return;
                }
                self.answer(request, rx, q, pb::reply::Result::Count);
            }
            Op::Status(request) => {
                let (tx, rx) = oneshot::channel();
                if let Err(e) = self.send(q, QueueMsg::Status(tx)).await {
                    let _ = self.reply_tx.send(reply(request, e));
                    return;
                }
                self.answer(request, rx, q, |(messages, consumers)| {
                    pb::reply::Result::Counts(pb::Counts {
                        messages,
                        consumers,
                    })
                });
            }
            Op::DeleteCheck(d) => {
                let (tx, rx) = oneshot::channel();
                let msg = QueueMsg::CheckDelete {
                    if_unused: d.if_unused,
                    if_empty: d.if_empty,
                    reply: tx,
                };
                if let Err(e) = self.send(q, msg).await {
                    let _ = self.reply_tx.send(reply(d.request, e));
                    return;
                }
                self.answer(d.request, rx, q, |r| match r {
                    Ok(n) => pb::reply::Result::Count(n),
                    Err(e) => pb::reply::Result::Error(error_to(&e)),
                });
            }
            Op::Credit(c) => {
                if let Some((_, _, flow)) = self.consumers.get(&c.consumer) {
                    for _ in 0..c.n.min(DELIVERY_WINDOW) {
                        flow.release();
                    }
                }
            }
        }
    }

    /// The link is gone: its channels are closed on every queue they used.
    async fn close_all(&mut self) {
        for (key, queues) in std::mem::take(&mut self.channels) {
            for q in queues {
                let _ = self.send(q, QueueMsg::ChannelClosed(key)).await;
            }
        }
        self.consumers.clear();
        self.credits.clear();
    }
}

/// Batches what the actors send to this link (and request answers) into
/// `Down` frames. Ends when the other node stops reading.
async fn pump(
    mut events: mpsc::UnboundedReceiver<ConnEvent>,
    mut replies: mpsc::UnboundedReceiver<pb::down_item::Op>,
    mut alarm: watch::Receiver<bool>,
    down: mpsc::Sender<Result<pb::Down, Status>>,
) {
    let raised = *alarm.borrow_and_update();
    if raised {
        let items = vec![down_item(pb::down_item::Op::Alarm(true))];
        if down.send(Ok(pb::Down { items })).await.is_err() {
            return;
        }
    }
    loop {
        let mut items = Vec::new();
        tokio::select! {
            r = alarm.changed() => match r {
                Ok(()) => {
                    let raised = *alarm.borrow_and_update();
                    items.push(down_item(pb::down_item::Op::Alarm(raised)));
                }
                Err(_) => return,
            },
            e = events.recv() => match e {
                Some(e) => push_event(e, &mut items),
                None => return,
            },
            r = replies.recv() => match r {
                Some(r) => items.push(down_item(r)),
                None => return,
            },
        }
        while items.len() < FRAME_ITEMS {
            if let Ok(r) = replies.try_recv() {
                items.push(down_item(r));
                continue;
            }
            match events.try_recv() {
                Ok(e) => push_event(e, &mut items),
                Err(_) => break,
            }
        }
        for items in frames(items, down_bytes) {
            if down.send(Ok(pb::Down { items })).await.is_err() {
                return;
            }
        }
    }
}

fn down_item(op: pb::down_item::Op) -> pb::DownItem {
    pb::DownItem { op: Some(op) }
}

fn push_event(e: ConnEvent, items: &mut Vec<pb::DownItem>) {
    use pb::down_item::Op;
    let op = match e {
        ConnEvent::Deliver(d) => Op::Deliver(pb::Deliver {
            consumer: 0,
            channel: Some(channel_to(d.channel)),
            tag: d.tag.to_string(),
            queue: d.queue,
            seq: d.seq,
            needs_ack: d.needs_ack,
            redelivered: d.redelivered,
            message: Some(message_to(&d.msg)),
        }),
        ConnEvent::Accepted { confirms, ok } => Op::Confirms(pb::Confirms {
            confirms: confirms
                .into_iter()
                .map(|(k, seq)| pb::ConfirmRef {
                    channel: Some(channel_to(k)),
                    seq,
                })
                .collect(),
            ok,
        }),
        ConnEvent::Cancelled { channel, tag } => Op::Cancelled(pb::Cancelled {
            consumer: 0,
            channel: Some(channel_to(channel)),
            tag: tag.to_string(),
        }),
    };
    items.push(down_item(op));
}
