//! The client side of the admin RPCs, for `warren cluster ...`: the status of
//! every member as each sees itself, and membership changes. Calls prove
//! the cluster secret of the [`Security`] they are given (and use its TLS
//! settings), as a node's own calls do.

use std::fmt::Write as _;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;

use crate::auth::Security;
use crate::error::ClusterError;
use crate::pb::cluster_client::ClusterClient;
use crate::pb::{
    AddNodeRequest, Member, MemberChange, NodeStatus, QueueMembersRequest, QueueStatusReply,
    QueueStatusRequest, RemoveNodeRequest, StatusRequest,
};
use crate::raft_client::PeerChannel;

/// Bound on each admin call but membership changes (which wait for a new
/// node to catch up).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on a membership change.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// One member as it reports itself.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberStatus {
    /// Node id.
    pub id: u64,
    /// Cluster address.
    pub addr: String,
    /// A voter (false: a learner still catching up).
    pub voter: bool,
    /// Answered the status call.
    pub reachable: bool,
    /// leader, follower, candidate, learner; `unreachable` when it did not
    /// answer.
    pub state: String,
    /// Its current term.
    pub term: u64,
    /// The leader it knows (None: none).
    pub leader: Option<u64>,
    /// Index of its last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last entry it applied.
    pub last_applied: Option<u64>,
    /// Index its last snapshot covers.
    pub snapshot: Option<u64>,
    /// The cluster id it knows (32 hex digits).
    pub cluster_id: Option<String>,
    /// Publishes it forwarded to other nodes' queues.
    pub forwarded_publishes: u64,
    /// Stream frames that carried them (batching: frames ≪ publishes).
    pub up_frames: u64,
    /// Deliveries it received from other nodes' queues.
    pub remote_deliveries: u64,
    /// Stream frames that carried them.
    pub down_frames: u64,
    /// Raft RPCs it sent, every group included.
    pub raft_rpcs: u64,
    /// Raft log entries its store wrote, every group included.
    pub raft_entries: u64,
    /// WAL syncs its store did.
    pub store_syncs: u64,
}

/// The cluster as its members report it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterStatus {
    /// The leader the asked node knows.
    pub leader: Option<u64>,
    /// The cluster's id as the asked node knows it.
    pub cluster_id: Option<String>,
    /// Every member of group 0.
    pub members: Vec<MemberStatus>,
}

fn index(i: i64) -> Option<u64> {
    u64::try_from(i).ok()
}

pub(crate) async fn client(
    sec: &Security,
    addr: &str,
    timeout: Duration,
) -> Result<ClusterClient<PeerChannel>, ClusterError> {
    let unreachable = |e: tonic::transport::Error| ClusterError::Unreachable {
        addr: addr.to_owned(),
        cause: crate::tls::describe(&e),
    };
    let channel = sec
        .endpoint(addr)?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(timeout)
        .connect()
        .await
        .map_err(unreachable)?;
    Ok(ClusterClient::new(InterceptedService::new(
        channel,
        sec.signer(),
    )))
}

async fn node_status(sec: &Security, addr: &str) -> Result<NodeStatus, ClusterError> {
    let mut c = client(sec, addr, CALL_TIMEOUT).await?;
    Ok(c.status(StatusRequest {}).await?.into_inner())
}

fn member_status(m: &Member, s: Option<&NodeStatus>) -> MemberStatus {
    match s {
        Some(s) => MemberStatus {
            id: m.id,
            addr: m.addr.clone(),
            voter: m.voter,
            reachable: true,
            state: s.state.clone(),
            term: s.term,
            leader: (s.leader != 0).then_some(s.leader),
            last_log_index: index(s.last_log_index),
            last_applied: index(s.last_applied),
            snapshot: index(s.snapshot),
            cluster_id: (!s.cluster_id.is_empty()).then(|| s.cluster_id.clone()),
            forwarded_publishes: s.forwarded_publishes,
            up_frames: s.up_frames,
            remote_deliveries: s.remote_deliveries,
            down_frames: s.down_frames,
            raft_rpcs: s.raft_rpcs,
            raft_entries: s.raft_entries,
            store_syncs: s.store_syncs,
        },
        None => MemberStatus {
            id: m.id,
            addr: m.addr.clone(),
            voter: m.voter,
            reachable: false,
            state: "unreachable".into(),
            term: 0,
            leader: None,
            last_log_index: None,
            last_applied: None,
            snapshot: None,
            cluster_id: None,
            forwarded_publishes: 0,
            up_frames: 0,
            remote_deliveries: 0,
            down_frames: 0,
            raft_rpcs: 0,
            raft_entries: 0,
            store_syncs: 0,
        },
    }
}

