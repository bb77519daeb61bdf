//! [`QuorumState::apply`]: one method per command, then dispatch.

use super::{Applied, Command, Consumer, ConsumerKey, MsgId, QMsg, QuorumState, Reply};
use crate::NodeId;
use crate::dead_letter::Reason;

impl QuorumState {
    /// Applies one command of the group's log. Deterministic: the same state
    /// and command give the same state and [`Applied`] on every replica.
    pub fn apply(&mut self, cmd: Command) -> Applied {
        let enqueue = matches!(cmd, Command::Enqueue { .. });
        if matches!(
            cmd,
            Command::Checkout { .. }
                | Command::Cancel { .. }
                | Command::Dequeue { .. }
                | Command::ChannelDown { .. }
                | Command::NodeDown { .. }
        ) && self.now > 0
        {
            // A consumer came or went, or a `basic.get` asked: in use now.
            self.last_active = self.now;
        }
        // A message that arrived expired, spared by the dispatch below.
        let mut spare = None;
        let mut out = match cmd {
            Command::Clock { now } => {
                self.now = self.now.max(now);
                if self.last_active == 0 {
                    // Unused since the first clock the queue saw.
                    self.last_active = self.now;
                }
                Applied::new(Reply::Done)
            }
            Command::Enqueue {
                publisher,
                size,
                expires,
            } => {
                if let Some(p) = publisher
                    && self.publishers.get(&p.channel).is_some_and(|l| p.seq <= *l)
                {
                    return Applied::new(Reply::Enqueued(None));
                }
                // A refused publish leaves no trace, not even its sequence
                // number: re-sent after a leader change, it is judged again.
                if self
                    .config
                    .limits
                    .refuses(self.ready_count(), u64::from(size))
                {
                    return Applied::new(Reply::Rejected);
                }
                if let Some(p) = publisher {
                    self.publishers.insert(p.channel, p.seq);
                }
                let id = self.next_id;
                self.next_id += 1;
                self.ready_bytes += u64::from(size);
                let msg = QMsg {
                    id,
                    size,
                    delivery_count: 0,
                };
                if let Some(at) = self.deadline(expires) {
                    self.deadlines.insert(id, at);
                }
                if self.has_expired(&msg) {
                    spare = Some(id);
                }
                self.ready.push_back(msg);
                Applied::new(Reply::Enqueued(Some(id)))
            }
            Command::Checkout {
                consumer,
                node,
                prefetch,
                no_ack,
            } => {
                self.checkout(consumer, node, prefetch, no_ack);
                Applied::new(Reply::Done)
            }
            Command::Cancel { consumer } => {
                if let Some(c) = self.consumers.get_mut(&consumer) {
                    c.cancelled = true;
                }
                self.leave_service(&consumer);
                self.forget_if_done(&consumer);
                Applied::new(Reply::Done)
            }
            Command::Settle { channel, ids } => {
                let mut out = Applied::new(Reply::Done);
                for m in self.take(channel, &ids) {
                    out.removed.push(m.id);
                }
                out
            }
            Command::Discard { channel, ids } => {
                let mut out = Applied::new(Reply::Done);
                for m in self.take(channel, &ids) {
                    self.dead(&mut out, m.id, Reason::Rejected);
                }
                out
            }
            Command::Return { channel, ids } => {
                let mut out = Applied::new(Reply::Done);
                let back = self.take(channel, &ids);
                self.put_back(back, &mut out);
                out
            }
            Command::Dequeue {
                channel,
                node,
                no_ack,
            } => self.dequeue(channel, node, no_ack),
            Command::Purge => {
                let mut out = Applied::new(Reply::Done);
                out.removed.extend(self.ready.drain(..).map(|m| m.id));
                self.ready_bytes = 0;
                out.reply = Reply::Purged(out.removed.len() as u64);
                out
            }
            Command::ChannelDown { channel } => {
                self.publishers.remove(&channel);
                let gone = self.channel_consumers(channel);
                self.drop_consumers(gone)
            }
            Command::NodeDown { node } => {
                let gone: Vec<ConsumerKey> = self
                    .consumers
                    .iter()
                    .filter(|(_, c)| c.node == node)
                    .map(|(k, _)| k.clone())
                    .collect();
                self.drop_consumers(gone)
            }
            Command::DeadLettered { ids } => {
                let mut out = Applied::new(Reply::Done);
                out.removed.extend(
                    ids.into_iter()
                        .filter(|id| self.dead_letters.remove(id).is_some()),
                );
                out
            }
            Command::Configure { config } => {
                self.config = config;
                Applied::new(Reply::Done)
            }
            Command::DeadLetterAgain => {
                let mut out = Applied::new(Reply::Done);
                out.dead
                    .extend(self.dead_letters.iter().map(|(id, why)| (*id, *why)));
                out
            }
        };
        self.activate_next();
        self.dispatch(&mut out, spare);
        if enqueue {
            self.drop_excess(&mut out);
        }
        // What expired at the head goes (the spared message too if no
        // consumer took it), also what `drop-head` left at the head.
        self.expire_heads(&mut out, None);
        self.release_drained();
        self.forget_deadlines(&out.removed);
        out
    }

