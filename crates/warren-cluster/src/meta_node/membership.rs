//! Group 0's membership as this node sees and changes it: waiting to be a
//! member, asking peers for their status, adding and removing nodes (on the
//! leader, or forwarded to it), keeping this node's own address current.

use super::*;

impl MetaNode {
    /// Waits up to `limit` until this node knows a membership of group 0
    /// (it initialised the group, or a leader's entries reached it). A node
    /// that is the group's only voter is asked to elect itself at once
    /// rather than after an election timeout.
    pub async fn wait_member(&self, limit: Duration) -> bool {
        let member = self
            .raft
            .wait(Some(limit))
            .metrics(
                |m| m.membership_config.membership().nodes().next().is_some(),
                "membership known",
            )
            .await
            .is_ok();
        if member && self.sole_voter() && self.raft.metrics().borrow().current_leader.is_none() {
            let _ = self.raft.trigger().elect().await;
        }
        member
    }

    /// A peer's status, if it answers within `limit`.
    pub async fn peer_status(&self, addr: &str, limit: Duration) -> Option<NodeStatus> {
        match self.try_peer_status(addr, limit).await? {
            Ok(s) => {
                self.network.security().refusals().cleared(addr);
                Some(s)
            }
            Err(status) => {
                self.network.security().refusals().note(addr, &status);
                None
            }
        }
    }

    /// A peer's status or its error; `None` if it does not answer within
    /// `limit`.
    async fn try_peer_status(
        &self,
        addr: &str,
        limit: Duration,
    ) -> Option<Result<NodeStatus, tonic::Status>> {
        let channel = self.network.channel(addr).ok()?;
        let mut req = tonic::Request::new(crate::pb::StatusRequest {});
        req.set_timeout(limit);
        let r = tokio::time::timeout(limit, ClusterClient::new(channel).status(req))
            .await
            .ok()?;
        Some(r.map(tonic::Response::into_inner))
    }

    /// Refuses to add a node that does not answer (not started, or refusing
    /// this node's TLS certificate), refuses this cluster (another secret),
    /// or belongs to another cluster: the membership is not touched.
    async fn check_joiner(&self, id: NodeId, addr: &str) -> Result<(), ClusterError> {
        let refused = |why: String| {
            tracing::warn!(node = id, addr, %why, "not adding a node");
            Err(ClusterError::Refused(format!(
                "node {id} at {addr} cannot join this cluster: {why}"
            )))
        };
        // A node started a moment ago may not listen yet: ask again for a
        // while before calling it silent.
        let deadline = Instant::now() + JOINER_WAIT;
        let mut answer = self.try_peer_status(addr, JOINER_PROBE).await;
        while silent(&answer) && Instant::now() < deadline {
            tokio::time::sleep(JOINER_RETRY).await;
            answer = self.try_peer_status(addr, JOINER_PROBE).await;
        }
        match answer {
            Some(Err(s))
                if matches!(
                    s.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                refused(format!("it refused this cluster's call ({})", s.message()))
            }
            Some(Ok(s)) => {
                let ours = self.network.security().cluster_id().get();
                match (ours, parse_id(&s.cluster_id)) {
                    (Some(ours), Some(theirs)) if ours != theirs => refused(format!(
                        "it belongs to cluster {}, this is cluster {}",
                        format_id(theirs),
                        format_id(ours)
                    )),
                    _ => Ok(()),
                }
            }
            Some(Err(s)) => refused(format!("it does not answer ({})", s.message())),
            None => refused(format!(
                "it does not answer within {} s (start it first)",
                JOINER_WAIT.as_secs()
            )),
        }
    }