/// Asks `server` for the members, then each member for its status.
pub async fn cluster_status(sec: &Security, server: &str) -> Result<ClusterStatus, ClusterError> {
    let first = node_status(sec, server).await?;
    let mut members = Vec::new();
    if first.members.is_empty() {
        // Not in a group yet: report the node alone.
        let me = Member {
            id: first.id,
            addr: first.addr.clone(),
            voter: false,
        };
        members.push(member_status(&me, Some(&first)));
    }
    for m in &first.members {
        if m.id == first.id {
            members.push(member_status(m, Some(&first)));
            continue;
        }
        let s = node_status(sec, &m.addr).await.ok();
        members.push(member_status(m, s.as_ref()));
    }
    Ok(ClusterStatus {
        leader: (first.leader != 0).then_some(first.leader),
        cluster_id: (!first.cluster_id.is_empty()).then_some(first.cluster_id),
        members,
    })
}

/// The status as a table.
pub fn render(s: &ClusterStatus) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster: {}, leader: {}, members: {}",
        s.cluster_id.as_deref().unwrap_or("-"),
        opt(s.leader),
        s.members.len()
    );
    let _ = writeln!(
        out,
        "{:<4} {:<22} {:<7} {:<11} {:>5} {:>8} {:>8} {:>8}",
        "ID", "ADDRESS", "ROLE", "STATE", "TERM", "LOG", "APPLIED", "SNAPSHOT"
    );
    for m in &s.members {
        let _ = writeln!(
            out,
            "{:<4} {:<22} {:<7} {:<11} {:>5} {:>8} {:>8} {:>8}",
            m.id,
            m.addr,
            if m.voter { "voter" } else { "learner" },
            m.state,
            m.term,
            opt(m.last_log_index),
            opt(m.last_applied),
            opt(m.snapshot)
        );
    }
    out
}

/// Adds node `id` at `addr` through `server`; returns the voters after.
pub async fn add_node(
    sec: &Security,
    server: &str,
    id: u64,
    addr: &str,
) -> Result<Vec<Member>, ClusterError> {
    let mut c = client(sec, server, CHANGE_TIMEOUT).await?;
    let r = c
        .add_node(AddNodeRequest {
            id,
            addr: addr.to_owned(),
        })
        .await?;
    Ok(r.into_inner().members)
}

/// Removes node `id` through `server`; returns the voters after.
pub async fn remove_node(
    sec: &Security,
    server: &str,
    id: u64,
) -> Result<Vec<Member>, ClusterError> {
    let mut c = client(sec, server, CHANGE_TIMEOUT).await?;
    let r = c.remove_node(RemoveNodeRequest { id }).await?;
    Ok(r.into_inner().members)
}

/// One quorum queue replica as its node reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReplicaStatus {
    /// The node holding it.
    pub node: u64,
    /// The queue's name.
    pub queue: String,
    /// Its group (the queue's id).
    pub group: u64,
    /// leader, follower, candidate, learner.
    pub state: String,
    /// The leader it knows.
    pub leader: Option<u64>,
    /// Its term.
    pub term: u64,
    /// Its last log index.
    pub last_log_index: Option<u64>,
    /// The last index it applied.
    pub last_applied: Option<u64>,
    /// The group's members.
    pub members: Vec<u64>,
    /// On the leader: how far behind each member's log is (entries).
    pub lag: Vec<(u64, Option<u64>)>,
    /// Ready messages as applied here.
    pub ready: u64,
    /// Consumers as applied here.
    pub consumers: u64,
}

