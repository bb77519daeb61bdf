//! This side of queue links: a queue homed on another node looks, to
//! channels, like any queue (a [`QueueHandle`] with a mailbox); a small proxy
//! task tags its mailbox messages with the queue id and hands them to the
//! link task of the home node, which batches everything pending into one
//! `Up` frame, keeps what must come back (confirm routes, consumers,
//! pending requests) and turns `Down` frames into connection events.
//!
//! The home node's memory alarm comes down the link too: while it is
//! raised, this node's publishers are blocked (see [`crate::memory`]).
//!
//! When the link breaks, requests fail, consumers get `basic.cancel` and
//! unconfirmed publishes are nacked (and the home's alarm no longer counts); the link reconnects with backoff and,
//! meanwhile, answers for the unreachable queues at once (nack, 404, empty)
//! rather than letting publishers block.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use warren_cluster::MetaNode;
use warren_cluster::pb::queues as pb;
use warren_cluster::pb::queues::queues_client::QueuesClient;
use warren_cluster::stats;
use warren_core::queue::{ChannelKey, QueueDef};
use warren_core::{AmqpError, Name, NodeId, QueueId, ReplyCode};

use super::flow_mirror::Mirrors;
use super::pending::Pending;
use super::wire::{channel_from, channel_to, frames, message_from, message_to, up_bytes};
use crate::api::{
    Absent, ByteBudget, ConnEvent, ConnTx, ConsumerFlow, DeliverEvent, QueueHandle, QueueMsg,
    Verdict,
};
use crate::memory::Memory;

/// Mailbox of a proxy and of a link.
const MAILBOX: usize = 1024;
/// Most mailbox messages folded into one `Up` frame.
const FRAME_ITEMS: usize = 512;
/// `Up` frames buffered towards the home node.
const UP_FRAMES: usize = 4;
/// Bytes of publishes between this node's connections and the wire, per
/// link: what may still reach a home node after its memory alarm is heard.
pub const LINK_BUDGET: usize = 16 << 20;
/// Bound on opening the link's stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A proxy's message for the link: the queue and what was asked of it.
pub type Routed = (QueueId, QueueMsg);

/// The way into a link task: its mailbox and its byte budget.
#[derive(Clone, Debug)]
pub struct LinkTx {
    tx: mpsc::Sender<Routed>,
    budget: Arc<ByteBudget>,
    /// The stream to the home node is open.
    up: Arc<std::sync::atomic::AtomicBool>,
    /// The flows of the proxies, as the home node reports them.
    mirrors: Mirrors,
}

impl LinkTx {
    /// Whether the link's stream to its node is open now (false before
    /// the first connection and while it retries).
    pub fn is_up(&self) -> bool {
        self.up.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Starts the proxy of a queue homed on another node, feeding `link`.
pub fn spawn_proxy(def: &QueueDef, vhost: Name, link: LinkTx) -> QueueHandle {
    spawn_forwarder(def.id, def.name.clone(), def.durable, vhost, link)
}

/// Starts the proxy of what the other node serves under `id` (a queue, or
/// the direct reply-to consumers of [`crate::reply_to::link_id`]).
pub fn spawn_forwarder(
    id: QueueId,
    name: Name,
    durable: bool,
    vhost: Name,
    link: LinkTx,
) -> QueueHandle {
    let (tx, mut rx) = mpsc::channel::<QueueMsg>(MAILBOX);
    let LinkTx {
        tx: link,
        budget,
        mirrors,
        ..
    } = link;
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if matches!(m, QueueMsg::Stop) || link.send((id, m)).await.is_err() {
                return;
            }
        }
    });
    let handle = QueueHandle::new(id, name, vhost, durable, tx).with_budget(budget);
    mirrors.register(id, handle.flow());
    handle
}

/// Starts the link task to `home`, which it finds in `node`'s membership.
pub fn spawn_link(node: Weak<MetaNode>, home: NodeId, memory: Arc<Memory>) -> LinkTx {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mirrors = Mirrors::default();
    tokio::spawn(run(node, home, memory, rx, up.clone(), mirrors.clone()));
    LinkTx {
        tx,
        budget: Arc::new(ByteBudget::new(LINK_BUDGET)),
        up,
        mirrors,
    }
}

/// A consumer on this node of a queue homed there.
struct RemoteConsumer {
    id: u64,
    channel: ChannelKey,
    out: ConnTx,
    flow: Arc<ConsumerFlow>,
}

