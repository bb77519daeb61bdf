//! Opening the node's RocksDB and reading it back at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options};
use warren_core::binding::Binding;
use warren_core::exchange::ExchangeDef;
use warren_core::queue::QueueDef;
use warren_core::{Message, QueueId};

use crate::{StoreError, codec, keys};

pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_MESSAGES: &str = "messages";
/// Raft log entries of every group, keyed by (group, index).
pub(crate) const CF_RAFT_LOG: &str = "raft_log";
/// Raft vote, purge point and snapshot of every group, keyed by (group, tag).
pub(crate) const CF_RAFT_STATE: &str = "raft_state";
/// Bodies of quorum queues' messages, keyed by (group, message id): what
/// their state machines applied, materialized (the log is what is durable).
pub(crate) const CF_QUORUM_BODIES: &str = "quorum_bodies";

pub(crate) type Db = rocksdb::DB;

/// Obsolete WAL files RocksDB keeps for reuse (`crate::wal`). Two: one in
/// use while another is being flushed out of use; a third would only hold
/// disk.
const RECYCLED_WALS: usize = 2;

/// What a scan of a queue's stored messages found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Messages decoded and handed over.
    pub messages: usize,
    /// Seqs whose records could not be decoded (left on disk, skipped).
    pub corrupt: Vec<u64>,
    /// The highest seq stored, readable or not.
    pub last_seq: Option<u64>,
}

/// The node's store. Reads happen here; writes go through the [`crate::Writer`].
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<Db>,
    /// Bytes of Raft log entries the node's groups keep in memory
    /// (`raft::recent`), shared so that one bound holds for all of them.
    log_tails: Arc<std::sync::atomic::AtomicUsize>,
}

impl Store {
    /// The column family `name` (created when the store was opened).
    pub(crate) fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Rocks(format!("no {name} column family")))
    }
}

