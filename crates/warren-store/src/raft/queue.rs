//! The log of a quorum queue's Raft group: its type configuration
//! ([`QueueRaft`]) and the binary encoding of its entries.
//!
//! One entry carries a batch ([`QueueBatch`]): everything that reached the
//! leader for that queue while the previous entry was being written, so one
//! group commits many messages per append and per fsync (openraft 0.9 waits
//! for each append inside the group's core task; see docs/decisions.md).
//!
//! Entries are binary (format version 2): the bodies of enqueued messages are
//! most of a queue's log, and the JSON of group 0 would write each byte as a
//! decimal number. The entry's frame (log id, and the membership of a
//! membership entry) stays JSON, a few dozen bytes, so openraft's own types
//! need no second encoding here.

use openraft::{AnyError, BasicNode, Entry, EntryPayload, LogId, Membership};
use warren_core::Message;
use warren_core::quorum::{Command, ConsumerKey, Delivery, MsgId, Publisher, Reply};

use super::{LogCodec, NodeId};
use crate::StoreError;
use crate::codec::{Dec, Enc, corrupt, decode_message, encode_message};

/// The format version of a queue entry.
const V2: u8 = 2;

/// One change of a quorum queue as its log holds it: an enqueue with its
/// message, or any other command of the state machine.
#[derive(Clone, Debug)]
pub enum QueueOp {
    /// A published message.
    Enqueue {
        /// Its publisher, for de-duplication of re-sends.
        publisher: Option<Publisher>,
        /// The message.
        message: Message,
    },
    /// Anything else (never [`Command::Enqueue`]).
    Command(Command),
}

impl QueueOp {
    /// The command the state machine applies for this op.
    pub fn command(&self) -> Command {
        match self {
            QueueOp::Enqueue { publisher, message } => Command::Enqueue {
                publisher: *publisher,
                size: u32::try_from(message.body().len()).unwrap_or(u32::MAX),
                expires: message.expires(),
            },
            QueueOp::Command(c) => c.clone(),
        }
    }
}

/// The ops of one log entry, applied in order.
#[derive(Clone, Debug, Default)]
pub struct QueueBatch(pub Vec<QueueOp>);

/// What applying one entry produced, for the leader's queue runtime.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct QueueResponse {
    /// One reply per op of the batch, in order.
    pub replies: Vec<Reply>,
    /// Messages now held by consumers.
    pub deliveries: Vec<Delivery>,
    /// Messages a consumer already held when it checked out again (it
    /// attaches to a new leader): sent again, as redelivered.
    #[serde(default)]
    pub resent: Vec<Delivery>,
    /// The bodies of `deliveries` and of messages got, by id. Not
    /// serialized: responses never leave the node that applied them.
    #[serde(skip)]
    pub bodies: Vec<(MsgId, Message)>,
    /// Messages to dead-letter: id, why and body (on the leader only; not
    /// serialized either).
    #[serde(skip)]
    pub dead: Vec<(MsgId, warren_core::dead_letter::Reason, Message)>,
}

openraft::declare_raft_types!(
    /// openraft's types for a quorum queue's group.
    pub QueueRaft:
        D = QueueBatch,
        R = QueueResponse,
        NodeId = NodeId,
        Node = BasicNode,
        // A file: a snapshot carries the bodies of every live message.
        SnapshotData = tokio::fs::File,
);

/// A log entry of a quorum queue's group.
pub type QueueEntry = Entry<QueueRaft>;

/// The JSON frame of an entry: everything but a batch.
#[derive(serde::Serialize, serde::Deserialize)]
struct Frame {
    log_id: LogId<NodeId>,
    /// 0 blank, 1 normal (a batch follows), 2 membership.
    kind: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    membership: Option<Membership<NodeId, BasicNode>>,
}

impl LogCodec for QueueRaft {
    fn encode_entry(e: &QueueEntry) -> Result<Vec<u8>, AnyError> {
        let (kind, membership, batch) = match &e.payload {
            EntryPayload::Blank => (0, None, None),
            EntryPayload::Normal(b) => (1, None, Some(b)),
            EntryPayload::Membership(m) => (2, Some(m.clone()), None),
        };
        let frame = serde_json::to_vec(&Frame {
            log_id: e.log_id,
            kind,
            membership,
        })
        .map_err(|e| AnyError::new(&e))?;
        let mut out = Vec::with_capacity(frame.len() + 64);
        Enc(&mut out).u8(V2).u32(frame.len() as u32);
        out.extend_from_slice(&frame);
        if let Some(b) = batch {
            encode_batch(b, &mut out);
        }
        Ok(out)
    }

