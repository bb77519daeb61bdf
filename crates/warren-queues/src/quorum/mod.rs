//! The quorum queue type: a queue whose messages live in its own Raft group
//! ([`warren_cluster::QueueGroups`]), served by the group's leader.
//!
//! Every node runs one task per quorum queue (the queue's "front"), behind
//! the same mailbox protocol as every queue type. What it does depends on
//! where the group's leader is:
//!
//! - **Leader here** ([`leader`]): the front turns mailbox messages into
//!   commands of the replicated state machine, batches everything that
//!   arrived while the previous proposal was being committed into one log
//!   entry (at most [`leader::IN_FLIGHT`] proposals at a time, proposed in
//!   order, so a channel's publishes reach the log in sequence order), and
//!   acts on what applying them produced: confirms, `basic.get` answers,
//!   deliveries to consumers (local ones directly, remote ones through the
//!   queue links their nodes attached them with). What waits for a proposal,
//!   and how a proposal answers it once its leader stepped down, is in
//!   [`waiters`].
//! - **Leader elsewhere**: the front forwards its mailbox to a link proxy to
//!   the leader, exactly as a classic queue homed there is used.
//! - **No leader known** (an election): the mailbox waits; publishers feel
//!   it as backpressure. A `basic.get` the stepped-down leader had not
//!   proposed waits for the next one too; one it had proposed is refused
//!   with a channel error (it may still commit), never answered empty.
//!
//! Consumers survive a leader change without `basic.cancel`: each front
//! remembers the consumers of its own node's channels and attaches them to
//! every new leader (a `Checkout` again: the state machine keeps what they
//! held, and the new leader sends those messages again as redelivered; the
//! consumer's node drops those its channels still hold, see `held`). A
//! link that breaks cancels the consumers it carried; the front swallows
//! those cancellations (they pass through it) and attaches the consumers
//! again. Only a deleted queue cancels its consumers.
//!
//! Publishes in flight when a leader goes are nacked, never dropped
//! silently: the link nacks what it had outstanding, and a proposal that
//! fails nacks its batch.

mod audit;
mod config;
mod consumers;
mod delivery;
mod held;
mod leader;
mod leadership;
mod members;
mod parking;
mod waiters;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_cluster::{LiveChannels, MetaNode, QueueGroup, QueueGroups};
use warren_core::queue::{QueueDef, connection_node};
use warren_core::{AmqpError, Name, NodeId, ReplyCode};

use crate::api::handle::EndMark;
use crate::api::{Absent, Backlog, ConnEvent, ConnTx, Ending, QueueFlow, QueueHandle, QueueMsg};
use crate::link::Links;
use audit::Found;
use config::config_of;
use consumers::{Attaching, Own};
use held::Held;
use leader::Leading;
use parking::PARK_MAX;

/// Mailbox depth of a quorum queue's front.
const MAILBOX: usize = 256;
/// How often consumers whose link broke are attached again.
const REATTACH_EVERY: Duration = Duration::from_millis(300);
/// Bound on one probe of a node.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Outside the replica set: how long the link to the member forwarded to
/// may stay down before the front forwards to the next member.
const TARGET_DOWN_AFTER: Duration = Duration::from_secs(1);

/// What a quorum queue's front needs from the node.
#[derive(Clone, Debug)]
pub struct QuorumEnv {
    /// This node.
    pub me: NodeId,
    /// The node's queue groups.
    pub groups: Arc<QueueGroups>,
    /// Membership (peer addresses of the replica set).
    pub node: Weak<MetaNode>,
    /// The channels open on this node (the leader checks its consumers').
    pub channels: Arc<LiveChannels>,
    /// Links to other nodes (shared with classic queues).
    pub links: Arc<Links>,
    /// Where the front's task is tracked.
    pub tasks: TaskTracker,
    /// The node is stopping: every front ends (its mailbox may be full).
    pub stopping: CancellationToken,
    /// The node's dead-letter publisher.
    pub dead_letters: Option<crate::api::DeadLetterTx>,
    /// Where a queue unused for its `x-expires` asks for its deletion.
    pub auto_deleted: Option<mpsc::UnboundedSender<crate::classic::AutoDeleted>>,
}

/// Where the front sends what it receives.
enum Role {
    /// No leader known yet.
    Waiting,
    /// This node leads the group.
    Leader(Box<Leading>),
    /// Another node leads: a proxy to it.
    Forward { leader: NodeId, proxy: QueueHandle },
}

