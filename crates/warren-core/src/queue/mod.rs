//! Queues: their definition (metadata side) and their contents (state side).
//!
//! - [`args`]: the `x-` arguments RabbitMQ type-checks, parsed once at declare.
//! - `seq`: [`state::Seq`], a message's place in its queue (a leaf: state and
//!   paged both use it, so neither imports the other for it).
//! - [`expiry`]: `x-message-ttl` and `expiration`, when a message expires.
//! - [`limits`]: `x-max-length` and `x-overflow`, what a full queue does.
//! - [`paged`]: the part of the ready list whose bodies are only on disk.
//! - `ready`: the ready list, one FIFO or one per priority level
//!   (`x-max-priority`), each an in-memory head and a [`paged::PagedTail`].
//! - [`state`]: [`QueueState`], ready messages, unacked messages and consumers
//!   of one queue, with the dispatch rule (priority, then round-robin, within
//!   prefetch credit), and the memory budget that decides what is paged. The
//!   tail knows nothing of the state.

pub mod args;
pub mod expiry;
pub mod limits;
pub mod paged;
mod ready;
mod seq;
pub mod state;

pub use args::QueueArgs;
pub use limits::{Limits, Overflow};
pub use state::{ChannelKey, ConsumerId, ConsumerSpec, Delivery, Dropped, Entry, QueueState};

use crate::{FieldTable, Name, NodeId, QueueId};

/// A connection, unique in the cluster and across restarts: the serving
/// node's id in the top 16 bits, that node's epoch (its restart count) in the
/// next 16, then a counter. An exclusive queue's owner names its node, so the
/// queue can be dropped when that node restarts or is declared down.
pub type ConnectionId = u64;

/// A connection id for `node` in `epoch`, number `n` of that epoch.
pub fn connection_id(node: NodeId, epoch: u64, n: u32) -> ConnectionId {
    ((node & 0xffff) << 48) | ((epoch & 0xffff) << 32) | u64::from(n)
}

/// The node that serves connection `conn`.
pub fn connection_node(conn: ConnectionId) -> NodeId {
    conn >> 48
}

/// Where a classic queue lives: the node holding its messages and running its
/// actor, and that node's epoch when the queue was declared (a transient
/// queue does not outlive the epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Home {
    /// The node.
    pub node: NodeId,
    /// Its epoch at declaration.
    pub epoch: u64,
}

/// A queue as declared.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueDef {
    /// Its name.
    pub name: Name,
    /// Node-local id (store keys, actor registry).
    pub id: QueueId,
    /// Survives a restart (with its persistent messages).
    pub durable: bool,
    /// The owning connection of an exclusive queue.
    pub exclusive_owner: Option<ConnectionId>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Arguments as declared (for equivalence checks and listing).
    pub arguments: FieldTable,
    /// The arguments RabbitMQ interprets, parsed.
    pub args: QueueArgs,
    /// The node it lives on (a quorum queue: the node that declared it).
    #[serde(default)]
    pub home: Home,
    /// A quorum queue's replica set, in the order group 0 recorded it (the
    /// first member starts the group's first election); empty for a
    /// classic queue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<NodeId>,
    /// The replica set changed since the queue was declared: its group
    /// exists, so a member never initialises it (a joining member waits
    /// for the leader to add it; initialising would found a second group).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub formed: bool,
}

impl QueueDef {
    /// A quorum queue: its messages live in its Raft group.
    pub fn is_quorum(&self) -> bool {
        self.args.is_quorum()
    }
}
