//! Counters of queue traffic between nodes, for `warren cluster status`
//! and the benchmark (gRPC frames per forwarded message shows batching).

use std::sync::atomic::{AtomicU64, Ordering};

/// Publishes forwarded to other nodes' queues.
pub static FORWARDED_PUBLISHES: AtomicU64 = AtomicU64::new(0);
/// `Up` frames (gRPC stream messages) sent to other nodes.
pub static UP_FRAMES: AtomicU64 = AtomicU64::new(0);
/// Deliveries received from other nodes' queues.
pub static REMOTE_DELIVERIES: AtomicU64 = AtomicU64::new(0);
/// `Down` frames received from other nodes.
pub static DOWN_FRAMES: AtomicU64 = AtomicU64::new(0);

/// Raft RPCs sent (append entries and heartbeats, votes, snapshot
/// chunks), every group included: what many idle quorum queues cost.
pub static RAFT_RPCS: AtomicU64 = AtomicU64::new(0);

/// Adds `n` to `counter`.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Reads `counter`.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
