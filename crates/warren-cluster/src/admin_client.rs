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
use crate::pb::{AddNodeRequest, Member, NodeStatus, RemoveNodeRequest, StatusRequest};
use crate::raft_client::PeerChannel;

/// Bound on each admin call but membership changes (which wait for a new
/// node to catch up).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
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

async fn client(
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
