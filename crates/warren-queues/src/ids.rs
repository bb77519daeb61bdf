//! Ids of connections, channel openings and consumers: unique in the cluster
//! and across restarts, because each carries the node id and the node's
//! epoch (its start count) in its top bits. Queues homed on other nodes key
//! their unacked messages and consumers by them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use warren_core::NodeId;
use warren_core::queue::{ConnectionId, connection_id};

/// The id allocator of one start of a node.
#[derive(Debug)]
pub struct Ids {
    node: NodeId,
    epoch: u64,
    next_conn: AtomicU32,
    next_channel: AtomicU64,
    next_consumer: AtomicU64,
}

impl Ids {
    /// Ids of node `node` in its start `epoch`.
    pub fn new(node: NodeId, epoch: u64) -> Self {
        Self {
            node,
            epoch,
            next_conn: AtomicU32::new(1),
            next_channel: AtomicU64::new(1),
            next_consumer: AtomicU64::new(1),
        }
    }

    /// A fresh connection id.
    pub fn connection(&self) -> ConnectionId {
        let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
        connection_id(self.node, self.epoch, n)
    }

    /// A fresh id for an opening of a channel.
    pub fn channel(&self) -> u64 {
        self.numbered(&self.next_channel)
    }

    /// A fresh consumer id.
    pub fn consumer(&self) -> u64 {
        self.numbered(&self.next_consumer)
    }

    fn numbered(&self, counter: &AtomicU64) -> u64 {
        connection_id(self.node, self.epoch, 0)
            | (counter.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff)
    }
}
