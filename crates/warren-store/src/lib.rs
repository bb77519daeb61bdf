//! # warren-store: the node's RocksDB
//!
//! One RocksDB per node, column families by purpose:
//! - `meta`: durable exchanges, queues and bindings of every vhost;
//! - `messages`: persistent messages of durable classic queues, keyed by
//!   (queue id, seq) in big-endian so a queue's messages are one key range;
//! - `raft_log`, `raft_state`: Raft log entries by (group, index), and each
//!   group's vote, purge point and last snapshot.
//!
//! ## Layout
//! - [`db`]: opening the database, column families, recovery reads.
//! - [`keys`]: key encodings.
//! - [`codec`]: versioned value encodings (the first byte of every value is its
//!   format version, so a later format can still read today's files).
//! - [`raft`]: openraft's log storage and the metadata state machine on this
//!   database (Raft group 0), writing through the same group-commit writer.
//! - [`wal`]: a first WAL that syncs without growing (RocksDB's WAL reuse,
//!   prepared at start).
//! - [`writer`]: the group-commit writer: one thread that drains every pending
//!   write into one `WriteBatch` and one WAL sync, then completes them all.
//!
//! No RocksDB type appears in a public signature: callers see [`Store`],
//! [`writer::Op`] and domain types.

pub mod codec;
pub mod db;
pub mod keys;
pub mod raft;
pub mod wal;
pub mod writer;

pub use db::{Recovered, Recovery, Store};
pub use writer::{Op, RaftCf, WriteDone, Writer, live_writers};

/// Storage failures.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(String),
    /// A stored value could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The writer thread is gone (shutdown).
    #[error("store writer stopped")]
    Stopped,
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Rocks(e.into_string())
    }
}
