//! `x-single-active-consumer` in a quorum queue: of the consumers that
//! have not cancelled, the one that checked out first takes every
//! delivery; the others wait. When it cancels or its channel or node goes,
//! the next oldest takes over at once (its place in the turn is all that
//! changes: what the old one holds stays with it until settled or
//! returned, as for any cancelled consumer).
//!
//! Only the active consumer ever enters the service turn, so dispatch is
//! the ordinary one. A consumer that re-attaches to a new leader checks
//! out again and keeps its place; one that cancelled and consumes again
//! queues behind the others.

use super::{ConsumerKey, QuorumState};

impl QuorumState {
    /// The single active consumer: the oldest not cancelled.
    pub(super) fn active(&self) -> Option<&ConsumerKey> {
        self.consumers
            .iter()
            .filter(|(k, c)| !k.is_get() && !c.cancelled)
            .min_by(|a, b| (a.1.order, a.0).cmp(&(b.1.order, b.0)))
            .map(|(k, _)| k)
    }

    /// True when `key` is the single active consumer.
    pub(super) fn is_active(&self, key: &ConsumerKey) -> bool {
        self.active() == Some(key)
    }

    /// With a single active consumer, puts the current one in the turn (it
    /// may have just taken over).
    pub(super) fn activate_next(&mut self) {
        if !self.config.single_active {
            return;
        }
        if let Some(key) = self.active().cloned() {
            self.enter_service(&key);
        }
    }
}