    fn decode_entry(b: &[u8]) -> Result<QueueEntry, AnyError> {
        decode_entry(b).map_err(|e| AnyError::new(&e))
    }
}

fn decode_entry(b: &[u8]) -> Result<QueueEntry, StoreError> {
    let mut d = Dec(b);
    if d.u8()? != V2 {
        return Err(corrupt("queue entry: unknown format version"));
    }
    let n = d.u32()? as usize;
    let frame: Frame =
        serde_json::from_slice(d.take(n)?).map_err(|_| corrupt("queue entry frame"))?;
    let payload = match (frame.kind, frame.membership) {
        (0, None) if d.0.is_empty() => EntryPayload::Blank,
        (1, None) => EntryPayload::Normal(decode_batch(&mut d)?),
        (2, Some(m)) if d.0.is_empty() => EntryPayload::Membership(m),
        _ => return Err(corrupt("queue entry kind")),
    };
    Ok(Entry {
        log_id: frame.log_id,
        payload,
    })
}

/// Command tags of the binary encoding.
mod tag {
    pub const ENQUEUE: u8 = 0;
    pub const CHECKOUT: u8 = 1;
    pub const CANCEL: u8 = 2;
    pub const SETTLE: u8 = 3;
    pub const RETURN: u8 = 4;
    pub const DISCARD: u8 = 5;
    pub const DEQUEUE: u8 = 6;
    pub const PURGE: u8 = 7;
    pub const CHANNEL_DOWN: u8 = 8;
    pub const NODE_DOWN: u8 = 9;
    pub const CLOCK: u8 = 10;
    pub const DEAD_LETTERED: u8 = 11;
    pub const DEAD_LETTER_AGAIN: u8 = 12;
    pub const CONFIGURE: u8 = 13;
}

/// Appends the binary form of a batch to `out`.
pub fn encode_batch(b: &QueueBatch, out: &mut Vec<u8>) {
    Enc(out).u32(b.0.len() as u32);
    let mut msg = Vec::new();
    for op in &b.0 {
        match op {
            QueueOp::Enqueue { publisher, message } => {
                let mut e = Enc(out);
                e.u8(tag::ENQUEUE);
                match publisher {
                    Some(p) => e.u8(1).u64(p.channel).u64(p.seq),
                    None => e.u8(0),
                };
                encode_message(message, &mut msg);
                e.u32(msg.len() as u32);
                out.extend_from_slice(&msg);
            }
            QueueOp::Command(c) => encode_command(c, out),
        }
    }
}

fn encode_command(c: &Command, out: &mut Vec<u8>) {
    let key = |e: &mut Enc<'_>, k: &ConsumerKey| {
        e.u64(k.channel).str(&k.tag);
    };
    let ids = |e: &mut Enc<'_>, ids: &[MsgId]| {
        e.u32(ids.len() as u32);
        for id in ids {
            e.u64(*id);
        }
    };
    let mut e = Enc(out);
    match c {
        // Enqueues travel as `QueueOp::Enqueue`, with their message; a bare
        // one (no body) is written as a message-less enqueue and refused on
        // decode, which cannot happen for ops built by `QueueOp`.
        Command::Enqueue { .. } => {
            e.u8(u8::MAX);
        }
        Command::Checkout {
            consumer,
            node,
            prefetch,
            no_ack,
        } => {
            e.u8(tag::CHECKOUT);
            key(&mut e, consumer);
            e.u64(*node).u32(*prefetch).u8(u8::from(*no_ack));
        }
        Command::Cancel { consumer } => {
            e.u8(tag::CANCEL);
            key(&mut e, consumer);
        }
        Command::Settle { channel, ids: i }
        | Command::Return { channel, ids: i }
        | Command::Discard { channel, ids: i } => {
            e.u8(match c {
                Command::Settle { .. } => tag::SETTLE,
                Command::Return { .. } => tag::RETURN,
                _ => tag::DISCARD,
            });
            e.u64(*channel);
            ids(&mut e, i);
        }
        Command::Dequeue {
            channel,
            node,
            no_ack,
        } => {
            e.u8(tag::DEQUEUE)
                .u64(*channel)
                .u64(*node)
                .u8(u8::from(*no_ack));
        }
        Command::Purge => {
            e.u8(tag::PURGE);
        }
        Command::ChannelDown { channel } => {
            e.u8(tag::CHANNEL_DOWN).u64(*channel);
        }
        Command::NodeDown { node } => {
            e.u8(tag::NODE_DOWN).u64(*node);
        }
        Command::Clock { now } => {
            e.u8(tag::CLOCK).u64(*now);
        }
        Command::DeadLettered { ids: i } => {
            e.u8(tag::DEAD_LETTERED);
            ids(&mut e, i);
        }
        Command::DeadLetterAgain => {
            e.u8(tag::DEAD_LETTER_AGAIN);
        }
        Command::Configure { config } => {
            // The settings grow with RabbitMQ's arguments, as in a snapshot.
            let json = serde_json::to_string(config).unwrap_or_else(|_| "{}".into());
            e.u8(tag::CONFIGURE).str(&json);
        }
    }
}