/// The link's memory of what must come back.
struct State {
    next_request: u64,
    pending: HashMap<u64, Pending>,
    /// By (channel id, consumer tag), as deliveries name them.
    consumers: HashMap<(u64, Name), RemoteConsumer>,
    /// Where confirms of a channel go.
    routes: HashMap<u64, ConnTx>,
    /// Unconfirmed publish seqs per channel (nacked if the link breaks).
    outstanding: HashMap<u64, (ChannelKey, BTreeSet<u64>)>,
    credit_tx: mpsc::UnboundedSender<(u64, u32)>,
    /// The home's alarm as the last frame reported it, if it did.
    home_alarm: Option<bool>,
    /// The proxies' flows.
    mirrors: Mirrors,
}

/// The answer for a queue whose home does not answer: not a 404 (the queue
/// exists; a `queue.delete` must not take 404 for done), a channel error.
fn home_down(home: NodeId) -> AmqpError {
    AmqpError::new(
        ReplyCode::InternalError,
        format!("home node {home} of the queue is unreachable"),
    )
    .on_channel()
}

impl State {
    /// Nothing in flight; credit returned through `credit_tx`.
    fn new(credit_tx: mpsc::UnboundedSender<(u64, u32)>, mirrors: Mirrors) -> Self {
        Self {
            next_request: 0,
            pending: HashMap::new(),
            consumers: HashMap::new(),
            routes: HashMap::new(),
            outstanding: HashMap::new(),
            credit_tx,
            home_alarm: None,
            mirrors,
        }
    }

    fn request(&mut self, p: Pending) -> u64 {
        self.next_request += 1;
        self.pending.insert(self.next_request, p);
        self.next_request
    }

    /// Turns one mailbox message into `Up` items.
    fn encode(&mut self, q: QueueId, m: QueueMsg, items: &mut Vec<pb::UpItem>) {
        use pb::up_item::Op;
        let mut push = |op| {
            items.push(pb::UpItem {
                queue: q,
                op: Some(op),
            })
        };
        match m {
            QueueMsg::Publish(batch) => {
                for (msg, confirm) in batch.items {
                    if let (Some((key, seq)), Some((_, tx))) = (confirm, &batch.from) {
                        self.routes.entry(key.id).or_insert_with(|| tx.clone());
                        self.outstanding
                            .entry(key.id)
                            .or_insert_with(|| (key, BTreeSet::new()))
                            .1
                            .insert(seq);
                    }
                    push(Op::Publish(pb::Publish {
                        message: Some(message_to(&msg)),
                        channel: confirm.map(|(k, _)| channel_to(k)),
                        confirm_seq: confirm.map_or(0, |(_, s)| s),
                    }));
                }
            }
            QueueMsg::Consume { spec, link, reply } => {
                let (dummy, _) = mpsc::channel(1);
                let flow = Arc::new(ConsumerFlow::remote(spec.id, dummy, self.credit_tx.clone()));
                let key = (spec.channel.id, spec.tag.clone());
                self.consumers.insert(
                    key.clone(),
                    RemoteConsumer {
                        id: spec.id,
                        channel: spec.channel,
                        out: link.out,
                        flow,
                    },
                );
                let request = self.request(Pending::Consume(reply, key));
                push(Op::Consume(pb::Consume {
                    request,
                    consumer: spec.id,
                    tag: spec.tag.to_string(),
                    channel: Some(channel_to(spec.channel)),
                    prefetch: spec.prefetch,
                    no_ack: spec.no_ack,
                    exclusive: spec.exclusive,
                    priority: spec.priority,
                    channel_prefetch: link.credit.limit(),
                }));
            }
            QueueMsg::Cancel { consumer, reply } => {
                self.consumers.retain(|_, c| c.id != consumer);
                let request = reply.map_or(0, |r| self.request(Pending::Cancel(r)));
                push(Op::Cancel(pb::Cancel { request, consumer }));
            }
            QueueMsg::Settle {
                channel,
                seqs,
                verdict,
            } => push(Op::Settle(pb::Settle {
                channel: Some(channel_to(channel)),
                seqs,
                requeue: verdict == Verdict::Requeue,
                reject: verdict == Verdict::Reject,
            })),
            QueueMsg::ChannelClosed(key) => {
                self.consumers.retain(|(ch, _), _| *ch != key.id);
                push(Op::ChannelClosed(channel_to(key)));
            }
            QueueMsg::Get {
                channel,
                no_ack,
                reply,
            } => {
                let request = self.request(Pending::Get(reply));
                push(Op::Get(pb::Get {
                    request,
                    channel: Some(channel_to(channel)),
                    no_ack,
                }));
            }
            QueueMsg::Purge(reply) => {
                let request = self.request(Pending::Count(reply));
                push(Op::Purge(request));
            }
            QueueMsg::Status(reply) => {
                let request = self.request(Pending::Status(reply));
                push(Op::Status(request));
            }
            QueueMsg::CheckDelete {
                if_unused,
                if_empty,
                reply,
            } => {
                let request = self.request(Pending::CheckDelete(reply));
                push(Op::DeleteCheck(pb::DeleteCheck {
                    request,
                    if_unused,
                    if_empty,
                }));
            }
            // Only the home's registry deletes or stops its queue.
            QueueMsg::Delete | QueueMsg::Wake | QueueMsg::Stop => {}
        }
    }

