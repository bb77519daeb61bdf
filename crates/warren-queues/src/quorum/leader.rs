//! The front of a quorum queue on its group's leader: mailbox messages
//! become batched commands, applied results become confirms, answers and
//! deliveries.
//!
//! Proposals go out in mailbox order through `client_write_ff` (handed to
//! openraft's core in that order, so they reach the log in it), at most
//! [`IN_FLIGHT`] at a time; whatever arrives meanwhile waits in the next
//! batch. Each proposal's answer comes back from a small task to the front
//! ([`Done`]), which acts on answers in the order of their proposals
//! (two tasks may finish in either order; deliveries and confirms must
//! not: a single consumer gets a quorum queue's messages in order). If the front is gone by then (it stepped down), the task
//! answers the waiters itself: a committed publish is confirmed, a failed
//! one nacked, never left unanswered.

use std::collections::{BTreeMap, HashMap};

use tokio::sync::mpsc;
use warren_cluster::QueueGroup;
use warren_core::queue::{ConsumerId, ConsumerSpec, Entry, QueueDef, connection_node};
use warren_core::quorum::{Command, ConsumerKey, MsgId, Publisher, Reply};
use warren_core::{Message, Name, NodeId};
use warren_store::raft::queue::{QueueBatch, QueueOp};

use super::delivery::{Stalled, counted};
use super::held::Held;
use super::waiters::{Confirms, Done, Waiter, no_body};
use crate::api::{ConsumerLink, DELIVERY_WINDOW, DeadLetterTx, QueueMsg, Verdict};

#[path = "leader_deliver.rs"]
mod deliver;
/// Proposals of one group awaiting their commit at once. One: openraft
/// 0.9's core waits for each append's flush before it takes the next
/// proposal, so a second one in flight never overlapped the first's sync;
/// it only split what waited into smaller entries (scenario 9: 36–44k
/// msg/s with two, 42–48k with one; scenario 10 the same with either;
/// docs/benchmarks.md).
#[path = "leader_time.rs"]
mod time;

pub(super) const IN_FLIGHT: usize = 1;
/// Bytes of message bodies in one log entry (more waits for the next).
const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Bytes waiting for a proposal past which the mailbox is not read.
const MAX_PENDING_BYTES: usize = 8 << 20;

/// A consumer attached to this leader.
struct Attached {
    spec: ConsumerSpec,
    link: ConsumerLink,
}

/// The leader's side of a quorum queue.
pub(crate) struct Leading {
    def: QueueDef,
    me: NodeId,
    group: QueueGroup,
    consumers: HashMap<(u64, Name), Attached>,
    by_id: HashMap<ConsumerId, (u64, Name)>,
    ops: Vec<QueueOp>,
    waiters: Vec<Waiter>,
    pending_bytes: usize,
    /// Enqueues taken from the mailbox and not applied yet (waiting or
    /// proposed): ready messages to be, for flow control.
    unapplied: usize,
    in_flight: usize,
    /// Auto-ack deliveries sent, settled with the next proposal.
    sent_no_ack: HashMap<u64, Vec<MsgId>>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// The `seq` of the next proposal.
    proposed: u64,
    /// The `seq` of the next answer to act on.
    next_done: u64,
    /// Answers that came before an earlier proposal's.
    early: BTreeMap<u64, Done>,
    /// Deliveries waiting for their channel's global prefetch.
    stalled: Stalled,
    /// The deadline a clock entry was last proposed for.
    clock_for: Option<u64>,
    /// This leader asked for the queue's deletion (`x-expires`).
    deletion_asked: bool,
    /// The queue's vhost (dead letters name it).
    vhost: Name,
    /// The node's dead-letter publisher.
    dead_tx: Option<DeadLetterTx>,
    /// Dead letters waiting for room at the publisher.
    unsent_dead: std::collections::VecDeque<crate::api::DeadLetters>,
    /// Where the publisher reports dead letters done with.
    settle_tx: mpsc::UnboundedSender<Vec<MsgId>>,
    settle_rx: mpsc::UnboundedReceiver<Vec<MsgId>>,
}

/// What the leader's own channels bring: a proposal's outcome, or dead
/// letters the publisher is done with.
pub(super) enum Outcome {
    Done(Done),
    DeadLettered(Vec<MsgId>),
}

