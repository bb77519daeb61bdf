//! The queue actors of this node, kept in step with the applied metadata.
//!
//! A queue lives on its home node ([`warren_core::queue::Home`]): that node
//! runs its actor and stores its messages. Every node applies the same
//! metadata log; after each applied change the registry is reconciled with
//! it: actors start for queues homed here that have none, and actors of
//! queues that are gone are deleted with their messages. The proposer of a
//! declaration reconciles before answering, so `queue.declare-ok` comes
//! after the actor exists; the follower task covers changes proposed
//! elsewhere (a `queue.delete` on another node) and the replay at start.

use std::collections::HashMap;
use std::sync::{PoisonError, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use warren_core::QueueId;
use warren_core::meta::{Command, MetaSnapshot, Outcome, VHostSnapshot};
use warren_core::queue::QueueDef;
use warren_core::vhost::PREDECLARED;
use warren_store::Op;

use super::{Broker, DEFAULT_VHOST};
use crate::queue_actor::{self, QueueHandle, QueueMsg};

/// Pause between attempts to reach the group at start.
const JOIN_RETRY: Duration = Duration::from_millis(500);

impl Broker {
    /// Brings the registry in line with the metadata applied so far.
    pub async fn reconcile(&self) {
        let _serial = self.reconciling.lock().await;
        let me = self.config.node_id;
        // Every queue has a handle here: its actor at home, a proxy elsewhere.
        let wanted: HashMap<QueueId, QueueDef> = {
            let meta = self
                .node
                .meta()
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            meta.default_vhost()
                .queues()
                .map(|q| (q.id, q.clone()))
                .collect()
        };
        let gone: Vec<QueueHandle> = {
            let mut queues = self.queues.write().unwrap_or_else(PoisonError::into_inner);
            let gone_ids: Vec<QueueId> = queues
                .keys()
                .filter(|id| !wanted.contains_key(id))
                .copied()
                .collect();
            let gone = gone_ids.iter().filter_map(|id| queues.remove(id)).collect();
            for (id, def) in wanted {
                let std::collections::hash_map::Entry::Vacant(slot) = queues.entry(id) else {
                    continue;
                };
                if def.home.node != me {
                    slot.insert(crate::remote::link::spawn_proxy(
                        &def,
                        self.link_to(def.home.node),
                    ));
                    continue;
                }
                // Durable queues may have messages on disk from before a
                // restart; a new id has none, so the scan is one seek.
                let recover = def.durable;
                slot.insert(queue_actor::spawn(
                    def,
                    DEFAULT_VHOST.into(),
                    recover,
                    &self.env,
                ));
            }
            gone
        };
        for h in gone {
            if h.remote {
                let _ = h.tx.send(QueueMsg::Stop).await;
                continue;
            }
            // Deleted elsewhere (or by a command whose actor already
            // stopped): consumers are cancelled, messages dropped.
            let (tx, _rx) = oneshot::channel();
            let _ =
                h.tx.send(QueueMsg::Delete {
                    if_unused: false,
                    if_empty: false,
                    reply: tx,
                })
                .await;
        }
    }

    /// Joins group 0 at start and gets the node ready to serve: drops the
    /// transient and exclusive queues of earlier epochs, seeds the group from
    /// a single node's older store, removes messages no queue owns, starts the
    /// actors. Waits as long as it takes for a majority, like a RabbitMQ node
    /// waiting for its metadata store at boot.
    pub async fn join(&self) -> anyhow::Result<()> {
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
        loop {
            match self.node.propose(drop_old.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    attempts += 1;
                    if attempts % 10 == 1 {
                        tracing::info!(cause = %e, "waiting for the metadata group");
                    }
                    tokio::time::sleep(JOIN_RETRY).await;
                }
            }
        }
        self.node.refresh_own_addr().await;
        self.seed_from_legacy().await?;
        self.drop_orphan_messages().await?;
        self.reconcile().await;
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The upgrade path: metadata a single node wrote before it ran Raft is
    /// proposed as the group's first state, then removed from where it was.
    async fn seed_from_legacy(&self) -> anyhow::Result<()> {
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
                Err(e) => anyhow::bail!("seeding the metadata group: {e}"),
            }
        } else {
            tracing::warn!(
                "this node's store holds metadata from before it joined a cluster that already has some; the cluster's wins"
            );
        }
        self.env.store.clear_legacy_meta()?;
        Ok(())
    }

    /// Deletes stored messages of queue ids that no queue homed here has:
    /// queues deleted while this node was down, or an old store's queues
    /// that a cluster's metadata replaced.
    async fn drop_orphan_messages(&self) -> anyhow::Result<()> {
        let ids = self.env.store.message_queue_ids()?;
        let me = self.config.node_id;
        let ops: Vec<Op> = {
            let meta = self
                .node
                .meta()
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let homed: std::collections::HashSet<QueueId> = meta
                .default_vhost()
                .queues()
                .filter(|q| q.home.node == me)
                .map(|q| q.id)
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

/// Reconciles the registry whenever the applied index moves (changes made
/// through other nodes). Ends when the broker is gone or Raft stops.
pub async fn follow_applied(broker: Weak<Broker>) {
    let Some(mut rx) = broker.upgrade().map(|b| b.node.raft().metrics()) else {
        return;
    };
    let mut last = None;
    loop {
        let applied = rx.borrow_and_update().last_applied;
        if applied != last {
            last = applied;
            let Some(b) = broker.upgrade() else { return };
            b.reconcile().await;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
