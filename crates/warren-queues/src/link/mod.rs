//! The classic queue type reached through a peer link: a queue homed on
//! another node, used from this one.
//!
//! - [`client`]: this side: a proxy per remote queue serves the queue
//!   mailbox protocol like any queue, and one link task per home node
//!   batches the traffic of all of them into one gRPC stream.
//! - [`home`]: the home side: the `Queues` service that hands that traffic
//!   to the queue actors as a local connection would.
//! - [`wire`]: conversions to and from `proto/queues.proto`.

pub mod client;
pub mod home;
pub mod wire;

pub use client::{LINK_BUDGET, LinkTx, Routed, spawn_link, spawn_proxy};
pub use home::{LocalQueues, Lookup, LookupFuture, QueuesService};