impl Leading {
    pub(super) fn new(
        def: QueueDef,
        vhost: Name,
        me: NodeId,
        group: QueueGroup,
        dead_tx: Option<DeadLetterTx>,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        // A first entry with the new leader's clock: the log's time starts
        // (or goes on) at once, so deadlines and `x-expires` run even if
        // nothing else is proposed; the queue's settings as its arguments
        // give them (a group an older version created takes up what it
        // ignored); and the dead letters an earlier leader may not have
        // re-published.
        let ops = vec![
            QueueOp::Command(Command::Clock {
                now: crate::clock::unix_ms(),
            }),
            QueueOp::Command(Command::Configure {
                config: super::config::config_of(&def),
            }),
            QueueOp::Command(Command::DeadLetterAgain),
        ];
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        Self {
            def,
            me,
            group,
            consumers: HashMap::new(),
            by_id: HashMap::new(),
            ops,
            waiters: vec![Waiter::None, Waiter::None, Waiter::None],
            pending_bytes: 0,
            unapplied: 0,
            in_flight: 0,
            sent_no_ack: HashMap::new(),
            done_tx,
            done_rx,
            proposed: 0,
            next_done: 0,
            clock_for: None,
            deletion_asked: false,
            vhost,
            dead_tx,
            unsent_dead: Default::default(),
            settle_tx,
            settle_rx,
            early: BTreeMap::new(),
            stalled: Stalled::default(),
        }
    }

    /// The next proposal's outcome or report of dead letters done with.
    pub(super) async fn next(&mut self) -> Option<Outcome> {
        tokio::select! {
            Some(done) = self.done_rx.recv() => Some(Outcome::Done(done)),
            Some(ids) = self.settle_rx.recv() => Some(Outcome::DeadLettered(ids)),
            else => None,
        }
    }

    /// Acts on what [`Leading::next`] brought.
    pub(super) fn outcome(&mut self, out: Outcome, held: &mut Held) {
        match out {
            Outcome::Done(done) => self.committed(done, held),
            Outcome::DeadLettered(ids) => self.settled(ids),
        }
    }

    /// Enqueues taken and not applied yet.
    pub(super) fn unapplied(&self) -> usize {
        self.unapplied
    }

    /// Too much waits for a proposal: stop reading the mailbox.
    pub(super) fn full(&self) -> bool {
        self.in_flight >= IN_FLIGHT && self.pending_bytes >= MAX_PENDING_BYTES
    }

    fn push(&mut self, op: QueueOp, waiter: Waiter) {
        if let QueueOp::Enqueue { message, .. } = &op {
            self.pending_bytes += message.body().len();
            self.unapplied += 1;
        }
        self.ops.push(op);
        self.waiters.push(waiter);
    }

    /// Turns one mailbox message into ops of the next proposal.
    pub(super) fn handle(&mut self, msg: QueueMsg) {
        match msg {
            QueueMsg::Publish(batch) => {
                let from = batch.from.clone();
                for (message, confirm) in batch.items {
                    let publisher = confirm.map(|(k, seq)| Publisher { channel: k.id, seq });
                    let waiter = match (confirm, &from) {
                        (Some((key, seq)), Some((conn, tx))) => Waiter::Confirm {
                            conn: *conn,
                            tx: tx.clone(),
                            key,
                            seq,
                        },
                        _ => Waiter::None,
                    };
                    self.push(QueueOp::Enqueue { publisher, message }, waiter);
                }
            }
            QueueMsg::Consume { spec, link, reply } => {
                let key = (spec.channel.id, spec.tag.clone());
                // The state machine's credit: the consumer's prefetch, or
                // the channel's; unlimited and auto-ack consumers get a
                // delivery window, so one command never hands out a backlog.
                let prefetch = match (spec.no_ack, spec.prefetch, link.credit.limit()) {
                    (true, _, _) | (false, 0, 0) => DELIVERY_WINDOW,
                    (false, 0, channel) => channel,
                    (false, own, _) => own,
                };
                let cmd = Command::Checkout {
                    consumer: ConsumerKey::new(spec.channel.id, &spec.tag),
                    node: connection_node(spec.channel.id),
                    prefetch,
                    no_ack: spec.no_ack,
                };
                self.by_id.insert(spec.id, key.clone());
                self.consumers.insert(key, Attached { spec, link });
                self.push(QueueOp::Command(cmd), Waiter::Consume(reply));
            }
            QueueMsg::Cancel { consumer, reply } => {
                let Some(key) = self.by_id.remove(&consumer) else {
                    if let Some(r) = reply {
                        let _ = r.send(());
                    }
                    return;
                };
                self.consumers.remove(&key);
                let consumer = ConsumerKey::new(key.0, &key.1);
                let unsent = self.stalled.take_consumer(&consumer);
                let waiter = reply.map_or(Waiter::None, Waiter::Cancel);
                self.push(QueueOp::Command(Command::Cancel { consumer }), waiter);
                if !unsent.is_empty() {
                    // Never sent, so never to be acked: back to the queue.
                    let cmd = Command::Return {
                        channel: key.0,
                        ids: unsent,
                    };
                    self.push(QueueOp::Command(cmd), Waiter::None);
                }
            }
            QueueMsg::Settle {
                channel,
                seqs,
                verdict,
            } => {
                let (channel, ids) = (channel.id, seqs);
                let cmd = match verdict {
                    Verdict::Ack => Command::Settle { channel, ids },
                    Verdict::Requeue => Command::Return { channel, ids },
                    Verdict::Reject => Command::Discard { channel, ids },
                };
                self.push(QueueOp::Command(cmd), Waiter::None);
            }
            QueueMsg::ChannelClosed(key) => self.channel_down(key.id),
            QueueMsg::Get {
                channel,
                no_ack,
                reply,
            } => {
                let cmd = Command::Dequeue {
                    channel: channel.id,
                    node: connection_node(channel.id),
                    no_ack,
                };
                let waiter = Waiter::Get {
                    channel,
                    no_ack,
                    reply,
                };
                self.push(QueueOp::Command(cmd), waiter);
            }
            QueueMsg::Purge(reply) => {
                self.push(QueueOp::Command(Command::Purge), Waiter::Purge(reply));
            }
            QueueMsg::Status(reply) => {
                let c = &self.group.counts;
                let _ = reply.send((c.ready() as u32, c.consumers() as u32));
            }
            QueueMsg::CheckDelete { reply, .. } => {
                let _ = reply.send(Ok(self.group.counts.ready() as u32));
            }
            QueueMsg::Delete | QueueMsg::Stop | QueueMsg::Wake => {}
        }
    }

