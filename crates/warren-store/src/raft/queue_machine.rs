//! A quorum queue's state machine on the node's RocksDB.
//!
//! The state ([`QuorumState`]) lives in memory; what is durable is the log
//! and the last snapshot, as for group 0. A body's first stored copy is its
//! log entry; applying keeps it in memory ([`Unwritten`]), and it is copied
//! to the `quorum_bodies` column family, keyed by (group, message id), only
//! when the log holding it may be purged while the message lives (a
//! snapshot is built) or when the bodies kept in memory pass their bound.
//! Those copies are written without a sync of their own: a snapshot is
//! stored with a synced write, which syncs every body written before it,
//! and after a crash openraft re-applies the entries after the last
//! snapshot, which keeps their bodies in memory again. A removed message's
//! body is deleted from the column family unless it was never written
//! there.
//!
//! The stored snapshot holds the state only (ids, sizes, counts); the
//! bodies it needs are the ones in the column family. Only a snapshot sent
//! to another replica carries bodies: [`get_current_snapshot`] writes a
//! file with those of its live messages that still exist (one removed
//! since is removed again by the log the receiver applies next), and the
//! receiver reads it back in batches (`queue_snapshot`). Neither side holds
//! the bodies in memory.
//!
//! An apply hands its writes to the writer and answers without waiting for
//! them. Applying reads the bodies the leader will send (deliveries,
//! `basic.get`), from memory when they are there, else from the column
//! family, before this batch's deletes are written; they travel in
//! [`QueueResponse::bodies`], which never leaves the node.
//!
//! [`get_current_snapshot`]: RaftStateMachine::get_current_snapshot

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{BasicNode, EntryPayload, LogId, SnapshotMeta, StorageIOError, StoredMembership};
use warren_core::Message;
use warren_core::quorum::{Command, MsgId, QuorumConfig, QuorumState, Reply};

use super::log_store::last_log_index;
use super::queue::{QueueEntry, QueueOp, QueueRaft, QueueResponse};
use super::queue_snapshot::{TransferReader, decode_state, live_ids, stale_bodies, write_transfer};
pub use super::queue_snapshot_file::QueueSnapshotBuilder;
use super::queue_snapshot_file::{reopen, snapshot_file};
use super::stored_snapshot::{
    SNAPSHOT_WRITES, StoredSnapshot, read_stored_snapshot, snapshot_record,
};
use super::unwritten::Unwritten;
use super::{GroupId, NodeId, Result, key};
use crate::codec::decode_message;
use crate::db::{CF_QUORUM_BODIES, Db};
use crate::{Op, RaftCf, Store, Writer};

/// Counts of a queue's state as applied on this replica, readable while
/// openraft owns the state machine (`queue.declare-ok`, `if-empty`).
#[derive(Debug, Default)]
pub struct QuorumCounts {
    ready: AtomicU64,
    consumers: AtomicU64,
    /// Deliveries to consumers applied on this replica since it started
    /// (their rate sizes the backlog the queue lets publishers build).
    delivered: AtomicU64,
    /// [`QuorumState::channels`], for the leader's check of gone channels.
    channels: std::sync::Mutex<Vec<u64>>,
    /// Set when the log since the last snapshot outweighs the state.
    snapshot_due: AtomicBool,
    /// [`QuorumState::head_expires`] (0: none), for the leader's timer.
    head_expires: AtomicU64,
    /// [`QuorumState::queue_expires`] (0: none), for the leader's timer.
    queue_expires: AtomicU64,
    /// [`QuorumState::is_expired`]: the leader deletes the queue.
    expired: AtomicBool,
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

    /// Deliveries applied on this replica since it started.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    /// When the oldest ready message expires, as last applied: the leader
    /// puts a clock in the log then, so it expires with nothing else going on.
    pub fn head_expires(&self) -> Option<u64> {
        Some(self.head_expires.load(Ordering::Acquire)).filter(|at| *at > 0)
    }

    /// When the queue's `x-expires` period ends, as last applied.
    pub fn queue_expires(&self) -> Option<u64> {
        Some(self.queue_expires.load(Ordering::Acquire)).filter(|at| *at > 0)
    }

