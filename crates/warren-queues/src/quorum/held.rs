//! What this node's channels hold of one quorum queue (delivered, not yet
//! settled), so that a message sent again reaches a channel once.
//!
//! A new leader cannot know which of a consumer's messages the old one sent
//! before it died, so it sends everything the consumer holds again
//! (redelivered). The consumer's node knows: it drops an id one of its
//! channels still holds. Only deliveries that wait for an ack are recorded;
//! auto-ack ones are settled as they are sent.

use std::collections::{HashMap, HashSet};

use warren_core::quorum::MsgId;

/// Unsettled deliveries of one quorum queue, by channel id.
#[derive(Debug, Default)]
pub(super) struct Held(HashMap<u64, HashSet<MsgId>>);

impl Held {
    /// Records that `channel` got `id`; false if it holds it already (the
    /// delivery is a duplicate, to drop).
    pub(super) fn deliver(&mut self, channel: u64, id: MsgId) -> bool {
        self.0.entry(channel).or_default().insert(id)
    }

    /// Whether `channel` holds `id` (a delivery of it now is a duplicate).
    pub(super) fn holds(&self, channel: u64, id: MsgId) -> bool {
        self.0.get(&channel).is_some_and(|h| h.contains(&id))
    }

    /// `channel` acked, rejected or requeued `ids`.
    pub(super) fn settled(&mut self, channel: u64, ids: &[MsgId]) {
        if let Some(held) = self.0.get_mut(&channel) {
            for id in ids {
                held.remove(id);
            }
            if held.is_empty() {
                self.0.remove(&channel);
            }
        }
    }

    /// `channel` closed: what it held went back to the queue.
    pub(super) fn closed(&mut self, channel: u64) {
        self.0.remove(&channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_gets_an_id_once_until_it_settles_it() {
        let mut h = Held::default();
        assert!(h.deliver(1, 7));
        assert!(!h.deliver(1, 7), "sent again by a new leader: dropped");
        assert!(h.deliver(2, 7), "another channel is another holder");
        h.settled(1, &[7]);
        assert!(
            h.deliver(1, 7),
            "settled, then delivered again: a new delivery"
        );
        h.closed(1);
        assert!(h.deliver(1, 7));
    }
}
