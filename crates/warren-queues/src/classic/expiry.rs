//! Expiry in a classic queue: expired messages leave from the head, and an
//! unused queue with `x-expires` goes.
//!
//! The rule for messages is `warren_core::queue::expiry`; the actor reads
//! the clock once per burst (`QueueActor::now`) and sleeps until the head's
//! deadline when nothing else wakes it, so an expired message leaves even
//! from a queue nobody reads (its count drops, its disk copy goes).
//!
//! `x-expires` is RabbitMQ's: a queue with no consumers that nobody fetched
//! from or declared for that long is deleted, messages and all. The actor
//! only notices; the deletion is a metadata change like an auto-delete
//! queue's (so in a cluster every node drops it), and if that change does
//! not commit the queue lives on and is tried again a period later.

use tokio::time::Instant;

use warren_core::dead_letter::Reason;

use super::{AutoDeleted, QueueActor};

impl QueueActor {
    /// When the actor must wake with nothing in its mailbox: the head's
    /// deadline or the end of the queue's unused period, whichever first.
    pub(super) fn wake_at(&self) -> Option<Instant> {
        let head = self.state.head_expires().map(crate::clock::instant_of);
        let queue = self.queue_expires_at();
        match (head, queue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn queue_expires_at(&self) -> Option<Instant> {
        let after = self.expires?;
        (self.state.consumer_count() == 0).then(|| self.unused_since + after)
    }

    /// Someone used the queue: its unused period starts again (from now,
    /// also when its last consumer just left).
    pub(super) fn used(&mut self) {
        self.unused_since = Instant::now();
    }

    /// Asks for the queue's deletion once its unused period is over.
    pub(super) fn expire_queue(&mut self) {
        if self
            .queue_expires_at()
            .is_some_and(|at| at <= Instant::now())
        {
            tracing::info!(queue = %self.def.name, "deleting a queue unused for its x-expires");
            // Tried again a period later if the deletion does not happen.
            self.used();
            let _ = self.auto_deleted.send(AutoDeleted {
                name: self.def.name.clone(),
                id: self.def.id,
            });
        }
    }

    /// Drops the expired messages at the head, as of this burst's clock.
    pub(super) fn expire_heads(&mut self) {
        while let Some(gone) = self.state.expire_head(self.now) {
            self.discard(gone, Reason::Expired);
        }
    }

    /// A message that arrived expired (a TTL of 0, or a deadline that
    /// passed on its way): like RabbitMQ, it goes to a consumer that can
    /// take it at once, or it expires. Only when it is alone in the queue
    /// can it be taken at once; behind others it expires at the head.
    pub(super) fn deliver_or_expire(&mut self) {
        if self.state.ready_len() == 1 {
            self.dispatch_from(false);
        }
        self.expire_heads();
    }
}
