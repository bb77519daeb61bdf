//! Dead-lettering in a classic queue: with `x-dead-letter-exchange`, what
//! the queue rejects, expires or drops for its length goes to the node's
//! dead-letter publisher (`api::dead_letters`) instead of away.
//!
//! The messages leave the queue's state at once; a persistent message's
//! copy on disk stays until the publisher has it accepted by the queues it
//! routes to (the publisher deletes it then), so a crash in between brings
//! the message back to this queue, never loses it. The burst's dead letters
//! are sent after the burst: a publisher that falls behind makes the queue
//! wait, and so its own publishers and consumers.

use warren_core::Message;
use warren_core::dead_letter::Reason;
use warren_core::queue::Entry;
use warren_core::queue::state::Seq;

use super::QueueActor;
use crate::api::DeadLetters;

impl QueueActor {
    /// Messages that left the queue for `why`: dead-lettered if the queue
    /// has a dead-letter exchange, else gone with their disk copies.
    pub(super) fn dead_letter_or_forget(&mut self, why: Reason, gone: Vec<Entry>) {
        if self.dlx.is_none() {
            self.forget(gone);
            return;
        }
        let durable = self.def.durable;
        let msgs = gone
            .into_iter()
            .map(|e| {
                let stored = durable && e.msg.persistent;
                (e.seq, e.msg, stored)
            })
            .collect();
        self.dead_letter(why, msgs);
    }

    /// A paged message dead-lettered: its body from memory if it was still
    /// pinned, else read back from disk (a body that cannot be read is
    /// dropped, and said so).
    pub(super) fn dead_letter_paged(&mut self, why: Reason, seq: Seq, body: Option<Message>) {
        let body = match body {
            Some(m) => Some(m),
            None => {
                let (store, id) = (&self.store, self.def.id);
                match tokio::task::block_in_place(|| store.read_messages(id, &[seq])) {
                    Ok(mut read) => read.remove(&seq),
                    Err(e) => {
                        tracing::error!(queue = %self.def.name, seq, cause = %e, "could not read a message to dead-letter");
                        None
                    }
                }
            }
        };
        match body {
            Some(m) => {
                let stored = self.def.durable && m.persistent;
                self.dead_letter(why, vec![(seq, m, stored)]);
            }
            None if self.def.durable => self.ops.push(warren_store::Op::DeleteMessage {
                queue: self.def.id,
                seq,
            }),
            None => {}
        }
    }

    /// Adds messages to this burst's dead letters for `why`.
    pub(super) fn dead_letter(&mut self, why: Reason, msgs: Vec<(Seq, Message, bool)>) {
        let Some((exchange, routing_key)) = &self.dlx else {
            return;
        };
        match self.dead.iter_mut().find(|b| b.reason == why) {
            Some(b) => b.messages.extend(msgs),
            None => self.dead.push(DeadLetters {
                vhost: self.vhost.clone(),
                queue: self.def.name.clone(),
                queue_id: self.def.id,
                exchange: exchange.clone(),
                settle: None,
                routing_key: routing_key.clone(),
                reason: why,
                messages: msgs,
            }),
        }
    }

    /// Hands the burst's dead letters to the node's publisher, waiting
    /// while it is behind. Without one (a node stopping) they are dropped
    /// from memory; copies on disk bring them back after a restart.
    pub(super) async fn send_dead_letters(&mut self) {
        if self.dead.is_empty() {
            return;
        }
        let dead = std::mem::take(&mut self.dead);
        let Some(tx) = &self.dead_tx else {
            return;
        };
        for batch in dead {
            if tx.send(batch).await.is_err() {
                tracing::warn!(queue = %self.def.name, "no dead-letter publisher: messages dropped");
                return;
            }
        }
    }
}