impl Store {
    /// The node's count of Raft log bytes held in memory.
    pub(crate) fn log_tails(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.log_tails.clone()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Durable metadata found at start, per vhost.
#[derive(Debug, Default)]
pub struct Recovered {
    /// (vhost, exchange)
    pub exchanges: Vec<(String, ExchangeDef)>,
    /// (vhost, queue)
    pub queues: Vec<(String, QueueDef)>,
    /// (vhost, binding)
    pub bindings: Vec<(String, Binding)>,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Rocks(format!("{}: {e}", dir.display())))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(DBCompressionType::Lz4);
        // Queues are written and deleted soon after: keep memtables moderate and
        // let the WAL, not flushes, carry durability.
        opts.set_write_buffer_size(64 << 20);
        // All column families' memtables together: a quorum queue's backlog
        // fills the log's and the bodies' families at once (1 M x 1 KiB on
        // three replicas peaked at 303-326 MiB on the leader, 271-280 MiB
        // with this cap; docs/benchmarks.md).
        opts.set_db_write_buffer_size(128 << 20);
        opts.set_max_total_wal_size(256 << 20);
        opts.set_keep_log_file_num(4);
        // Write new WALs over obsolete ones: a sync of an overwrite writes
        // no inode (crate::wal).
        opts.set_recycle_log_file_num(RECYCLED_WALS);
        let cfs = [
            CF_META,
            CF_MESSAGES,
            CF_RAFT_LOG,
            CF_RAFT_STATE,
            CF_QUORUM_BODIES,
        ]
        .map(|n| {
            let mut o = Options::default();
            o.set_compression_type(DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(n, o)
        });
        let db = Db::open_cf_descriptors(&opts, dir, cfs)?;
        Ok(Self {
            db: Arc::new(db),
            log_tails: Arc::default(),
        })
    }

    /// Reads every durable exchange, queue and binding.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        let cf = self.cf(CF_META)?;
        let mut out = Recovered::default();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            match k.first() {
                Some(&keys::EXCHANGE) | Some(&keys::QUEUE) => {
                    let rest = &k[1..];
                    let vhost = rest
                        .iter()
                        .position(|b| *b == 0)
                        .and_then(|p| std::str::from_utf8(&rest[..p]).ok())
                        .ok_or_else(|| StoreError::Corrupt("entity key".into()))?
                        .to_owned();
                    if k[0] == keys::EXCHANGE {
                        out.exchanges.push((vhost, codec::decode_exchange(&v)?));
                    } else {
                        let q = codec::decode_queue(&v, &vhost)?;
                        out.queues.push((vhost, q));
                    }
                }
                Some(&keys::BINDING) => out.bindings.push(codec::decode_binding_key(&k)?),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Calls `f` with every stored message of `queue`, in seq order. A
    /// record that cannot be decoded is skipped and its seq returned in
    /// [`Recovery::corrupt`]: what can be read is recovered, and the caller
    /// knows which seqs are taken on disk. A failing read of the database
    /// itself ends the scan with an error.
    pub fn for_each_message(
        &self,
        queue: QueueId,
        mut f: impl FnMut(u64, Message),
    ) -> Result<Recovery, StoreError> {
        let cf = self.cf(CF_MESSAGES)?;
        let (start, _) = keys::queue_range(queue);
        let mut out = Recovery::default();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            match keys::parse_message(&k) {
                Some((q, seq)) if q == queue => {
                    out.last_seq = Some(seq);
                    match codec::decode_message(&v) {
                        Ok(m) => {
                            f(seq, m);
                            out.messages += 1;
                        }
                        Err(_) => out.corrupt.push(seq),
                    }
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// The highest seq stored for `queue`, if any: one seek from the end of
    /// its key range.
    pub fn last_message_seq(&self, queue: QueueId) -> Result<Option<u64>, StoreError> {
        let cf = self.cf(CF_MESSAGES)?;
        let (_, end) = keys::queue_range(queue);
        // The seek lands on the last key before `end`; the queue id check
        // excludes a key of an earlier queue when this one has none.
        let last = self
            .db
            .iterator_cf(cf, IteratorMode::From(&end, Direction::Reverse))
            .next()
            .transpose()?;
        Ok(last.and_then(|(k, _)| match keys::parse_message(&k) {
            Some((q, seq)) if q == queue => Some(seq),
            _ => None,
        }))
    }

    /// Reads the messages of `queue` with the given seqs (ascending), for
    /// paging bodies back into memory. Seqs not on disk are absent from the result.
    pub fn read_messages(
        &self,
        queue: QueueId,
        seqs: &[u64],
    ) -> Result<BTreeMap<u64, Message>, StoreError> {
        let mut out = BTreeMap::new();
        let (Some(first), Some(last)) = (seqs.first(), seqs.last()) else {
            return Ok(out);
        };
        let cf = self.cf(CF_MESSAGES)?;
        let start = keys::message(queue, *first);
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            match keys::parse_message(&k) {
                Some((q, seq)) if q == queue && seq <= *last => {
                    if seqs.binary_search(&seq).is_ok() {
                        out.insert(seq, codec::decode_message(&v)?);
                    }
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// The bodies of quorum queue `group`'s messages `ids` that are stored,
    /// for a leader that sends held messages again.
    pub fn read_quorum_bodies(
        &self,
        group: u64,
        ids: &[u64],
    ) -> Result<Vec<(u64, Message)>, StoreError> {
        let cf = self.cf(CF_QUORUM_BODIES)?;
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| quorum_body_key(group, *id)).collect();
        let mut out = Vec::new();
        for (id, got) in ids
            .iter()
            .zip(self.db.multi_get_cf(keys.iter().map(|k| (cf, k))))
        {
            if let Some(v) = got? {
                out.push((*id, codec::decode_message(&v)?));
            }
        }
        Ok(out)
    }

    /// The quorum queue groups (ids above 0) with Raft state on this node,
    /// ascending: a group whose queue is gone from the metadata is removed
    /// when the node finds it here (it was deleted while this node was down).
    pub fn quorum_groups(&self) -> Result<Vec<u64>, StoreError> {
        let cf = self.cf(CF_RAFT_STATE)?;
        let mut out: Vec<u64> = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = item?;
            if k.len() != 9 {
                continue;
            }
            let mut g = [0u8; 8];
            g.copy_from_slice(&k[..8]);
            let g = u64::from_be_bytes(g);
            if g != 0 && out.last() != Some(&g) {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// The database, for the Raft storage of this crate.
    pub(crate) fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// Starts the group-commit writer thread.
    pub fn start_writer(&self) -> crate::Writer {
        crate::Writer::start(self.db.clone())
    }

    /// The highest queue id used by any stored message or queue record, so new
    /// ids never collide with old ones.
    pub fn max_queue_id(&self, recovered: &Recovered) -> Result<QueueId, StoreError> {
        let mut max = recovered
            .queues
            .iter()
            .map(|(_, q)| q.id)
            .max()
            .unwrap_or(0);
        let cf = self.cf(CF_MESSAGES)?;
        if let Some(item) = self.db.iterator_cf(cf, IteratorMode::End).next() {
            let (k, _) = item?;
            if let Some((q, _)) = keys::parse_message(&k) {
                max = max.max(q);
            }
        }
        Ok(max)
    }

    /// Every queue id that has stored messages, ascending (one seek per
    /// queue, not one step per message).
    pub fn message_queue_ids(&self) -> Result<Vec<QueueId>, StoreError> {
        let cf = self.cf(CF_MESSAGES)?;
        let mut ids = Vec::new();
        let mut from = [0u8; 16];
        loop {
            let mode = IteratorMode::From(&from, Direction::Forward);
            let Some(item) = self.db.iterator_cf(cf, mode).next() else {
                break;
            };
            let (k, _) = item?;
            let Some((q, _)) = keys::parse_message(&k) else {
                break;
            };
            ids.push(q);
            match q.checked_add(1) {
                Some(next) => from = keys::queue_range(next).0,
                None => break,
            }
        }
        Ok(ids)
    }

    /// Counts this start: returns the node's new epoch (1 on the first
    /// start), durably recorded before anything else runs.
    pub fn bump_epoch(&self) -> Result<u64, StoreError> {
        let cf = self.cf(CF_RAFT_STATE)?;
        let old = match self.db.get_cf(cf, EPOCH_KEY)? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("epoch record".into()))?,
            ),
            None => 0,
        };
        let epoch = old + 1;
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(cf, EPOCH_KEY, epoch.to_be_bytes(), &wo)?;
        Ok(epoch)
    }

    /// The id of the cluster this node belongs to, once it learnt it (see
    /// [`Store::set_cluster_id`]).
    pub fn cluster_id(&self) -> Result<Option<u128>, StoreError> {
        let cf = self.cf(CF_RAFT_STATE)?;
        match self.db.get_cf(cf, CLUSTER_ID_KEY)? {
            Some(v) => {
                Ok(Some(u128::from_be_bytes(v.as_slice().try_into().map_err(
                    |_| StoreError::Corrupt("cluster id record".into()),
                )?)))
            }
            None => Ok(None),
        }
    }

    /// Records the cluster's id (synced): from then on the node refuses the
    /// RPCs of any other cluster, from its first moment after a restart on.
    pub fn set_cluster_id(&self, id: u128) -> Result<(), StoreError> {
        let cf = self.cf(CF_RAFT_STATE)?;
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(cf, CLUSTER_ID_KEY, id.to_be_bytes(), &wo)?;
        Ok(())
    }

    /// Removes every record of the `meta` column family: once its contents
    /// live in Raft group 0 they must not be read again.
    pub fn clear_legacy_meta(&self) -> Result<(), StoreError> {
        let cf = self.cf(CF_META)?;
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range_cf(cf, [0u8].as_slice(), [0xffu8; 8].as_slice());
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }
}

/// Key of a quorum queue's body: (group, message id), as the state machine writes it.
fn quorum_body_key(group: u64, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&group.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Key of the node's epoch in `raft_state` (group keys are 9 or 16 bytes).
const EPOCH_KEY: &[u8] = b"epoch";
/// Key of the cluster's id in `raft_state`.
const CLUSTER_ID_KEY: &[u8] = b"cluster_id";
