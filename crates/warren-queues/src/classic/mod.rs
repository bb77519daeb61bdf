//! The classic-queue actor: one task owns one queue's [`QueueState`].
//!
//! Everything that touches a queue's contents arrives in its bounded mailbox,
//! so the state needs no lock and a publisher that outruns the queue waits on
//! the mailbox (backpressure up to its socket). The actor wakes once per burst:
//! it handles every message already queued, submits the burst's disk writes as
//! one request to the group-commit writer, then dispatches to consumers.
//!
//! Confirms: every publish that waits for a confirm is accepted by the queue
//! (`ConnEvent::Accepted`) once it is enqueued; a persistent message in a
//! durable queue only once it is also written and synced (the writer's
//! completion sends the event). A burst with no such write releases its
//! confirms at once, without a trip through the writer. Settling a persisted
//! message deletes it; the delete rides in the next batch without its own
//! sync (losing it in a crash only means a redelivery, never a loss).
//!
//! A full queue (`x-max-length`, `x-max-length-bytes`) refuses or drops per
//! publish, by the rule of
//! [`Limits`] (`publish`). Reading a paged backlog back is `paging`; how
//! the queue ends is `ending`. Expired messages
//! (`x-message-ttl`, `expiration`) leave from the head: before every
//! delivery, fetch and count, and when a timer set for the head's deadline
//! fires (`expiry`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use warren_core::dead_letter::Reason;
use warren_core::queue::{ChannelKey, ConsumerId, ConsumerSpec, Limits, QueueDef, QueueState};
use warren_core::{AmqpError, Message, Name, QueueId};
use warren_store::{Op, Store, Writer};

use crate::api::handle::EndMark;
use crate::api::{
    Backlog, ConnEvent, ConnTx, ConsumerLink, DeadLetterTx, DeadLetters, DeliverEvent, Ending,
    QueueFlow, QueueHandle, QueueMsg, Verdict,
};
use crate::memory::Memory;

mod dead_letter;
mod ending;
mod expiry;
mod paging;
mod publish;

/// Mailbox depth of a queue, in messages (each may carry a batch).
const MAILBOX: usize = 256;
/// Bytes of ready message bodies a durable queue keeps in memory; past it,
/// persistent messages are read back from disk when their turn comes.
pub const PAGE_BUDGET: usize = 8 << 20;
/// Where new seqs start when a recovery failed and the last stored seq
/// could not be read either: beyond any seq a queue reaches by counting.
const SEQ_AFTER_FAILED_RECOVERY: u64 = 1 << 62;
/// Most mailbox messages handled before dispatching and writing.
const MAX_BURST: usize = 256;

/// Confirms of one connection waiting for a burst's sync: (conn id, conn, [(channel, seq)]).
type PendingConfirms = (u64, ConnTx, Vec<(ChannelKey, u64)>);

struct QueueActor {
    /// Where it records why its mailbox closes.
    end: EndMark,
    flow: Arc<QueueFlow>,
    /// When consumers are behind enough to slow publishers.
    backlog: Backlog,
    /// Deliveries to consumers so far (their rate sizes the backlog).
    delivered: u64,
    def: QueueDef,
    vhost: Name,
    state: QueueState,
    /// `x-max-length` and `x-overflow`.
    limits: Limits,
    /// `x-message-ttl`, milliseconds.
    ttl: Option<u64>,
    /// The wall clock (Unix ms), read once per burst: what expiry compares
    /// deadlines with.
    now: u64,
    /// `x-dead-letter-exchange` and `x-dead-letter-routing-key`.
    dlx: Option<(String, Option<String>)>,
    /// What this burst dead-lettered, sent to the node after it.
    dead: Vec<DeadLetters>,
    /// The node's dead-letter publisher.
    dead_tx: Option<DeadLetterTx>,
    /// `x-expires`: the queue goes after this long unused.
    expires: Option<std::time::Duration>,
    /// Since when nobody used it (no consumer, `basic.get` or declare).
    unused_since: tokio::time::Instant,
    rx: mpsc::Receiver<QueueMsg>,
    links: HashMap<ConsumerId, ConsumerLink>,
    writer: Writer,
    store: Store,
    memory: Arc<Memory>,
    auto_deleted: mpsc::UnboundedSender<AutoDeleted>,
    /// Highest seq whose write has completed (set by the writer's completion).
    durable_upto: Arc<AtomicU64>,
    /// Highest seq put in the current burst.
    burst_max_put: u64,
    /// Disk operations of the current burst.
    ops: Vec<Op>,
    ops_need_sync: bool,
    /// Confirms released when the burst's writes are durable, per connection.
    confirms: Vec<PendingConfirms>,
    accounted: usize,
    had_consumers: bool,
    deleted: bool,
    stopped: bool,
}

