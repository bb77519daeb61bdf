//! A write-ahead log whose syncs never write the inode.
//!
//! Every confirm of a persistent message waits for one `fdatasync` of
//! RocksDB's WAL. On a file that grows, that sync must also write the
//! file's new size (and, for blocks `fallocate` reserved, the extents
//! turned from unwritten to written): a journal commit beside the data.
//! On a file whose blocks were all written before, the sync is the data
//! alone. This disk: a 1 KiB append + `fdatasync` in 118–121 µs, the same
//! overwriting a written file in 70–96 µs (docs/benchmarks.md, "Scenario
//! 3"). PostgreSQL zero-fills its WAL segments before use for this reason.
//!
//! RocksDB can do the same: with `recycle_log_file_num` it keeps WAL files
//! made obsolete by a flush and writes the next WAL over one of them
//! instead of creating a file (its records carry their WAL's number, so
//! what is left of the old one past the new tail is never replayed). It
//! does so only after a flush, so a node that has just started writes a
//! growing WAL until its first memtable fills (64 MiB, many minutes at a
//! confirm window of 1). [`Store::prepare_wal`] makes that first WAL a
//! reused one: it writes `bytes` of filler into the log alone
//! (`put_log_data`, never in a memtable or a table file), then switches
//! the WAL (a flush) until the live one is a reused file at least that
//! long.

use std::path::{Path, PathBuf};

use rocksdb::{FlushOptions, WriteBatch, WriteOptions};

use crate::db::CF_META;
use crate::{Store, StoreError, keys};

/// Filler per write: one RocksDB record at a time, never `bytes` at once
/// in memory.
const CHUNK: usize = 1 << 20;

/// WAL switches tried before giving up (RocksDB finds a flushed WAL
/// obsolete after the flush returns, so the first switch may still create
/// a new file).
const SWITCHES: usize = 4;

impl Store {
    /// Makes the live WAL a reused file of at least `bytes` (none when 0),
    /// so that the syncs of the node's first writes overwrite written
    /// blocks instead of growing a file. Call it right after opening,
    /// before anything else writes. Returns whether the live WAL is now
    /// such a file: if RocksDB did not reuse one, the node runs as it
    /// would without this (a growing first WAL), nothing worse.
    pub fn prepare_wal(&self, bytes: u64) -> Result<bool, StoreError> {
        if bytes == 0 {
            return Ok(false);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        let filler = vec![0u8; CHUNK];
        let mut written = 0u64;
        while written < bytes {
            let mut batch = WriteBatch::default();
            batch.put_log_data(&filler);
            self.db.write_opt(batch, &wo)?;
            written += CHUNK as u64;
        }
        let meta = self.cf(CF_META)?;
        let mut flush = FlushOptions::default();
        flush.set_wait(true);
        for _ in 0..SWITCHES {
            // A memtable with something in it, so that the flush switches
            // the WAL; the put and its delete leave nothing behind.
            let mut batch = WriteBatch::default();
            batch.put_cf(meta, [keys::WAL_MARKER], []);
            batch.delete_cf(meta, [keys::WAL_MARKER]);
            self.db.write_opt(batch, &wo)?;
            self.db.flush_cf_opt(meta, &flush)?;
            if live_wal_len(self.db.path())? >= bytes {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The length of the newest WAL file in `dir`, RocksDB's live one.
pub(crate) fn live_wal_len(dir: &Path) -> Result<u64, StoreError> {
    let io = |e: std::io::Error| StoreError::Rocks(format!("{}: {e}", dir.display()));
    let mut newest: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = number
            && newest.as_ref().is_none_or(|(m, _)| n > *m)
        {
            newest = Some((n, path));
        }
    }
    match newest {
        Some((_, path)) => Ok(std::fs::metadata(&path).map_err(io)?.len()),
        None => Ok(0),
    }
}

#[cfg(test)]
#[path = "wal_test.rs"]
mod tests;
