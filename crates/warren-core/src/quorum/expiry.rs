//! Expiry in a quorum queue: the classic queue's rule
//! ([`crate::queue::expiry`]) inside the deterministic apply.
//!
//! Deadlines are set when an enqueue is applied (its own, lowered to the
//! log's clock plus `x-message-ttl`) and compared with the log's clock, so
//! every replica expires the same messages at the same entry. A message
//! that arrives expired (a TTL of 0) may still go to a consumer in the
//! dispatch of the very command that brought it; otherwise it expires then.

use super::{Applied, MsgId, QMsg, QuorumState};
use crate::dead_letter::Reason;
use crate::queue::expiry;

impl QuorumState {
    /// The deadline of a message enqueued now with its own `expires`.
    pub(super) fn deadline(&self, own: Option<u64>) -> Option<u64> {
        // Before the first clock (entries written before clocks existed)
        // a TTL has nothing to count from.
        let ttl = self
            .config
            .message_ttl
            .filter(|_| self.now > 0)
            .map(|t| expiry::deadline(self.now, t));
        let at = match (own, ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Never 0, which the runtime's counters read as "none".
        at.map(|a| a.max(1))
    }

    /// True when `m` has expired by the log's clock.
    pub(super) fn has_expired(&self, m: &QMsg) -> bool {
        self.now > 0 && expiry::expired(self.deadlines.get(&m.id).copied(), self.now)
    }

    /// Forgets the deadlines of messages gone for good (every removal of a
    /// command is in its `removed`).
    pub(super) fn forget_deadlines(&mut self, removed: &[MsgId]) {
        if !self.deadlines.is_empty() {
            for id in removed {
                self.deadlines.remove(id);
            }
        }
    }

    /// Drops the expired messages at the head (dead-lettered if the queue
    /// does), stopping at `spare` (a message that arrived expired, still
    /// owed its chance to reach a consumer at once).
    pub(super) fn expire_heads(&mut self, out: &mut Applied, spare: Option<MsgId>) {
        while let Some(m) = self.ready.front().copied() {
            if Some(m.id) == spare || !self.has_expired(&m) {
                return;
            }
            self.ready.pop_front();
            self.ready_bytes -= u64::from(m.size);
            self.dead(out, m.id, Reason::Expired);
        }
    }
}
