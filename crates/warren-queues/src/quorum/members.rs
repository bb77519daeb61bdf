//! A change of the queue's replica set (`warren queues add-member`,
//! `delete-member`, `grow`, `shrink`), as group 0 records it: a node that
//! joins starts its replica (empty; the group's leader adds it and sends
//! it what it lacks), a node that leaves removes its replica and every key
//! of it, and every node forwards to the new set.
//!
//! The front reads its queue's definition from the metadata at each tick:
//! a change is rare, and one read of a map under the metadata's read lock
//! per queue and tick costs less than a notification path of its own.

use warren_core::queue::QueueDef;

use super::{Front, Role};

impl Front {
    /// Takes a changed replica set from the metadata.
    pub(super) async fn check_replicas(&mut self) {
        let Some(node) = self.env.node.upgrade() else {
            return;
        };
        let changed: Option<QueueDef> = {
            let meta = node
                .meta()
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            meta.vhost(&self.vhost)
                .and_then(|v| v.queue(&self.def.name))
                .filter(|q| {
                    q.id == self.def.id
                        && (q.replicas != self.def.replicas || q.formed != self.def.formed)
                })
                .cloned()
        };
        let Some(def) = changed else {
            return;
        };
        tracing::info!(queue = %def.name, replicas = ?def.replicas, "quorum queue: the replica set changed");
        let member = def.replicas.contains(&self.env.me);
        self.def = def;
        self.target = 0;
        self.target_down_since = None;
        if member && self.group.is_none() {
            if let Err(e) = self.join_group().await {
                tracing::error!(queue = %self.def.name, cause = %e, "could not start the queue's replica");
            }
        } else if !member && self.group.is_some() {
            self.leave_group().await;
        }
        self.follow_leader();
        self.unpark().await;
    }

    /// This node left the replica set: its replica goes, with its keys.
    async fn leave_group(&mut self) {
        if matches!(self.role, Role::Leader(_)) {
            // Step down before the group stops; the role follows below.
            self.end_role();
        }
        if self.group.take().is_some()
            && let Err(e) = self.env.groups.remove(self.def.id).await
        {
            tracing::error!(queue = %self.def.name, cause = %e, "could not remove the queue's replica");
        }
    }
}
