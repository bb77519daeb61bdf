//! Credit between queues and the connections that consume from them.
//!
//! A queue must never wait on a connection (a slow client would stall every
//! other consumer of the queue), so deliveries travel over an unbounded channel,
//! and what bounds them is credit:
//!
//! - [`ConsumerFlow`]: deliveries handed to a connection but not yet encoded into
//!   its write buffer, per consumer, at most [`DELIVERY_WINDOW`]. The connection
//!   stops taking events while its write buffer is full, so a client that does
//!   not read leaves its messages in the queue, not in the broker's buffers.
//!   This is RabbitMQ's `credit_flow` between queue and channel.
//! - [`ChannelCredit`]: unacked messages of a channel, against `basic.qos` with
//!   `global=true` (RabbitMQ's reading: a limit shared by the channel's
//!   consumers), and the channel's `channel.flow` switch.
//! - [`ByteBudget`]: bytes of publishes on their way to another node, per
//!   queue link: mailboxes bound messages by count, and a burst of large
//!   messages must not fill this node (or, once delivered, the home node)
//!   past what the memory alarm can stop in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::backlog::Backlog;
use super::mailbox::QueueMsg;

/// Most deliveries in flight from a queue to one consumer's connection.
pub const DELIVERY_WINDOW: u32 = 512;

/// A queue's signal to its publishers that consumers are falling behind.
///
/// Accepting messages faster than a queue's consumers take them only grows
/// the backlog (and the latency of every message in it). While a queue is
/// *busy* ([`super::backlog::Backlog`] decides when), connections that
/// publish to it pause reading their socket until it drains, or for at
/// most [`QueueFlow::MAX_PAUSE`] at a time (so a connection that also
/// consumes and acks on the same queue keeps making progress). This is the
/// effect of RabbitMQ's credit flow between channel and queue.
#[derive(Debug, Default)]
pub struct QueueFlow {
    busy: AtomicBool,
    drained: tokio::sync::Notify,
}

impl QueueFlow {
    /// Longest pause of a publishing connection per busy signal.
    pub const MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

    /// Queue side: updates the signal from the queue's backlog at `now`.
    pub fn update(
        &self,
        backlog: &mut Backlog,
        ready: usize,
        consumers: usize,
        delivered: u64,
        now: tokio::time::Instant,
    ) {
        backlog.observe(delivered, now);
        let was = self.busy.load(Ordering::Acquire);
        self.set_busy(backlog.busy(was, ready, consumers));
    }

    /// Sets the signal: from the queue's backlog, or, for a queue homed on
    /// another node, as its home reports it over the link.
    pub fn set_busy(&self, busy: bool) {
        if self.busy.swap(busy, Ordering::AcqRel) && !busy {
            self.drained.notify_waiters();
        }
    }

    /// Whether publishers should pause.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Connection side: waits until the queue drained or `until` passed.
    ///
    /// The caller keeps `until` across wake-ups for other reasons, so that a
    /// stream of unrelated events cannot stretch the pause.
    pub async fn wait(&self, until: tokio::time::Instant) {
        let drained = self.drained.notified();
        if !self.busy() {
            return;
        }
        let _ = tokio::time::timeout_at(until, drained).await;
    }
}

/// Per-consumer delivery credit.
#[derive(Debug)]
pub struct ConsumerFlow {
    outstanding: AtomicU32,
    starved: AtomicBool,
    wake: mpsc::Sender<QueueMsg>,
    /// Set on the node that holds the consumer of a queue homed elsewhere.
    remote: Option<RemoteReturn>,
}

/// Credit of a consumer whose queue lives on another node: writes are
/// counted here and sent back to the queue's home in batches.
#[derive(Debug)]
struct RemoteReturn {
    consumer: u64,
    returned: AtomicU32,
    tx: mpsc::UnboundedSender<(u64, u32)>,
}

