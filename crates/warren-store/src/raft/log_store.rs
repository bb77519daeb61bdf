//! The Raft log of one group: entries, vote and purge point.
//!
//! Generic over the group's type ([`LogCodec`]): group 0 and the queues'
//! groups share this code and the keyspace, and differ only in how an entry
//! is written (group 0's commands are JSON; queue entries carry bodies and
//! need a binary encoding).
//!
//! Writes go through the node's group-commit writer, so a log append shares
//! its WAL sync with the appends of other groups and with message writes of
//! classic queues. `append` puts the entries in the group's in-memory tail
//! ([`RecentLog`]), hands them to the writer and returns; openraft's flush
//! callback is called when the writer has synced them (openraft 0.9's core
//! still waits for that callback before it goes on). Reads take what the
//! tail holds and the rest from RocksDB.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, RaftLogReader, RaftTypeConfig, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode};

use super::recent::{RecentLog, Tailed};
use super::{GroupId, MetaRaft, NodeId, Result, decode, encode, key};
use crate::db::{CF_RAFT_LOG, CF_RAFT_STATE, Db};
use crate::{Op, RaftCf, Store, WriteDone, Writer};

/// How a group type's log entries are written to and read from RocksDB.
pub trait LogCodec: RaftTypeConfig<NodeId = NodeId, Entry = Entry<Self>> {
    /// One entry as stored.
    fn encode_entry(e: &Entry<Self>) -> std::result::Result<Vec<u8>, AnyError>;
    /// An entry as stored, read back.
    fn decode_entry(b: &[u8]) -> std::result::Result<Entry<Self>, AnyError>;
}

impl LogCodec for MetaRaft {
    fn encode_entry(e: &Entry<Self>) -> std::result::Result<Vec<u8>, AnyError> {
        encode(e).map_err(|e| AnyError::new(&e))
    }

    fn decode_entry(b: &[u8]) -> std::result::Result<Entry<Self>, AnyError> {
        decode(b)
    }
}

/// The log, vote and purge point of one Raft group of type `C`.
pub struct RaftLogStore<C: RaftTypeConfig = MetaRaft> {
    group: GroupId,
    db: Arc<Db>,
    writer: Writer,
    recent: RecentLog<C>,
}

impl<C: RaftTypeConfig> Clone for RaftLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            group: self.group,
            db: self.db.clone(),
            writer: self.writer.clone(),
            recent: self.recent.clone(),
        }
    }
}

impl<C: RaftTypeConfig> Debug for RaftLogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLogStore")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl<C: LogCodec> RaftLogStore<C> {
    /// The log of `group` in `store`, written through `writer`.
    pub fn new(store: &Store, writer: Writer, group: GroupId) -> Self {
        Self {
            group,
            db: store.db().clone(),
            writer,
            recent: RecentLog::new(store.log_tails()),
        }
    }

    fn get_state<T: serde::de::DeserializeOwned>(&self, tag: u8) -> Result<Option<T>> {
        let cf = self
            .db
            .cf_handle(CF_RAFT_STATE)
            .ok_or_else(|| StorageIOError::read(super::io_err("no raft_state cf")))?;
        let Some(v) = self
            .db
            .get_cf(cf, key::state(self.group, tag))
            .map_err(super::read_err)?
        else {
            return Ok(None);
        };
        decode(&v)
            .map(Some)
            .map_err(|e| StorageIOError::read(e).into())
    }

    async fn write(&self, ops: Vec<Op>) -> Result<()> {
        self.writer.write_sync(ops).await.map_err(super::write_err)
    }

    fn last_entry_id(&self) -> Result<Option<LogId<NodeId>>> {
        match last_entry(&self.db, self.group)? {
            Some((_, v)) => {
                let e = C::decode_entry(&v).map_err(StorageIOError::read_logs)?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }
}

impl<C: LogCodec> RaftLogReader<C> for RaftLogStore<C>
where
    C::D: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        match self.recent.read(start, end) {
            Tailed::All(entries) => Ok(entries),
            Tailed::Nothing => self.read_stored(start, end),
            Tailed::From { first, entries } => {
                let below = end.map_or(first, |e| e.min(first));
                let mut out = self.read_stored(start, Some(below))?;
                out.extend(entries);
                Ok(out)
            }
        }
    }
}

