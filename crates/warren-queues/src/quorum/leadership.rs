//! Following the group's leader: the role a front takes when the leader
//! changes, and the member a node outside the replica set forwards to.

use tokio::time::Instant;
use warren_core::NodeId;

use super::leader::Leading;
use super::{Front, Role, TARGET_DOWN_AFTER};
use crate::link;

impl Front {
    /// The node that leads the group, as far as this node knows. A node
    /// outside the replica set sends to one member, which forwards in turn
    /// (to another one if the link to that member stays down).
    ///
    /// A leader that is no voter of the group any more (it removed itself
    /// with `delete-member`) is none: forwarding to it would send
    /// publishes back to this node, which it now forwards to as an
    /// outsider.
    pub(super) fn leader(&self) -> Option<NodeId> {
        match &self.group {
            Some(g) => {
                let m = g.raft.metrics();
                let m = m.borrow();
                let mut voters = m.membership_config.membership().voter_ids();
                m.current_leader.filter(|l| voters.any(|v| v == *l))
            }
            None => self.def.replicas.get(self.target).copied(),
        }
    }

    /// Outside the replica set: moves to the next member when the link to
    /// the current one has been down for [`TARGET_DOWN_AFTER`].
    pub(super) async fn check_target(&mut self) {
        let Role::Forward { leader, .. } = &self.role else {
            return;
        };
        if self.group.is_some() || self.def.replicas.len() < 2 {
            return;
        }
        if self.env.links.to(*leader).is_up() {
            self.target_down_since = None;
            return;
        }
        let since = *self.target_down_since.get_or_insert_with(Instant::now);
        if since.elapsed() < TARGET_DOWN_AFTER {
            return;
        }
        self.target_down_since = None;
        self.target = (self.target + 1) % self.def.replicas.len();
        tracing::info!(queue = %self.def.name, member = ?self.leader(), "quorum queue: forwarding to another member");
        self.follow_leader();
        self.unpark().await;
    }

    /// The term of the group as this replica knows it (0 outside the
    /// replica set).
    fn term(&self) -> u64 {
        self.group
            .as_ref()
            .map_or(0, |g| g.raft.metrics().borrow().current_term)
    }

    /// Changes role when the leader changed. The same node elected again
    /// (a new term) is a change too when it leads elsewhere: its front
    /// started afresh and knows none of the consumers attached before, so
    /// they attach again (this node may never have seen the group without
    /// a leader in between).
    pub(super) fn follow_leader(&mut self) {
        let leader = self.leader();
        let term = self.term();
        let same = match (&self.role, leader) {
            (Role::Waiting, None) => true,
            (Role::Leader(_), Some(l)) => l == self.env.me,
            (Role::Forward { leader: f, .. }, Some(l)) => *f == l && term == self.role_term,
            _ => false,
        };
        self.role_term = term;
        if same {
            return;
        }
        if let Some(g) = &self.group {
            // Before anything is proposed as leader: its applies read the
            // bodies its deliveries need.
            g.leading.store(
                leader == Some(self.env.me),
                std::sync::atomic::Ordering::Release,
            );
        }
        self.end_role();
        self.role = match leader {
            None => Role::Waiting,
            Some(l) if l == self.env.me => match &self.group {
                Some(g) => Role::Leader(Box::new(Leading::new(
                    self.def.clone(),
                    self.vhost.clone(),
                    self.env.me,
                    g.clone(),
                    self.env.dead_letters.clone(),
                ))),
                None => Role::Waiting,
            },
            Some(l) => {
                let proxy = link::spawn_proxy(&self.def, self.vhost.clone(), self.env.links.to(l));
                Role::Forward { leader: l, proxy }
            }
        };
        self.led_since = (leader == Some(self.env.me)).then(Instant::now);
        tracing::debug!(queue = %self.def.name, leader = ?leader, "quorum queue leader");
        for own in self.own.values_mut() {
            own.attached = false;
        }
    }

    /// A queue unused for its `x-expires` (by the log's clock, so every
    /// replica agrees) asks the node to delete it through group 0, as an
    /// auto-delete queue does; only its leader asks, once.
    pub(super) fn delete_if_expired(&mut self) {
        if let Role::Leader(l) = &mut self.role
            && l.expired_once()
            && let Some(tx) = &self.env.auto_deleted
        {
            tracing::info!(queue = %self.def.name, "deleting a queue unused for its x-expires");
            let _ = tx.send(crate::classic::AutoDeleted {
                name: self.def.name.clone(),
                id: self.def.id,
            });
        }
    }
}
