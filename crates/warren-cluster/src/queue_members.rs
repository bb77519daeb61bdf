//! Changing a quorum queue's replica set by one node at a time (`warren
//! queues add-member|delete-member`, and `grow|shrink`, which repeat them).
//!
//! Two records change: the replica set in group 0 (`QueueDef::replicas`,
//! which tells the nodes to start or remove their replicas) and the
//! membership of the queue's own group (which says who votes). The order
//! keeps every step safe:
//!
//! - **Adding** node N: group 0 first (N starts an empty replica that never
//!   initialises, since `QueueDef::formed` is set), then the group's leader
//!   adds N as a learner, waits until it caught up, and makes it a voter.
//! - **Removing** node N: the group's leader makes the group's membership
//!   one without N first (a leader removing itself steps down once that is
//!   committed, and the others elect one of themselves), then group 0
//!   (N removes its replica and every key of it).
//!
//! A step that fails leaves a state the same command, repeated, completes:
//! each step is idempotent.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::BasicNode;
use tonic::Status;
use warren_core::meta::{Command, DEFAULT_VHOST, Outcome};
use warren_core::queue::QueueDef;
use warren_core::{AmqpError, NodeId};

use crate::MetaNode;
use crate::pb::cluster_client::ClusterClient;
use crate::pb::{GroupMembersRequest, QueueMembersReply};
use crate::queue_groups::QueueGroups;

/// Bound on one change of a group's membership (a learner catching up
/// included).
pub const GROUP_CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Rounds over the replicas looking for the group's leader (an election
/// may be under way).
const LEADER_ROUNDS: usize = 20;
/// Pause between those rounds.
const LEADER_PAUSE: Duration = Duration::from_millis(250);

impl QueueGroups {
    /// On the group's leader: adds `node` (at `addr`) as a voter, or
    /// removes it. `FAILED_PRECONDITION` where this node does not lead.
    pub async fn change_members(
        &self,
        id: u64,
        node: NodeId,
        add: bool,
        addr: &str,
    ) -> Result<Vec<NodeId>, Status> {
        let g = self
            .get(id)
            .ok_or_else(|| Status::failed_precondition(format!("no replica of group {id} here")))?;
        let m = g.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.me()) {
            return Err(Status::failed_precondition(format!(
                "not the leader of group {id}"
            )));
        }
        let mut voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        if add {
            if !voters.contains(&node) {
                g.raft
                    .add_learner(node, BasicNode::new(addr), true)
                    .await
                    .map_err(|e| Status::unavailable(format!("adding a learner: {e}")))?;
            }
            voters.insert(node);
        } else {
            voters.remove(&node);
            if voters.is_empty() {
                return Err(Status::failed_precondition(
                    "a quorum queue keeps at least one member",
                ));
            }
        }
        g.raft
            .change_membership(voters.clone(), false)
            .await
            .map_err(|e| Status::unavailable(format!("changing the membership: {e}")))?;
        Ok(voters.into_iter().collect())
    }
}

impl MetaNode {
    /// Adds `node` to quorum queue `queue`'s replicas, or removes it; any
    /// node runs it. Returns the new replica set.
    pub async fn change_queue_members(
        &self,
        groups: &QueueGroups,
        queue: &str,
        node: NodeId,
        add: bool,
    ) -> Result<Vec<NodeId>, Status> {
        let def = self.quorum_queue(queue)?;
        let addr = self.peer_addr(node).ok_or_else(|| {
            Status::invalid_argument(format!("node {node} is not in the cluster"))
        })?;
        let mut replicas = def.replicas.clone();
        if add {
            if !replicas.contains(&node) {
                replicas.push(node);
                self.set_replicas(&def, replicas.clone()).await?;
            }
            self.on_group_leader(groups, &def, node, true, &addr)
                .await?;
        } else {
            if !replicas.contains(&node) {
                return Ok(replicas);
            }
            replicas.retain(|n| *n != node);
            if replicas.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "node {node} is the only member of '{queue}'"
                )));
            }
            self.on_group_leader(groups, &def, node, false, &addr)
                .await?;
            self.set_replicas(&def, replicas.clone()).await?;
        }
        Ok(replicas)
    }

    /// The quorum queue `name` of the default vhost.
    fn quorum_queue(&self, name: &str) -> Result<QueueDef, Status> {
        let meta = self
            .meta()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let q = meta
            .default_vhost()
            .queue(name)
            .ok_or_else(|| Status::not_found(format!("no queue '{name}' in vhost '/'")))?;
        if !q.is_quorum() {
            return Err(Status::failed_precondition(format!(
                "'{name}' is not a quorum queue"
            )));
        }
        Ok(q.clone())
    }

    async fn set_replicas(&self, def: &QueueDef, replicas: Vec<NodeId>) -> Result<(), Status> {
        let cmd = Command::SetReplicas {
            vhost: DEFAULT_VHOST.into(),
            name: def.name.clone(),
            id: def.id,
            replicas,
        };
        match self.propose(cmd).await {
            Ok(Outcome::ReplicasSet(_)) => Ok(()),
            Ok(other) => Err(Status::internal(format!("unexpected outcome {other:?}"))),
            Err(e) => Err(amqp_status(&e)),
        }
    }

    /// Has the group's leader change its membership: each replica is
    /// asked in turn (only the leader does it), for a few rounds.
    async fn on_group_leader(
        &self,
        groups: &QueueGroups,
        def: &QueueDef,
        node: NodeId,
        add: bool,
        addr: &str,
    ) -> Result<Vec<NodeId>, Status> {
        let mut last = Status::unavailable("no replica answered");
        for _ in 0..LEADER_ROUNDS {
            for member in &def.replicas {
                let r = if *member == self.id() {
                    groups.change_members(def.id, node, add, addr).await
                } else {
                    self.ask_group_member(*member, def.id, node, add, addr)
                        .await
                };
                match r {
                    Ok(voters) => return Ok(voters),
                    Err(e) => last = e,
                }
            }
            tokio::time::sleep(LEADER_PAUSE).await;
        }
        Err(last)
    }

    async fn ask_group_member(
        &self,
        member: NodeId,
        group: u64,
        node: NodeId,
        add: bool,
        addr: &str,
    ) -> Result<Vec<NodeId>, Status> {
        let channel = self
            .peer_channel(member)
            .ok_or_else(|| Status::unavailable(format!("no address of node {member}")))?;
        let mut req = tonic::Request::new(GroupMembersRequest {
            group,
            node,
            add,
            addr: addr.to_owned(),
        });
        req.set_timeout(GROUP_CHANGE_TIMEOUT);
        let r: QueueMembersReply = ClusterClient::new(channel)
            .group_members(req)
            .await?
            .into_inner();
        Ok(r.members)
    }
}

/// The gRPC status for a metadata refusal.
fn amqp_status(e: &AmqpError) -> Status {
    match e.code.code() {
        404 => Status::not_found(e.text.to_string()),
        406 => Status::failed_precondition(e.text.to_string()),
        _ => Status::unavailable(e.text.to_string()),
    }
}
