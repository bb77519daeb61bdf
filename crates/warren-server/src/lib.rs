//! # warren-server: the `warren` node
//!
//! ## Layout
//! - [`config`]: flags, environment, TOML file, defaults.
//! - [`server`]: listener, connection tasks, graceful shutdown.
//! - [`broker`]: the node's shared state (metadata, queue registry, store writer,
//!   memory monitor) and the metadata operations that persist.
//! - [`connection`]: one task per client connection: handshake, frames in,
//!   events from queues, one write per wake-up.
//! - [`channel`]: per-channel state and method handlers.
//! - [`queue_actor`]: one task per queue, owning its `QueueState`.
//! - [`flow`]: delivery credit between queues and connections.
//! - [`memory`]: the memory watermark that blocks publishers.
//!
//! Domain rules live in `warren-core`, wire handling in `warren-amqp`, disk in
//! `warren-store`; this crate connects them to sockets and tasks.

pub mod broker;
pub mod channel;
pub mod config;
pub mod connection;
pub mod flow;
pub mod memory;
pub mod queue_actor;
pub mod remote;
pub mod server;

pub use config::{Config, ServerArgs};
pub use server::Server;
