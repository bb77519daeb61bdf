//! # warren-queues: queue types behind one interface
//!
//! Channels use every queue the same way, through [`QueueHandle`] (Warren's
//! `rabbit_queue_type`); each queue type serves the same mailbox protocol:
//!
//! - [`api`]: the interface and its vocabulary: handles, mailbox messages,
//!   connection events, delivery and prefetch credit. Imports nothing else
//!   of this crate.
//! - [`classic`]: the classic queue at home: one actor task owns a queue's
//!   `QueueState`, writes persistent messages through the group-commit
//!   writer, pages bodies past a budget.
//! - [`link`]: the classic queue reached through a peer link: a proxy per
//!   remote queue, one batched gRPC stream per home node, and the service
//!   that serves those streams on the home node.
//! - [`quorum`]: the quorum queue: a front per queue on every node, which
//!   leads the queue's Raft group's commands on the leader and forwards to
//!   the leader elsewhere.
//! - [`registry`]: the handles of the node's queues, reconciled with the
//!   applied metadata; the one place that picks a queue's type.
//! - [`memory`]: the bytes messages hold, and the watermark that blocks
//!   publishers.
//! - [`ids`]: connection, channel and consumer ids unique in the cluster.
//! - [`clock`]: the wall clock of message deadlines.
//! - [`reply_to`]: direct reply-to, the `amq.rabbitmq.reply-to`
//!   pseudo-queue: replies go to a channel, not through a queue.
//!
//! The crate sits between the server (connections and channels,
//! above) and the cluster (gRPC, Raft, below): server → queues → cluster →
//! store → core.

pub mod api;
pub mod classic;
pub mod clock;
pub mod ids;
pub mod link;
pub mod memory;
pub mod quorum;
pub mod registry;
pub mod reply_to;

pub use api::{ChannelCredit, ConnEvent, ConnTx, DeliverEvent, QueueFlow, QueueHandle};
pub use ids::Ids;
pub use memory::Memory;
pub use registry::Registry;
