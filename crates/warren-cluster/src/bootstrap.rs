//! Forming group 0 from a static peer list, whatever the start order.
//!
//! A node with a Raft state (a restart, or a node added online) never
//! initialises. A fresh node polls its peers' status; it initialises the
//! group with the whole static list when it sees a majority of that list
//! answering, none of them already in a group, and no lower id among those
//! answering. openraft documents initialising several nodes with the *same*
//! membership as safe, which covers the race of two nodes deciding in the
//! same instant: the list is static, so their memberships are identical.
//! A node without peers initialises a one-member group at once.

use std::time::Duration;

use openraft::BasicNode;
use std::collections::BTreeMap;
use warren_core::NodeId;

use crate::meta_node::{MetaNode, NodeOptions};

/// Bound on one status probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between probing rounds.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// Time between two "waiting" lines in the log.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// What a probe learnt of a peer.
enum Seen {
    Unreachable,
    Fresh,
    InGroup,
}

async fn probe(node: &MetaNode, addr: &str) -> Seen {
    match node.peer_status(addr, PROBE_TIMEOUT).await {
        None => Seen::Unreachable,
        Some(s) if s.members.is_empty() => Seen::Fresh,
        Some(_) => Seen::InGroup,
    }
}

/// Runs until this node is part of group 0 (initialised by itself or by
/// another node). Meant to be spawned; it ends when the group exists.
pub async fn form_group(node: &MetaNode, opts: &NodeOptions) {
    let members: BTreeMap<NodeId, BasicNode> = opts.initial_members();
    let mut rounds: u64 = 0;
    let mut logged = std::time::Instant::now();
    loop {
        match node.raft().is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(cause = %e, "raft stopped before the group formed");
                return;
            }
        }
        if let Some(id) = decide(node, &members).await {
            tracing::info!(
                node = id,
                members = ?members.keys().collect::<Vec<_>>(),
                "initialising metadata group"
            );
            if let Err(e) = node.raft().initialize(members.clone()).await {
                // NotAllowed: a leader's entries arrived meanwhile; fine.
                tracing::info!(cause = %e, "group already initialised");
            }
            return;
        }
        rounds += 1;
        if logged.elapsed() >= LOG_EVERY {
            logged = std::time::Instant::now();
            // A StatefulSet's DNS names appear pod by pod: say which peers
            // have no address yet, apart from those that do not answer.
            let unresolved = unresolved(&members, node.id()).await;
            tracing::info!(
                rounds,
                ?unresolved,
                "waiting for a majority of peers to form the cluster"
            );
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// The peers whose host names do not resolve (yet).
async fn unresolved(members: &BTreeMap<NodeId, BasicNode>, me: NodeId) -> Vec<String> {
    let mut out = Vec::new();
    for (id, n) in members {
        if *id == me {
            continue;
        }
        let lookup = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host(n.addr.as_str()));
        if !matches!(lookup.await, Ok(Ok(_))) {
            out.push(n.addr.clone());
        }
    }
    out
}

/// `Some(self)` when this node should initialise now.
async fn decide(node: &MetaNode, members: &BTreeMap<NodeId, BasicNode>) -> Option<NodeId> {
    if members.len() == 1 {
        return Some(node.id());
    }
    let mut answering = vec![node.id()];
    for (id, n) in members {
        if *id == node.id() {
            continue;
        }
        match probe(node, &n.addr).await {
            Seen::Unreachable => {}
            Seen::Fresh => answering.push(*id),
            Seen::InGroup => return None,
        }
    }
    let majority = members.len() / 2 + 1;
    let lowest = answering.iter().min().copied();
    (answering.len() >= majority && lowest == Some(node.id())).then_some(node.id())
}
