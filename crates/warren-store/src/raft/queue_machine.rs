//! A quorum queue's state machine on the node's RocksDB.
//!
//! The state ([`QuorumState`]) lives in memory; what is durable is the log
//! and the last snapshot, as for group 0. Bodies are materialized at apply in
//! the `quorum_bodies` column family, keyed by (group, message id), and
//! deleted when the state machine removes their message. They are written
//! without a sync of their own: the log entry that carried them is durable,
//! and after a crash openraft re-applies the entries after the last snapshot,
//! which puts (and deletes) the same bodies again. A snapshot is stored
//! with a synced write, which syncs every body written before it.
//!
//! The stored snapshot holds the state only (ids, sizes, counts); the
//! bodies it needs are the ones in the column family. Only a snapshot sent
//! to another replica carries bodies: [`get_current_snapshot`] adds those of
//! its live messages that still exist (one removed since is removed again by
//! the log the receiver applies next).
//!
//! Applying reads the bodies the leader will send (deliveries, `basic.get`),
//! from the batch itself when the message arrived in it, else from the
//! column family, before this batch's deletes are written; they travel in
//! [`QueueResponse::bodies`], which never leaves the node.
//!
//! [`get_current_snapshot`]: RaftStateMachine::get_current_snapshot

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use warren_core::Message;
use warren_core::quorum::{Command, MsgId, QuorumConfig, QuorumSnapshot, QuorumState, Reply};

use super::queue::{QueueEntry, QueueOp, QueueRaft, QueueResponse};
use super::state_machine::{
    SNAPSHOT_WRITES, StoredSnapshot, read_stored_snapshot, snapshot_meta, snapshot_record,
    store_snapshot,
};
use super::{GroupId, NodeId, Result, decode, encode, key};
use crate::codec::{Dec, Enc, decode_message, encode_message};
use crate::db::{CF_QUORUM_BODIES, Db};
use crate::{Op, RaftCf, Store, Writer};

/// Counts of a queue's state as applied on this replica, readable while
/// openraft owns the state machine (`queue.declare-ok`, `if-empty`).
#[derive(Debug, Default)]
pub struct QuorumCounts {
    ready: AtomicU64,
    consumers: AtomicU64,
    /// [`QuorumState::channels`], for the leader's check of gone channels.
    channels: std::sync::Mutex<Vec<u64>>,
}

impl QuorumCounts {
    /// Messages waiting for a consumer.
    pub fn ready(&self) -> u64 {
        self.ready.load(Ordering::Acquire)
    }

    /// Consumers taking deliveries.
    pub fn consumers(&self) -> u64 {
        self.consumers.load(Ordering::Acquire)
    }

    /// The channels holding consumers or messages, as last applied.
    pub fn channels(&self) -> Vec<u64> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Once per applied batch of entries; the channel list is rebuilt only
    /// when it changed (consumers come and go far less often than messages).
    fn set(&self, state: &QuorumState) {
        self.ready
            .store(state.ready_len() as u64, Ordering::Release);
        self.consumers
            .store(state.consumer_count() as u64, Ordering::Release);
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !state.channels().eq(channels.iter().copied()) {
            channels.clear();
            channels.extend(state.channels());
        }
    }
}

/// The state machine of one quorum queue's group.
pub struct QueueStateMachine {
    group: GroupId,
    counts: Arc<QuorumCounts>,
    /// Whether this replica leads (set by the queue's runtime): only the
    /// leader sends deliveries, so only it reads their bodies at apply.
    leading: Arc<AtomicBool>,
    db: Arc<Db>,
    writer: Writer,
    state: QuorumState,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Snapshots built so far by this process (part of their ids).
    built: u64,
}

impl std::fmt::Debug for QueueStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStateMachine")
            .field("group", &self.group)
            .field("last_applied", &self.last_applied)
            .finish_non_exhaustive()
    }
}