    /// Node `node` is down: its channels' consumers go, what they held
    /// returns to the queue.
    /// Channel `channel` closed: its consumers go and what they held
    /// returns to the queue.
    pub(super) fn channel_down(&mut self, channel: u64) {
        let gone: Vec<ConsumerId> = self
            .consumers
            .iter()
            .filter(|((ch, _), _)| *ch == channel)
            .map(|(_, a)| a.spec.id)
            .collect();
        for id in gone {
            if let Some(k) = self.by_id.remove(&id) {
                self.consumers.remove(&k);
            }
        }
        self.sent_no_ack.remove(&channel);
        self.stalled.drop_channels(|ch| ch == channel);
        let cmd = Command::ChannelDown { channel };
        self.push(QueueOp::Command(cmd), Waiter::None);
    }

    pub(super) fn node_down(&mut self, node: warren_core::NodeId) {
        let gone: Vec<ConsumerId> = self
            .consumers
            .iter()
            .filter(|((ch, _), _)| connection_node(*ch) == node)
            .map(|(_, a)| a.spec.id)
            .collect();
        for id in gone {
            if let Some(k) = self.by_id.remove(&id) {
                self.consumers.remove(&k);
            }
        }
        self.stalled.drop_channels(|ch| connection_node(ch) == node);
        self.push(QueueOp::Command(Command::NodeDown { node }), Waiter::None);
    }

