//! The memory watermark: how many bytes queued messages hold, and whether
//! publishers must be blocked.
//!
//! Queue actors report changes in their holdings, connections the bodies of
//! messages they have not received whole yet, transactions what they hold
//! until commit; crossing the high watermark raises this node's alarm.
//!
//! The alarm is cluster-wide, as RabbitMQ's is: the home side of every queue
//! link tells the other node when it is raised and cleared
//! ([`Memory::set_remote`]), so a node's publishers stop while any node they
//! send to is in alarm, and a publisher on one node cannot fill another
//! node's memory through a link. The `blocked` watch (this node's alarm or
//! a peer's) is what every publishing connection observes: it stops reading
//! its socket (TCP pushes back on the client) and, if the client announced
//! the `connection.blocked` capability, tells it why. Consumers keep being
//! served, so the backlog drains and the flag flips back.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;
use warren_core::NodeId;

/// Memory accounting shared by all queues of the node.
#[derive(Debug)]
pub struct Memory {
    used: AtomicI64,
    high: i64,
    /// This node is over its watermark.
    local: watch::Sender<bool>,
    /// Peers that reported their alarm over a queue link.
    remote: Mutex<BTreeSet<NodeId>>,
    /// Publishers must stop: this node's alarm or a peer's.
    blocked: watch::Sender<bool>,
}

impl Memory {
    /// A monitor that blocks publishers above `high` bytes.
    pub fn new(high: u64) -> Self {
        Self {
            used: AtomicI64::new(0),
            high: i64::try_from(high).unwrap_or(i64::MAX),
            local: watch::Sender::new(false),
            remote: Mutex::new(BTreeSet::new()),
            blocked: watch::Sender::new(false),
        }
    }

    /// Peer `node` raised (`true`) or cleared its alarm; a link that ends
    /// clears it.
    pub fn set_remote(&self, node: NodeId, alarm: bool) {
        let mut remote = self.remote.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = if alarm {
            remote.insert(node)
        } else {
            remote.remove(&node)
        };
        if changed {
            tracing::info!(node, alarm, "a peer's memory alarm");
            self.refresh(&remote);
        }
    }

    /// Recomputes `blocked` (under the `remote` lock, so racing changes
    /// settle on the truth).
    fn refresh(&self, remote: &BTreeSet<NodeId>) {
        let should = *self.local.borrow() || !remote.is_empty();
        self.blocked.send_if_modified(|b| {
            let changed = *b != should;
            *b = should;
            changed
        });
    }

    /// Adds (or, negative, removes) bytes held by messages.
    pub fn adjust(&self, delta: i64) {
        if delta == 0 {
            return;
        }
        let prev = self.used.fetch_add(delta, Ordering::AcqRel);
        let now = prev + delta;
        if (prev < self.high) != (now < self.high) {
            // Recompute under the lock from the latest value, so racing
            // crossings settle on the truth rather than on the last writer.
            let remote = self.remote.lock().unwrap_or_else(PoisonError::into_inner);
            let changed = self.local.send_if_modified(|b| {
                let should = self.used.load(Ordering::Acquire) >= self.high;
                let changed = *b != should;
                *b = should;
                changed
            });
            if changed {
                self.refresh(&remote);
            }
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> i64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn high(&self) -> i64 {
        self.high
    }

    /// A receiver of the blocked flag (this node's alarm or a peer's).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.blocked.subscribe()
    }

    /// A receiver of this node's own alarm (what links tell peers).
    pub fn local_alarm(&self) -> watch::Receiver<bool> {
        self.local.subscribe()
    }
}

/// Memory available to this process: the cgroup limit if one is set, else RAM.
pub fn total_memory() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match (cgroup, meminfo) {
        (Some(c), Some(m)) => c.min(m),
        (Some(c), None) => c,
        (None, Some(m)) => m,
        (None, None) => 1 << 30,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_on_crossing() {
        let m = Memory::new(100);
        let rx = m.subscribe();
        m.adjust(60);
        assert!(!*rx.borrow());
        m.adjust(50);
        assert!(*rx.borrow());
        m.adjust(-20);
        assert!(!*rx.borrow());
        assert_eq!(m.used(), 90);
    }

    #[test]
    fn a_peer_alarm_blocks_publishers_here_until_cleared() {
        let m = Memory::new(100);
        let (blocked, local) = (m.subscribe(), m.local_alarm());
        m.set_remote(2, true);
        m.set_remote(3, true);
        assert!(*blocked.borrow());
        assert!(!*local.borrow(), "a peer's alarm is not echoed as ours");
        m.set_remote(2, false);
        assert!(*blocked.borrow(), "node 3 is still in alarm");
        m.adjust(150);
        m.set_remote(3, false);
        assert!(*blocked.borrow() && *local.borrow());
        m.adjust(-100);
        assert!(!*blocked.borrow() && !*local.borrow());
    }
}
