//! Expiry in a classic queue: expired messages leave from the head.
//!
//! The rule is `warren_core::queue::expiry`; the actor reads the clock once
//! per burst (`QueueActor::now`) and sleeps until the head's deadline when
//! nothing else wakes it, so an expired message leaves even from a queue
//! nobody reads (its count drops, its disk copy goes).

use super::QueueActor;

impl QueueActor {
    /// Drops the expired messages at the head, as of this burst's clock.
    pub(super) fn expire_heads(&mut self) {
        while let Some(gone) = self.state.expire_head(self.now) {
            self.discard(gone);
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