    /// What a length limit counts: ready messages and their bytes.
    fn ready_count(&self) -> crate::queue::limits::Ready {
        crate::queue::limits::Ready {
            len: self.ready.len(),
            bytes: self.ready_bytes,
        }
    }

    /// `drop-head`: after an enqueue and the dispatch that may hand it to a
    /// waiting consumer, the oldest ready messages over `x-max-length` or
    /// `x-max-length-bytes` go.
    fn drop_excess(&mut self, out: &mut Applied) {
        while self.config.limits.over(self.ready_count()) {
            let Some(m) = self.ready.pop_front() else {
                break;
            };
            self.ready_bytes -= u64::from(m.size);
            self.dead(out, m.id, Reason::Maxlen);
        }
    }

    /// A message gone for `why`: removed, or, if the queue dead-letters,
    /// kept aside until it is re-published (at least once: a leader that
    /// dies first leaves it to the next).
    pub(super) fn dead(&mut self, out: &mut Applied, id: MsgId, why: Reason) {
        if self.config.dead_letters {
            self.dead_letters.insert(id, why);
            self.deadlines.remove(&id);
            out.dead.push((id, why));
        } else {
            out.removed.push(id);
        }
    }

    /// Gives back what a drained backlog left of the ready queue's capacity
    /// (a `VecDeque` keeps it: a million messages once queued would hold
    /// 16–32 MiB for good). Capacity is not part of the replicated state.
    fn release_drained(&mut self) {
        const KEEP: usize = 4096;
        let (len, cap) = (self.ready.len(), self.ready.capacity());
        if cap > KEEP && len < cap / 4 {
            self.ready.shrink_to(KEEP.max(len * 2));
        }
    }

    fn checkout(&mut self, key: ConsumerKey, node: NodeId, prefetch: u32, no_ack: bool) {
        if key.is_get() {
            return;
        }
        let order = self.checkouts;
        let c = self.consumers.entry(key.clone()).or_insert(Consumer {
            node,
            prefetch,
            no_ack,
            cancelled: true,
            in_service: false,
            checked: Default::default(),
            order,
        });
        if c.cancelled {
            // New, or back after a cancel: it queues behind the others for
            // the single active place (a re-attachment keeps its place).
            c.order = order;
            self.checkouts += 1;
        }
        c.node = node;
        c.prefetch = prefetch;
        c.no_ack = no_ack;
        c.cancelled = false;
        self.enter_service(&key);
    }

    fn dequeue(&mut self, channel: u64, node: NodeId, no_ack: bool) -> Applied {
        let mut out = Applied::new(Reply::Got(None));
        self.expire_heads(&mut out, None);
        let Some(msg) = self.ready.pop_front() else {
            return out;
        };
        self.ready_bytes -= u64::from(msg.size);
        out.reply = Reply::Got(Some((msg, self.ready.len() as u64)));
        if no_ack {
            out.removed.push(msg.id);
        } else {
            let c = self
                .consumers
                .entry(ConsumerKey::get(channel))
                .or_insert(Consumer {
                    node,
                    prefetch: 0,
                    no_ack: false,
                    cancelled: false,
                    in_service: false,
                    checked: Default::default(),
                    order: 0,
                });
            c.checked.insert(msg.id, msg);
            self.checked += 1;
        }
        out
    }

