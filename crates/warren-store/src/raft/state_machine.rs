//! Raft group 0's state machine: the metadata of every vhost.
//!
//! The state lives in memory ([`MetaState`]); what is durable is the log and
//! the last snapshot. After a restart the state machine starts from that
//! snapshot and openraft re-applies the committed entries after it, which is
//! cheap for metadata (thousands of entries, not millions) and keeps `apply`
//! free of disk writes.

use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use warren_core::meta::{MetaSnapshot, MetaState};

use super::stored_snapshot::{StoredSnapshot, read_stored_snapshot, snapshot_meta, store_snapshot};
use super::{Applied, GroupId, MetaEntry, MetaRaft, NodeId, Result, decode, encode};
use crate::db::Db;
use crate::{Store, Writer};

/// The metadata state machine of one group.
pub struct MetaStateMachine {
    group: GroupId,
    db: Arc<Db>,
    writer: Writer,
    /// Shared with the node's readers (routing reads its local replica).
    state: Arc<RwLock<MetaState>>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Snapshots built so far by this process (part of their ids).
    built: u64,
}

impl std::fmt::Debug for MetaStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStateMachine")
            .field("group", &self.group)
            .field("last_applied", &self.last_applied)
            .finish_non_exhaustive()
    }
}

impl MetaStateMachine {
    /// The state machine of `group`, starting from its last stored snapshot.
    pub fn open(store: &Store, writer: Writer, group: GroupId) -> Result<Self> {
        let mut sm = Self {
            group,
            db: store.db().clone(),
            writer,
            state: Arc::new(RwLock::new(MetaState::new())),
            last_applied: None,
            membership: StoredMembership::default(),
            built: 0,
        };
        if let Some(stored) = sm.stored_snapshot()? {
            sm.load(&stored.meta, &stored.data)?;
        }
        Ok(sm)
    }

    /// The metadata as applied so far, shared: readers take the read lock
    /// for the length of a lookup, `apply` the write lock per entry.
    pub fn shared(&self) -> Arc<RwLock<MetaState>> {
        self.state.clone()
    }

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>> {
        read_stored_snapshot(&self.db, self.group)
    }

    fn load(&mut self, meta: &SnapshotMeta<NodeId, BasicNode>, data: &[u8]) -> Result<()> {
        let snap: MetaSnapshot =
            decode(data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        let (state, dropped) = MetaState::restore(&snap);
        if dropped > 0 {
            tracing::warn!(dropped, "snapshot held bindings whose ends are missing");
        }
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }
}

impl RaftStateMachine<MetaRaft> for MetaStateMachine {
    type SnapshotBuilder = MetaSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>>
    where
        I: IntoIterator<Item = MetaEntry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            self.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => Applied(None),
                EntryPayload::Normal(cmd) => Applied(Some(
                    self.state
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .apply(&cmd),
                )),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    Applied(None)
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.built += 1;
        // The image is taken now; building (encoding, storing) happens later
        // while the state machine goes on applying.
        MetaSnapshotBuilder {
            group: self.group,
            db: self.db.clone(),
            writer: self.writer.clone(),
            image: self
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            seq: self.built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        self.load(meta, &data)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        store_snapshot(&self.db, &self.writer, self.group, &stored).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<MetaRaft>>> {
        Ok(self.stored_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// Builds a snapshot from the image taken by `get_snapshot_builder`.
pub struct MetaSnapshotBuilder {
    group: GroupId,
    db: Arc<Db>,
    writer: Writer,
    image: MetaSnapshot,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    seq: u64,
}

impl RaftSnapshotBuilder<MetaRaft> for MetaSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetaRaft>> {
        let data = encode(&self.image)
            .map_err(|e| StorageIOError::write_snapshot(None, super::io_err(e)))?;
        let meta = snapshot_meta(self.last_applied, &self.membership, self.seq);
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        store_snapshot(&self.db, &self.writer, self.group, &stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}
