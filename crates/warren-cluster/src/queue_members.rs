//! Changing a quorum queue's replica set by one node at a time (`warren
//! queues add-member|delete-member`, and `grow|shrink`, which repeat them),
//! and handing its leadership to another member (`transfer-leader`).
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
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::BasicNode;
use tonic::Status;
use warren_core::meta::{Command, DEFAULT_VHOST, Outcome};
use warren_core::queue::QueueDef;
use warren_core::{AmqpError, Name, NodeId};

use crate::MetaNode;
use crate::pb::cluster_client::ClusterClient;
use crate::pb::{GroupElectRequest, GroupMembersRequest, MemberChange, QueueMembersReply};
use crate::queue_groups::{QueueGroup, QueueGroups};

/// Bound on one change of a group's membership (a learner catching up
/// included).
pub const GROUP_CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Rounds over the replicas looking for the group's leader (an election
/// may be under way).
const LEADER_ROUNDS: usize = 20;
/// Pause between those rounds.
const LEADER_PAUSE: Duration = Duration::from_millis(250);
/// Waited past the followers' leader lease before the new leader calls its
/// election.
const LEASE_MARGIN_MS: u64 = 100;
/// Bound on the call that has the new leader call its election.
const ELECT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a transfer waits for the new leader to be known.
const TRANSFER_WAIT: Duration = Duration::from_secs(3);

impl QueueGroups {
    /// On the group's leader: adds `node` (at `addr`) as a voter, removes
    /// it, or hands it the leadership. `FAILED_PRECONDITION` where this
    /// node does not lead.
    pub async fn change_members(
        &self,
        id: u64,
        node: NodeId,
        change: MemberChange,
        addr: &str,
    ) -> Result<Vec<NodeId>, Status> {
        let g = self.replica(id)?;
        let m = g.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.me()) {
            return Err(Status::failed_precondition(format!(
                "not the leader of group {id}"
            )));
        }
        let mut voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        match change {
            MemberChange::AddMember => {
                if !voters.contains(&node) {
                    g.raft
                        .add_learner(node, BasicNode::new(addr), true)
                        .await
                        .map_err(|e| Status::unavailable(format!("adding a learner: {e}")))?;
                }
                voters.insert(node);
            }
            MemberChange::DeleteMember => {
                voters.remove(&node);
                if voters.is_empty() {
                    return Err(Status::failed_precondition(
                        "a quorum queue keeps at least one member",
                    ));
                }
            }
            MemberChange::TransferLeader => {
                if !voters.contains(&node) {
                    return Err(Status::failed_precondition(format!(
                        "node {node} is not a member of group {id}"
                    )));
                }
                if node != self.me() {
                    self.hand_over(&g, id, node, addr).await?;
                }
                return Ok(voters.into_iter().collect());
            }
        }
        g.raft
            .change_membership(voters.clone(), false)
            .await
            .map_err(|e| Status::unavailable(format!("changing the membership: {e}")))?;
        if node == self.me() && change == MemberChange::DeleteMember {
            // openraft steps a leader that removed itself down on a tick;
            // queue groups tick only from now on (see `QueueGroups::new`).
            g.raft.runtime_config().tick(true);
        }
        Ok(voters.into_iter().collect())
    }

    /// Hands the leadership of `g` to `to` (openraft 0.9 has no transfer):
    /// this leader holds its proposals until the followers' leader leases
    /// run out, then `to` calls an election, which it wins (queue groups
    /// have no election timers: no other follower competes while this node
    /// answers its pings). Proposals resume whatever the outcome.
    async fn hand_over(
        &self,
        g: &QueueGroup,
        id: u64,
        to: NodeId,
        addr: &str,
    ) -> Result<(), Status> {
        g.pausing.store(true, Ordering::Release);
        let r = async {
            tokio::time::sleep(Duration::from_millis(
                self.election_timeout_max() + LEASE_MARGIN_MS,
            ))
            .await;
            let channel = self
                .network()
                .channel(addr)
                .map_err(|e| Status::unavailable(format!("node {to}: {e}")))?;
            let mut req = tonic::Request::new(GroupElectRequest { group: id });
            req.set_timeout(ELECT_CALL_TIMEOUT);
            ClusterClient::new(channel).group_elect(req).await?;
            g.raft
                .wait(Some(TRANSFER_WAIT))
                .metrics(|m| m.current_leader == Some(to), "the new leader is known")
                .await
                .map_err(|e| Status::unavailable(format!("node {to} did not take over: {e}")))?;
            Ok(())
        }
        .await;
        g.pausing.store(false, Ordering::Release);
        r
    }

    /// This node's replica of group `id`; `FAILED_PRECONDITION` if none.
    fn replica(&self, id: u64) -> Result<QueueGroup, Status> {
        self.get(id)
            .ok_or_else(|| Status::failed_precondition(format!("no replica of group {id} here")))
    }

    /// On a member: calls an election of group `id` now.
    pub async fn elect(&self, id: u64) -> Result<(), Status> {
        let g = self.replica(id)?;
        g.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}