/// Every quorum queue replica of every member `server` knows, node by node
/// (members that do not answer are left out).
pub async fn queue_status(
    sec: &Security,
    server: &str,
) -> Result<Vec<ReplicaStatus>, ClusterError> {
    let first = node_status(sec, server).await?;
    let mut addrs: Vec<String> = first.members.iter().map(|m| m.addr.clone()).collect();
    if addrs.is_empty() {
        addrs.push(server.to_owned());
    }
    let mut out = Vec::new();
    for addr in addrs {
        let Ok(mut c) = client(sec, &addr, CALL_TIMEOUT).await else {
            continue;
        };
        let Ok(reply) = c.queue_status(QueueStatusRequest {}).await else {
            continue;
        };
        out.extend(replicas(reply.into_inner()));
    }
    out.sort_by(|a, b| (&a.queue, a.node).cmp(&(&b.queue, b.node)));
    Ok(out)
}

/// Adds node `node` to quorum queue `queue`'s replicas (in vhost
/// `vhost`), removes it, or makes it the leader, through the node at
/// `server`. Returns the replica set after the change.
pub async fn queue_members(
    sec: &Security,
    server: &str,
    vhost: &str,
    queue: &str,
    node: u64,
    change: MemberChange,
) -> Result<Vec<u64>, ClusterError> {
    let req = QueueMembersRequest {
        queue: queue.to_owned(),
        node,
        change: change as i32,
        vhost: vhost.to_owned(),
        group: 0,
    };
    change_members(sec, server, req).await
}

/// The same for the quorum queue whose group is `group` (whatever its
/// vhost): what `grow`, `shrink`, `rebalance` and `drain` use, from a
/// status report.
async fn group_queue_members(
    sec: &Security,
    server: &str,
    group: u64,
    node: u64,
    change: MemberChange,
) -> Result<Vec<u64>, ClusterError> {
    let req = QueueMembersRequest {
        node,
        change: change as i32,
        group,
        ..Default::default()
    };
    change_members(sec, server, req).await
}

async fn change_members(
    sec: &Security,
    server: &str,
    req: QueueMembersRequest,
) -> Result<Vec<u64>, ClusterError> {
    let mut c = client(sec, server, CHANGE_TIMEOUT).await?;
    Ok(c.queue_members(req).await?.into_inner().members)
}

/// `grow` (`add`) or `shrink`: adds node `node` to every quorum queue
/// whose replicas lack it, or removes it from every one it is a replica of
/// (but a queue's last). Returns each queue changed with its new replica
/// set, or the error that stopped that queue.
pub async fn regrow(
    sec: &Security,
    server: &str,
    node: u64,
    add: bool,
) -> Result<Vec<(String, Result<Vec<u64>, String>)>, ClusterError> {
    let status = queue_status(sec, server).await?;
    let mut queues: std::collections::BTreeMap<(String, u64), Vec<u64>> = Default::default();
    for r in status {
        let members = queues.entry((r.queue, r.group)).or_default();
        if r.members.len() > members.len() {
            *members = r.members;
        }
    }
    let mut out = Vec::new();
    for ((queue, group), members) in queues {
        let has = members.contains(&node);
        if has == add || (!add && members.len() < 2) {
            continue;
        }
        let change = if add {
            MemberChange::AddMember
        } else {
            MemberChange::DeleteMember
        };
        let r = group_queue_members(sec, server, group, node, change)
            .await
            .map_err(|e| e.to_string());
        out.push((queue, r));
    }
    Ok(out)
}

/// Moves quorum queue leaders until no node leads more than one queue
/// more than another member could: each move hands a queue led by the
/// node that leads most to the member of its group that leads fewest.
/// Returns the moves made, (queue, from, to), and those that failed.
pub async fn rebalance(
    sec: &Security,
    server: &str,
) -> Result<Vec<(String, u64, u64, Result<(), String>)>, ClusterError> {
    let status = queue_status(sec, server).await?;
    // Each queue's leader and members, from its leader's report.
    let mut queues: Vec<(String, u64, Vec<u64>, u64)> = status
        .iter()
        .filter(|r| r.state == "leader")
        .map(|r| (r.queue.clone(), r.node, r.members.clone(), r.group))
        .collect();
    let mut nodes: std::collections::BTreeMap<u64, usize> = Default::default();
    for r in &status {
        nodes.entry(r.node).or_insert(0);
    }
    for (_, leader, _, _) in &queues {
        *nodes.entry(*leader).or_insert(0) += 1;
    }
    let mut moves = Vec::new();
    for _ in 0..queues.len() {
        // The queue whose move narrows the spread most.
        let best = queues
            .iter()
            .enumerate()
            .filter_map(|(i, (_, leader, members, _))| {
                let from = nodes.get(leader).copied().unwrap_or(0);
                let (to, n) = members
                    .iter()
                    .map(|m| (*m, nodes.get(m).copied().unwrap_or(0)))
                    .min_by_key(|(m, n)| (*n, *m))?;
                (from > n + 1).then_some((i, to, from - n))
            })
            .max_by_key(|(_, _, gap)| *gap);
        let Some((i, to, _)) = best else { break };
        let (queue, from, group) = (queues[i].0.clone(), queues[i].1, queues[i].3);
        let r = group_queue_members(sec, server, group, to, MemberChange::TransferLeader)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if r.is_ok() {
            *nodes.entry(from).or_insert(1) -= 1;
            *nodes.entry(to).or_insert(0) += 1;
            queues[i].1 = to;
        } else {
            // Not tried again in this run.
            queues.swap_remove(i);
        }
        moves.push((queue, from, to, r));
    }
    Ok(moves)
}

