//! The Raft groups of this node's quorum queue replicas, created and
//! removed at runtime.
//!
//! A quorum queue is one group (its id is the queue's id) over the replica
//! set group 0 recorded when it was declared. Every member starts its group
//! from that record ([`QueueGroups::start`], idempotent); the first member
//! of the set initialises it, so that the leaders of many queues spread the
//! way their replica sets were rotated; the others initialise it too if no
//! leader appears (the first member was down at creation): openraft accepts
//! the same initial membership from several nodes.
//!
//! All groups share the node's store, its group-commit writer (one fsync
//! serves every group that appended meanwhile) and its channels to peers.
//! The [`crate::RaftService`] finds them here by group id.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use warren_core::NodeId;
use warren_core::quorum::QuorumConfig;
use warren_store::raft::queue_machine::QuorumCounts;
use warren_store::raft::{GroupId, QueueRaft, QueueStateMachine, RaftLogStore};
use warren_store::{Store, Writer};

use crate::{ClusterError, Network};

/// How long a member other than the first waits for a leader of a new
/// group before it initialises the group itself (the first was down).
const INITIALIZE_AFTER: Duration = Duration::from_secs(3);

/// The Raft instance of a quorum queue's group.
pub type QueueRaftNode = Raft<QueueRaft>;

/// One group of this node: its Raft instance and its applied counts.
#[derive(Clone)]
pub struct QueueGroup {
    /// The group's Raft instance.
    pub raft: QueueRaftNode,
    /// Ready messages and consumers as applied here.
    pub counts: Arc<QuorumCounts>,
    /// Set by the queue's runtime while this replica leads: the state
    /// machine reads the bodies of deliveries only then.
    pub leading: Arc<AtomicBool>,
    /// Set while this replica hands its leadership over: the runtime holds
    /// its proposals, so that followers' leader leases run out.
    pub pausing: Arc<AtomicBool>,
}

impl std::fmt::Debug for QueueGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueGroup").finish_non_exhaustive()
    }
}

/// Raft settings of queue groups. Their heartbeats and election timers are
/// off ([`crate::peer_watch`] calls their elections); what remains of the
/// timing is the followers' leader lease.
#[derive(Clone, Copy, Debug)]
pub struct QueueTiming {
    /// openraft's heartbeat interval, ms: unused while heartbeats are off,
    /// but it must stay below the election timeout.
    pub heartbeat_ms: u64,
    /// Election timeout range, ms: unused as a timer.
    pub election_min_ms: u64,
    /// The followers' leader lease, ms: for this long after an entry
    /// from its leader, a follower refuses to vote for another. An election
    /// called when the leader's node went down waits it out.
    pub election_max_ms: u64,
}

impl Default for QueueTiming {
    /// A lease of 250 ms, shorter than the 300 ms at the least between a
    /// leader's last entry and its node counting as down (the last answer
    /// came at most one probe interval before the kill): the first election
    /// a survivor calls is never refused for the lease, which would cost a
    /// second round (a 2.4 s failover was seen with 400 ms).
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_min_ms: 200,
            election_max_ms: 250,
        }
    }
}