/// Reads a batch written by [`encode_batch`]. Corrupt input is an error,
/// never a panic or an allocation sized by the input.
pub(crate) fn decode_batch(d: &mut Dec<'_>) -> Result<QueueBatch, StoreError> {
    let n = d.u32()? as usize;
    // The count is the input's word: reserve for a few ops at most.
    let mut ops = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        ops.push(decode_op(d)?);
    }
    if !d.0.is_empty() {
        return Err(corrupt("queue batch: trailing bytes"));
    }
    Ok(QueueBatch(ops))
}

fn decode_op(d: &mut Dec<'_>) -> Result<QueueOp, StoreError> {
    let key = |d: &mut Dec<'_>| -> Result<ConsumerKey, StoreError> {
        let channel = d.u64()?;
        Ok(ConsumerKey::new(channel, d.str()?))
    };
    let ids = |d: &mut Dec<'_>| -> Result<Vec<MsgId>, StoreError> {
        let n = d.u32()? as usize;
        let mut out = Vec::with_capacity(n.min(d.0.len() / 8).min(1024));
        for _ in 0..n {
            out.push(d.u64()?);
        }
        Ok(out)
    };
    let flag = |d: &mut Dec<'_>| -> Result<bool, StoreError> {
        match d.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(corrupt("queue op flag")),
        }
    };
    let command = match d.u8()? {
        tag::ENQUEUE => {
            let publisher = if flag(d)? {
                Some(Publisher {
                    channel: d.u64()?,
                    seq: d.u64()?,
                })
            } else {
                None
            };
            let n = d.u32()? as usize;
            let message = decode_message(d.take(n)?)?;
            return Ok(QueueOp::Enqueue { publisher, message });
        }
        tag::CHECKOUT => Command::Checkout {
            consumer: key(d)?,
            node: d.u64()?,
            prefetch: d.u32()?,
            no_ack: flag(d)?,
        },
        tag::CANCEL => Command::Cancel { consumer: key(d)? },
        tag::SETTLE => Command::Settle {
            channel: d.u64()?,
            ids: ids(d)?,
        },
        tag::RETURN => Command::Return {
            channel: d.u64()?,
            ids: ids(d)?,
        },
        tag::DISCARD => Command::Discard {
            channel: d.u64()?,
            ids: ids(d)?,
        },
        tag::DEQUEUE => Command::Dequeue {
            channel: d.u64()?,
            node: d.u64()?,
            no_ack: flag(d)?,
        },
        tag::PURGE => Command::Purge,
        tag::CHANNEL_DOWN => Command::ChannelDown { channel: d.u64()? },
        tag::NODE_DOWN => Command::NodeDown { node: d.u64()? },
        tag::CLOCK => Command::Clock { now: d.u64()? },
        tag::DEAD_LETTERED => Command::DeadLettered { ids: ids(d)? },
        tag::DEAD_LETTER_AGAIN => Command::DeadLetterAgain,
        tag::CONFIGURE => Command::Configure {
            config: serde_json::from_str(d.str()?).map_err(|e| corrupt(&e.to_string()))?,
        },
        _ => return Err(corrupt("queue op tag")),
    };
    Ok(QueueOp::Command(command))
}

/// openraft's serde bound on entry data: a batch serializes as its binary
/// form. Warren's own paths (the log store, the queue groups' RPCs) use
/// [`encode_batch`] directly; this exists for openraft's generic code.
impl serde::Serialize for QueueBatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::new();
        encode_batch(self, &mut out);
        s.serialize_bytes(&out)
    }
}

impl<'de> serde::Deserialize<'de> for QueueBatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the bytes of a queue batch")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        let bytes = d.deserialize_bytes(Bytes)?;
        decode_batch(&mut Dec(&bytes)).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[path = "queue_test.rs"]
mod tests;
