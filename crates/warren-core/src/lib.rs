//! # warren-core: the broker's domain, pure and deterministic
//!
//! Nothing here does I/O, spawns a task or reads a clock: every function takes its
//! inputs and returns its outcome, so the same code serves the single-node server
//! today and a replicated state machine tomorrow, and is unit-tested without sockets.
//!
//! ## Layout
//! Listed bottom-up: each module uses only those above it.
//! - [`reply_code`]: AMQP reply codes, split into channel and connection level.
//! - [`error`]: [`AmqpError`], the one error type of the domain, carrying its reply code.
//! - [`message`]: [`Message`], a published message packed into one shared buffer.
//! - [`exchange`]: exchange definitions and one routing index per type
//!   (direct hash map, fanout list, topic trie, headers matcher).
//! - [`binding`]: the binding table entry and its destination.
//! - [`queue`]: a queue's definition and its home ([`queue::QueueDef`],
//!   [`queue::Home`], connection ids), with:
//!   - [`queue::args`]: the `x-` arguments, parsed and checked once at declare;
//!   - [`queue::state`]: [`queue::QueueState`], the ready list / unacked set /
//!     consumers of one queue and the dispatch rule;
//!   - [`queue::paged`]: the part of the ready list whose bodies are only on
//!     disk, owned by the state (a `seq` leaf file holds the sequence number
//!     both use).
//! - [`confirms`]: publisher-confirm bookkeeping for one channel.
//! - [`dead_letter`]: the `x-death` record of a dead-lettered message and
//!   RabbitMQ's cycle rule, on field tables (the runtime re-encodes them).
//! - [`access`]: users' password hashes (RabbitMQ's salted SHA-256) and their
//!   permission expressions, with RabbitMQ's 403 texts.
//! - [`vhost`]: [`vhost::VHost`], the metadata of a virtual host, one file per
//!   concept: `mod.rs` (the type, its lookups, [`vhost::PREDECLARED`],
//!   [`vhost::Removed`]), `exchanges.rs` (declare, equivalence, delete,
//!   restore), `queues.rs` (declare, delete, restore, exclusive queues),
//!   `bindings.rs` (the binding table: bind, unbind, restore, auto-delete
//!   cascade), `router.rs` (`route`, exchange-to-exchange bindings, alternate
//!   exchanges).
//! - [`meta`]: the state machine of the cluster's metadata group:
//!   `command.rs` ([`meta::Command`], every change of metadata, and
//!   [`meta::Outcome`]), `mod.rs` ([`meta::MetaState`]: every vhost, queue
//!   ids), `apply.rs` (`MetaState::apply`, deterministic, one method per
//!   command), `snapshot.rs` ([`meta::MetaSnapshot`], snapshot and restore in
//!   canonical order).
//! - [`quorum`]: the state machine of one quorum queue's Raft group
//!   ([`quorum::QuorumState`], Warren's rabbit_fifo): enqueue with
//!   de-duplication, checkout, settle, return, discard, purge, dispatch by
//!   consumer credit; `command.rs` (the replicated protocol), `apply.rs`.
//!
//! [`Name`], [`QueueId`] and [`NodeId`] are defined here, at the root, because
//! every module names them.
//!
//! It must not depend on tokio, RocksDB, or the wire codec: field tables come from
//! `amq-protocol-types`, and that is the only protocol type it knows.

pub mod access;
pub mod binding;
pub mod confirms;
pub mod dead_letter;
pub mod error;
pub mod exchange;
pub mod message;
pub mod meta;
pub mod queue;
pub mod quorum;
pub mod reply_code;
pub mod vhost;

pub use error::AmqpError;
pub use message::Message;
pub use reply_code::ReplyCode;

/// Field tables (arguments, headers) are the protocol's own type.
pub use amq_protocol_types::{AMQPValue, FieldTable};

/// Names of exchanges and queues are shared by many messages and indexes;
/// an `Arc<str>` clones with one atomic increment.
pub type Name = std::sync::Arc<str>;

/// Identifies a queue for its whole life on this node (store keys, actor registry).
pub type QueueId = u64;

/// Identifies a node of the cluster. Defined once here because queues (their
/// home), connections (their serving node) and the store all name nodes.
pub type NodeId = u64;
