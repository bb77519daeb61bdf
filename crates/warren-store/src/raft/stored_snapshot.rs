//! The last snapshot of a group as RocksDB keeps it: openraft's meta and the
//! encoded state, one record per group in the `raft_state` column family.
//!
//! Format 2 (written now): a version byte, the meta as length-prefixed JSON
//! (a few hundred bytes), then the state's bytes as they are. Format 1 was
//! the whole record as JSON, which writes every byte of the state as a
//! decimal number (about 3.5 bytes a byte): harmless for metadata, 150 MB
//! for the state of a quorum queue holding a million messages. Format 1
//! records are still read.

use openraft::{BasicNode, LogId, SnapshotMeta, StorageIOError, StoredMembership};

use super::{GroupId, NodeId, Result, decode, key};
use crate::db::{CF_RAFT_STATE, Db};
use crate::{Op, RaftCf, Writer};

/// The record format written now.
const V2: u8 = 2;

/// A snapshot as stored: openraft's meta plus the encoded state (a
/// `MetaSnapshot` for group 0, a quorum queue's state in `queue_snapshot`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StoredSnapshot {
    pub(super) meta: SnapshotMeta<NodeId, BasicNode>,
    pub(super) data: Vec<u8>,
}

impl StoredSnapshot {
    /// The record's bytes.
    fn encode(&self) -> std::result::Result<Vec<u8>, serde_json::Error> {
        let meta = serde_json::to_vec(&self.meta)?;
        let mut out = Vec::with_capacity(5 + meta.len() + self.data.len());
        out.push(V2);
        // A meta over 4 GiB cannot be built: it is a log id and a membership.
        out.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.data);
        Ok(out)
    }

    /// A record of either format.
    fn decode(v: &[u8]) -> std::result::Result<Self, openraft::AnyError> {
        let bad = |what: &str| openraft::AnyError::error(format!("snapshot record: {what}"));
        match v.split_first() {
            Some((&V2, rest)) => {
                let (len, rest) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| bad("truncated"))?;
                let len = u32::from_be_bytes(*len) as usize;
                if rest.len() < len {
                    return Err(bad("truncated meta"));
                }
                let (meta, data) = rest.split_at(len);
                Ok(Self {
                    meta: serde_json::from_slice(meta).map_err(|e| openraft::AnyError::new(&e))?,
                    data: data.to_vec(),
                })
            }
            _ => decode(v),
        }
    }
}

/// The last snapshot stored for `group`.
pub(super) fn read_stored_snapshot(db: &Db, group: GroupId) -> Result<Option<StoredSnapshot>> {
    let cf = db
        .cf_handle(CF_RAFT_STATE)
        .ok_or_else(|| StorageIOError::read_snapshot(None, super::io_err("no raft_state cf")))?;
    let Some(v) = db
        .get_pinned_cf(cf, key::state(group, key::SNAPSHOT))
        .map_err(super::read_err)?
    else {
        return Ok(None);
    };
    StoredSnapshot::decode(&v)
        .map(Some)
        .map_err(|e| StorageIOError::read_snapshot(None, e).into())
}

/// Held around a check of the stored snapshot and the write that replaces
/// it, so a build and an install cannot interleave between the two. One
/// for the node: snapshots are rare.
pub(super) static SNAPSHOT_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The meta of a snapshot built at `last_applied`; `seq` (snapshots built
/// by this process) keeps ids unique when two are built at one index.
pub(super) fn snapshot_meta(
    last_applied: Option<LogId<NodeId>>,
    membership: &StoredMembership<NodeId, BasicNode>,
    seq: u64,
) -> SnapshotMeta<NodeId, BasicNode> {
    let snapshot_id = match last_applied {
        Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
        None => format!("none-{seq}"),
    };
    SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership.clone(),
        snapshot_id,
    }
}

/// The write that stores `s` as `group`'s snapshot.
pub(super) fn snapshot_record(group: GroupId, s: &StoredSnapshot) -> Result<Op> {
    let v = s
        .encode()
        .map_err(|e| StorageIOError::write_snapshot(Some(s.meta.signature()), super::io_err(e)))?;
    Ok(Op::RaftPut(
        RaftCf::State,
        key::state(group, key::SNAPSHOT),
        v,
    ))
}

/// Stores a snapshot that openraft built, unless a newer one is stored
/// already: openraft builds snapshots in a task of their own, so a build
/// can finish after a snapshot from the leader was installed, and must not
/// take the stored state back behind the log that was purged for it.
pub(super) async fn store_snapshot(
    db: &Db,
    writer: &Writer,
    group: GroupId,
    s: &StoredSnapshot,
) -> Result<()> {
    let _turn = SNAPSHOT_WRITES.lock().await;
    if let Some(current) = read_stored_snapshot(db, group)?
        && current.meta.last_log_id > s.meta.last_log_id
    {
        tracing::debug!(
            group,
            "a snapshot built behind an installed one is not stored"
        );
        return Ok(());
    }
    writer
        .write_sync(vec![snapshot_record(group, s)?])
        .await
        .map_err(super::write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_record_formats_read_back() {
        let s = StoredSnapshot {
            meta: snapshot_meta(None, &StoredMembership::default(), 7),
            data: vec![0, 1, 2, 255],
        };
        let v2 = s.encode().expect("encode");
        let back = StoredSnapshot::decode(&v2).expect("v2");
        assert_eq!((back.meta, back.data), (s.meta.clone(), s.data.clone()));
        let v1 = super::super::encode(&s).expect("v1");
        let back = StoredSnapshot::decode(&v1).expect("v1");
        assert_eq!((back.meta, back.data), (s.meta.clone(), s.data.clone()));
        for cut in 0..v2.len() - s.data.len() {
            assert!(StoredSnapshot::decode(&v2[..cut]).is_err(), "cut at {cut}");
        }
    }
}
