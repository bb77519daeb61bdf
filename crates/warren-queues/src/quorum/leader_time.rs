//! What a quorum queue's leader does with time and with what leaves for
//! good: it wakes for the head's deadline and the end of an `x-expires`
//! period (a clock entry makes every replica judge them alike), asks once
//! for an expired queue's deletion, and hands dead letters to the node.

use warren_core::Message;
use warren_core::dead_letter::Reason;
use warren_core::quorum::Command;
use warren_store::raft::queue::QueueOp;

use super::Leading;
use crate::api::DeadLetters;
use crate::quorum::waiters::Waiter;

impl Leading {
    /// Hands what the group dead-lettered to the node's publisher. At most
    /// once, as RabbitMQ's quorum queues do by default: the entry that
    /// removed them is committed, so a leader that dies now loses them; a
    /// publisher that is far behind drops them too (and says so), as the
    /// front must not wait inside its loop.
    pub(super) fn dead_letter(&mut self, dead: Vec<(Reason, Message)>) {
        let (Some(tx), Some(exchange)) = (&self.dead_tx, &self.def.args.dead_letter_exchange)
        else {
            return;
        };
        let mut batches: Vec<DeadLetters> = Vec::new();
        for (why, msg) in dead {
            match batches.iter_mut().find(|b| b.reason == why) {
                Some(b) => b.messages.push((0, msg, false)),
                None => batches.push(DeadLetters {
                    vhost: self.vhost.clone(),
                    queue: self.def.name.clone(),
                    queue_id: self.def.id,
                    exchange: exchange.clone(),
                    routing_key: self.def.args.dead_letter_routing_key.clone(),
                    reason: why,
                    messages: vec![(0, msg, false)],
                }),
            }
        }
        for b in batches {
            if let Err(e) = tx.try_send(b) {
                tracing::warn!(queue = %self.def.name, cause = %e, "dead letters dropped");
            }
        }
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