    /// The members other than this node, with their addresses, if this
    /// node leads group 0.
    pub fn followers_if_leader(&self) -> Option<Vec<(NodeId, String)>> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id) {
            return None;
        }
        Some(
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
        )
    }

    /// Records this node's current cluster address in the membership when it
    /// leads and the recorded one differs: a single node started without a
    /// listener was recorded with none, and the nodes it is grown into a
    /// cluster with must reach it. Only the node's own entry changes.
    pub async fn refresh_own_addr(&self) {
        let m = self.raft.metrics().borrow().clone();
        if self.addr.is_empty() || m.current_leader != Some(self.id) {
            return;
        }
        let recorded = m
            .membership_config
            .membership()
            .get_node(&self.id)
            .map(|n| n.addr.clone());
        if recorded.as_deref() == Some(self.addr.as_str()) {
            return;
        }
        let change =
            ChangeMembers::SetNodes(BTreeMap::from([(self.id, BasicNode::new(&self.addr))]));
        match self.raft.change_membership(change, true).await {
            Ok(_) => tracing::info!(addr = %self.addr, "recorded this node's cluster address"),
            Err(e) => tracing::warn!(cause = %e, "could not record this node's cluster address"),
        }
    }

    /// Every member of group 0 with its cluster address.
    pub fn member_addrs(&self) -> Vec<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// The voters of group 0, ascending (this node's alone before the group
    /// is formed): where quorum queue replicas are placed.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        let m = self.raft.metrics().borrow().clone();
        let mut voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        if voters.is_empty() {
            voters.push(self.id);
        }
        voters.sort_unstable();
        voters
    }

    /// Whether this node is the group's only voter.
    pub fn sole_voter(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        voters == [self.id]
    }

    /// The cluster address of member `id`, from the membership.
    pub fn peer_addr(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// A channel to member `id` (shared with Raft's traffic to it).
    pub fn peer_channel(&self, id: NodeId) -> Option<PeerChannel> {
        self.network.channel(&self.peer_addr(id)?).ok()
    }

    /// Where a membership change goes: `None` when this node leads group 0,
    /// else the leader and its address. Waits until `deadline` for a leader
    /// other than `silent`, one that did not answer: a leader that has just
    /// died is still named by its followers until they elect another.
    async fn change_leader(
        &self,
        deadline: Instant,
        silent: Option<NodeId>,
    ) -> Result<Option<(NodeId, String)>, ClusterError> {
        let limit = deadline.saturating_duration_since(Instant::now());
        let m = self
            .raft
            .wait(Some(limit))
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != silent,
                "a leader of group 0 that answers",
            )
            .await
            .map_err(|_| {
                ClusterError::Raft(format!(
                    "group 0 has no leader that answers after {} s",
                    LEADER_WAIT.as_secs()
                ))
            })?;
        match m.current_leader {
            Some(leader) if leader != self.id => {
                let addr = self
                    .peer_addr(leader)
                    .ok_or_else(|| ClusterError::Raft(format!("leader {leader} has no address")))?;
                Ok(Some((leader, addr)))
            }
            _ => Ok(None),
        }
    }

    fn voters(&self) -> Vec<Member> {
        self.status()
            .members
            .into_iter()
            .filter(|m| m.voter)
            .collect()
    }

    /// Adds node `id` at `addr`: as a learner until it has caught up, then
    /// as a voter. On a follower the request goes to the leader.
    pub async fn add_node(&self, id: NodeId, addr: String) -> Result<Vec<Member>, ClusterError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut silent = None;
        while let Some((leader, at)) = self.change_leader(deadline, silent).await? {
            let request = AddNodeRequest {
                id,
                addr: addr.clone(),
            };
            match ClusterClient::new(self.channel(&at)?)
                .add_node(request)
                .await
            {
                Ok(reply) => return Ok(reply.into_inner().members),
                Err(s) if retry_elsewhere(&s, deadline) => silent = Some(leader),
                Err(s) => return Err(s.into()),
            }
        }
        self.check_joiner(id, &addr).await?;
        self.raft
            .add_learner(id, BasicNode::new(&addr), true)
            .await
            .map_err(|e| ClusterError::raft(format_args!("adding learner {id}"), e))?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| ClusterError::raft(format_args!("promoting {id}"), e))?;
        Ok(self.voters())
    }

    /// Removes node `id` from the group. On a follower the request goes to
    /// the leader.
    pub async fn remove_node(&self, id: NodeId) -> Result<Vec<Member>, ClusterError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut silent = None;
        while let Some((leader, at)) = self.change_leader(deadline, silent).await? {
            match ClusterClient::new(self.channel(&at)?)
                .remove_node(RemoveNodeRequest { id })
                .await
            {
                Ok(reply) => return Ok(reply.into_inner().members),
                Err(s) if retry_elsewhere(&s, deadline) => silent = Some(leader),
                Err(s) => return Err(s.into()),
            }
        }
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|e| ClusterError::raft(format_args!("removing {id}"), e))?;
        Ok(self.voters())
    }
}

/// How long a membership change waits for group 0 to have a leader that
/// answers: a few election timeouts.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Whether a forwarded membership change that failed with `status` is tried
/// again once another leader is known: the leader could not be reached, or
/// its connection broke before it answered (`Cancelled`: a leader killed a
/// moment ago whose connection was still open), and there is time left.
/// Both changes are idempotent, so a retry of one that was made is harmless.
fn retry_elsewhere(status: &tonic::Status, deadline: Instant) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Cancelled
    ) && Instant::now() < deadline
}
