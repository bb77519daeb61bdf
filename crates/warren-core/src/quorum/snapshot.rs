//! [`QuorumSnapshot`]: the canonical image of a [`QuorumState`], what the
//! group's Raft snapshot carries. Lists in key order, and only what cannot
//! be derived: byte and message counts and who is in the service queue are
//! recomputed on restore, so a snapshot cannot contradict itself.

use super::{Consumer, ConsumerKey, MsgId, QMsg, QuorumConfig, QuorumState};
use crate::NodeId;

/// One consumer (or `basic.get` holder) in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsumerSnapshot {
    /// Its key.
    pub key: ConsumerKey,
    /// Its channel's node.
    pub node: NodeId,
    /// Its prefetch (0: unlimited).
    pub prefetch: u32,
    /// Auto-ack.
    pub no_ack: bool,
    /// Cancelled, holding messages still.
    pub cancelled: bool,
    /// What it holds, in id order.
    pub checked: Vec<QMsg>,
    /// Its place among the consumers (the single active consumer's rule).
    #[serde(default)]
    pub order: u64,
}

/// The state of a quorum queue in canonical order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumSnapshot {
    /// Settings.
    pub config: QuorumConfig,
    /// The id the next enqueue gets.
    pub next_id: MsgId,
    /// Ready messages in id order.
    pub ready: Vec<QMsg>,
    /// Consumers in key order.
    pub consumers: Vec<ConsumerSnapshot>,
    /// The consumers' turn: who gets the next message.
    pub service: Vec<ConsumerKey>,
    /// The last sequence number enqueued per publishing channel.
    pub publishers: Vec<(u64, u64)>,
    /// The log's clock (see [`super::Command::Clock`]).
    #[serde(default)]
    pub now: u64,
    /// Checkouts so far (the next consumer's place).
    #[serde(default)]
    pub checkouts: u64,
    /// When it was last used, by the log's clock (`x-expires`).
    #[serde(default)]
    pub last_active: u64,
    /// The deadlines of the messages that have one, in id order.
    #[serde(default)]
    pub deadlines: Vec<(MsgId, u64)>,
    /// Dead letters not yet re-published, in id order.
    #[serde(default)]
    pub dead_letters: Vec<(MsgId, crate::dead_letter::Reason)>,
}

impl QuorumState {
    /// The state as a snapshot.
    pub fn snapshot(&self) -> QuorumSnapshot {
        QuorumSnapshot {
            config: self.config.clone(),
            next_id: self.next_id,
            ready: self.ready.iter().copied().collect(),
            consumers: self
                .consumers
                .iter()
                .map(|(k, c)| ConsumerSnapshot {
                    key: k.clone(),
                    node: c.node,
                    prefetch: c.prefetch,
                    no_ack: c.no_ack,
                    cancelled: c.cancelled,
                    checked: c.checked.values().copied().collect(),
                    order: c.order,
                })
                .collect(),
            service: self.service.iter().cloned().collect(),
            publishers: self.publishers.iter().map(|(c, s)| (*c, *s)).collect(),
            now: self.now,
            checkouts: self.checkouts,
            last_active: self.last_active,
            deadlines: self.deadlines.iter().map(|(id, at)| (*id, *at)).collect(),
            dead_letters: self.dead_letters.iter().map(|(id, w)| (*id, *w)).collect(),
        }
    }

    /// The state a snapshot describes.
    pub fn restore(s: QuorumSnapshot) -> Self {
        let mut state = Self {
            config: s.config,
            next_id: s.next_id,
            ready_bytes: s.ready.iter().map(|m| u64::from(m.size)).sum(),
            ready: s.ready.into(),
            publishers: s.publishers.into_iter().collect(),
            now: s.now,
            checkouts: s.checkouts,
            last_active: s.last_active,
            deadlines: s.deadlines.into_iter().collect(),
            dead_letters: s.dead_letters.into_iter().collect(),
            ..Self::default()
        };
        for c in s.consumers {
            state.consumers.insert(
                c.key,
                Consumer {
                    node: c.node,
                    prefetch: c.prefetch,
                    no_ack: c.no_ack,
                    cancelled: c.cancelled,
                    in_service: false,
                    checked: c.checked.into_iter().map(|m| (m.id, m)).collect(),
                    order: c.order,
                },
            );
        }
        // Counted from what was kept (a repeated key or id counts once).
        state.checked = state
            .consumers
            .values()
            .map(|c| c.checked.len() as u64)
            .sum();
        for key in s.service {
            if let Some(c) = state.consumers.get_mut(&key)
                && !c.in_service
            {
                c.in_service = true;
                state.service.push_back(key);
            }
        }
        state
    }
}