    /// The consumers (and `basic.get` holder) of `channel`, in key order.
    fn channel_consumers(&self, channel: u64) -> Vec<ConsumerKey> {
        self.consumers
            .range(ConsumerKey::get(channel)..)
            .take_while(|(k, _)| k.channel == channel)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Takes the messages `ids` from the consumers of `channel` that hold
    /// them (acks are channel-scoped in AMQP: a delivery tag names a channel,
    /// not a consumer); ids none of them holds are ignored.
    fn take(&mut self, channel: u64, ids: &[MsgId]) -> Vec<QMsg> {
        let mut taken = Vec::new();
        for key in self.channel_consumers(channel) {
            let Some(c) = self.consumers.get_mut(&key) else {
                continue;
            };
            let before = taken.len();
            taken.extend(ids.iter().filter_map(|id| c.checked.remove(id)));
            let n = taken.len() - before;
            if n == 0 {
                continue;
            }
            self.checked -= n as u64;
            if !self.forget_if_done(&key) {
                self.enter_service(&key);
            }
        }
        taken
    }

    /// Returned messages go back to their places, counted; those past the
    /// delivery limit go (dead-lettered if the queue does) instead.
    fn put_back(&mut self, mut back: Vec<QMsg>, out: &mut Applied) {
        back.sort_unstable_by_key(|m| m.id);
        for mut m in back.into_iter().rev() {
            m.delivery_count = m.delivery_count.saturating_add(1);
            if self
                .config
                .delivery_limit
                .is_some_and(|limit| m.delivery_count > limit)
            {
                self.dead(out, m.id, Reason::DeliveryLimit);
                continue;
            }
            self.ready_bytes += u64::from(m.size);
            // Usually every returned id precedes the ready ones: O(1).
            if self.ready.front().is_none_or(|f| m.id < f.id) {
                self.ready.push_front(m);
            } else {
                let pos = self.ready.partition_point(|r| r.id < m.id);
                self.ready.insert(pos, m);
            }
        }
    }

    /// Removes consumers and returns everything they held.
    fn drop_consumers(&mut self, gone: Vec<ConsumerKey>) -> Applied {
        let mut out = Applied::new(Reply::Done);
        let mut back = Vec::new();
        for key in gone {
            self.leave_service(&key);
            if let Some(c) = self.consumers.remove(&key) {
                self.checked -= c.checked.len() as u64;
                back.extend(c.checked.into_values());
            }
        }
        self.put_back(back, &mut out);
        out
    }

    /// Forgets a cancelled consumer (or a `basic.get` holder) that holds
    /// nothing more. Returns whether it went.
    fn forget_if_done(&mut self, key: &ConsumerKey) -> bool {
        let done = self
            .consumers
            .get(key)
            .is_some_and(|c| (c.cancelled || key.is_get()) && c.checked.is_empty());
        if done {
            self.consumers.remove(key);
        }
        done
    }

    /// Puts a consumer that can take a message at the back of the turn
    /// (with a single active consumer, only that one).
    pub(super) fn enter_service(&mut self, key: &ConsumerKey) {
        if self.config.single_active && !self.is_active(key) {
            return;
        }
        if let Some(c) = self.consumers.get_mut(key)
            && !c.in_service
            && c.can_take(key)
        {
            c.in_service = true;
            self.service.push_back(key.clone());
        }
    }

    fn leave_service(&mut self, key: &ConsumerKey) {
        if let Some(c) = self.consumers.get_mut(key)
            && c.in_service
        {
            c.in_service = false;
            self.service.retain(|k| k != key);
        }
    }

    /// Gives ready messages to consumers with credit, one each in turn;
    /// expired ones reaching the head go to `removed` instead (all but
    /// `spare`, see `expiry`).
    fn dispatch(&mut self, out: &mut Applied, spare: Option<MsgId>) {
        loop {
            self.expire_heads(out, spare);
            if self.ready.is_empty() {
                break;
            }
            let Some(key) = self.service.pop_front() else {
                break;
            };
            let Some(c) = self.consumers.get_mut(&key) else {
                continue;
            };
            c.in_service = false;
            if !c.can_take(&key) {
                continue;
            }
            let Some(msg) = self.ready.pop_front() else {
                break;
            };
            self.ready_bytes -= u64::from(msg.size);
            c.checked.insert(msg.id, msg);
            self.checked += 1;
            out.deliveries.push(super::Delivery {
                consumer: key.clone(),
                node: c.node,
                msg,
                no_ack: c.no_ack,
            });
            if c.can_take(&key) {
                c.in_service = true;
                self.service.push_back(key);
            }
        }
    }
}