/// Deliveries a remote consumer writes before its credit goes home: a
/// quarter of the window, so the home never waits on a batch.
pub const REMOTE_CREDIT_BATCH: u32 = DELIVERY_WINDOW / 4;

impl ConsumerFlow {
    /// Credit for a consumer of the queue whose mailbox is `wake`.
    pub fn new(wake: mpsc::Sender<QueueMsg>) -> Self {
        Self {
            outstanding: AtomicU32::new(0),
            starved: AtomicBool::new(false),
            wake,
            remote: None,
        }
    }

    /// Credit for consumer `consumer` of a queue homed on another node:
    /// written deliveries are reported on `tx` in batches of
    /// [`REMOTE_CREDIT_BATCH`] (the home keeps the window). Queue-side calls
    /// are never made on it.
    pub fn remote(
        consumer: u64,
        wake: mpsc::Sender<QueueMsg>,
        tx: mpsc::UnboundedSender<(u64, u32)>,
    ) -> Self {
        Self {
            remote: Some(RemoteReturn {
                consumer,
                returned: AtomicU32::new(0),
                tx,
            }),
            ..Self::new(wake)
        }
    }

    /// Queue side: takes one credit, or marks the consumer starved.
    pub fn try_acquire(&self) -> bool {
        if self.outstanding.load(Ordering::Acquire) >= DELIVERY_WINDOW {
            self.starved.store(true, Ordering::Release);
            // Re-check: the connection may have drained between load and store.
            if self.outstanding.load(Ordering::Acquire) >= DELIVERY_WINDOW {
                return false;
            }
            self.starved.store(false, Ordering::Release);
        }
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Connection side: one delivery was written (or dropped). Wakes the queue
    /// once half the window is free again, if it had found the consumer starved.
    pub fn release(&self) {
        if let Some(r) = &self.remote {
            if r.returned.fetch_add(1, Ordering::AcqRel) + 1 >= REMOTE_CREDIT_BATCH {
                let n = r.returned.swap(0, Ordering::AcqRel);
                if n > 0 {
                    let _ = r.tx.send((r.consumer, n));
                }
            }
            return;
        }
        let prev = self.outstanding.fetch_sub(1, Ordering::AcqRel);
        if prev <= DELIVERY_WINDOW / 2 + 1 && self.starved.swap(false, Ordering::AcqRel) {
            let _ = self.wake.try_send(QueueMsg::Wake);
        }
    }
}

/// A channel's shared prefetch credit and flow switch.
#[derive(Debug, Default)]
pub struct ChannelCredit {
    limit: AtomicU32,
    unacked: AtomicU32,
    paused: AtomicBool,
}

impl ChannelCredit {
    /// The channel-wide prefetch (0: unlimited).
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Acquire)
    }

    /// Sets the channel-wide prefetch (0: unlimited).
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Release);
    }

    /// `channel.flow`: pauses or resumes deliveries to the channel.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    /// Whether deliveries may go to this channel at all.
    pub fn active(&self) -> bool {
        !self.paused.load(Ordering::Acquire)
    }

    /// Queue side: takes one unacked slot for an ack-mode delivery.
    pub fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        let mut cur = self.unacked.load(Ordering::Acquire);
        loop {
            if limit != 0 && cur >= limit {
                return false;
            }
            match self.unacked.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Channel side: `n` unacked messages were settled. Returns true when the
    /// channel was at its limit, so its queues should be woken.
    pub fn release(&self, n: u32) -> bool {
        if n == 0 {
            return false;
        }
        let prev = self
            .unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            })
            .unwrap_or(0);
        let limit = self.limit.load(Ordering::Acquire);
        limit != 0 && prev >= limit
    }
}

/// Bytes that may be in flight on one path at once.
#[derive(Debug)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

impl ByteBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Waits until `bytes` fit (a batch larger than the whole budget waits
    /// for all of it); the bytes return when the permit is dropped.
    pub async fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes.clamp(1, self.total)).unwrap_or(u32::MAX);
        self.permits.clone().acquire_many_owned(n).await.ok()
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}
