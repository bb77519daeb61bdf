//! This node's member of Raft group 0: how metadata commands are proposed,
//! forwarded to the leader, and answered once applied here.
//!
//! A command proposed on a follower goes to the leader over `Cluster.Propose`;
//! the leader appends it, commits it and applies it, and returns the entry's
//! index with the state machine's outcome. The follower then waits until its
//! own replica has applied that index, so that the client's next command on
//! this node (a publish routed through the local replica, say) sees the
//! change. Every proposal is bounded by `propose_timeout`: a node cut off from
//! the majority answers with an error, never a hang. Membership (joining,
//! adding and removing nodes, peers' status) is in [`membership`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, Raft, ServerState, SnapshotPolicy};
use tokio::time::Instant;
use warren_core::meta::{Command, MetaState, Outcome};
use warren_core::{AmqpError, ReplyCode};
use warren_store::raft::{Applied, META_GROUP, MetaRaft, MetaStateMachine, NodeId, RaftLogStore};
use warren_store::{Store, Writer};

use crate::auth::{ClusterId, format_id, parse_id};
use crate::error::ClusterError;
use crate::pb::cluster_client::ClusterClient;
use crate::pb::{
    AddNodeRequest, Member, NodeStatus, ProposeRequest, RemoveNodeRequest, WaitAppliedRequest,
};
use crate::{MetaRaftNode, Network, PeerChannel, stats};

mod membership;

/// Bound on asking a node to be added who it is.
const JOINER_PROBE: Duration = Duration::from_secs(2);
/// How long a node to be added may take to answer at all.
const JOINER_WAIT: Duration = Duration::from_secs(10);
/// Pause between those questions.
const JOINER_RETRY: Duration = Duration::from_millis(200);

/// A status call that got no answer from the node itself (not listening,
/// timed out, TLS handshake refused), as opposed to a refusal.
fn silent(answer: &Option<Result<NodeStatus, tonic::Status>>) -> bool {
    match answer {
        None => true,
        Some(Ok(_)) => false,
        Some(Err(s)) => !matches!(
            s.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        ),
    }
}

/// How long the proposer of a metadata change waits for each other voter to
/// apply it (a few heartbeats: a healthy follower applies within one).
const SPREAD_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a voter that missed [`SPREAD_TIMEOUT`] is not waited for.
const LAGGING_FOR: Duration = Duration::from_secs(10);

/// Raft timing and snapshot settings of group 0.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Leader heartbeat, ms.
    pub heartbeat_ms: u64,
    /// Election timeout range, ms.
    pub election_min_ms: u64,
    /// Election timeout range, ms.
    pub election_max_ms: u64,
    /// A snapshot is built after this many entries since the last one.
    pub snapshot_every: u64,
    /// Bound on a metadata proposal, forwarding and local apply included.
    pub propose_timeout: Duration,
}

impl Default for Timing {
    /// Heartbeat 100 ms and elections after 400–800 ms of silence: a leader's
    /// loss is noticed in under a second on a LAN, well under the 2 s goal.
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_min_ms: 400,
            election_max_ms: 800,
            snapshot_every: 5000,
            propose_timeout: Duration::from_secs(5),
        }
    }
}

/// Who this node is and whom it knows at start.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// The address peers reach this node's cluster listener at (empty for a
    /// node without one: a one-member group).
    pub addr: String,
    /// The static peer list (may include this node).
    pub peers: BTreeMap<NodeId, String>,
    /// Raft settings.
    pub timing: Timing,
}

impl NodeOptions {
    /// Every node the static list names, this one included.
    pub fn initial_members(&self) -> BTreeMap<NodeId, BasicNode> {
        let mut m: BTreeMap<NodeId, BasicNode> = self
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        m.insert(self.id, BasicNode::new(&self.addr));
        m
    }
}

/// This node's member of group 0.
pub struct MetaNode {
    id: NodeId,
    addr: String,
    raft: MetaRaftNode,
    meta: Arc<RwLock<MetaState>>,
    network: Network,
    propose_timeout: Duration,
    /// Voters that did not apply a change in time, and until when they are
    /// not waited for (see `spread`).
    lagging: Mutex<HashMap<NodeId, Instant>>,
    store: Store,
    /// The node's one writer, for its counters in [`MetaNode::status`].
    writer: Writer,
}