/// The quorum queue groups of this node.
pub struct QueueGroups {
    me: NodeId,
    store: Store,
    writer: Writer,
    network: Network,
    config: Arc<Config>,
    groups: RwLock<HashMap<GroupId, QueueGroup>>,
    /// Serialises starts and removals (each is a check, then a change).
    changing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for QueueGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueGroups")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl QueueGroups {
    /// No groups yet, on node `me`'s store and network.
    pub fn new(
        me: NodeId,
        store: &Store,
        writer: Writer,
        network: Network,
        timing: QueueTiming,
    ) -> Result<Arc<Self>, ClusterError> {
        let config = Config {
            cluster_name: "warren-queue".into(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            // An idle group sends nothing: liveness is watched per node
            // pair, not per group (`crate::peer_watch`).
            enable_heartbeat: false,
            enable_elect: false,
            // Nor ticks: with heartbeats and elections off a tick only
            // wakes the group's core, which then publishes its metrics and
            // wakes the queue's front, 6–7 times a second per group (most
            // of what 1,000 idle queues cost). The one thing a tick still
            // does, a leader stepping down once it removed itself, is
            // asked for then (`QueueGroups::change_members`).
            enable_tick: false,
            // The queue's runtime asks for snapshots when the log since the
            // last one outweighs the state (`QuorumCounts::snapshot_due`):
            // a count of entries would rewrite a long queue's state every
            // few messages when entries hold one message each.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 64,
            snapshot_max_chunk_size: crate::raft_client::SNAPSHOT_CHUNK,
            // The timeout of each chunk of a snapshot, the last one
            // included, whose answer waits until the replica has written
            // every body the snapshot carries (a GiB for a long backlog).
            install_snapshot_timeout: 30_000,
            // Entries are batches of up to a MiB: a few per request.
            max_payload_entries: 16,
            ..Config::default()
        }
        .validate()?;
        Ok(Arc::new(Self {
            me,
            store: store.clone(),
            writer,
            network,
            config: Arc::new(config),
            groups: RwLock::new(HashMap::new()),
            changing: tokio::sync::Mutex::new(()),
        }))
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The longest election timeout of queue groups (also their leader
    /// lease), in milliseconds.
    pub fn election_timeout_max(&self) -> u64 {
        self.config.election_timeout_max
    }

    /// The network the groups talk over.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The group `id`, if it runs here.
    pub fn get(&self, id: GroupId) -> Option<QueueGroup> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Every group running here, by id.
    pub fn all(&self) -> Vec<(GroupId, QueueGroup)> {
        let mut all: Vec<(GroupId, QueueGroup)> = self
            .groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, g)| (*id, g.clone()))
            .collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }

    /// What this node's replicas report, for `warren queues status`;
    /// `name` gives a group's queue name.
    pub fn status(&self, name: impl Fn(GroupId) -> String) -> crate::pb::QueueStatusReply {
        let index = |l: Option<u64>| l.map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX));
        let replicas = self
            .all()
            .into_iter()
            .map(|(id, g)| {
                let m = g.raft.metrics().borrow().clone();
                let matched = m
                    .replication
                    .iter()
                    .flat_map(|r| r.iter())
                    .map(|(member, log)| crate::pb::MemberIndex {
                        id: *member,
                        index: index(log.as_ref().map(|l| l.index)),
                    })
                    .collect();
                crate::pb::QueueReplica {
                    group: id,
                    name: name(id),
                    state: format!("{:?}", m.state),
                    leader: m.current_leader.unwrap_or(0),
                    term: m.current_term,
                    last_log_index: index(m.last_log_index),
                    last_applied: index(m.last_applied.map(|l| l.index)),
                    members: m.membership_config.membership().voter_ids().collect(),
                    matched,
                    ready: g.counts.ready(),
                    consumers: g.counts.consumers(),
                }
            })
            .collect();
        crate::pb::QueueStatusReply {
            node: self.me,
            replicas,
        }
    }

    /// Starts group `id` with `members` (in replica order; the first one
    /// initialises it) unless it runs already. Reopens what the store holds
    /// for it after a restart. With `formed`, the group exists already
    /// (its replica set changed since): nobody initialises it, a joining
    /// member waits for the leader to add it.
    pub async fn start(
        &self,
        id: GroupId,
        config: QuorumConfig,
        members: &[(NodeId, String)],
        formed: bool,
    ) -> Result<QueueGroup, ClusterError> {
        let _turn = self.changing.lock().await;
        if let Some(g) = self.get(id) {
            return Ok(g);
        }
        let log = RaftLogStore::<QueueRaft>::new(&self.store, self.writer.clone(), id);
        let sm = QueueStateMachine::open(&self.store, self.writer.clone(), id, config)?;
        let counts = sm.counts();
        let leading = sm.leading();
        leading.store(false, Ordering::Release);
        let raft = Raft::new(
            self.me,
            self.config.clone(),
            self.network.for_group(id),
            log,
            sm,
        )
        .await?;
        let group = QueueGroup {
            raft,
            counts,
            leading,
            pausing: Arc::default(),
        };
        let initial: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(n, addr)| (*n, BasicNode::new(addr)))
            .collect();
        let first = members.first().map(|(n, _)| *n);
        if formed {
            // Joining (or rejoining) a group that exists.
        } else if first == Some(self.me) {
            initialize(&group.raft, initial).await;
        } else if initial.contains_key(&self.me) {
            let raft = group.raft.clone();
            let wait = INITIALIZE_AFTER;
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let formed = raft.metrics().borrow().current_leader.is_some();
                if !formed {
                    initialize(&raft, initial).await;
                }
            });
        }
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, group.clone());
        Ok(group)
    }

    /// Stops group `id` (if it runs) and removes every key it has on this
    /// node, whether it ran or only left keys behind.
    pub async fn remove(&self, id: GroupId) -> Result<(), ClusterError> {
        let _turn = self.changing.lock().await;
        let running = self
            .groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(g) = running
            && let Err(e) = g.raft.shutdown().await
        {
            tracing::warn!(group = id, cause = %e, "queue group did not stop cleanly");
        }
        self.writer
            .write_sync(warren_store::raft::delete_group(id))
            .await
            .map_err(|e| ClusterError::Raft(format!("removing group {id}: {e}")))
    }

    /// Removes the groups that have keys here but no queue any more (see
    /// [`Store::quorum_groups`]): `keep` says which ones still have one.
    pub async fn remove_orphans(&self, keep: impl Fn(GroupId) -> bool) {
        let stored = match self.store.quorum_groups() {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(cause = %e, "could not list stored queue groups");
                return;
            }
        };
        for id in stored.into_iter().filter(|id| !keep(*id)) {
            if self.get(id).is_some() {
                continue;
            }
            match self.remove(id).await {
                Ok(()) => tracing::info!(group = id, "removed the keys of a deleted quorum queue"),
                Err(e) => tracing::error!(group = id, cause = %e, "could not remove a queue group"),
            }
        }
    }

    /// Stops every group (their state stays on disk).
    pub async fn shutdown(&self) {
        let _turn = self.changing.lock().await;
        let all: Vec<QueueGroup> = self
            .groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, g)| g)
            .collect();
        for g in all {
            let _ = g.raft.shutdown().await;
        }
    }
}

/// Initialises a group; a group that already is (a restart, or another
/// member did first) is left as it is.
async fn initialize(raft: &QueueRaftNode, members: BTreeMap<NodeId, BasicNode>) {
    match raft.is_initialized().await {
        Ok(true) => {}
        Ok(false) => {
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(cause = %e, "queue group not initialised here");
            }
        }
        Err(e) => tracing::warn!(cause = %e, "queue group stopped"),
    }
}