/// Moves the leadership of every quorum queue the node at `server` leads
/// to another of its members (the one leading fewest queues, then the one
/// least behind), before that node stops. Returns each move, (queue, to),
/// with its outcome. A queue with no other member keeps its leader.
pub async fn drain(
    sec: &Security,
    server: &str,
) -> Result<Vec<(String, u64, Result<(), String>)>, ClusterError> {
    let me = node_status(sec, server).await?.id;
    let status = queue_status(sec, server).await?;
    let mut leads: std::collections::BTreeMap<u64, usize> = Default::default();
    for r in status.iter().filter(|r| r.state == "leader") {
        *leads.entry(r.node).or_insert(0) += 1;
    }
    let mut moves = Vec::new();
    for r in status
        .iter()
        .filter(|r| r.state == "leader" && r.node == me)
    {
        let behind = |m: u64| {
            r.lag
                .iter()
                .find(|(id, _)| *id == m)
                .and_then(|(_, lag)| *lag)
                .unwrap_or(u64::MAX)
        };
        let Some(to) = r
            .members
            .iter()
            .copied()
            .filter(|m| *m != me)
            .min_by_key(|m| (leads.get(m).copied().unwrap_or(0), behind(*m), *m))
        else {
            continue;
        };
        let outcome = group_queue_members(sec, server, r.group, to, MemberChange::TransferLeader)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if outcome.is_ok() {
            *leads.entry(to).or_insert(0) += 1;
        }
        moves.push((r.queue.clone(), to, outcome));
    }
    Ok(moves)
}

fn replicas(r: QueueStatusReply) -> Vec<ReplicaStatus> {
    r.replicas
        .into_iter()
        .map(|q| {
            let last = index(q.last_log_index);
            let lag = q
                .matched
                .iter()
                .map(|m| {
                    (
                        m.id,
                        last.map(|l| l.saturating_sub(index(m.index).unwrap_or(0))),
                    )
                })
                .collect();
            ReplicaStatus {
                node: r.node,
                queue: q.name,
                group: q.group,
                state: q.state.to_lowercase(),
                leader: (q.leader != 0).then_some(q.leader),
                term: q.term,
                last_log_index: last,
                last_applied: index(q.last_applied),
                members: q.members,
                lag,
                ready: q.ready,
                consumers: q.consumers,
            }
        })
        .collect()
}

/// The replicas as a table.
pub fn render_queues(rs: &[ReplicaStatus]) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>4} {:<9} {:>6} {:>5} {:>8} {:>8} {:>8} {:>9}  MEMBERS (LAG)",
        "QUEUE", "NODE", "STATE", "LEADER", "TERM", "LOG", "APPLIED", "READY", "CONSUMERS"
    );
    for r in rs {
        let members = if r.lag.is_empty() {
            format!("{:?}", r.members)
        } else {
            r.lag
                .iter()
                .map(|(id, lag)| format!("{id}({})", opt(*lag)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "{:<24} {:>4} {:<9} {:>6} {:>5} {:>8} {:>8} {:>8} {:>9}  {members}",
            r.queue,
            r.node,
            r.state,
            opt(r.leader),
            r.term,
            opt(r.last_log_index),
            opt(r.last_applied),
            r.ready,
            r.consumers
        );
    }
    out
}