impl<C: LogCodec> RaftLogStore<C> {
    /// Entries in `start..end` as written to RocksDB.
    fn read_stored(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry<C>>> {
        let cf = self
            .db
            .cf_handle(CF_RAFT_LOG)
            .ok_or_else(|| StorageIOError::read_logs(super::io_err("no raft_log cf")))?;
        let from = key::entry(self.group, start);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (k, v) = item.map_err(super::read_err)?;
            let Some(index) = key::parse_entry(self.group, &k) else {
                break;
            };
            if end.is_some_and(|e| index >= e) {
                break;
            }
            out.push(C::decode_entry(&v).map_err(StorageIOError::read_logs)?);
        }
        Ok(out)
    }
}

impl<C: LogCodec> RaftLogStorage<C> for RaftLogStore<C>
where
    C::D: Clone,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_state(key::PURGED)?;
        let last_log_id = match self.recent.last_log_id() {
            Some(id) => Some(id),
            None => self.last_entry_id()?.or(last_purged_log_id),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        let v = encode(vote).map_err(|e| StorageIOError::write_vote(super::io_err(e)))?;
        self.write(vec![Op::RaftPut(
            RaftCf::State,
            key::state(self.group, key::VOTE),
            v,
        )])
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.get_state(key::VOTE)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<C>> + Send,
        I::IntoIter: Send,
    {
        let mut ops = Vec::new();
        let mut kept = Vec::new();
        for e in entries {
            let v = C::encode_entry(&e).map_err(StorageIOError::write_logs)?;
            let size = v.len();
            ops.push(Op::RaftPut(
                RaftCf::Log,
                key::entry(self.group, e.log_id.index),
                v,
            ));
            kept.push((e, size));
        }
        let Some(last) = kept.last().map(|(e, _)| e.log_id.index) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        // Readable from the tail now; durable when the writer says so.
        self.recent.admit(kept);
        let recent = self.recent.clone();
        let done: WriteDone = Box::new(move |r| match r {
            Ok(()) => {
                recent.written(last);
                callback.log_io_completed(Ok(()));
            }
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        });
        self.writer
            .submit(ops, true, Some(done))
            .await
            .map_err(super::write_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.write(vec![Op::RaftDeleteRange(
            RaftCf::Log,
            key::entry(self.group, log_id.index),
            key::entry(self.group, u64::MAX),
        )])
        .await?;
        // The writer keeps order: every earlier append is written by now.
        self.recent.truncate(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let v = encode(&log_id).map_err(|e| StorageIOError::write_logs(super::io_err(e)))?;
        self.write(vec![
            Op::RaftPut(RaftCf::State, key::state(self.group, key::PURGED), v),
            Op::RaftDeleteRange(
                RaftCf::Log,
                key::entry(self.group, 0),
                key::entry(self.group, log_id.index.saturating_add(1)),
            ),
        ])
        .await?;
        self.recent.purge(log_id.index);
        Ok(())
    }
}

/// The index of `group`'s last log entry in the store.
pub(super) fn last_log_index(db: &Db, group: GroupId) -> Result<Option<u64>> {
    Ok(last_entry(db, group)?.map(|(index, _)| index))
}

/// `group`'s last log entry in the store: its index and its encoding.
fn last_entry(db: &Db, group: GroupId) -> Result<Option<(u64, Box<[u8]>)>> {
    let cf = db
        .cf_handle(CF_RAFT_LOG)
        .ok_or_else(|| StorageIOError::read_logs(super::io_err("no raft_log cf")))?;
    let upper = key::entry(group, u64::MAX);
    let mut it = db.iterator_cf(cf, IteratorMode::From(&upper, Direction::Reverse));
    match it.next() {
        Some(Ok((k, v))) => Ok(key::parse_entry(group, &k).map(|index| (index, v))),
        Some(Err(e)) => Err(super::read_err(e)),
        None => Ok(None),
    }
}