/// What woke the front.
enum Event {
    Mail(Option<QueueMsg>),
    Committed(leader::Outcome),
    Passed(ConnEvent),
    Found(Found),
    Metrics(bool),
    /// The head's deadline (this node leads) passed.
    Expired(u64),
    Tick,
    Stopping,
}

struct Front {
    def: QueueDef,
    vhost: Name,
    env: QuorumEnv,
    end: EndMark,
    rx: mpsc::Receiver<QueueMsg>,
    /// This node's replica, if it is a member.
    group: Option<QueueGroup>,
    role: Role,
    /// Consumers of this node's channels, by (channel id, tag).
    own: HashMap<(u64, Name), Own>,
    /// Events of proxied consumers pass through here.
    events_tx: ConnTx,
    events_rx: mpsc::UnboundedReceiver<ConnEvent>,
    /// What arrived while no leader was known, in order, with its arrival.
    parked: VecDeque<(Instant, QueueMsg)>,
    /// What this node's channels hold, to drop what a new leader sends again.
    held: Held,
    /// Answers to re-attachments not in yet: a refused one is tried again.
    attaching: Vec<Attaching>,
    /// Since when this node leads, until it checked which nodes are down.
    led_since: Option<Instant>,
    /// The group's term when the role was last taken.
    role_term: u64,
    /// Outside the replica set: the member forwarded to (an index of the
    /// replica set), and since when the link to it has been down.
    target: usize,
    target_down_since: Option<Instant>,
    /// What the leader's checks found (`audit`).
    found_tx: mpsc::UnboundedSender<Found>,
    found_rx: mpsc::UnboundedReceiver<Found>,
    /// A check of channels is under way; when the last one started.
    channels_checking: bool,
    channels_checked: Instant,
    /// This node's publishers' signal, from this replica's applied counts.
    flow: Arc<QueueFlow>,
    backlog: Backlog,
    deleted: bool,
    stopped: bool,
}

/// Starts the front of quorum queue `def` on this node (and its replica,
/// if this node is a member of its group).
pub fn spawn(def: QueueDef, vhost: Name, env: &QuorumEnv) -> QueueHandle {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let handle = QueueHandle::new(def.id, def.name.clone(), vhost.clone(), true, tx);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (found_tx, found_rx) = mpsc::unbounded_channel();
    let front = Front {
        def,
        vhost,
        env: env.clone(),
        end: handle.end_mark(),
        rx,
        group: None,
        role: Role::Waiting,
        own: HashMap::new(),
        events_tx,
        events_rx,
        parked: VecDeque::new(),
        held: Held::default(),
        attaching: Vec::new(),
        led_since: None,
        role_term: 0,
        target: 0,
        target_down_since: None,
        found_tx,
        found_rx,
        channels_checking: false,
        channels_checked: Instant::now(),
        flow: handle.flow().clone(),
        backlog: Backlog::default(),
        deleted: false,
        stopped: false,
    };
    env.tasks.spawn(front.run());
    handle
}

