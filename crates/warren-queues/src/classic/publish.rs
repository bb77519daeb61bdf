//! What arrives and what leaves a classic queue's ready list: publishes,
//! refused or taken by the length limits
//! ([`Limits`](warren_core::queue::Limits)), and the messages
//! that go for good (dropped, expired, settled), dead-lettered or deleted
//! from disk.

use warren_core::dead_letter::Reason;
use warren_core::queue::{Dropped, Entry, Overflow};
use warren_store::Op;

use super::{QueueActor, release_confirms};
use crate::api::PublishBatch;

impl QueueActor {
    pub(super) fn publish(&mut self, batch: PublishBatch) {
        let mut confirmed = Vec::new();
        let mut refused = Vec::new();
        for (mut msg, confirm) in batch.items {
            if let Some(ttl) = self.ttl {
                msg.expire_by(warren_core::queue::expiry::deadline(self.now, ttl));
            }
            let expired = warren_core::queue::expiry::expired(msg.expires(), self.now);
            if expired {
                // Older expired messages go first: this one may be the head.
                self.expire_heads();
            }
            if self
                .limits
                .refuses(self.state.ready(), msg.body().len() as u64)
            {
                // `reject-publish`: a full queue nacks (under confirms) and
                // keeps nothing; `reject-publish-dlx` dead-letters it too.
                refused.extend(confirm);
                if self.limits.overflow == Overflow::RejectPublishDlx {
                    self.dead_letter(Reason::Maxlen, vec![(0, msg, false)]);
                }
                continue;
            }
            let persist = self.persists(&msg);
            let seq = self.state.publish(msg.clone());
            if persist {
                self.ops.push(Op::PutMessage {
                    queue: self.def.id,
                    seq,
                    msg,
                });
                self.ops_need_sync = true;
                self.burst_max_put = seq;
            }
            if let Some(c) = confirm {
                confirmed.push(c);
            }
            if expired {
                self.deliver_or_expire();
            }
            if self.limits.over(self.state.ready()) {
                self.drop_excess();
            }
        }
        let Some((conn, tx)) = batch.from else {
            return;
        };
        if !refused.is_empty() {
            release_confirms(vec![(conn, tx.clone(), refused)], false);
        }
        if confirmed.is_empty() {
            return;
        }
        match self.confirms.iter_mut().find(|(id, _, _)| *id == conn) {
            Some((_, _, list)) => list.extend(confirmed),
            None => self.confirms.push((conn, tx, confirmed)),
        }
    }

    /// `drop-head`: a queue past its `x-max-length` first hands what it can
    /// to waiting consumers (RabbitMQ delivers before it enqueues), then
    /// drops its oldest ready messages until it is within the limit. A
    /// dropped message was accepted: its confirm still follows its write.
    pub(super) fn drop_excess(&mut self) {
        self.dispatch();
        while self.limits.over(self.state.ready()) {
            match self.state.drop_head() {
                Some(d) => self.discard(d, Reason::Maxlen),
                None => break,
            }
        }
    }

    /// A message dropped from the head (over the limit, or expired): it is
    /// dead-lettered, or its disk copy goes.
    pub(super) fn discard(&mut self, dropped: Dropped, why: Reason) {
        match dropped {
            Dropped::Entry(e) => self.dead_letter_or_forget(why, vec![e]),
            Dropped::Paged(seq, body) if self.dlx.is_some() => {
                self.dead_letter_paged(why, seq, body)
            }
            Dropped::Paged(seq, _) if self.def.durable => {
                self.ops.push(Op::DeleteMessage {
                    queue: self.def.id,
                    seq,
                });
            }
            Dropped::Paged(..) => {}
        }
    }

    /// Messages that left the queue for good: delete their disk copies.
    pub(super) fn forget(&mut self, gone: Vec<Entry>) {
        for e in gone {
            if self.persists(&e.msg) {
                self.ops.push(Op::DeleteMessage {
                    queue: self.def.id,
                    seq: e.seq,
                });
            }
        }
    }
}
