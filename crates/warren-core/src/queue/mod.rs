//! Queues: their definition (metadata side) and their contents (state side).
//!
//! - [`args`]: the `x-` arguments RabbitMQ type-checks, parsed once at declare.
//! - [`paged`]: the part of the ready list whose bodies are only on disk.
//! - [`state`]: [`QueueState`], ready messages, unacked messages and consumers
//!   of one queue, with the dispatch rule (priority, then round-robin, within
//!   prefetch credit).

pub mod args;
pub mod paged;
pub mod state;

pub use args::QueueArgs;
pub use state::{ChannelKey, ConsumerId, ConsumerSpec, Delivery, Entry, QueueState};

use crate::{FieldTable, Name, QueueId};

/// The connection that owns an exclusive queue.
pub type ConnectionId = u64;

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
}