/// An auto-delete queue lost its last consumer, or a queue was unused for
/// its `x-expires`: its metadata should go (only if the name still maps to
/// this id), and with it the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoDeleted {
    /// The queue's name.
    pub name: Name,
    /// The queue's id.
    pub id: QueueId,
}

/// What a classic queue actor needs from the node.
#[derive(Clone, Debug)]
pub struct ClassicEnv {
    /// The group-commit writer.
    pub writer: Writer,
    /// Reads (recovery, paging).
    pub store: Store,
    /// Memory accounting.
    pub memory: Arc<Memory>,
    /// Where an auto-deleted queue is reported.
    pub auto_deleted: mpsc::UnboundedSender<AutoDeleted>,
    /// Where the actor's task is tracked.
    pub tasks: TaskTracker,
    /// The node's dead-letter publisher (`None`: dead letters are dropped).
    pub dead_letters: Option<DeadLetterTx>,
}

/// Starts the actor of a queue; a durable queue first recovers its messages
/// from disk (bodies only up to the page budget).
pub fn spawn(def: QueueDef, vhost: Name, recover: bool, env: &ClassicEnv) -> QueueHandle {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let handle = QueueHandle::new(def.id, def.name.clone(), vhost.clone(), def.durable, tx);
    let mut state = QueueState::new();
    let mut durable_upto = 0;
    if let Some(max) = def.args.max_priority {
        state.set_max_priority(max);
    }
    if def.durable {
        state.set_page_budget(PAGE_BUDGET);
    }
    if def.args.single_active_consumer {
        state.set_single_active();
    }
    if recover {
        let result = env.store.for_each_message(def.id, |seq, msg| {
            let keep = !state.over_budget();
            state.recover(seq, msg, keep);
            durable_upto = seq;
        });
        // New publishes must never take a seq still on disk: after a scan
        // that skipped records or stopped early, the next seq goes past the
        // last one stored (or, if even that cannot be read, past any seq a
        // queue reaches), so nothing recovered later is overwritten.
        let last_on_disk = match result {
            Ok(r) => {
                if r.messages > 0 {
                    tracing::info!(queue = %def.name, messages = r.messages, "recovered queue");
                }
                if !r.corrupt.is_empty() {
                    tracing::error!(queue = %def.name, seqs = ?r.corrupt, "skipped unreadable messages");
                }
                r.last_seq
            }
            Err(e) => {
                tracing::error!(queue = %def.name, cause = %e, "could not recover every message");
                env.store
                    .last_message_seq(def.id)
                    .unwrap_or(Some(SEQ_AFTER_FAILED_RECOVERY))
            }
        };
        if let Some(last) = last_on_disk {
            state.skip_seqs_to(last);
        }
    }
    let actor = QueueActor {
        end: handle.end_mark(),
        flow: handle.flow().clone(),
        backlog: Backlog::default(),
        delivered: 0,
        limits: Limits::of(&def.args),
        ttl: def.args.message_ttl,
        now: crate::clock::unix_ms(),
        expires: def.args.expires.map(std::time::Duration::from_millis),
        dlx: def
            .args
            .dead_letter_exchange
            .clone()
            .map(|x| (x, def.args.dead_letter_routing_key.clone())),
        dead: Vec::new(),
        dead_tx: env.dead_letters.clone(),
        unused_since: tokio::time::Instant::now(),
        def,
        vhost,
        state,
        rx,
        links: HashMap::new(),
        writer: env.writer.clone(),
        store: env.store.clone(),
        memory: env.memory.clone(),
        auto_deleted: env.auto_deleted.clone(),
        durable_upto: Arc::new(AtomicU64::new(durable_upto)),
        burst_max_put: 0,
        ops: Vec::new(),
        ops_need_sync: false,
        confirms: Vec::new(),
        accounted: 0,
        had_consumers: false,
        deleted: false,
        stopped: false,
    };
    env.tasks.spawn(actor.run());
    handle
}

impl QueueActor {
    fn persists(&self, msg: &Message) -> bool {
        self.def.durable && msg.persistent
    }

