//! The classic queue type reached through a peer link: a queue homed on
//! another node, used from this one.
//!
//! - [`client`]: this side: a proxy per remote queue serves the queue
//!   mailbox protocol like any queue, and one link task per home node
//!   batches the traffic of all of them into one gRPC stream.
//! - [`home`]: the home side: the `Queues` service that hands that traffic
//!   to the queue actors as a local connection would.
//! - `flow_mirror`: a queue's flow signal, reported by its home and
//!   mirrored into its proxies here, so remote publishers are slowed too.
//! - `pending`: the requests a link waits on and how their waiters are
//!   answered.
//! - [`wire`]: conversions to and from `proto/queues.proto`.

pub mod client;
mod flow_mirror;
pub mod home;
mod pending;
pub mod wire;

pub use client::{LINK_BUDGET, LinkTx, Routed, spawn_forwarder, spawn_link, spawn_proxy};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use warren_cluster::MetaNode;
use warren_core::NodeId;

use crate::memory::Memory;

/// The node's links, one per other node, started on first use and shared
/// by every queue used through them (classic queues homed there, quorum
/// queues led from there).
#[derive(Debug)]
pub struct Links {
    node: Weak<MetaNode>,
    memory: Arc<Memory>,
    links: Mutex<HashMap<NodeId, LinkTx>>,
}

impl Links {
    /// No links yet; they find their nodes in `node`'s membership.
    pub fn new(node: Weak<MetaNode>, memory: Arc<Memory>) -> Self {
        Self {
            node,
            memory,
            links: Mutex::new(HashMap::new()),
        }
    }

    /// The link to `home`.
    pub fn to(&self, home: NodeId) -> LinkTx {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links
            .entry(home)
            .or_insert_with(|| spawn_link(self.node.clone(), home, self.memory.clone()))
            .clone()
    }
}
pub use home::{LocalQueues, Lookup, LookupFuture, QueuesService};