    /// The queue was unused for its `x-expires`, as last applied.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// The channels holding consumers or messages, as last applied.
    pub fn channels(&self) -> Vec<u64> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether a snapshot is due, once: the runtime asks openraft for one.
    /// Set again by the next apply if the build did not happen.
    pub fn take_snapshot_due(&self) -> bool {
        self.snapshot_due.swap(false, Ordering::AcqRel)
    }

    /// Once per applied batch of entries; the channel list is rebuilt only
    /// when it changed (consumers come and go far less often than messages).
    fn set(&self, state: &QuorumState) {
        self.ready
            .store(state.ready_len() as u64, Ordering::Release);
        self.consumers
            .store(state.consumer_count() as u64, Ordering::Release);
        self.head_expires
            .store(state.head_expires().unwrap_or(0), Ordering::Release);
        self.queue_expires
            .store(state.queue_expires().unwrap_or(0), Ordering::Release);
        self.expired.store(state.is_expired(), Ordering::Release);
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
    /// Bytes applied since the last snapshot (see [`snapshot_due`]).
    since_snapshot: u64,
    /// Bodies kept in memory, and those handed to the writer until it
    /// wrote them.
    unwritten: Unwritten,
    /// Messages below this id may have a body in the column family though
    /// this process never wrote one: an earlier process spilled it. Until
    /// the log found at open is applied again, every id may
    /// ([`MsgId::MAX`]); see [`QueueStateMachine::replayed`].
    stored_below: MsgId,
    /// The last log index found at open.
    replay_end: u64,
    /// The last transfer file written, by snapshot id: a replica that is
    /// down is offered the snapshot again and again (each write to the
    /// group retries it), and a long queue's file is gigabytes.
    sent: Option<(String, std::fs::File)>,
}

/// The least log, in bytes, between two snapshots.
const SNAPSHOT_MIN_BYTES: u64 = 8 << 20;
/// What an op weighs in the log besides its body.
const OP_BYTES: u64 = 32;

/// Whether a snapshot is due after `since` bytes of log: once the log
/// outweighs four times the state (16 bytes a message) and at least
/// [`SNAPSHOT_MIN_BYTES`]. Writing the state then costs at most a quarter
/// of the log written meanwhile, however long the queue, as rabbit_fifo
/// spaces its release cursors by the queue's length.
fn snapshot_due(since: u64, messages: u64) -> bool {
    since >= SNAPSHOT_MIN_BYTES.max(64 * messages)
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
            since_snapshot: 0,
            unwritten: Unwritten::default(),
            stored_below: MsgId::MAX,
            replay_end: 0,
            sent: None,
        };
        if let Some(stored) = read_stored_snapshot(&sm.db, group)? {
            let snap = decode_state(&stored.data).map_err(|e| {
                StorageIOError::read_snapshot(Some(stored.meta.signature()), super::io_err(e))
            })?;
            sm.state = QuorumState::restore(snap);
            sm.last_applied = stored.meta.last_log_id;
            sm.membership = stored.meta.last_membership;
        }
        sm.replay_end = last_log_index(&sm.db, group)?.unwrap_or(0);
        sm.replayed(sm.last_applied.map_or(0, |l| l.index));
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
    /// to `writes`. The messages it enqueues go to [`Unwritten`] too: a
    /// delivery in this batch, a later one of the same `apply` call or a
    /// later call may need a body the writer has not written yet.
    fn apply_batch(&mut self, ops: Vec<QueueOp>, writes: &mut Vec<Op>) -> Result<QueueResponse> {
        let mut resp = QueueResponse::default();
        for op in ops {
            self.since_snapshot += OP_BYTES;
            if let QueueOp::Enqueue { message, .. } = &op {
                self.since_snapshot += message.body().len() as u64;
            }
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
                self.unwritten.keep(*id, message);
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
                let body = match self.unwritten.get(id) {
                    Some(m) => Some(m.clone()),
                    None => self.body(id)?,
                };
                // A body can be missing only on a replica that installed a
                // snapshot and is replaying removals; it sends nothing.
                if let Some(m) = body {
                    resp.bodies.push((id, m));
                }
            }
            // Dead letters leave with their bodies (the leader re-publishes
            // them; they are removed once it has).
            for (id, why) in applied.dead.iter().filter(|_| reads) {
                let body = match self.unwritten.get(*id) {
                    Some(m) => Some(m.clone()),
                    None => self.body(*id)?,
                };
                if let Some(m) = body {
                    resp.dead.push((*id, *why, m));
                }
            }
            for id in &applied.removed {
                let only_in_memory = self.unwritten.remove(*id) && *id >= self.stored_below;
                if !only_in_memory {
                    writes.push(Op::RaftDelete(RaftCf::Bodies, key::entry(self.group, *id)));
                }
            }
            resp.replies.push(applied.reply);
            self.counts
                .delivered
                .fetch_add(applied.deliveries.len() as u64, Ordering::Relaxed);
            resp.deliveries.extend(applied.deliveries);
            resp.resent.extend(held);
        }
        Ok(resp)
    }
}