impl std::fmt::Debug for MetaNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaNode")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Why a forwarded proposal did not go through.
enum ForwardError {
    /// Nothing was appended (the receiver is not the leader, or could not be
    /// reached): ask again.
    Retry,
    /// The outcome is unknown or failed for good.
    Fail(AmqpError),
}

fn internal(text: impl Into<String>) -> AmqpError {
    AmqpError::new(ReplyCode::InternalError, text)
}

/// The outcome carried by an applied entry of a command.
fn outcome(applied: Applied) -> Result<Outcome, AmqpError> {
    applied
        .0
        .unwrap_or_else(|| Err(internal("the log entry carried no command")))
}

/// Records the cluster's id on disk and for the interceptors.
fn learn(store: &Store, cluster: &ClusterId, id: u128) {
    if cluster.get() == Some(id) {
        return;
    }
    if let Err(e) = store.set_cluster_id(id) {
        tracing::error!(cause = %e, "could not persist the cluster id");
    }
    if cluster.set(id) {
        tracing::info!(cluster = %format_id(id), "cluster id");
    } else {
        tracing::error!(
            cluster = %format_id(id),
            known = ?cluster.get().map(format_id),
            "the applied cluster id differs from the one this node knew"
        );
    }
}

/// Learns the cluster's id as soon as this node applies it (a node added
/// to a running cluster gets it with the log or a snapshot), then ends.
async fn learn_cluster_id(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    meta: Arc<RwLock<MetaState>>,
    store: Store,
    cluster: Arc<ClusterId>,
) {
    loop {
        if cluster.get().is_some() {
            return;
        }
        let applied = meta
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .cluster_id();
        if let Some(id) = applied {
            learn(&store, &cluster, id);
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

impl MetaNode {
    /// Starts group 0's Raft instance on this node's store. Nothing is
    /// initialised here: see [`crate::bootstrap`].
    pub async fn start(
        store: &Store,
        writer: Writer,
        opts: &NodeOptions,
        network: Network,
    ) -> Result<Arc<Self>, ClusterError> {
        let t = &opts.timing;
        let config = Config {
            cluster_name: "warren".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_min_ms,
            election_timeout_max: t.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
            max_in_snapshot_log_to_keep: t.snapshot_every.min(1000),
            snapshot_max_chunk_size: crate::raft_client::SNAPSHOT_CHUNK,
            ..Config::default()
        }
        .validate()?;
        let cluster = network.security().cluster_id().clone();
        let persisted = store
            .cluster_id()
            .map_err(|e| ClusterError::Raft(format!("reading the cluster id: {e}")))?;
        if let Some(id) = persisted {
            cluster.set(id);
        }
        let log = RaftLogStore::<MetaRaft>::new(store, writer.clone(), META_GROUP);
        let sm = MetaStateMachine::open(store, writer.clone(), META_GROUP)?;
        let meta = sm.shared();
        let raft = Raft::new(
            opts.id,
            Arc::new(config),
            network.for_group(META_GROUP),
            log,
            sm,
        )
        .await?;
        tokio::spawn(learn_cluster_id(
            raft.metrics(),
            meta.clone(),
            store.clone(),
            cluster,
        ));
        Ok(Arc::new(Self {
            id: opts.id,
            addr: opts.addr.clone(),
            raft,
            meta,
            network,
            propose_timeout: t.propose_timeout,
            lagging: Mutex::new(HashMap::new()),
            store: store.clone(),
            writer,
        }))
    }

    /// Makes sure the cluster has an id: proposes a random one if none is
    /// applied here yet (the first one committed stays, whoever proposed
    /// it). Returns the cluster's id once this node has applied it.
    pub async fn ensure_cluster_id(&self) -> Result<u128, AmqpError> {
        let known = self
            .meta
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .cluster_id();
        let id = match known {
            Some(id) => id,
            None => match self
                .propose(Command::ChooseClusterId(rand::random()))
                .await?
            {
                Outcome::ClusterId(id) => id,
                other => return Err(internal(format!("choosing the cluster id: {other:?}"))),
            },
        };
        learn(&self.store, self.network.security().cluster_id(), id);
        Ok(id)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The Raft instance (for the Raft RPC service).
    pub fn raft(&self) -> &MetaRaftNode {
        &self.raft
    }

    /// The metadata as applied on this node (routing reads it).
    pub fn meta(&self) -> &Arc<RwLock<MetaState>> {
        &self.meta
    }

    /// The network (channels to peers).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Proposes `cmd` and returns the state machine's outcome once this
    /// node has applied it; after `propose_timeout` without a majority, an
    /// error RabbitMQ's wording would give for a metadata store timeout.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome, AmqpError> {
        let deadline = Instant::now() + self.propose_timeout;
        let (index, applied) = match tokio::time::timeout_at(deadline, self.commit(cmd, deadline))
            .await
        {
            Ok(r) => r?,
            Err(_) => {
                return Err(AmqpError::new(
                    ReplyCode::InternalError,
                    format!(
                        "the metadata store operation timed out on node {} (no Raft majority within {} ms)",
                        self.id,
                        self.propose_timeout.as_millis()
                    ),
                )
                .on_channel());
            }
        };
        let result = outcome(applied);
        if result.is_ok() {
            // Committed: the wait for the other voters is bounded on its
            // own and never turns the change into an error. A refused
            // command changed nothing: nothing to wait for.
            self.spread(index).await;
        }
        result
    }

    /// Commits `cmd` (through the leader) and waits until this node has
    /// applied it: the entry's index and what applying it gave.
    async fn commit(&self, cmd: Command, deadline: Instant) -> Result<(u64, Applied), AmqpError> {
        let mut pause = Duration::from_millis(10);
        loop {
            match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => {
                    // Tell followers the new commit index now, not at the
                    // next heartbeat: their routing catches up in one RTT.
                    let _ = self.raft.trigger().heartbeat().await;
                    return Ok((resp.log_id.index, resp.data));
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    if let (Some(leader), Some(node)) = (f.leader_id, f.leader_node)
                        && leader != self.id
                    {
                        match self.forward(&node.addr, &cmd).await {
                            Ok((index, applied)) => {
                                self.wait_applied(index, deadline).await?;
                                return Ok((index, applied));
                            }
                            Err(ForwardError::Retry) => {}
                            Err(ForwardError::Fail(e)) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(internal(format!("metadata store: {e}"))),
            }
            // No leader yet (an election is running): ask again shortly.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    async fn forward(&self, addr: &str, cmd: &Command) -> Result<(u64, Applied), ForwardError> {
        let channel = self
            .network
            .channel(addr)
            .map_err(|_| ForwardError::Retry)?;
        let command = serde_json::to_vec(cmd)
            .map_err(|e| ForwardError::Fail(internal(format!("encoding command: {e}"))))?;
        let reply = ClusterClient::new(channel)
            .propose(ProposeRequest {
                group: META_GROUP,
                command,
            })
            .await
            .map_err(|s| {
                self.network.security().refusals().note(addr, &s);
                match s.code() {
                    tonic::Code::FailedPrecondition | tonic::Code::Unavailable => {
                        ForwardError::Retry
                    }
                    _ => ForwardError::Fail(internal(format!("forwarding to the leader: {s}"))),
                }
            })?
            .into_inner();
        let result: Result<Outcome, AmqpError> = serde_json::from_slice(&reply.outcome)
            .map_err(|e| ForwardError::Fail(internal(format!("decoding outcome: {e}"))))?;
        Ok((reply.index, Applied(Some(result))))
    }

    /// Waits (bounded) until the other voters have applied entry `index`,
    /// so that a client told "declare-ok" on this node finds the queue
    /// routed to on every node it reaches next, as RabbitMQ's synchronous
    /// metadata store gives. A voter that does not answer in time is not
    /// waited for again for a while: a slow or cut-off node delays changes
    /// once, not each of them.
    async fn spread(&self, index: u64) {
        let now = Instant::now();
        let peers: Vec<(NodeId, String)> = {
            let m = self.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            let lagging = self.lagging.lock().unwrap_or_else(PoisonError::into_inner);
            membership
                .voter_ids()
                .filter(|id| *id != self.id)
                .filter(|id| lagging.get(id).is_none_or(|until| *until <= now))
                .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
                .collect()
        };
        if peers.is_empty() {
            return;
        }
        let mut waits = tokio::task::JoinSet::new();
        for (id, addr) in peers {
            let channel = self.network.channel(&addr).ok();
            waits.spawn(async move {
                let Some(channel) = channel else {
                    return (id, false);
                };
                let mut req = tonic::Request::new(WaitAppliedRequest {
                    group: META_GROUP,
                    index,
                    timeout_ms: SPREAD_TIMEOUT.as_millis() as u64,
                });
                req.set_timeout(SPREAD_TIMEOUT + SPREAD_TIMEOUT / 2);
                let r = ClusterClient::new(channel).wait_applied(req).await;
                (id, r.is_ok_and(|r| r.into_inner().applied))
            });
        }
        while let Some(r) = waits.join_next().await {
            if let Ok((id, applied)) = r {
                let mut lagging = self.lagging.lock().unwrap_or_else(PoisonError::into_inner);
                if applied {
                    lagging.remove(&id);
                } else {
                    lagging.insert(id, Instant::now() + LAGGING_FOR);
                }
            }
        }
    }

    /// Waits up to `limit` until this node has applied entry `index`.
    pub async fn wait_applied_for(&self, index: u64, limit: Duration) -> bool {
        self.raft
            .wait(Some(limit))
            .applied_index_at_least(Some(index), "entry applied")
            .await
            .is_ok()
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), AmqpError> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "forwarded command applied here")
            .await
            .map(|_| ())
            .map_err(|e| internal(format!("waiting for the local replica: {e}")))
    }

    /// `Cluster.Propose` on this node: append if leader, else `None` (the
    /// caller retries elsewhere). Returns the entry's index and outcome.
    pub async fn propose_as_leader(
        &self,
        cmd: Command,
    ) -> Result<Option<(u64, Applied)>, ClusterError> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => {
                // Followers learn the new commit index with the next
                // append; without this the proposer would wait for the
                // next heartbeat before applying (tens of ms).
                let _ = self.raft.trigger().heartbeat().await;
                Ok(Some((resp.log_id.index, resp.data)))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Ok(None),
            Err(e) => Err(ClusterError::raft("proposing", e)),
        }
    }

    /// This node's view of group 0.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let idx = |i: Option<u64>| i.map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX));
        NodeStatus {
            id: self.id,
            state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            leader: m.current_leader.unwrap_or(0),
            term: m.current_term,
            last_log_index: idx(m.last_log_index),
            last_applied: idx(m.last_applied.map(|l| l.index)),
            snapshot: idx(m.snapshot.map(|l| l.index)),
            members,
            addr: self.addr.clone(),
            cluster_id: self
                .network
                .security()
                .cluster_id()
                .get()
                .map(format_id)
                .unwrap_or_default(),
            forwarded_publishes: stats::get(&stats::FORWARDED_PUBLISHES),
            up_frames: stats::get(&stats::UP_FRAMES),
            remote_deliveries: stats::get(&stats::REMOTE_DELIVERIES),
            down_frames: stats::get(&stats::DOWN_FRAMES),
            raft_rpcs: stats::get(&stats::RAFT_RPCS),
            raft_entries: self.writer.stats().raft_entries.load(Ordering::Relaxed),
            store_syncs: self.writer.stats().syncs.load(Ordering::Relaxed),
        }
    }

    fn channel(&self, addr: &str) -> Result<PeerChannel, ClusterError> {
        self.network
            .channel(addr)
            .map_err(|e| ClusterError::Unreachable {
                addr: addr.to_owned(),
                cause: e.to_string(),
            })
    }

    /// Stops the Raft instance.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(cause = %e, "raft shutdown");
        }
    }
}