impl QueueStateMachine {
    /// The state machine of `group`, from its last stored snapshot, or new
    /// with `config`.
    pub fn open(
        store: &Store,
        writer: Writer,
        group: GroupId,
        config: QuorumConfig,
    ) -> Result<Self> {
        let mut sm = Self {
            group,
            db: store.db().clone(),
            writer,
            state: QuorumState::new(config),
            counts: Arc::default(),
            leading: Arc::new(AtomicBool::new(true)),
            last_applied: None,
            membership: StoredMembership::default(),
            built: 0,
        };
        if let Some(stored) = read_stored_snapshot(&sm.db, group)? {
            let snap: QuorumSnapshot = decode(&stored.data)
                .map_err(|e| StorageIOError::read_snapshot(Some(stored.meta.signature()), e))?;
            sm.state = QuorumState::restore(snap);
            sm.last_applied = stored.meta.last_log_id;
            sm.membership = stored.meta.last_membership;
        }
        sm.counts.set(&sm.state);
        Ok(sm)
    }

    /// The switch the runtime sets while this replica leads; until it is
    /// cleared, every apply reads the bodies its deliveries need.
    pub fn leading(&self) -> Arc<AtomicBool> {
        self.leading.clone()
    }

    /// The counts, kept up to date at every apply.
    pub fn counts(&self) -> Arc<QuorumCounts> {
        self.counts.clone()
    }

    /// The state as applied so far.
    pub fn state(&self) -> &QuorumState {
        &self.state
    }

    fn body(&self, id: MsgId) -> Result<Option<Message>> {
        let cf = self
            .db
            .cf_handle(CF_QUORUM_BODIES)
            .ok_or_else(|| StorageIOError::read(super::io_err("no quorum_bodies cf")))?;
        let Some(v) = self
            .db
            .get_cf(cf, key::entry(self.group, id))
            .map_err(super::read_err)?
        else {
            return Ok(None);
        };
        decode_message(&v)
            .map(Some)
            .map_err(|e| StorageIOError::read(super::io_err(e)).into())
    }

    /// Applies one batch; returns the response and adds the writes it needs
    /// to `writes`. `arrived` holds the messages enqueued by this `apply`
    /// call so far, whose bodies are not written yet: openraft applies many
    /// entries in one call, and an entry may deliver what an earlier one of
    /// the same call enqueued.
    fn apply_batch(
        &mut self,
        ops: Vec<QueueOp>,
        writes: &mut Vec<Op>,
        arrived: &mut HashMap<MsgId, Message>,
    ) -> Result<QueueResponse> {
        let mut resp = QueueResponse::default();
        let mut buf = Vec::new();
        for op in ops {
            let held = match &op {
                QueueOp::Command(Command::Checkout { consumer, .. }) => {
                    self.state.held_by(consumer)
                }
                _ => Vec::new(),
            };
            let applied = self.state.apply(op.command());
            if let (QueueOp::Enqueue { message, .. }, Reply::Enqueued(Some(id))) =
                (op, &applied.reply)
            {
                encode_message(&message, &mut buf);
                writes.push(Op::RaftPut(
                    RaftCf::Bodies,
                    key::entry(self.group, *id),
                    buf.clone(),
                ));
                arrived.insert(*id, message);
            }
            let got = match &applied.reply {
                Reply::Got(Some((m, _))) => Some(m.id),
                _ => None,
            };
            let reads = self.leading.load(Ordering::Acquire);
            for id in got
                .into_iter()
                .chain(applied.deliveries.iter().map(|d| d.msg.id))
                .chain(held.iter().map(|d| d.msg.id))
                .filter(|_| reads)
            {
                let body = match arrived.get(&id) {
                    Some(m) => Some(m.clone()),
                    None => self.body(id)?,
                };
                // A body can be missing only on a replica that installed a
                // snapshot and is replaying removals; it sends nothing.
                if let Some(m) = body {
                    resp.bodies.push((id, m));
                }
            }
            for id in &applied.removed {
                arrived.remove(id);
                writes.push(Op::RaftDelete(RaftCf::Bodies, key::entry(self.group, *id)));
            }
            resp.replies.push(applied.reply);
            resp.deliveries.extend(applied.deliveries);
            resp.resent.extend(held);
        }
        Ok(resp)
    }