    async fn run(mut self) {
        self.account();
        loop {
            // Woken by the mailbox, or by the head's deadline or the
            // queue's own (nothing to handle then: the expiry below is the
            // work).
            let first = match self.wake_at() {
                None => self.rx.recv().await,
                Some(at) => tokio::select! {
                    m = self.rx.recv() => m,
                    () = tokio::time::sleep_until(at) => Some(QueueMsg::Wake),
                },
            };
            let Some(first) = first else { break };
            self.now = crate::clock::unix_ms();
            self.handle(first);
            let mut n = 1;
            while n < MAX_BURST && !self.deleted && !self.stopped {
                match self.rx.try_recv() {
                    Ok(m) => self.handle(m),
                    Err(_) => break,
                }
                n += 1;
            }
            let delivered = self.delivered;
            if !self.deleted && !self.stopped {
                let upto = self.durable_upto.load(Ordering::Acquire);
                let durable = self.def.durable;
                self.state.unpin(upto, |m| durable && m.persistent);
                self.expire_heads();
                self.page_in_and_dispatch();
                self.expire_queue();
            }
            if self.delivered != delivered && self.ops_need_sync {
                // The sync may happen inline on this worker (`flush`): let
                // the consumers' connections write these deliveries first,
                // so they do not wait for the disk they do not need.
                tokio::task::yield_now().await;
            }
            self.flush().await;
            self.send_dead_letters().await;
            self.account();
            self.flow.update(
                &mut self.backlog,
                self.state.ready_len(),
                self.state.consumer_count(),
                self.delivered,
                tokio::time::Instant::now(),
            );
            if self.deleted {
                self.drain_after_delete().await;
                return;
            }
            if self.stopped {
                // Messages held in memory leave the node's accounting.
                self.memory.adjust(-(self.accounted as i64));
                self.refuse_after_stop();
                return;
            }
        }
    }

    /// Applies the change in held bytes to the node's memory monitor.
    fn account(&mut self) {
        let now = self.state.memory_bytes();
        self.memory.adjust(now as i64 - self.accounted as i64);
        self.accounted = now;
    }

    fn handle(&mut self, msg: QueueMsg) {
        match msg {
            QueueMsg::Publish(batch) => self.publish(batch),
            QueueMsg::Consume { spec, link, reply } => {
                let id = spec.id;
                let r = self.state.consume(spec, &self.def.name, &self.vhost);
                self.used();
                if r.is_ok() {
                    self.links.insert(id, link);
                    self.had_consumers = true;
                }
                let _ = reply.send(r);
            }
            QueueMsg::Cancel { consumer, reply } => {
                self.state.cancel(consumer);
                self.links.remove(&consumer);
                self.used();
                if let Some(r) = reply {
                    let _ = r.send(());
                }
                self.maybe_auto_delete();
            }
            QueueMsg::Settle {
                channel,
                seqs,
                verdict,
            } => match verdict {
                Verdict::Requeue => self.state.requeue(channel, &seqs),
                Verdict::Ack => {
                    let gone = self.state.settle(channel, &seqs);
                    self.forget(gone);
                }
                Verdict::Reject => {
                    let gone = self.state.settle(channel, &seqs);
                    self.dead_letter_or_forget(Reason::Rejected, gone);
                }
            },
            QueueMsg::ChannelClosed(channel) => {
                for id in self.state.channel_closed(channel) {
                    self.links.remove(&id);
                    self.used();
                }
                self.maybe_auto_delete();
            }
            QueueMsg::Get {
                channel,
                no_ack,
                reply,
            } => {
                self.used();
                self.expire_heads();
                self.page_in();
                let got = self.state.get(channel, no_ack);
                if no_ack && let Some(e) = &got {
                    self.forget(vec![e.clone()]);
                }
                let remaining = self.state.ready_len() as u32;
                let _ = reply.send(Ok(got.map(|e| (e, remaining))));
            }
            QueueMsg::Purge(reply) => {
                self.expire_heads();
                let (gone, paged) = self.state.purge();
                let n = (gone.len() + paged.len()) as u32;
                self.forget(gone);
                if self.def.durable {
                    let id = self.def.id;
                    self.ops.extend(
                        paged
                            .into_iter()
                            .map(|seq| Op::DeleteMessage { queue: id, seq }),
                    );
                }
                let _ = reply.send(n);
            }
            QueueMsg::Status(reply) => {
                // A declaration (the counts of its `declare-ok`) uses it.
                self.used();
                self.expire_heads();
                let _ = reply.send((
                    self.state.ready_len() as u32,
                    self.state.consumer_count() as u32,
                ));
            }
            QueueMsg::CheckDelete {
                if_unused,
                if_empty,
                reply,
            } => {
                self.expire_heads();
                let r = if if_unused && self.state.consumer_count() > 0 {
                    Err(AmqpError::precondition(format!(
                        "queue '{}' in vhost '{}' in use",
                        self.def.name, self.vhost
                    )))
                } else if if_empty && self.state.ready_len() > 0 {
                    Err(AmqpError::precondition(format!(
                        "queue '{}' in vhost '{}' is not empty",
                        self.def.name, self.vhost
                    )))
                } else {
                    Ok(self.state.ready_len() as u32)
                };
                let _ = reply.send(r);
            }
            QueueMsg::Delete => self.delete(),
            QueueMsg::Wake => {}
            QueueMsg::Stop => {
                self.stopped = true;
                self.mark(Ending::Stopped);
            }
        }
    }

