//! The channels open on this node, so that a quorum queue's leader can tell
//! a consumer that is gone from one that is quiet.
//!
//! A quorum queue's consumers live in its replicated state, keyed by their
//! channel's cluster-unique id. A channel that closes tells the leader
//! (`ChannelDown`), but that message can be lost: the leader died before
//! proposing it, the link to it was down, or the consumer's node crashed
//! and came back (a new epoch: its old channels never close). Such a
//! consumer would hold its messages forever. So the leader asks each
//! consumer's node, now and then, which of their channels are still open
//! ([`MetaNode::live_channels`]); a closed one is closed for good (ids are
//! never reused), so dropping its consumers is always right.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::MetaNode;
use crate::pb::LiveChannelsRequest;
use crate::pb::cluster_client::ClusterClient;

/// Most ids one question carries (a bound on what a peer makes us hold).
pub const MAX_ASKED: usize = 65_536;

/// The ids of the channels open on this node.
#[derive(Debug, Default)]
pub struct LiveChannels(Mutex<HashSet<u64>>);

impl LiveChannels {
    /// Records channel `id` as open until the guard drops: a channel is
    /// closed however it goes (close, connection loss, shutdown).
    pub fn open(self: &Arc<Self>, id: u64) -> OpenChannel {
        self.set().insert(id);
        OpenChannel {
            id,
            live: self.clone(),
        }
    }

    /// The ids of `ids` that name open channels.
    pub fn alive(&self, ids: &[u64]) -> Vec<u64> {
        let set = self.set();
        ids.iter().copied().filter(|id| set.contains(id)).collect()
    }

    /// How many channels are open.
    pub fn len(&self) -> usize {
        self.set().len()
    }

    /// No channel is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An open channel's entry in [`LiveChannels`]; dropping it closes it.
#[derive(Debug)]
pub struct OpenChannel {
    id: u64,
    live: Arc<LiveChannels>,
}

impl OpenChannel {
    /// The channel's id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for OpenChannel {
    fn drop(&mut self) {
        self.live.set().remove(&self.id);
    }
}

impl MetaNode {
    /// Which of `ids` the node at `addr` says are open channels; `None` if
    /// it does not answer within `limit`.
    pub async fn live_channels(
        &self,
        addr: &str,
        ids: &[u64],
        limit: Duration,
    ) -> Option<Vec<u64>> {
        let channel = self.network().channel(addr).ok()?;
        let ids = ids[..ids.len().min(MAX_ASKED)].to_vec();
        let mut req = tonic::Request::new(LiveChannelsRequest { ids });
        req.set_timeout(limit);
        let r = tokio::time::timeout(limit, ClusterClient::new(channel).live_channels(req))
            .await
            .ok()?;
        r.ok().map(|r| r.into_inner().live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_open_until_its_guard_drops() {
        let live = Arc::new(LiveChannels::default());
        let a = live.open(1);
        let b = live.open(2);
        assert_eq!(live.alive(&[1, 2, 3]), vec![1, 2]);
        drop(a);
        assert_eq!(live.alive(&[1, 2, 3]), vec![2]);
        drop(b);
        assert!(live.is_empty());
    }
}
