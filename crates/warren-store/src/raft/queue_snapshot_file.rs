//! Snapshot files of a quorum queue's state machine: building a snapshot
//! (the state only, stored in RocksDB) and the unnamed files a transfer is
//! written to and read from.

use std::sync::Arc;

use openraft::storage::Snapshot;
use openraft::{BasicNode, LogId, RaftSnapshotBuilder, StorageIOError, StoredMembership};
use warren_core::quorum::QuorumSnapshot;

use super::queue::QueueRaft;
use super::queue_snapshot::encode_state;
use super::stored_snapshot::{StoredSnapshot, snapshot_meta, store_snapshot};
use super::{GroupId, NodeId, Result};
use crate::Writer;
use crate::db::Db;

/// Builds a snapshot from the image taken by `get_snapshot_builder`.
pub struct QueueSnapshotBuilder {
    pub(super) group: GroupId,
    pub(super) db: Arc<Db>,
    pub(super) writer: Writer,
    pub(super) image: QuorumSnapshot,
    pub(super) last_applied: Option<LogId<NodeId>>,
    pub(super) membership: StoredMembership<NodeId, BasicNode>,
    pub(super) seq: u64,
}

impl RaftSnapshotBuilder<QueueRaft> for QueueSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<QueueRaft>> {
        let meta = snapshot_meta(self.last_applied, &self.membership, self.seq);
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: encode_state(&self.image),
        };
        self.image = QuorumSnapshot::default();
        store_snapshot(&self.db, &self.writer, self.group, &stored).await?;
        // openraft keeps only the meta of a built snapshot (its state
        // machine worker); a transfer asks `get_current_snapshot`, which
        // writes the state and the bodies. The data returned here is empty.
        let file = snapshot_file(&self.db)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

/// A file for a snapshot being sent or received, in the store's directory
/// (not `/tmp`, often memory): unnamed, so it is gone when closed, also
/// after a crash.
pub(super) fn snapshot_file(db: &Db) -> std::result::Result<std::fs::File, openraft::AnyError> {
    tempfile::tempfile_in(db.path()).map_err(|e| super::io_err(format!("snapshot file: {e}")))
}

/// A second open file of `file` (an unnamed one), at offset 0 with an
/// offset of its own: two transfers of one snapshot do not share a cursor.
pub(super) fn reopen(file: &std::fs::File) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    std::fs::File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}