    /// Hands ready messages to consumers with credit; how many it handed.
    /// Expired messages reaching the head on the way are dropped, never
    /// delivered.
    fn dispatch(&mut self) -> usize {
        self.dispatch_from(true)
    }

    /// [`Self::dispatch`], or (`expire` false) without looking at the clock:
    /// a message that arrived expired may still go to a consumer that takes
    /// it at once (`expiry`).
    fn dispatch_from(&mut self, expire: bool) -> usize {
        let links = &self.links;
        let mut gate = |spec: &ConsumerSpec| {
            let Some(link) = links.get(&spec.id) else {
                return false;
            };
            if !link.credit.active() {
                return false;
            }
            if !spec.no_ack && !link.credit.try_acquire() {
                return false;
            }
            if !link.flow.try_acquire() {
                if !spec.no_ack {
                    link.credit.release(1);
                }
                return false;
            }
            true
        };
        let mut settled = Vec::new();
        let mut expired = Vec::new();
        let mut delivered = 0;
        let now = self.now;
        loop {
            if expire {
                while let Some(gone) = self.state.expire_head(now) {
                    expired.push(gone);
                }
            }
            let Some(d) = self.state.next_delivery(&mut gate) else {
                break;
            };
            delivered += 1;
            let Some(link) = links.get(&d.consumer) else {
                continue;
            };
            if !d.needs_ack {
                settled.push(d.entry.clone());
            }
            let ev = ConnEvent::Deliver(DeliverEvent {
                channel: d.channel,
                tag: d.tag,
                queue: self.def.id,
                seq: d.entry.seq,
                needs_ack: d.needs_ack,
                redelivered: d.entry.redelivered,
                msg: d.entry.msg,
                flow: link.flow.clone(),
            });
            // A closed connection's channels are cleaned up by their own
            // ChannelClosed; an unacked delivery is requeued then.
            let _ = link.out.send(ev);
        }
        self.forget(settled);
        for gone in expired {
            self.discard(gone, Reason::Expired);
        }
        self.delivered += delivered as u64;
        delivered
    }

    /// Submits the burst's disk writes; confirms follow the sync.
    async fn flush(&mut self) {
        if self.ops.is_empty() && self.confirms.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut self.ops);
        let sync = std::mem::replace(&mut self.ops_need_sync, false);
        let mut confirms = std::mem::take(&mut self.confirms);
        let max_put = std::mem::take(&mut self.burst_max_put);
        if !sync {
            // Nothing of this burst waits for the disk: accepted now.
            release_confirms(std::mem::take(&mut confirms), true);
        }
        if ops.is_empty() {
            return;
        }
        let durable_upto = self.durable_upto.clone();
        let waits = !confirms.is_empty() || max_put > 0;
        let finish = move |r: Result<(), warren_store::StoreError>| {
            if r.is_ok() && max_put > 0 {
                // Writes complete in order: everything this queue put up to
                // `max_put` is durable now.
                durable_upto.fetch_max(max_put, Ordering::AcqRel);
            }
            release_confirms(confirms, r.is_ok());
        };
        // An idle writer: write here and now, saving the hand-offs to the
        // writer thread and back (the confirm goes out from this thread).
        let ops = match self.writer.write_now(self.def.id, ops, sync) {
            Ok(r) => return finish(r),
            Err(ops) => ops,
        };
        let done: Option<warren_store::WriteDone> = waits.then(|| Box::new(finish) as _);
        if let Err(e) = self.writer.submit(ops, sync, done).await {
            tracing::error!(queue = %self.def.name, cause = %e, "store writer unavailable");
        }
    }
}

fn release_confirms(confirms: Vec<PendingConfirms>, ok: bool) {
    for (_, tx, list) in confirms {
        let _ = tx.send(ConnEvent::Accepted { confirms: list, ok });
    }
}
