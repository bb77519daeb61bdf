//! Declaring nodes down. The group 0 leader probes every other member; one
//! that has not answered for `node_down_after_ms` is declared down: its
//! exclusive queues (their connections are gone with it) and its transient
//! queues are deleted, as RabbitMQ does when a node leaves. A partitioned
//! node that is still alive loses them too: its clients' exclusive queues
//! cannot be told apart from a dead node's.
//!
//! A member that answers again after missing a probe (it restarted, or a
//! partition healed) has lost the leadership of its quorum queues to the
//! others: [`REBALANCE_AFTER`] later, once its replicas caught up, the
//! leader spreads the queue leaders evenly again (what `warren queues
//! rebalance` does; nothing moves when they are even).

use std::collections::{HashMap, HashSet};
use std::sync::{PoisonError, Weak};
use std::time::{Duration, Instant};

use warren_core::NodeId;
use warren_core::meta::Command;

use super::Broker;

/// Pause between probing rounds.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Bound on one probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long after a member answers again its quorum queue leaders are
/// rebalanced.
pub const REBALANCE_AFTER: Duration = Duration::from_secs(10);

/// Runs for the life of the node; acts only while it leads group 0.
pub async fn watch_nodes(broker: Weak<Broker>) {
    let mut last_seen: HashMap<NodeId, Instant> = HashMap::new();
    let mut away: HashSet<NodeId> = HashSet::new();
    let mut rebalance_at: Option<Instant> = None;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(b) = broker.upgrade() else { return };
        let Some(peers) = b.node.followers_if_leader() else {
            // Not the leader: a new leader starts its clocks afresh.
            last_seen.clear();
            away.clear();
            rebalance_at = None;
            continue;
        };
        if rebalance_at.is_some_and(|t| t <= Instant::now()) {
            rebalance_at = None;
            tokio::spawn(rebalance(
                b.node.network().security().clone(),
                b.config.advertised_addr(),
            ));
        }
        let down_after = Duration::from_millis(b.config.node_down_after_ms);
        for (id, addr) in peers {
            let now = Instant::now();
            let seen = last_seen.entry(id).or_insert(now);
            if b.node.peer_status(&addr, PROBE_TIMEOUT).await.is_some() {
                *seen = Instant::now();
                if away.remove(&id) {
                    rebalance_at = Some(Instant::now() + REBALANCE_AFTER);
                }
                continue;
            }
            away.insert(id);
            if now.duration_since(*seen) < down_after || !has_droppable(&b, id) {
                continue;
            }
            tracing::warn!(
                node = id,
                "node down: deleting its exclusive and transient queues"
            );
            let cmd = Command::DropNodeQueues {
                node: id,
                before_epoch: u64::MAX,
            };
            if let Err(e) = b.node.propose(cmd).await {
                tracing::warn!(node = id, cause = %e, "could not declare the node down");
            }
            b.reconcile().await;
        }
    }
}

/// Spreads the quorum queue leaders evenly, through this node's own
/// cluster listener (the same RPCs as `warren queues rebalance`).
async fn rebalance(security: warren_cluster::Security, addr: String) {
    match warren_cluster::admin_client::rebalance(&security, &addr).await {
        Ok(moves) => {
            for (queue, from, to, r) in moves {
                match r {
                    Ok(()) => tracing::info!(%queue, from, to, "quorum queue leader moved"),
                    Err(e) => {
                        tracing::warn!(%queue, from, to, cause = %e, "quorum queue leader not moved")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(cause = %e, "could not rebalance quorum queue leaders"),
    }
}

/// Whether node `id` is home to queues that go with it.
fn has_droppable(b: &Broker, id: NodeId) -> bool {
    let meta = b.node.meta().read().unwrap_or_else(PoisonError::into_inner);
    meta.all_queues()
        .any(|(_, q)| q.home.node == id && (!q.durable || q.exclusive_owner.is_some()))
}
