//! How each Raft group type's requests travel: [`GroupWire`].
//!
//! Group 0's AppendEntries go as openraft's own request in JSON, as they
//! always have (metadata entries are small, and a node of an earlier version
//! reads them). A quorum queue's entries carry message bodies, so they travel
//! in the binary form of its log ([`LogCodec`]): the JSON part keeps only the
//! request's frame (vote, previous log id, commit index), and the entries go
//! raw in the request's `data` field, each prefixed by its length.

use openraft::raft::AppendEntriesRequest;
use openraft::{AnyError, BasicNode};
use warren_store::raft::{LogCodec, MetaRaft, QueueRaft};

/// The encoding of one group type's AppendEntries requests.
/// A group's snapshot data is anything openraft can send in chunks: an
/// in-memory buffer for group 0, a file for a quorum queue.
pub trait GroupWire:
    LogCodec<
        Node = BasicNode,
        SnapshotData: tokio::io::AsyncRead + tokio::io::AsyncWrite + tokio::io::AsyncSeek + Unpin,
    >
{
    /// The request as (JSON payload, raw data).
    fn encode_append(rpc: &AppendEntriesRequest<Self>) -> Result<(Vec<u8>, Vec<u8>), AnyError> {
        let payload = serde_json::to_vec(rpc).map_err(|e| AnyError::new(&e))?;
        Ok((payload, Vec::new()))
    }

    /// The request from (JSON payload, raw data).
    fn decode_append(payload: &[u8], _data: &[u8]) -> Result<AppendEntriesRequest<Self>, AnyError> {
        serde_json::from_slice(payload).map_err(|e| AnyError::new(&e))
    }
}

impl GroupWire for MetaRaft {}

impl GroupWire for QueueRaft {
    fn encode_append(rpc: &AppendEntriesRequest<Self>) -> Result<(Vec<u8>, Vec<u8>), AnyError> {
        let frame = AppendEntriesRequest::<Self> {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            entries: Vec::new(),
            leader_commit: rpc.leader_commit,
        };
        let payload = serde_json::to_vec(&frame).map_err(|e| AnyError::new(&e))?;
        let mut data = Vec::new();
        for e in &rpc.entries {
            let bytes = Self::encode_entry(e)?;
            let len = u32::try_from(bytes.len())
                .map_err(|_| AnyError::error("a log entry over 4 GiB"))?;
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(&bytes);
        }
        Ok((payload, data))
    }

    fn decode_append(payload: &[u8], data: &[u8]) -> Result<AppendEntriesRequest<Self>, AnyError> {
        let mut rpc: AppendEntriesRequest<Self> =
            serde_json::from_slice(payload).map_err(|e| AnyError::new(&e))?;
        if !rpc.entries.is_empty() {
            return Err(AnyError::error("queue entries inside the JSON frame"));
        }
        let mut rest = data;
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| AnyError::error("truncated entry length"))?;
            let len = u32::from_be_bytes(*len) as usize;
            if tail.len() < len {
                return Err(AnyError::error("truncated entry"));
            }
            let (entry, tail) = tail.split_at(len);
            rpc.entries.push(Self::decode_entry(entry)?);
            rest = tail;
        }
        Ok(rpc)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    use warren_core::message::MessageFlags;
    use warren_core::quorum::Command;
    use warren_core::{Message, NodeId};
    use warren_store::raft::queue::{QueueBatch, QueueOp};

    use super::*;

    fn id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(2, 1), index)
    }

    #[test]
    fn queue_entries_travel_in_binary_beside_a_json_frame() {
        let body = vec![7u8; 10_000];
        let message = Message::new("".into(), "q", &[], [&body[..]], MessageFlags::default());
        let entries = vec![
            Entry::<QueueRaft> {
                log_id: id(5),
                payload: EntryPayload::Blank,
            },
            Entry::<QueueRaft> {
                log_id: id(6),
                payload: EntryPayload::Normal(QueueBatch(vec![
                    QueueOp::Enqueue {
                        publisher: None,
                        message,
                    },
                    QueueOp::Command(Command::Settle {
                        channel: 1,
                        ids: vec![3],
                    }),
                ])),
            },
        ];
        let rpc = AppendEntriesRequest::<QueueRaft> {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(id(4)),
            entries,
            leader_commit: Some(id(4)),
        };
        let (payload, data) = QueueRaft::encode_append(&rpc).expect("encode");
        assert!(payload.len() < 300, "frame only: {} bytes", payload.len());
        assert!(
            data.len() < body.len() + 400,
            "bodies raw: {} bytes",
            data.len()
        );
        let back = QueueRaft::decode_append(&payload, &data).expect("decode");
        assert_eq!(back.vote, rpc.vote);
        assert_eq!(back.prev_log_id, rpc.prev_log_id);
        assert_eq!(back.leader_commit, rpc.leader_commit);
        assert_eq!(back.entries.len(), 2);
        let EntryPayload::Normal(batch) = &back.entries[1].payload else {
            panic!("not a batch")
        };
        let QueueOp::Enqueue { message, .. } = &batch.0[0] else {
            panic!("not an enqueue")
        };
        assert_eq!(message.body(), &body[..]);
        // Truncated data is an error, not a panic.
        for cut in [1, 3, 5, data.len() - 1] {
            assert!(QueueRaft::decode_append(&payload, &data[..cut]).is_err());
        }
    }

    #[test]
    fn metadata_requests_stay_openraft_json() {
        let rpc = AppendEntriesRequest::<MetaRaft> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: vec![Entry::<MetaRaft> {
                log_id: id(1),
                payload: EntryPayload::Blank,
            }],
            leader_commit: None,
        };
        let (payload, data) = MetaRaft::encode_append(&rpc).expect("encode");
        assert!(data.is_empty());
        let plain: AppendEntriesRequest<MetaRaft> =
            serde_json::from_slice(&payload).expect("openraft's own JSON");
        assert_eq!(plain.entries.len(), 1);
    }
}