    /// Acts on one `Down` frame.
    fn receive(&mut self, frame: pb::Down, credit_back: &mut Vec<pb::UpItem>) {
        use pb::down_item::Op;
        for item in frame.items {
            match item.op {
                Some(Op::Deliver(d)) => self.deliver(d, credit_back),
                Some(Op::Confirms(c)) => {
                    let mut by_channel: HashMap<u64, Vec<(ChannelKey, u64)>> = HashMap::new();
                    for r in c.confirms {
                        if let Some(k) = channel_from(r.channel) {
                            if let Some((_, set)) = self.outstanding.get_mut(&k.id) {
                                set.remove(&r.seq);
                            }
                            by_channel.entry(k.id).or_default().push((k, r.seq));
                        }
                    }
                    for (ch, confirms) in by_channel {
                        if let Some(tx) = self.routes.get(&ch) {
                            let _ = tx.send(ConnEvent::Accepted { confirms, ok: c.ok });
                        }
                        // A channel with nothing in flight needs no route: it
                        // is made again by its next publish (channels come and
                        // go; the link lives as long as the node).
                        if self.outstanding.get(&ch).is_some_and(|(_, s)| s.is_empty()) {
                            self.outstanding.remove(&ch);
                            self.routes.remove(&ch);
                        }
                    }
                }
                Some(Op::Cancelled(c)) => {
                    if let Some(k) = channel_from(c.channel)
                        && let Some(rc) = self.consumers.remove(&(k.id, c.tag.as_str().into()))
                    {
                        let _ = rc.out.send(ConnEvent::Cancelled {
                            channel: k,
                            tag: c.tag.into(),
                        });
                    }
                }
                Some(Op::Reply(r)) => self.answer(r),
                Some(Op::Alarm(raised)) => self.home_alarm = Some(raised),
                Some(Op::Busy(b)) => self.mirrors.set(b.queue, b.busy),
                None => {}
            }
        }
    }

    fn deliver(&mut self, d: pb::Deliver, credit_back: &mut Vec<pb::UpItem>) {
        let (Some(channel), Some(msg)) =
            (channel_from(d.channel), d.message.and_then(message_from))
        else {
            return;
        };
        let tag: Name = d.tag.into();
        match self.consumers.get(&(channel.id, tag.clone())) {
            Some(c) => {
                stats::add(&stats::REMOTE_DELIVERIES, 1);
                let _ = c.out.send(ConnEvent::Deliver(DeliverEvent {
                    channel,
                    tag,
                    queue: d.queue,
                    seq: d.seq,
                    needs_ack: d.needs_ack,
                    redelivered: d.redelivered,
                    msg,
                    flow: c.flow.clone(),
                }));
            }
            None => {
                // Cancelled meanwhile: give the message back.
                if d.needs_ack {
                    credit_back.push(pb::UpItem {
                        queue: d.queue,
                        op: Some(pb::up_item::Op::Settle(pb::Settle {
                            channel: Some(channel_to(channel)),
                            seqs: vec![d.seq],
                            requeue: true,
                            reject: false,
                        })),
                    });
                }
            }
        }
    }

    fn answer(&mut self, r: pb::Reply) {
        if let Some(p) = self.pending.remove(&r.request)
            && let Some(key) = p.answer(r.result)
        {
            self.consumers.remove(&key);
        }
    }

