//! Ids of connections, channel openings and consumers: unique in the cluster
//! and across restarts, because each carries the node id and an epoch of the
//! node in its top bits. Queues homed on other nodes key their unacked
//! messages and consumers by them.
//!
//! The number below the epoch has 32 bits. A node that opens channels at
//! 10,000 a second runs through them in five days, and an id that came round
//! again could name a channel still open (its unacked messages, its
//! consumers on a remote queue). So a counter that reaches the end does not
//! wrap: it takes a fresh epoch, persisted by the store like a restart's, and
//! starts again at 1. Every (kind, epoch) pair is then used once, whatever the
//! uptime.

use std::sync::{Mutex, PoisonError};

use warren_core::NodeId;
use warren_core::queue::{ConnectionId, connection_id};

/// Persists and returns a fresh epoch of this node (`None`: the store
/// failed; the counter then wraps in its old epoch, and says so).
pub type RenewEpoch = Box<dyn Fn() -> Option<u64> + Send + Sync>;

/// The id allocator of one start of a node.
pub struct Ids {
    node: NodeId,
    renew: RenewEpoch,
    connections: Mutex<Counter>,
    channels: Mutex<Counter>,
    consumers: Mutex<Counter>,
}

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ids").field("node", &self.node).finish()
    }
}

/// One kind of id: the epoch it counts in and the next number.
#[derive(Debug)]
struct Counter {
    epoch: u64,
    next: u32,
}

impl Ids {
    /// Ids of node `node`, starting in `epoch`; `renew` gives a new epoch
    /// when a counter runs out.
    pub fn new(node: NodeId, epoch: u64, renew: RenewEpoch) -> Self {
        Self::starting_at(node, epoch, 1, renew)
    }

    /// Like [`Ids::new`] with every counter at `next` (tests of the end of
    /// the range).
    pub fn starting_at(node: NodeId, epoch: u64, next: u32, renew: RenewEpoch) -> Self {
        let counter = || Mutex::new(Counter { epoch, next });
        Self {
            node,
            renew,
            connections: counter(),
            channels: counter(),
            consumers: counter(),
        }
    }

    /// A fresh connection id.
    pub fn connection(&self) -> ConnectionId {
        self.take(&self.connections)
    }

    /// A fresh id for an opening of a channel.
    pub fn channel(&self) -> u64 {
        self.take(&self.channels)
    }

    /// A fresh consumer id.
    pub fn consumer(&self) -> u64 {
        self.take(&self.consumers)
    }

    /// The next id of `counter`. A lock per connection, channel or consumer
    /// opened, never per message.
    fn take(&self, counter: &Mutex<Counter>) -> u64 {
        let mut c = counter.lock().unwrap_or_else(PoisonError::into_inner);
        if c.next == u32::MAX {
            match (self.renew)() {
                Some(epoch) => {
                    tracing::info!(epoch, "an id counter ran out; it continues in a new epoch");
                    c.epoch = epoch;
                }
                None => tracing::error!(
                    "an id counter ran out and no new epoch could be stored; ids repeat"
                ),
            }
            c.next = 1;
        }
        let n = c.next;
        c.next += 1;
        connection_id(self.node, c.epoch, n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use warren_core::queue::connection_node;

    use super::*;

    #[test]
    fn a_counter_at_its_end_continues_in_a_new_epoch_without_repeating() {
        let stored = Arc::new(AtomicU64::new(7));
        let renew: RenewEpoch = {
            let stored = stored.clone();
            Box::new(move || Some(stored.fetch_add(1, Ordering::SeqCst) + 1))
        };
        let ids = Ids::starting_at(3, 7, u32::MAX - 2, renew);
        let mut seen = HashSet::new();
        for _ in 0..10 {
            let id = ids.channel();
            assert!(seen.insert(id), "id {id:#x} repeated");
            assert_eq!(connection_node(id), 3);
        }
        // The two left in epoch 7, then eight in epoch 8 from number 1.
        assert_eq!(stored.load(Ordering::SeqCst), 8);
        assert_eq!(ids.channel(), connection_id(3, 8, 9));
        // Other kinds keep their own counters.
        assert_eq!(ids.connection(), connection_id(3, 7, u32::MAX - 2));
    }

    #[test]
    fn a_store_that_cannot_renew_wraps_in_the_old_epoch() {
        let ids = Ids::starting_at(1, 2, u32::MAX - 1, Box::new(|| None));
        assert_eq!(ids.consumer(), connection_id(1, 2, u32::MAX - 1));
        assert_eq!(ids.consumer(), connection_id(1, 2, 1));
    }
}
