//! # warren-server: the `warren` node
//!
//! ## Layout
//! - [`config`]: flags, environment, TOML file, defaults.
//! - [`server`]: listeners, connection tasks, graceful shutdown.
//! - [`connection`]: one task per client connection: handshake, the socket
//!   loop (frames in, events from queues, one write per wake-up), the
//!   connection-level methods.
//! - [`channel`]: channels: their life cycle, state and method handlers.
//! - [`broker`]: the node: metadata replica and the metadata operations that
//!   go through Raft, the queue registry, storage, memory.
//! - [`error`]: [`ServerError`], why a node cannot start.
//! - [`http`]: the HTTP listener: `/health`, `/ready`, and `warren probe`.
//! - [`allocator`]: malloc returns large blocks (message bodies) at once.
//!
//! Modules depend one way: server → connection → channel → broker → config.
//! Domain rules live in `warren-core`, wire handling in `warren-amqp`, queue
//! types in `warren-queues`, Raft and gRPC in `warren-cluster`, disk in
//! `warren-store`; this crate connects them to sockets and tasks.

pub mod allocator;
pub mod broker;
pub mod channel;
pub mod config;
pub mod connection;
pub mod error;
pub mod http;
pub mod server;

pub use config::{ClusterClientArgs, Config, SecurityArgs, ServerArgs};
pub use error::ServerError;
pub use server::Server;