    /// The link broke: fail everything that waited on it.
    fn fail_all(&mut self, home: NodeId) {
        self.mirrors.clear_all();
        for (_, p) in self.pending.drain() {
            p.fail(|| home_down(home));
        }
        // RabbitMQ cancels consumers of a queue whose node went down.
        for ((_, tag), c) in self.consumers.drain() {
            let _ = c.out.send(ConnEvent::Cancelled {
                channel: c.channel,
                tag,
            });
        }
        for (ch, (key, seqs)) in self.outstanding.drain() {
            if seqs.is_empty() {
                continue;
            }
            if let Some(tx) = self.routes.get(&ch) {
                let confirms = seqs.into_iter().map(|s| (key, s)).collect();
                let _ = tx.send(ConnEvent::Accepted {
                    confirms,
                    ok: false,
                });
            }
        }
        self.routes.clear();
    }
}

async fn run(
    node: Weak<MetaNode>,
    home: NodeId,
    memory: Arc<Memory>,
    mut rx: mpsc::Receiver<Routed>,
    up: Arc<std::sync::atomic::AtomicBool>,
    mirrors: Mirrors,
) {
    use std::sync::atomic::Ordering;
    let (credit_tx, mut credit_rx) = mpsc::unbounded_channel();
    let mut st = State::new(credit_tx, mirrors);
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(n) = node.upgrade() else { return };
        let channel = n.peer_channel(home);
        let addr = n.peer_addr(home).unwrap_or_default();
        let network = n.network().clone();
        drop(n);
        let (up_tx, up_rx) = mpsc::channel::<pb::Up>(UP_FRAMES);
        let down = match channel {
            // The channel proves the cluster secret and names the cluster
            // (warren_cluster::auth); a refusal is logged once, then the
            // link backs off like any broken link. Bounded: a home that
            // accepts connections but does not answer (SIGSTOP) must not
            // hold the queues' traffic here.
            Some(ch) => match tokio::time::timeout(
                OPEN_TIMEOUT,
                QueuesClient::new(ch)
                    .max_decoding_message_size(256 << 20)
                    .link(ReceiverStream::new(up_rx)),
            )
            .await
            {
                Ok(Ok(r)) => {
                    network.security().refusals().cleared(&addr);
                    Some(r.into_inner())
                }
                Ok(Err(status)) => {
                    network.security().refusals().note(&addr, &status);
                    None
                }
                Err(_) => None,
            },
            None => None,
        };
        if let Some(mut down) = down {
            backoff = BACKOFF_MIN;
            up.store(true, Ordering::Release);
            loop {
                let mut items = Vec::new();
                tokio::select! {
                    m = rx.recv() => {
                        let Some((q, m)) = m else { return };
                        st.encode(q, m, &mut items);
                        while items.len() < FRAME_ITEMS {
                            match rx.try_recv() {
                                Ok((q, m)) => st.encode(q, m, &mut items),
                                Err(_) => break,
                            }
                        }
                    }
                    c = credit_rx.recv() => {
                        let Some((consumer, n)) = c else { return };
                        items.push(credit(consumer, n));
                    }
                    f = down.message() => match f {
                        Ok(Some(frame)) => {
                            stats::add(&stats::DOWN_FRAMES, 1);
                            st.receive(frame, &mut items);
                            if let Some(alarm) = st.home_alarm.take() {
                                memory.set_remote(home, alarm);
                            }
                        }
                        _ => break,
                    },
                }
                while let Ok((consumer, n)) = credit_rx.try_recv() {
                    items.push(credit(consumer, n));
                }
                if items.is_empty() {
                    continue;
                }
                let publishes = items
                    .iter()
                    .filter(|i| matches!(i.op, Some(pb::up_item::Op::Publish(_))))
                    .count();
                stats::add(&stats::FORWARDED_PUBLISHES, publishes as u64);
                let mut sent = true;
                for items in frames(items, up_bytes) {
                    stats::add(&stats::UP_FRAMES, 1);
                    if up_tx.send(pb::Up { items }).await.is_err() {
                        sent = false;
                        break;
                    }
                }
                if !sent {
                    break;
                }
            }
        }
        up.store(false, Ordering::Release);
        st.fail_all(home);
        memory.set_remote(home, false);
        tracing::debug!(home, "queue link down; retrying");
        // Until the next attempt, answer for the unreachable queues at once.
        let until = tokio::time::Instant::now() + backoff;
        while let Ok(m) = tokio::time::timeout_at(until, rx.recv()).await {
            let Some((_, m)) = m else { return };
            m.answer_absent(&Absent::Unreachable(home_down(home)));
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn credit(consumer: u64, n: u32) -> pb::UpItem {
    pb::UpItem {
        queue: 0,
        op: Some(pb::up_item::Op::Credit(pb::Credit { consumer, n })),
    }
}

#[cfg(test)]
#[path = "client_test.rs"]
mod tests;
