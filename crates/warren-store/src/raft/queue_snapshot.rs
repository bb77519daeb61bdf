//! A quorum queue's snapshot in bytes: the state as it is stored, and the
//! file a leader streams to a replica that is too far behind for its log.
//!
//! **The state** ([`encode_state`]) is binary, format 3: 16 bytes a message
//! (id, size, delivery count), so a queue of a million messages stores
//! 16 MB, not the 45 MB of the JSON of format 1; a consumer's place; then
//! the log's clock, the count of checkouts, when the queue was last used,
//! and 16 bytes per message that has a deadline. Formats 1 and 2 (no
//! deadlines, no clock) are still read. Formats 1 and 2 (no deadlines, no clock) are still read.
//!
//! **The transfer** is a file, never one buffer: the state, then every live
//! message's body (id, length, the body's stored encoding), written from a
//! RocksDB iterator by [`write_transfer`] and read back by the receiving
//! replica in batches ([`TransferReader`]). openraft reads and writes it in
//! chunks through its `AsyncRead + AsyncWrite + AsyncSeek` bounds, so a
//! backlog of a gigabyte costs a gigabyte of disk on each side, and a few
//! MiB of memory.

use std::io::{BufWriter, Seek, SeekFrom, Write};

use tokio::io::{AsyncReadExt, AsyncSeekExt, BufReader};
use warren_core::NodeId;
use warren_core::dead_letter::Reason;
use warren_core::quorum::{ConsumerKey, ConsumerSnapshot, MsgId, QMsg, QuorumSnapshot};

use super::{GroupId, decode, key};
use crate::StoreError;
use crate::codec::{Dec, Enc, corrupt};
use crate::db::{CF_QUORUM_BODIES, Db};

/// The state format before deadlines (format 1 was `decode`'s JSON).
const STATE_V2: u8 = 2;
/// The state format with deadlines and the log's clock.
const STATE_V3: u8 = 3;
/// The state format written now: format 3 and the dead letters not yet
/// re-published.
const STATE_V4: u8 = 4;
/// The first bytes of a transfer file.
const TRANSFER_MAGIC: &[u8; 8] = b"WQSNAP02";
/// Bytes of one message in the state.
const MSG_BYTES: usize = 16;

fn msg(e: &mut Enc<'_>, m: &QMsg) {
    e.u64(m.id).u32(m.size).u32(m.delivery_count);
}

fn msgs(e: &mut Enc<'_>, ms: &[QMsg]) {
    e.u64(ms.len() as u64);
    for m in ms {
        msg(e, m);
    }
}

/// The state's bytes (format 3).
pub(super) fn encode_state(s: &QuorumSnapshot) -> Vec<u8> {
    let held: usize = s.consumers.iter().map(|c| c.checked.len()).sum();
    let mut out = Vec::with_capacity(64 + (s.ready.len() + held) * MSG_BYTES);
    let mut e = Enc(&mut out);
    // The settings are a few bytes and grow with RabbitMQ's arguments.
    let config = serde_json::to_string(&s.config).unwrap_or_else(|_| "{}".into());
    e.u8(STATE_V4).str(&config).u64(s.next_id);
    msgs(&mut e, &s.ready);
    e.u32(s.consumers.len() as u32);
    for c in &s.consumers {
        e.u64(c.key.channel)
            .str(&c.key.tag)
            .u64(c.node)
            .u32(c.prefetch);
        e.u8(u8::from(c.no_ack) | (u8::from(c.cancelled) << 1));
        msgs(&mut e, &c.checked);
        e.u64(c.order);
    }
    e.u32(s.service.len() as u32);
    for k in &s.service {
        e.u64(k.channel).str(&k.tag);
    }
    e.u32(s.publishers.len() as u32);
    for (channel, seq) in &s.publishers {
        e.u64(*channel).u64(*seq);
    }
    e.u64(s.now).u64(s.checkouts).u64(s.last_active);
    e.u64(s.deadlines.len() as u64);
    for (id, at) in &s.deadlines {
        e.u64(*id).u64(*at);
    }
    e.u64(s.dead_letters.len() as u64);
    for (id, why) in &s.dead_letters {
        e.u64(*id).u8(reason_tag(*why));
    }
    out
}

fn reason_tag(r: Reason) -> u8 {
    match r {
        Reason::Rejected => 0,
        Reason::Expired => 1,
        Reason::Maxlen => 2,
        Reason::DeliveryLimit => 3,
    }
}

fn reason_of(t: u8) -> Result<Reason, StoreError> {
    Ok(match t {
        0 => Reason::Rejected,
        1 => Reason::Expired,
        2 => Reason::Maxlen,
        3 => Reason::DeliveryLimit,
        _ => return Err(corrupt("dead letter reason")),
    })
}

