//! Joining Raft group 0 at start, and what comes with it: the transient
//! queues of earlier starts go, a single node's older store seeds the group,
//! messages of queues that are gone are removed, the queues start.

use std::collections::HashSet;
use std::sync::PoisonError;
use std::time::Duration;

use warren_core::QueueId;
use warren_core::meta::{Command, MetaSnapshot, Outcome, VHostSnapshot};
use warren_core::vhost::PREDECLARED;
use warren_store::Op;

use super::{Broker, DEFAULT_VHOST};
use crate::error::ServerError;

/// Pause between attempts to reach the group at start.
const JOIN_RETRY: Duration = Duration::from_millis(500);

impl Broker {
    /// Joins group 0 at start and gets the node ready to serve: drops the
    /// transient and exclusive queues of earlier epochs, seeds the group from
    /// a single node's older store, removes messages no queue owns, starts the
    /// actors. Waits as long as it takes for a majority, like a RabbitMQ node
    /// waiting for its metadata store at boot.
    pub async fn join(&self) -> Result<(), ServerError> {
        let mut attempts: u64 = 0;
        while !self.node.wait_member(Duration::from_secs(10)).await {
            attempts += 1;
            tracing::info!(attempts, "waiting for the metadata group to form");
        }
        // Alone in the group, a restart is the whole cluster's: transient
        // things go, as on a RabbitMQ node restarted alone. In a larger
        // group they live on in the others; only this node's queues go.
        let drop_old = if self.node.sole_voter() {
            Command::DropTransient
        } else {
            Command::DropNodeQueues {
                node: self.config.node_id,
                before_epoch: self.epoch,
            }
        };
        retry(&mut attempts, || self.node.propose(drop_old.clone())).await;
        // The cluster's id, chosen once (by whichever node proposes first)
        // and carried by every call between nodes from then on.
        retry(&mut attempts, || self.node.ensure_cluster_id()).await;
        // The config file's users, once per cluster.
        retry(&mut attempts, || self.seed_users()).await;
        self.node.refresh_own_addr().await;
        self.seed_from_legacy().await?;
        self.drop_orphan_messages().await?;
        self.reconcile().await;
        self.registry.mark_ready();
        Ok(())
    }

    /// The upgrade path: metadata a single node wrote before it ran Raft is
    /// proposed as the group's first state, then removed from where it was.
    async fn seed_from_legacy(&self) -> Result<(), ServerError> {
        let Some((legacy, next_queue_id)) = self
            .legacy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        let home = self.home();
        let mut snap = VHostSnapshot {
            name: DEFAULT_VHOST.into(),
            ..VHostSnapshot::default()
        };
        for (vh, e) in legacy.exchanges {
            if vh == DEFAULT_VHOST && !PREDECLARED.iter().any(|(n, _)| *n == &*e.name) {
                snap.exchanges.push(e);
            }
        }
        for (vh, mut q) in legacy.queues {
            if vh == DEFAULT_VHOST {
                q.home = home;
                snap.queues.push(q);
            }
        }
        for (vh, b) in legacy.bindings {
            if vh == DEFAULT_VHOST {
                snap.bindings.push(b);
            }
        }
        snap.exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        snap.queues.sort_by(|a, b| a.name.cmp(&b.name));
        let mut predeclared = warren_core::meta::MetaState::new().snapshot();
        if let Some(v) = predeclared.vhosts.first_mut() {
            v.exchanges.append(&mut snap.exchanges);
            v.exchanges.sort_by(|a, b| a.name.cmp(&b.name));
            v.queues = snap.queues;
            v.bindings = snap.bindings;
        }
        let image = MetaSnapshot {
            vhosts: predeclared.vhosts,
            next_queue_id,
            ..MetaSnapshot::default()
        };
        let pristine = self
            .node
            .meta()
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_pristine();
        if pristine {
            match self.node.propose(Command::Seed(image)).await {
                Ok(Outcome::Seeded { dropped }) => {
                    tracing::info!(
                        dropped_bindings = dropped,
                        "seeded the metadata group from this node's store"
                    );
                }
                Ok(_) => {}
                Err(e) => return Err(ServerError::Seed(e)),
            }
        } else {
            tracing::warn!(
                "this node's store holds metadata from before it joined a cluster that already has some; the cluster's wins"
            );
        }
        self.store.clear_legacy_meta()?;
        Ok(())
    }

    /// Deletes stored messages of queue ids that no queue homed here has:
    /// queues deleted while this node was down, or an old store's queues
    /// that a cluster's metadata replaced.
    async fn drop_orphan_messages(&self) -> Result<(), ServerError> {
        let ids = self.store.message_queue_ids()?;
        let me = self.config.node_id;
        let ops: Vec<Op> = {
            let meta = self
                .node
                .meta()
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let homed: HashSet<QueueId> = meta
                .all_queues()
                .filter(|(_, q)| q.home.node == me)
                .map(|(_, q)| q.id)
                .collect();
            ids.into_iter()
                .filter(|id| !homed.contains(id))
                .map(Op::DeleteQueue)
                .collect()
        };
        if !ops.is_empty() {
            tracing::info!(
                queues = ops.len(),
                "removing messages of queues that are gone"
            );
            self.writer.write_sync(ops).await?;
        }
        Ok(())
    }
}

/// Runs `f` until it succeeds, pausing between attempts and saying so now
/// and then: a node waits for a majority of the group as long as it takes.
async fn retry<T, E, F>(attempts: &mut u64, mut f: impl FnMut() -> F)
where
    E: std::fmt::Display,
    F: Future<Output = Result<T, E>>,
{
    loop {
        match f().await {
            Ok(_) => return,
            Err(e) => {
                *attempts += 1;
                if *attempts % 10 == 1 {
                    tracing::info!(cause = %e, "waiting for the metadata group");
                }
                tokio::time::sleep(JOIN_RETRY).await;
            }
        }
    }
}
