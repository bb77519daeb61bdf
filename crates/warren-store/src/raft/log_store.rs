//! The Raft log of one group: entries, vote and purge point.
//!
//! Generic over the group's type ([`LogCodec`]): group 0 and the queues'
//! groups share this code and the keyspace, and differ only in how an entry
//! is written (group 0's commands are JSON; queue entries carry bodies and
//! need a binary encoding).
//!
//! Reads go straight to RocksDB. Writes go through the node's group-commit
//! writer, so a log append shares its WAL sync with the appends of other
//! groups and with message writes of classic queues. `append` returns once the
//! entries are written (readable) and synced; openraft's flush callback is
//! called at the same moment. Returning before the sync, with a cache of
//! unsynced entries for readers, is the optimisation to make when replicated
//! queues put many entries through here.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, RaftLogReader, RaftTypeConfig, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode};

use super::{GroupId, MetaRaft, NodeId, Result, decode, encode, key};
use crate::db::{CF_RAFT_LOG, CF_RAFT_STATE, Db};
use crate::{Op, RaftCf, Store, Writer};

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
pub struct RaftLogStore<C = MetaRaft> {
    group: GroupId,
    db: Arc<Db>,
    writer: Writer,
    group_type: PhantomData<fn() -> C>,
}

impl<C> Clone for RaftLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            group: self.group,
            db: self.db.clone(),
            writer: self.writer.clone(),
            group_type: PhantomData,
        }
    }
}

impl<C> Debug for RaftLogStore<C> {
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
            group_type: PhantomData,
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
        let cf = self
            .db
            .cf_handle(CF_RAFT_LOG)
            .ok_or_else(|| StorageIOError::read_logs(super::io_err("no raft_log cf")))?;
        let upper = key::entry(self.group, u64::MAX);
        let mut it = self
            .db
            .iterator_cf(cf, IteratorMode::From(&upper, Direction::Reverse));
        match it.next() {
            Some(Ok((k, v))) if key::parse_entry(self.group, &k).is_some() => {
                let e = C::decode_entry(&v).map_err(StorageIOError::read_logs)?;
                Ok(Some(e.log_id))
            }
            Some(Err(e)) => Err(super::read_err(e)),
            _ => Ok(None),
        }
    }
}

impl<C: LogCodec> RaftLogReader<C> for RaftLogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
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
            if !range.contains(&index) {
                break;
            }
            out.push(C::decode_entry(&v).map_err(StorageIOError::read_logs)?);
        }
        Ok(out)
    }
}

impl<C: LogCodec> RaftLogStorage<C> for RaftLogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_state(key::PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
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
        for e in entries {
            let v = C::encode_entry(&e).map_err(StorageIOError::write_logs)?;
            ops.push(Op::RaftPut(
                RaftCf::Log,
                key::entry(self.group, e.log_id.index),
                v,
            ));
        }
        match self.write(ops).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.write(vec![Op::RaftDeleteRange(
            RaftCf::Log,
            key::entry(self.group, log_id.index),
            key::entry(self.group, u64::MAX),
        )])
        .await
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
        .await
    }
}
