//! The memory watermark: how many bytes queued messages hold, and whether
//! publishers must be blocked.
//!
//! Queue actors report changes in their holdings; crossing the high watermark
//! flips a `watch` that every publishing connection observes: it stops reading
//! its socket (TCP pushes back on the client) and, if the client announced the
//! `connection.blocked` capability, tells it why. Consumers keep being served,
//! so the backlog drains and the flag flips back.

use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::watch;

/// Memory accounting shared by all queues of the node.
#[derive(Debug)]
pub struct Memory {
    used: AtomicI64,
    high: i64,
    blocked: watch::Sender<bool>,
}

impl Memory {
    /// A monitor that blocks publishers above `high` bytes.
    pub fn new(high: u64) -> Self {
        Self {
            used: AtomicI64::new(0),
            high: i64::try_from(high).unwrap_or(i64::MAX),
            blocked: watch::Sender::new(false),
        }
    }

    /// Adds (or, negative, removes) bytes held by messages.
    pub fn adjust(&self, delta: i64) {
        if delta == 0 {
            return;
        }
        let prev = self.used.fetch_add(delta, Ordering::AcqRel);
        let now = prev + delta;
        if (prev < self.high) != (now < self.high) {
            // Recompute under the watch's lock from the latest value, so racing
            // crossings settle on the truth rather than on the last writer.
            self.blocked.send_if_modified(|b| {
                let should = self.used.load(Ordering::Acquire) >= self.high;
                let changed = *b != should;
                *b = should;
                changed
            });
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

    /// A receiver of the blocked flag.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.blocked.subscribe()
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
}
