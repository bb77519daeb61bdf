//! What a quorum queue's leader does with time and with what leaves for
//! good: it wakes for the head's deadline and the end of an `x-expires`
//! period (a clock entry makes every replica judge them alike), asks once
//! for an expired queue's deletion, and hands dead letters to the node.

use tokio::sync::mpsc::error::TrySendError;
use warren_core::Message;
use warren_core::dead_letter::Reason;
use warren_core::quorum::{Command, MsgId};
use warren_store::raft::queue::QueueOp;

use super::Leading;
use crate::api::DeadLetters;
use crate::quorum::waiters::Waiter;

impl Leading {
    /// Hands what the group dead-lettered to the node's publisher, at
    /// least once: they stay in the replicated state until the publisher
    /// says every queue they went to accepted them (`settled`), and a new
    /// leader hands them over again. Without a publisher or a dead-letter
    /// exchange they go at once. A publisher that is far behind gets them
    /// at the next tick (the front must not wait inside its loop).
    pub(super) fn dead_letter(&mut self, dead: Vec<(MsgId, Reason, Message)>) {
        if dead.is_empty() {
            return;
        }
        let (Some(_), Some(exchange)) = (&self.dead_tx, &self.def.args.dead_letter_exchange) else {
            let ids = dead.into_iter().map(|(id, _, _)| id).collect();
            self.settled(ids);
            return;
        };
        let mut batches: Vec<DeadLetters> = Vec::new();
        for (id, why, msg) in dead {
            match batches.iter_mut().find(|b| b.reason == why) {
                Some(b) => b.messages.push((id, msg, true)),
                None => batches.push(DeadLetters {
                    vhost: self.vhost.clone(),
                    queue: self.def.name.clone(),
                    queue_id: self.def.id,
                    exchange: exchange.clone(),
                    routing_key: self.def.args.dead_letter_routing_key.clone(),
                    reason: why,
                    messages: vec![(id, msg, true)],
                    settle: Some(self.settle_tx.clone()),
                }),
            }
        }
        self.unsent_dead.extend(batches);
        self.send_dead_letters();
    }

    /// Sends the dead letters the publisher had no room for yet.
    pub(in crate::quorum) fn send_dead_letters(&mut self) {
        let Some(tx) = &self.dead_tx else {
            return;
        };
        while let Some(b) = self.unsent_dead.pop_front() {
            match tx.try_send(b) {
                Ok(()) => {}
                Err(TrySendError::Full(b)) => {
                    tracing::debug!(queue = %self.def.name, "dead-letter publisher behind: sent at the next tick");
                    self.unsent_dead.push_front(b);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    // The node is stopping: the next leader sends them.
                    self.unsent_dead.clear();
                    return;
                }
            }
        }
    }

    /// Dead letters re-published (or with nowhere to go): their removal
    /// goes in the next proposal.
    pub(in crate::quorum) fn settled(&mut self, ids: Vec<MsgId>) {
        self.ops
            .push(QueueOp::Command(Command::DeadLettered { ids }));
        self.waiters.push(Waiter::None);
    }

    /// The deadline of the queue's head, or the end of its `x-expires`
    /// period, whichever comes first, if the leader should wake for it (no
    /// clock entry proposed for it yet).
    pub(in crate::quorum) fn expiry_due(&self) -> Option<u64> {
        let counts = &self.group.counts;
        let at = match (counts.head_expires(), counts.queue_expires()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        (self.clock_for != Some(at)).then_some(at)
    }

    /// True, once per leadership, when the queue was unused for its
    /// `x-expires` by the log's clock: the front asks for its deletion.
    pub(in crate::quorum) fn expired_once(&mut self) -> bool {
        if self.deletion_asked || !self.group.counts.expired() {
            return false;
        }
        self.deletion_asked = true;
        true
    }

    /// A deadline `at` passed with nothing else going on: a clock entry
    /// makes every replica expire what it must.
    pub(in crate::quorum) fn clock_passed(&mut self, at: u64) {
        self.clock_for = Some(at);
        self.ops.push(QueueOp::Command(Command::Clock {
            now: crate::clock::unix_ms(),
        }));
        self.waiters.push(Waiter::None);
    }
}
