//! The leader's checks for consumers that are gone but never said so.
//!
//! A consumer leaves the replicated state when its channel's close reaches
//! a leader (`ChannelDown`) or its node is reported down (`NodeDown`). Both
//! can miss: a close forwarded to a leader that died before proposing it,
//! or sent while the link to the leader was down; a node that crashed and
//! came back before anyone noticed (its old channels never close). Such a
//! consumer holds its messages forever. So the leader checks:
//!
//! - once, [`NODES_CHECK_AFTER`] after it took over: nodes that do not
//!   answer are reported down (their consumers were attached to an earlier
//!   leader, and no link here will ever report them closed);
//! - every [`CHANNELS_CHECK_EVERY`]: it asks the node of each channel that
//!   holds consumers or messages whether the channel is still open
//!   (`warren_cluster::LiveChannels`). A closed channel stays closed (ids
//!   are never reused), so `ChannelDown` for it is always right; a node
//!   that does not answer is left alone (the first check covers it after
//!   the next leader change, and its consumers may still ack).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;
use warren_core::NodeId;
use warren_core::queue::connection_node;

use super::{Front, PROBE_TIMEOUT, Role};

/// How long a new leader waits for consumers to attach before it looks for
/// nodes that are down: what their consumers held goes back to the queue.
pub(super) const NODES_CHECK_AFTER: Duration = Duration::from_secs(3);
/// How often the leader asks whether its consumers' channels are open.
pub(super) const CHANNELS_CHECK_EVERY: Duration = Duration::from_secs(5);

/// What a check found.
pub(super) enum Found {
    /// Nodes that did not answer.
    NodesDown(Vec<NodeId>),
    /// Channels that are closed (possibly none: the check is over).
    ChannelsGone(Vec<u64>),
}

impl Front {
    /// Once a new leader's consumers had time to attach, the nodes that do
    /// not answer are reported down. Their nodes attach their consumers
    /// again if they come back.
    pub(super) fn check_nodes(&mut self) {
        let due = self
            .led_since
            .is_some_and(|t| t.elapsed() >= NODES_CHECK_AFTER);
        if !due || !matches!(self.role, Role::Leader(_)) {
            return;
        }
        self.led_since = None;
        let Some(node) = self.env.node.upgrade() else {
            return;
        };
        let (me, tx) = (self.env.me, self.found_tx.clone());
        tokio::spawn(async move {
            let mut down = Vec::new();
            for (id, addr) in node.member_addrs() {
                if id != me && node.peer_status(&addr, PROBE_TIMEOUT).await.is_none() {
                    down.push(id);
                }
            }
            if !down.is_empty() {
                let _ = tx.send(Found::NodesDown(down));
            }
        });
    }

    /// Every [`CHANNELS_CHECK_EVERY`] on the leader: asks which channels
    /// with consumers or held messages are closed (one check at a time).
    pub(super) fn check_channels(&mut self) {
        if self.channels_checking || self.channels_checked.elapsed() < CHANNELS_CHECK_EVERY {
            return;
        }
        let (Role::Leader(_), Some(g)) = (&self.role, &self.group) else {
            return;
        };
        self.channels_checked = Instant::now();
        let channels = g.counts.channels();
        if channels.is_empty() {
            return;
        }
        let mut by_node: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
        for ch in channels {
            by_node.entry(connection_node(ch)).or_default().push(ch);
        }
        let mut gone = Vec::new();
        if let Some(mine) = by_node.remove(&self.env.me) {
            let live: HashSet<u64> = self.env.channels.alive(&mine).into_iter().collect();
            gone.extend(mine.into_iter().filter(|c| !live.contains(c)));
        }
        let tx = self.found_tx.clone();
        let node = self.env.node.upgrade();
        self.channels_checking = true;
        tokio::spawn(async move {
            for (id, ids) in by_node {
                let Some(node) = &node else { break };
                let Some(addr) = node.peer_addr(id) else {
                    continue;
                };
                if let Some(live) = node.live_channels(&addr, &ids, PROBE_TIMEOUT).await {
                    let live: HashSet<u64> = live.into_iter().collect();
                    gone.extend(ids.into_iter().filter(|c| !live.contains(c)));
                }
            }
            let _ = tx.send(Found::ChannelsGone(gone));
        });
    }

    /// Acts on what a check found.
    pub(super) fn found(&mut self, found: Found) {
        let Role::Leader(l) = &mut self.role else {
            if matches!(found, Found::ChannelsGone(_)) {
                self.channels_checking = false;
            }
            return;
        };
        match found {
            Found::NodesDown(nodes) => {
                for n in nodes {
                    l.node_down(n);
                }
            }
            Found::ChannelsGone(channels) => {
                self.channels_checking = false;
                for ch in channels {
                    tracing::info!(queue = %self.def.name, channel = ch, "quorum queue: a consumer's channel is closed; what it held returns");
                    l.channel_down(ch);
                }
            }
        }
    }
}