    /// The snapshot to send: the stored state, then every body it names
    /// that still exists, each as (id, length, encoded message).
    fn with_bodies(&self, stored: &StoredSnapshot) -> Result<Vec<u8>> {
        let snap: QuorumSnapshot = decode(&stored.data)
            .map_err(|e| StorageIOError::read_snapshot(Some(stored.meta.signature()), e))?;
        let state = QuorumState::restore(snap);
        let mut out = Vec::with_capacity(stored.data.len() + 64);
        Enc(&mut out).u32(stored.data.len() as u32);
        out.extend_from_slice(&stored.data);
        let cf = self.db.cf_handle(CF_QUORUM_BODIES).ok_or_else(|| {
            StorageIOError::read_snapshot(None, super::io_err("no quorum_bodies cf"))
        })?;
        for id in state.ids() {
            if let Some(v) = self
                .db
                .get_cf(cf, key::entry(self.group, id))
                .map_err(super::read_err)?
            {
                Enc(&mut out).u64(id).u32(v.len() as u32);
                out.extend_from_slice(&v);
            }
        }
        Ok(out)
    }
}

impl RaftStateMachine<QueueRaft> for QueueStateMachine {
    type SnapshotBuilder = QueueSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<QueueResponse>>
    where
        I: IntoIterator<Item = QueueEntry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let mut writes = Vec::new();
        let mut arrived = HashMap::new();
        for e in entries {
            self.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => QueueResponse::default(),
                EntryPayload::Normal(batch) => {
                    self.apply_batch(batch.0, &mut writes, &mut arrived)?
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    QueueResponse::default()
                }
            });
        }
        self.counts.set(&self.state);
        if !writes.is_empty() {
            self.writer.write(writes).await.map_err(super::write_err)?;
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.built += 1;
        QueueSnapshotBuilder {
            group: self.group,
            db: self.db.clone(),
            writer: self.writer.clone(),
            image: self.state.snapshot(),
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
        let bad =
            |what: &str| StorageIOError::read_snapshot(Some(meta.signature()), super::io_err(what));
        let data = snapshot.into_inner();
        let mut d = Dec(&data);
        let n = d.u32().map_err(|_| bad("truncated snapshot"))? as usize;
        let state_bytes = d.take(n).map_err(|_| bad("truncated snapshot"))?.to_vec();
        let snap: QuorumSnapshot = decode(&state_bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        // Every body of the group goes; the snapshot's take their place.
        let mut writes = vec![Op::RaftDeleteRange(
            RaftCf::Bodies,
            key::entry(self.group, 0),
            key::entry(self.group, u64::MAX),
        )];
        while !d.0.is_empty() {
            let id = d.u64().map_err(|_| bad("truncated snapshot body"))?;
            let len = d.u32().map_err(|_| bad("truncated snapshot body"))? as usize;
            let body = d.take(len).map_err(|_| bad("truncated snapshot body"))?;
            writes.push(Op::RaftPut(
                RaftCf::Bodies,
                key::entry(self.group, id),
                body.to_vec(),
            ));
        }
        // The bodies and the snapshot record go in one synced write: a crash
        // cannot leave the old state beside the new bodies.
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: state_bytes,
        };
        writes.push(snapshot_record(self.group, &stored)?);
        {
            let _turn = SNAPSHOT_WRITES.lock().await;
            self.writer
                .write_sync(writes)
                .await
                .map_err(super::write_err)?;
        }
        self.state = QuorumState::restore(snap);
        self.counts.set(&self.state);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<QueueRaft>>> {
        let Some(stored) = read_stored_snapshot(&self.db, self.group)? else {
            return Ok(None);
        };
        let data = self.with_bodies(&stored)?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds a snapshot from the image taken by `get_snapshot_builder`.
pub struct QueueSnapshotBuilder {
    group: GroupId,
    db: Arc<Db>,
    writer: Writer,
    image: QuorumSnapshot,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    seq: u64,
}

impl RaftSnapshotBuilder<QueueRaft> for QueueSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<QueueRaft>> {
        let data = encode(&self.image)
            .map_err(|e| StorageIOError::write_snapshot(None, super::io_err(e)))?;
        let meta = snapshot_meta(self.last_applied, &self.membership, self.seq);
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        store_snapshot(&self.db, &self.writer, self.group, &stored).await?;
        // What openraft keeps as "the current snapshot" is what a follower
        // would get: state and bodies. Built here from the state alone; a
        // transfer asks `get_current_snapshot`, which adds the bodies.
        let mut framed = Vec::with_capacity(stored.data.len() + 4);
        Enc(&mut framed).u32(stored.data.len() as u32);
        framed.extend_from_slice(&stored.data);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(framed)),
        })
    }
}

#[cfg(test)]
#[path = "queue_machine_test.rs"]
mod tests;