impl MetaNode {
    /// Adds `node` to the replicas of quorum queue `queue` of `vhost` (or,
    /// with `group` not 0, of the queue with that id), removes it, or
    /// makes it the queue's leader; any node runs it. Returns the replica
    /// set after the change.
    pub async fn change_queue_members(
        &self,
        groups: &QueueGroups,
        vhost: &str,
        queue: &str,
        group: u64,
        node: NodeId,
        change: MemberChange,
    ) -> Result<Vec<NodeId>, Status> {
        let (vhost, def) = self.quorum_queue(vhost, queue, group)?;
        let queue = &*def.name;
        // A node removed from the cluster can still be removed from a
        // replica set; only a node that joins or leads needs an address.
        let addr = match (self.peer_addr(node), change) {
            (Some(a), _) => a,
            (None, MemberChange::DeleteMember) => String::new(),
            (None, _) => {
                return Err(Status::invalid_argument(format!(
                    "node {node} is not in the cluster"
                )));
            }
        };
        let mut replicas = def.replicas.clone();
        match change {
            MemberChange::AddMember => {
                if !replicas.contains(&node) {
                    replicas.push(node);
                    self.set_replicas(&vhost, &def, replicas.clone()).await?;
                }
                self.on_group_leader(groups, &def, node, change, &addr)
                    .await?;
            }
            MemberChange::DeleteMember => {
                if !replicas.contains(&node) {
                    return Ok(replicas);
                }
                replicas.retain(|n| *n != node);
                if replicas.is_empty() {
                    return Err(Status::failed_precondition(format!(
                        "node {node} is the only member of '{queue}'"
                    )));
                }
                self.on_group_leader(groups, &def, node, change, &addr)
                    .await?;
                self.set_replicas(&vhost, &def, replicas.clone()).await?;
            }
            MemberChange::TransferLeader => {
                if !replicas.contains(&node) {
                    return Err(Status::failed_precondition(format!(
                        "node {node} holds no replica of '{queue}'"
                    )));
                }
                self.on_group_leader(groups, &def, node, change, &addr)
                    .await?;
            }
        }
        Ok(replicas)
    }

    /// Node `gone` left the cluster: each quorum queue it held a replica
    /// of gets one on the member holding fewest (if one holds none of
    /// that queue), and loses `gone`'s. Run by the node that removed it.
    pub async fn replace_replicas(&self, groups: &QueueGroups, gone: NodeId) {
        let (queues, mut load) = {
            let meta = self
                .meta()
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut load: std::collections::BTreeMap<NodeId, usize> =
                self.voter_ids().into_iter().map(|n| (n, 0)).collect();
            let mut queues = Vec::new();
            for (_, q) in meta.all_queues().filter(|(_, q)| q.is_quorum()) {
                for n in &q.replicas {
                    if let Some(l) = load.get_mut(n) {
                        *l += 1;
                    }
                }
                if q.replicas.contains(&gone) {
                    queues.push(q.clone());
                }
            }
            queues.sort_by_key(|q| q.id);
            (queues, load)
        };
        for q in queues {
            let spare = load
                .iter()
                .filter(|(n, _)| **n != gone && !q.replicas.contains(n))
                .min_by_key(|(n, l)| (**l, **n))
                .map(|(n, _)| *n);
            if let Some(n) = spare {
                match self
                    .change_queue_members(groups, "", "", q.id, n, MemberChange::AddMember)
                    .await
                {
                    Ok(_) => *load.entry(n).or_insert(0) += 1,
                    Err(e) => {
                        tracing::warn!(queue = %q.name, node = n, cause = %e.message(), "could not add a replica in place of a removed node")
                    }
                }
            }
            match self
                .change_queue_members(groups, "", "", q.id, gone, MemberChange::DeleteMember)
                .await
            {
                Ok(r) => {
                    tracing::info!(queue = %q.name, removed = gone, replicas = ?r, "replica of a removed node replaced")
                }
                Err(e) => {
                    tracing::warn!(queue = %q.name, node = gone, cause = %e.message(), "could not drop the replica of a removed node")
                }
            }
        }
    }

    /// The quorum queue `name` of `vhost` (empty: `/`), or with `group`
    /// not 0 the queue with that id, and its vhost's name.
    fn quorum_queue(
        &self,
        vhost: &str,
        name: &str,
        group: u64,
    ) -> Result<(Name, QueueDef), Status> {
        let meta = self
            .meta()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let vhost = if vhost.is_empty() {
            DEFAULT_VHOST
        } else {
            vhost
        };
        let found = if group != 0 {
            meta.queue_by_id(group)
                .ok_or_else(|| Status::not_found(format!("no queue with id {group}")))?
        } else {
            let v = meta
                .vhost(vhost)
                .ok_or_else(|| Status::not_found(format!("no vhost '{vhost}'")))?;
            let q = v.queue(name).ok_or_else(|| {
                Status::not_found(format!("no queue '{name}' in vhost '{vhost}'"))
            })?;
            (v, q)
        };
        let (v, q) = found;
        if !q.is_quorum() {
            return Err(Status::failed_precondition(format!(
                "'{}' in vhost '{}' is not a quorum queue",
                q.name,
                v.name()
            )));
        }
        Ok((v.name().into(), q.clone()))
    }

    async fn set_replicas(
        &self,
        vhost: &str,
        def: &QueueDef,
        replicas: Vec<NodeId>,
    ) -> Result<(), Status> {
        let cmd = Command::SetReplicas {
            vhost: vhost.into(),
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
        change: MemberChange,
        addr: &str,
    ) -> Result<Vec<NodeId>, Status> {
        let mut last = Status::unavailable("no replica answered");
        for _ in 0..LEADER_ROUNDS {
            for member in &def.replicas {
                let r = if *member == self.id() {
                    groups.change_members(def.id, node, change, addr).await
                } else {
                    self.ask_group_member(*member, def.id, node, change, addr)
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
        change: MemberChange,
        addr: &str,
    ) -> Result<Vec<NodeId>, Status> {
        let channel = self
            .peer_channel(member)
            .ok_or_else(|| Status::unavailable(format!("no address of node {member}")))?;
        let mut req = tonic::Request::new(GroupMembersRequest {
            group,
            node,
            change: change as i32,
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
