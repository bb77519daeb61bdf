//! Raft storage on the node's RocksDB (openraft 0.9, storage v2).
//!
//! - [`log_store`]: [`RaftLogStore`], the log, vote and purge point of one
//!   group, keyed by group id so that every group of the node shares the one
//!   database and its WAL (their fsyncs are batched by the group-commit writer).
//! - [`queue`]: [`QueueRaft`], the type of a quorum queue's group, and the
//!   binary encoding of its entries (batches of [`queue::QueueOp`]s).
//! - [`queue_machine`]: [`QueueStateMachine`], a quorum queue's group:
//!   applies batches to a [`warren_core::quorum::QuorumState`], keeps the
//!   bodies in their own column family, snapshots the state (and sends the
//!   bodies with it).
//! - `recent`: the in-memory tail of a group's log, which its readers use
//!   and which lets `append` return before the writer has written.
//! - `queue_snapshot`: a quorum queue's state in bytes and the snapshot
//!   file streamed to a replica that is behind.
//! - `queue_snapshot_file`: building a quorum queue's snapshot, and the
//!   unnamed files its transfers go through.
//! - `stored_snapshot`: the last snapshot of a group as stored.
//! - [`state_machine`]: [`MetaStateMachine`], Raft group 0: applies
//!   [`warren_core::meta::Command`]s to a [`warren_core::meta::MetaState`] and
//!   builds and installs snapshots of it.
//!
//! The type configuration lives here, not in `warren-cluster` as DESIGN.md
//! first placed it: the storage traits are implemented for it, and the
//! dependency arrow (cluster → store) would otherwise need generic bounds on
//! every type. `warren-cluster` uses it as is.

// openraft's `StorageError` is what its traits return; it is large, and the
// helpers here return it too rather than converting twice.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod queue;
pub mod queue_machine;
mod queue_snapshot;
mod queue_snapshot_file;
mod recent;
pub mod state_machine;
mod stored_snapshot;
mod unwritten;

use std::io::Cursor;

use openraft::{AnyError, StorageError, StorageIOError};
use warren_core::AmqpError;
use warren_core::meta::{Command, Outcome};

pub use log_store::{LogCodec, RaftLogStore};
pub use queue::QueueRaft;
pub use queue_machine::QueueStateMachine;
pub use state_machine::MetaStateMachine;

/// Identifies a Raft group of the node (0: metadata).
pub type GroupId = u64;

/// Node ids of the cluster (the domain's).
pub use warren_core::NodeId;

/// The metadata group.
pub const META_GROUP: GroupId = 0;

/// The writes that remove every key of quorum queue group `group` on this
/// node: its log, its vote, purge point and snapshot, and its bodies. One
/// synced batch, so a crash leaves the group whole or gone.
pub fn delete_group(group: GroupId) -> Vec<crate::Op> {
    use crate::{Op, RaftCf};
    let from = group.to_be_bytes().to_vec();
    let to = group.saturating_add(1).to_be_bytes().to_vec();
    [RaftCf::Log, RaftCf::State, RaftCf::Bodies]
        .into_iter()
        .map(|cf| Op::RaftDeleteRange(cf, from.clone(), to.clone()))
        .collect()
}

/// What applying one log entry of group 0 produced: the command's outcome
/// (`None` for blank and membership entries).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Applied(pub Option<std::result::Result<Outcome, AmqpError>>);

openraft::declare_raft_types!(
    /// openraft's types for the metadata group.
    pub MetaRaft:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A log entry of the metadata group.
pub type MetaEntry = openraft::Entry<MetaRaft>;

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// Keys: (group, index) for log entries, (group, tag) for group state.
mod key {
    use super::GroupId;

    /// Vote record.
    pub const VOTE: u8 = b'v';
    /// Last purged log id.
    pub const PURGED: u8 = b'p';
    /// Last snapshot (meta and data).
    pub const SNAPSHOT: u8 = b's';

    /// Key of the log entry `index` of `group`.
    pub fn entry(group: GroupId, index: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(16);
        k.extend_from_slice(&group.to_be_bytes());
        k.extend_from_slice(&index.to_be_bytes());
        k
    }

    /// The index of an entry key of `group`, if it is one.
    pub fn parse_entry(group: GroupId, k: &[u8]) -> Option<u64> {
        let (g, i) = k.split_at_checked(8)?;
        if g != group.to_be_bytes() || i.len() != 8 {
            return None;
        }
        Some(u64::from_be_bytes(i.try_into().ok()?))
    }

    /// Key of a state record of `group`.
    pub fn state(group: GroupId, tag: u8) -> Vec<u8> {
        let mut k = Vec::with_capacity(9);
        k.extend_from_slice(&group.to_be_bytes());
        k.push(tag);
        k
    }
}

/// Encodes a record: a format version byte, then JSON. Metadata entries are
/// few and small; a binary format can come with replicated queues, which is
/// what the version byte is for.
fn encode<T: serde::Serialize>(v: &T) -> std::result::Result<Vec<u8>, serde_json::Error> {
    let mut out = vec![1u8];
    serde_json::to_writer(&mut out, v)?;
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> std::result::Result<T, AnyError> {
    match b.split_first() {
        Some((1, rest)) => serde_json::from_slice(rest).map_err(|e| AnyError::new(&e)),
        _ => Err(AnyError::error("unknown record format")),
    }
}

fn io_err(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read(io_err(e)).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write(io_err(e)).into()
}