impl Front {
    async fn run(mut self) {
        if let Err(e) = self.join_group().await {
            tracing::error!(queue = %self.def.name, cause = %e, "could not start the queue's replica");
        }
        let mut metrics = self.group.as_ref().map(|g| g.raft.metrics());
        let mut had_group = self.group.is_some();
        self.follow_leader();
        self.unpark().await;
        let mut tick = tokio::time::interval(REATTACH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopping = self.env.stopping.clone();
        loop {
            let busy =
                matches!(&self.role, Role::Leader(l) if l.full()) || self.parked.len() >= PARK_MAX;
            let expiry = match &self.role {
                Role::Leader(l) => l.expiry_due(),
                _ => None,
            };
            let event = {
                let leading = match &mut self.role {
                    Role::Leader(l) => Some(l),
                    _ => None,
                };
                tokio::select! {
                    m = self.rx.recv(), if !busy => Event::Mail(m),
                    Some(out) = async {
                        match leading {
                            Some(l) => l.next().await,
                            None => std::future::pending().await,
                        }
                    } => Event::Committed(out),
                    Some(ev) = self.events_rx.recv() => Event::Passed(ev),
                    Some(found) = self.found_rx.recv() => Event::Found(found),
                    changed = async {
                        match &mut metrics {
                            Some(m) => m.changed().await.is_ok(),
                            None => std::future::pending().await,
                        }
                    } => Event::Metrics(changed),
                    Some(at) = async {
                        match expiry {
                            Some(at) => {
                                tokio::time::sleep_until(crate::clock::instant_of(at)).await;
                                Some(at)
                            }
                            None => std::future::pending().await,
                        }
                    } => Event::Expired(at),
                    _ = tick.tick() => Event::Tick,
                    _ = stopping.cancelled(), if !self.stopped => Event::Stopping,
                }
            };
            match event {
                Event::Mail(Some(m)) => self.handle(m).await,
                Event::Mail(None) => return,
                Event::Committed(out) => {
                    if let Role::Leader(l) = &mut self.role {
                        l.outcome(out, &mut self.held);
                    }
                }
                Event::Passed(ev) => self.passed_through(ev),
                Event::Found(found) => self.found(found),
                Event::Metrics(true) => {
                    self.follow_leader();
                    self.unpark().await;
                }
                Event::Metrics(false) => metrics = None,
                Event::Expired(at) => {
                    if let Role::Leader(l) = &mut self.role {
                        l.clock_passed(at);
                    }
                }
                Event::Tick => {
                    if let Role::Leader(l) = &mut self.role {
                        l.send_dead_letters();
                    }
                    self.check_replicas().await;
                    self.expire_parked();
                    self.check_target().await;
                    self.reattach().await;
                    self.check_nodes();
                    self.check_channels();
                    self.check_snapshot().await;
                }
                Event::Stopping => {
                    self.stopped = true;
                    self.end.mark(Ending::Stopped);
                }
            }
            if self.group.is_some() != had_group {
                // This node joined the replica set or left it.
                had_group = self.group.is_some();
                metrics = self.group.as_ref().map(|g| g.raft.metrics());
            }
            if let Role::Leader(l) = &mut self.role {
                l.propose().await;
            }
            self.update_flow();
            self.delete_if_expired();
            if self.deleted || self.stopped {
                self.finish().await;
                return;
            }
        }
    }

    /// Starts this node's replica if it is a member of the group.
    async fn join_group(&mut self) -> Result<(), warren_cluster::ClusterError> {
        if !self.def.replicas.contains(&self.env.me) {
            return Ok(());
        }
        let node = self.env.node.upgrade();
        let members: Vec<(NodeId, String)> = self
            .def
            .replicas
            .iter()
            .map(|n| {
                let addr = node
                    .as_ref()
                    .and_then(|m| m.peer_addr(*n))
                    .unwrap_or_default();
                (*n, addr)
            })
            .collect();
        let g = self
            .env
            .groups
            .start(self.def.id, config_of(&self.def), &members, self.def.formed)
            .await?;
        self.group = Some(g);
        Ok(())
    }

    async fn handle(&mut self, msg: QueueMsg) {
        match msg {
            QueueMsg::Consume { spec, link, reply } => {
                let key = (spec.channel.id, spec.tag.clone());
                // This node's consumers, and those of nodes outside the
                // replica set (they reach the leader through this member,
                // which attaches them again when the leader changes).
                let node = connection_node(spec.channel.id);
                let mine = node == self.env.me
                    || (self.group.is_some() && !self.def.replicas.contains(&node));
                let routed = if mine {
                    self.route_link(&link)
                } else {
                    link.clone()
                };
                if mine {
                    self.own.insert(
                        key,
                        Own {
                            spec: spec.clone(),
                            link,
                            attached: true,
                        },
                    );
                }
                self.send_on(QueueMsg::Consume {
                    spec,
                    link: routed,
                    reply,
                })
                .await;
            }
            QueueMsg::Cancel { consumer, reply } => {
                self.own.retain(|_, o| o.spec.id != consumer);
                self.send_on(QueueMsg::Cancel { consumer, reply }).await;
            }
            QueueMsg::ChannelClosed(key) => {
                self.own.retain(|(ch, _), _| *ch != key.id);
                self.held.closed(key.id);
                self.send_on(QueueMsg::ChannelClosed(key)).await;
            }
            QueueMsg::Settle {
                channel,
                seqs,
                verdict,
            } => {
                self.held.settled(channel.id, &seqs);
                let msg = QueueMsg::Settle {
                    channel,
                    seqs,
                    verdict,
                };
                self.send_on(msg).await;
            }
            QueueMsg::Status(reply) if self.answers_counts() => {
                let c = self.counts();
                let _ = reply.send((c.0 as u32, c.1 as u32));
            }
            QueueMsg::CheckDelete {
                if_unused,
                if_empty,
                reply,
            } if self.answers_counts() => {
                let (ready, consumers) = self.counts();
                let r = if if_unused && consumers > 0 {
                    Err(AmqpError::precondition(format!(
                        "queue '{}' in vhost '{}' in use",
                        self.def.name, self.vhost
                    )))
                } else if if_empty && ready > 0 {
                    Err(AmqpError::precondition(format!(
                        "queue '{}' in vhost '{}' is not empty",
                        self.def.name, self.vhost
                    )))
                } else {
                    Ok(ready as u32)
                };
                let _ = reply.send(r);
            }
            QueueMsg::Delete => {
                self.deleted = true;
                self.end.mark(Ending::Deleted);
            }
            QueueMsg::Stop => {
                self.stopped = true;
                self.end.mark(Ending::Stopped);
            }
            QueueMsg::Wake => {
                if let Role::Leader(l) = &mut self.role {
                    l.resume(&mut self.held);
                }
            }
            other => self.send_on(other).await,
        }
    }

    /// Counts are answered here on the leader (what it applied is the
    /// latest), and on a replica while no leader is known (a redeclare
    /// does not wait for an election); elsewhere the leader answers.
    /// Asks openraft for a snapshot of this replica once its state machine
    /// finds one due (queue groups have no snapshot policy of their own).
    async fn check_snapshot(&self) {
        if let Some(g) = &self.group
            && g.counts.take_snapshot_due()
            && let Err(e) = g.raft.trigger().snapshot().await
        {
            tracing::debug!(queue = %self.def.name, "no snapshot: {e}");
        }
    }

    /// Slows this node's publishers while the queue's consumers are
    /// behind, as its replica applied it (every replica applies the same
    /// deliveries, so every member decides alike). A node outside the
    /// replica set has no counts and never slows its publishers here.
    /// The leader adds the enqueues it took and has not applied yet: under
    /// load they are a proposal's worth of messages the counts do not show.
    fn update_flow(&mut self) {
        let unapplied = match &self.role {
            Role::Leader(l) => l.unapplied(),
            _ => 0,
        };
        if let Some(g) = &self.group {
            self.flow.update(
                &mut self.backlog,
                g.counts.ready() as usize + unapplied,
                g.counts.consumers() as usize,
                g.counts.delivered(),
                Instant::now(),
            );
        }
    }

    fn answers_counts(&self) -> bool {
        self.group.is_some() && !matches!(self.role, Role::Forward { .. })
    }

    /// Ready messages and consumers as this replica applied them.
    fn counts(&self) -> (u64, u64) {
        self.group
            .as_ref()
            .map_or((0, 0), |g| (g.counts.ready(), g.counts.consumers()))
    }

    /// Leaves the current role for `Waiting`: a leader steps down (what it
    /// did not propose is refused), a forwarding proxy stops.
    fn end_role(&mut self) {
        match std::mem::replace(&mut self.role, Role::Waiting) {
            Role::Leader(l) => {
                let now = Instant::now();
                for msg in l.step_down().into_iter().rev() {
                    self.parked.push_front((now, msg));
                }
            }
            Role::Forward { proxy, .. } => {
                let _ = proxy.mailbox().try_send(QueueMsg::Stop);
            }
            Role::Waiting => {}
        }
    }

    /// After a delete or a stop: consumers are told (delete), the replica
    /// and its keys go (delete), and what is left in the mailbox is
    /// answered.
    async fn finish(&mut self) {
        self.end_role();
        self.rx.close();
        let parked: Vec<QueueMsg> = self.parked.drain(..).map(|(_, m)| m).collect();
        if self.deleted {
            for ((_, tag), o) in self.own.drain() {
                let _ = o.link.out.send(ConnEvent::Cancelled {
                    channel: o.spec.channel,
                    tag,
                });
            }
            if self.group.take().is_some()
                && let Err(e) = self.env.groups.remove(self.def.id).await
            {
                tracing::error!(queue = %self.def.name, cause = %e, "could not remove the queue's replica");
            }
            let why = Absent::Deleted(AmqpError::not_found("queue", &self.def.name, &self.vhost));
            for m in parked {
                m.answer_absent(&why);
            }
            while let Ok(m) = self.rx.try_recv() {
                m.answer_absent(&why);
            }
        } else {
            let why = Absent::Unreachable(unreachable(&self.def.name));
            for m in parked {
                m.answer_absent(&why);
            }
            while let Ok(m) = self.rx.try_recv() {
                m.answer_absent(&why);
            }
        }
    }
}

/// The answer for a quorum queue with no reachable leader.
fn unreachable(name: &str) -> AmqpError {
    AmqpError::new(
        ReplyCode::InternalError,
        format!("quorum queue '{name}' has no leader this node can reach"),
    )
    .on_channel()
}