    /// Proposes what waits, in order, while fewer than [`IN_FLIGHT`]
    /// proposals are out. Each entry starts with the leader's clock, the
    /// time the state machine judges expiry by.
    pub(super) async fn propose(&mut self) {
        if self
            .group
            .pausing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            // Handing leadership over (`warren queues transfer-leader`).
            return;
        }
        for (channel, ids) in self.sent_no_ack.drain() {
            self.ops
                .push(QueueOp::Command(Command::Settle { channel, ids }));
            self.waiters.push(Waiter::None);
        }
        while self.in_flight < IN_FLIGHT && !self.ops.is_empty() {
            let mut bytes = 0;
            let mut n = 0;
            for op in &self.ops {
                if let QueueOp::Enqueue { message, .. } = op {
                    if n > 0 && bytes + message.body().len() > MAX_ENTRY_BYTES {
                        break;
                    }
                    bytes += message.body().len();
                }
                n += 1;
            }
            let mut ops = Vec::with_capacity(n + 1);
            ops.push(QueueOp::Command(Command::Clock {
                now: crate::clock::unix_ms(),
            }));
            ops.extend(self.ops.drain(..n));
            let mut waiters = Vec::with_capacity(n + 1);
            waiters.push(Waiter::None);
            waiters.extend(self.waiters.drain(..n));
            self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
            let enqueues = ops
                .iter()
                .filter(|op| matches!(op, QueueOp::Enqueue { .. }))
                .count();
            match self.group.raft.client_write_ff(QueueBatch(ops)).await {
                Ok(rx) => {
                    self.in_flight += 1;
                    let seq = self.proposed;
                    self.proposed += 1;
                    let tx = self.done_tx.clone();
                    tokio::spawn(async move {
                        let result = match rx.await {
                            Ok(Ok(r)) => Ok(r.data),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err("the queue's replica stopped".to_owned()),
                        };
                        if let Err(mpsc::error::SendError(done)) = tx.send(Done {
                            seq,
                            enqueues,
                            waiters,
                            result,
                        }) {
                            done.answer_alone();
                        }
                    });
                }
                Err(e) => {
                    self.unapplied = self.unapplied.saturating_sub(enqueues);
                    Done {
                        seq: 0,
                        enqueues,
                        waiters,
                        result: Err(e.to_string()),
                    }
                    .answer_alone();
                }
            }
        }
    }

    /// Takes a proposal's outcome; acts on it once every earlier
    /// proposal's was acted on.
    pub(super) fn committed(&mut self, done: Done, held: &mut Held) {
        self.early.insert(done.seq, done);
        while let Some(done) = self.early.remove(&self.next_done) {
            self.next_done += 1;
            self.act_on(done, held);
        }
    }

    /// Acts on a proposal's outcome.
    fn act_on(&mut self, done: Done, held: &mut Held) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.unapplied = self.unapplied.saturating_sub(done.enqueues);
        let resp = match done.result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(queue = %self.def.name, cause = %e, "a proposal failed");
                Done {
                    seq: done.seq,
                    enqueues: done.enqueues,
                    waiters: done.waiters,
                    result: Err(e),
                }
                .answer_alone();
                return;
            }
        };
        self.dead_letter(resp.dead);
        let bodies: HashMap<MsgId, Message> = resp.bodies.into_iter().collect();
        let mut confirms = Confirms::default();
        let mut refused = Confirms::default();
        for (w, reply) in done.waiters.into_iter().zip(resp.replies) {
            match (w, reply) {
                (Waiter::Confirm { conn, tx, key, seq }, Reply::Rejected) => {
                    refused.add(conn, tx, key, seq)
                }
                (Waiter::Confirm { conn, tx, key, seq }, _) => confirms.add(conn, tx, key, seq),
                (Waiter::Consume(r), _) => {
                    let _ = r.send(Ok(()));
                }
                (Waiter::Cancel(r), _) => {
                    let _ = r.send(());
                }
                (Waiter::Get { reply, .. }, Reply::Got(Some((m, left)))) => {
                    let got = match bodies.get(&m.id) {
                        Some(msg) => {
                            let entry = Entry {
                                seq: m.id,
                                msg: counted(msg, m.delivery_count),
                                redelivered: m.redelivered(),
                            };
                            Ok(Some((entry, u32::try_from(left).unwrap_or(u32::MAX))))
                        }
                        None => {
                            tracing::error!(queue = %self.def.name, id = m.id, "a dequeued message's body was not read");
                            Err(no_body())
                        }
                    };
                    let _ = reply.send(got);
                }
                (Waiter::Get { reply, .. }, _) => {
                    let _ = reply.send(Ok(None));
                }
                (Waiter::Purge(r), Reply::Purged(n)) => {
                    let _ = r.send(u32::try_from(n).unwrap_or(u32::MAX));
                }
                (Waiter::Purge(r), _) => {
                    let _ = r.send(0);
                }
                (Waiter::None, _) => {}
            }
        }
        confirms.send(true);
        refused.send(false);
        for d in resp.deliveries {
            let again = d.msg.redelivered();
            self.deliver(d, again, &bodies, held);
        }
        for d in resp.resent {
            self.deliver(d, true, &bodies, held);
        }
    }

    /// This node no longer leads: what was not proposed is refused
    /// (publishes nacked); proposals in flight are answered by their tasks.
    /// Stops leading. Proposals out are answered by their own outcome;
    /// of what was never proposed, `basic.get`s are handed back (they
    /// wait for the next leader: nothing of them reached the log), the
    /// rest refused.
    pub(super) fn step_down(mut self: Box<Self>) -> Vec<QueueMsg> {
        self.done_rx.close();
        while let Ok(done) = self.done_rx.try_recv() {
            done.answer_alone();
        }
        for done in std::mem::take(&mut self.early).into_values() {
            done.answer_alone();
        }
        let mut again = Vec::new();
        let waiters = std::mem::take(&mut self.waiters)
            .into_iter()
            .filter_map(|w| match w {
                Waiter::Get {
                    channel,
                    no_ack,
                    reply,
                } => {
                    again.push(QueueMsg::Get {
                        channel,
                        no_ack,
                        reply,
                    });
                    None
                }
                w => Some(w),
            })
            .collect();
        Done {
            seq: 0,
            enqueues: 0,
            waiters,
            result: Err("not the leader".to_owned()),
        }
        .answer_alone();
        again
    }
}
