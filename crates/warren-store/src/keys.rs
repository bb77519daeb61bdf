//! Key encodings. Big-endian integers keep a queue's messages in seq order.

use warren_core::QueueId;

/// Prefix of exchange records in `meta`.
pub const EXCHANGE: u8 = b'e';
/// Prefix of queue records in `meta`.
pub const QUEUE: u8 = b'q';
/// Prefix of binding records in `meta`.
pub const BINDING: u8 = b'b';
/// A key of `meta` written and deleted at once: something for a flush to
/// switch the WAL with (`wal`), never read.
pub const WAL_MARKER: u8 = b'w';

/// `kind ++ vhost ++ 0 ++ name`: the key of an exchange or queue record.
pub fn entity(kind: u8, vhost: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + vhost.len() + name.len());
    k.push(kind);
    k.extend_from_slice(vhost.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

/// `queue id ++ seq`: the key of a message.
pub fn message(queue: QueueId, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&queue.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The key range `[start, end)` holding every message of a queue.
pub fn queue_range(queue: QueueId) -> ([u8; 16], [u8; 16]) {
    (message(queue, 0), message(queue.saturating_add(1), 0))
}

/// Splits a message key.
pub fn parse_message(key: &[u8]) -> Option<(QueueId, u64)> {
    let q = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let s = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    Some((q, s))
}