/// Counts read from the input bound nothing but a loop: every vector
/// grows as its elements are actually read.
fn read_msgs(d: &mut Dec<'_>) -> Result<Vec<QMsg>, StoreError> {
    let n = d.u64()?;
    if n > (d.0.len() / MSG_BYTES) as u64 {
        return Err(corrupt("message count past the end"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(QMsg {
            id: d.u64()?,
            size: d.u32()?,
            delivery_count: d.u32()?,
        });
    }
    Ok(out)
}

/// The state from its bytes, in either format.
pub(super) fn decode_state(b: &[u8]) -> Result<QuorumSnapshot, StoreError> {
    let (v3, v4) = match b.first() {
        Some(&STATE_V4) => (true, true),
        Some(&STATE_V3) => (true, false),
        Some(&STATE_V2) => (false, false),
        _ => return decode(b).map_err(|e| corrupt(&e.to_string())),
    };
    let mut d = Dec(&b[1..]);
    let config = serde_json::from_str(d.str()?).map_err(|e| corrupt(&e.to_string()))?;
    let next_id = d.u64()?;
    let ready = read_msgs(&mut d)?;
    let mut consumers = Vec::new();
    for _ in 0..d.u32()? {
        let key = ConsumerKey::new(d.u64()?, d.str()?);
        let node: NodeId = d.u64()?;
        let prefetch = d.u32()?;
        let flags = d.u8()?;
        consumers.push(ConsumerSnapshot {
            key,
            node,
            prefetch,
            no_ack: flags & 1 != 0,
            cancelled: flags & 2 != 0,
            checked: read_msgs(&mut d)?,
            order: if v3 { d.u64()? } else { 0 },
        });
    }
    let mut service = Vec::new();
    for _ in 0..d.u32()? {
        service.push(ConsumerKey::new(d.u64()?, d.str()?));
    }
    let mut publishers = Vec::new();
    for _ in 0..d.u32()? {
        publishers.push((d.u64()?, d.u64()?));
    }
    let (now, checkouts, last_active) = if v3 {
        (d.u64()?, d.u64()?, d.u64()?)
    } else {
        (0, 0, 0)
    };
    let mut deadlines = Vec::new();
    if v3 {
        let n = d.u64()?;
        if n > (d.0.len() / 16) as u64 {
            return Err(corrupt("deadline count past the end"));
        }
        for _ in 0..n {
            deadlines.push((d.u64()?, d.u64()?));
        }
    }
    let mut dead_letters = Vec::new();
    if v4 {
        let n = d.u64()?;
        if n > (d.0.len() / 9) as u64 {
            return Err(corrupt("dead letter count past the end"));
        }
        for _ in 0..n {
            dead_letters.push((d.u64()?, reason_of(d.u8()?)?));
        }
    }
    if !d.0.is_empty() {
        return Err(corrupt("bytes after the state"));
    }
    Ok(QuorumSnapshot {
        config,
        next_id,
        ready,
        consumers,
        service,
        publishers,
        now,
        checkouts,
        last_active,
        deadlines,
        dead_letters,
    })
}

/// The ids of the messages a state holds, ascending.
pub(super) fn live_ids(s: &QuorumSnapshot) -> Vec<MsgId> {
    let mut ids: Vec<MsgId> = s
        .ready
        .iter()
        .chain(s.consumers.iter().flat_map(|c| c.checked.iter()))
        .map(|m| m.id)
        .chain(s.dead_letters.iter().map(|(id, _)| *id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A stored body as (message id, stored encoding).
type Body = (MsgId, Box<[u8]>);

/// The stored bodies of `group` from id `from` up to (not including)
/// `upto`, in id order, as (id, stored encoding).
fn bodies(
    db: &Db,
    group: GroupId,
    from: MsgId,
    upto: MsgId,
) -> Result<impl Iterator<Item = Result<Body, StoreError>> + '_, StoreError> {
    let cf = db
        .cf_handle(CF_QUORUM_BODIES)
        .ok_or_else(|| corrupt("no quorum_bodies cf"))?;
    let mut opts = rocksdb::ReadOptions::default();
    opts.set_iterate_upper_bound(key::entry(group, upto));
    let start = key::entry(group, from);
    let iter = db.iterator_cf_opt(
        cf,
        opts,
        rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
    );
    Ok(iter.map_while(move |item| match item {
        Err(e) => Some(Err(StoreError::Rocks(e.to_string()))),
        Ok((k, v)) => key::parse_entry(group, &k).map(|id| Ok((id, v))),
    }))
}

/// Calls `f` with every body of `group` stored under an id in `ids`
/// (ascending), in id order; ids without a body are skipped (their
/// messages were removed after the state was taken).
fn each_body(
    db: &Db,
    group: GroupId,
    ids: &[MsgId],
    mut f: impl FnMut(MsgId, &[u8]) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
        return Ok(());
    };
    let mut wanted = ids.iter().peekable();
    for item in bodies(db, group, *first, last.saturating_add(1))? {
        let (id, v) = item?;
        while wanted.next_if(|w| **w < id).is_some() {}
        if wanted.next_if_eq(&&id).is_some() {
            f(id, &v).map_err(|e| StoreError::Rocks(format!("snapshot file: {e}")))?;
        }
        if wanted.peek().is_none() {
            break;
        }
    }
    Ok(())
}

/// Writes the transfer of a stored state (`state`, its bytes as stored)
/// with the bodies of `group` it names into `file`, and returns the file
/// positioned at its start. Blocking: run it off the async threads.
pub(super) fn write_transfer(
    db: &Db,
    group: GroupId,
    state: &[u8],
    file: std::fs::File,
) -> Result<std::fs::File, StoreError> {
    let ids = live_ids(&decode_state(state)?);
    let io = |e: std::io::Error| StoreError::Rocks(format!("snapshot file: {e}"));
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(TRANSFER_MAGIC).map_err(io)?;
    out.write_all(&(state.len() as u64).to_be_bytes())
        .map_err(io)?;
    out.write_all(state).map_err(io)?;
    each_body(db, group, &ids, |id, body| {
        out.write_all(&id.to_be_bytes())?;
        out.write_all(&(body.len() as u32).to_be_bytes())?;
        out.write_all(body)
    })?;
    let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(file)
}

/// The ids of `group`'s stored bodies that are not in `live` (ascending):
/// what an installed snapshot leaves behind. Blocking.
pub(super) fn stale_bodies(
    db: &Db,
    group: GroupId,
    live: &[MsgId],
) -> Result<Vec<MsgId>, StoreError> {
    let mut live = live.iter().peekable();
    let mut stale = Vec::new();
    for item in bodies(db, group, 0, u64::MAX)? {
        let (id, _) = item?;
        while live.next_if(|l| **l < id).is_some() {}
        if live.next_if_eq(&&id).is_none() {
            stale.push(id);
        }
    }
    Ok(stale)
}

/// Reads a transfer file as it was received: the state, then the bodies.
pub(super) struct TransferReader {
    file: BufReader<tokio::fs::File>,
    /// Bytes not read yet.
    left: u64,
}

impl TransferReader {
    /// Rewinds `file` (openraft leaves it where its last chunk ended) and
    /// reads the state's bytes.
    pub(super) async fn open(mut file: tokio::fs::File) -> Result<(Self, Vec<u8>), StoreError> {
        let io = |e: std::io::Error| corrupt(&format!("snapshot file: {e}"));
        let len = file.seek(SeekFrom::End(0)).await.map_err(io)?;
        file.seek(SeekFrom::Start(0)).await.map_err(io)?;
        let mut r = Self {
            file: BufReader::with_capacity(1 << 20, file),
            left: len,
        };
        let mut magic = [0u8; 8];
        r.exact(&mut magic).await?;
        if &magic != TRANSFER_MAGIC {
            return Err(corrupt("not a quorum queue snapshot"));
        }
        let n = r.u64().await?;
        let state = r.bytes(n).await?;
        Ok((r, state))
    }

    async fn exact(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        if (buf.len() as u64) > self.left {
            return Err(corrupt("truncated snapshot"));
        }
        self.file
            .read_exact(buf)
            .await
            .map_err(|e| corrupt(&format!("snapshot file: {e}")))?;
        self.left -= buf.len() as u64;
        Ok(())
    }

    async fn u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        self.exact(&mut b).await?;
        Ok(u64::from_be_bytes(b))
    }

    /// `n` bytes; `n` was read from the file, so it is checked against
    /// what the file holds before anything is allocated.
    async fn bytes(&mut self, n: u64) -> Result<Vec<u8>, StoreError> {
        if n > self.left {
            return Err(corrupt("truncated snapshot"));
        }
        let mut v = vec![0u8; n as usize];
        self.exact(&mut v).await?;
        Ok(v)
    }

    /// The next body as (id, stored encoding), or `None` at the end.
    pub(super) async fn body(&mut self) -> Result<Option<(MsgId, Vec<u8>)>, StoreError> {
        if self.left == 0 {
            return Ok(None);
        }
        let id = self.u64().await?;
        let mut len = [0u8; 4];
        self.exact(&mut len).await?;
        let body = self.bytes(u64::from(u32::from_be_bytes(len))).await?;
        Ok(Some((id, body)))
    }
}

#[cfg(test)]
#[path = "queue_snapshot_test.rs"]
mod tests;