impl QueueStateMachine {
    /// Called with each log index applied: once the log found at open is
    /// applied again, the ids it created are known, and later ones were
    /// created by this process, which knows which bodies it wrote.
    ///
    /// An earlier process wrote bodies only of entries it applied; those
    /// were committed, so they are in the log found at open (or behind its
    /// snapshot, whose ids are below the restored state's next id).
    fn replayed(&mut self, index: u64) {
        if self.stored_below == MsgId::MAX && index >= self.replay_end {
            self.stored_below = self.state.next_id();
        }
    }

    /// Hands `writes` (body copies and deletes) to the writer without
    /// waiting for them; the bodies spilled since the last call stay
    /// readable in memory until they are written.
    async fn hand_over(&mut self, writes: Vec<Op>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let done = self.unwritten.seal();
        self.writer
            .submit(writes, false, Some(done))
            .await
            .map_err(super::write_err)
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
        if self.unwritten.failed() {
            return Err(super::write_err(
                "an earlier write of this group's bodies failed",
            ));
        }
        self.unwritten.prune();
        let mut out = Vec::new();
        let mut writes = Vec::new();
        for e in entries {
            self.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => QueueResponse::default(),
                EntryPayload::Normal(batch) => self.apply_batch(batch.0, &mut writes)?,
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    QueueResponse::default()
                }
            });
            // After the entry: the ids it created may be stored too.
            self.replayed(e.log_id.index);
        }
        self.counts.set(&self.state);
        if snapshot_due(
            self.since_snapshot,
            self.state.ready_len() as u64 + self.state.checked_len(),
        ) {
            self.counts.snapshot_due.store(true, Ordering::Release);
        }
        self.unwritten.spill(self.group, &mut writes);
        self.hand_over(writes).await?;
        Ok(out)
    }

    /// Spills every kept body first: the snapshot lets the log holding
    /// them be purged. The writer writes them before the snapshot's own
    /// (synced) record.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let mut writes = Vec::new();
        self.unwritten.spill_all(self.group, &mut writes);
        if let Err(e) = self.hand_over(writes).await {
            // The writer stopped: so will the snapshot's own write, and
            // nothing is purged.
            tracing::error!(group = self.group, cause = %e, "spilling bodies for a snapshot failed");
        }
        self.built += 1;
        self.since_snapshot = 0;
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>> {
        let file = snapshot_file(&self.db).map_err(|e| StorageIOError::write_snapshot(None, e))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    /// Installs a received transfer. The bodies go first, in batches
    /// without a sync; then the state's record, synced (which syncs the
    /// bodies before it); then the bodies the new state does not name are
    /// deleted. A crash at any point leaves the stored state with every
    /// body it names: at worst extra ones, which the next install deletes.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<()> {
        let bad = |e: crate::StoreError| {
            StorageIOError::read_snapshot(Some(meta.signature()), super::io_err(e))
        };
        self.sent = None;
        let started = std::time::Instant::now();
        let (mut reader, state_bytes) = TransferReader::open(*snapshot).await.map_err(bad)?;
        let snap = decode_state(&state_bytes).map_err(bad)?;
        let mut batch = Vec::new();
        let (mut batch_bytes, mut bodies, mut bytes) = (0, 0u64, 0u64);
        while let Some((id, body)) = reader.body().await.map_err(bad)? {
            bodies += 1;
            bytes += body.len() as u64;
            batch_bytes += body.len() + 16;
            batch.push(Op::RaftPut(
                RaftCf::Bodies,
                key::entry(self.group, id),
                body,
            ));
            if batch_bytes >= INSTALL_BATCH_BYTES {
                batch_bytes = 0;
                let writes = std::mem::take(&mut batch);
                self.writer.write(writes).await.map_err(super::write_err)?;
            }
        }
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: state_bytes,
        };
        batch.push(snapshot_record(self.group, &stored)?);
        {
            let _turn = SNAPSHOT_WRITES.lock().await;
            self.writer
                .write_sync(batch)
                .await
                .map_err(super::write_err)?;
        }
        let live = live_ids(&snap);
        self.state = QuorumState::restore(snap);
        self.unwritten.clear_kept();
        self.counts.set(&self.state);
        self.last_applied = meta.last_log_id;
        self.replayed(meta.last_log_id.map_or(0, |l| l.index));
        self.membership = meta.last_membership.clone();
        self.since_snapshot = 0;
        let stale = self.delete_stale_bodies(live).await?;
        tracing::info!(
            group = self.group,
            snapshot = %meta.snapshot_id,
            ready = self.state.ready_len(),
            bodies,
            bytes,
            stale,
            ms = started.elapsed().as_millis() as u64,
            "installed a quorum queue snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<QueueRaft>>> {
        let Some(stored) = read_stored_snapshot(&self.db, self.group)? else {
            return Ok(None);
        };
        if let Some((id, file)) = &self.sent
            && *id == stored.meta.snapshot_id
            && let Ok(again) = reopen(file)
        {
            return Ok(Some(Snapshot {
                meta: stored.meta,
                snapshot: Box::new(tokio::fs::File::from_std(again)),
            }));
        }
        // The previous file goes first: two long queues' files at once
        // would double the disk a transfer takes.
        self.sent = None;
        let (db, group) = (self.db.clone(), self.group);
        let sig = stored.meta.signature();
        let started = std::time::Instant::now();
        let file = tokio::task::spawn_blocking(move || {
            let file = snapshot_file(&db).map_err(|e| crate::StoreError::Rocks(e.to_string()))?;
            write_transfer(&db, group, &stored.data, file)
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(Some(sig.clone()), super::io_err(e)))?
        .map_err(|e| StorageIOError::read_snapshot(Some(sig), super::io_err(e)))?;
        tracing::info!(
            group = self.group,
            snapshot = %stored.meta.snapshot_id,
            bytes = file.metadata().map(|m| m.len()).unwrap_or(0),
            ms = started.elapsed().as_millis() as u64,
            "wrote a quorum queue snapshot to send"
        );
        // Each transfer reads through its own open file (its own offset);
        // without /proc the file is sent once and not kept.
        let sending = match reopen(&file) {
            Ok(again) => {
                self.sent = Some((stored.meta.snapshot_id.clone(), file));
                again
            }
            Err(_) => file,
        };
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(tokio::fs::File::from_std(sending)),
        }))
    }
}

/// Bodies written per batch while a snapshot is installed.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// Stale body keys deleted per write after an install.
const STALE_BATCH: usize = 16 * 1024;

impl QueueStateMachine {
    /// Deletes the bodies of this group that `live` (ascending) does not
    /// name: what the replica held before an install replaced its state.
    /// Returns how many went.
    async fn delete_stale_bodies(&self, live: Vec<MsgId>) -> Result<usize> {
        let (db, group) = (self.db.clone(), self.group);
        let stale = tokio::task::spawn_blocking(move || stale_bodies(&db, group, &live))
            .await
            .map_err(super::read_err)?
            .map_err(super::read_err)?;
        for chunk in stale.chunks(STALE_BATCH) {
            let writes = chunk
                .iter()
                .map(|id| Op::RaftDelete(RaftCf::Bodies, key::entry(group, *id)))
                .collect();
            self.writer.write(writes).await.map_err(super::write_err)?;
        }
        Ok(stale.len())
    }
}

#[cfg(test)]
#[path = "queue_machine_test.rs"]
mod tests;
