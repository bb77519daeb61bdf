use std::collections::{BTreeMap, BTreeSet};

use openraft::{CommittedLeaderId, LogId};
use warren_core::message::MessageFlags;

use super::*;

fn message(body: &[u8]) -> Message {
    Message::new(
        "amq.direct".into(),
        "task_queue",
        &[0x10, 0, 2],
        [body],
        MessageFlags {
            persistent: true,
            priority: 0,
            expires: None,
        },
    )
}

fn every_op() -> Vec<QueueOp> {
    let key = ConsumerKey::new(7, "ctag-1");
    vec![
        QueueOp::Enqueue {
            publisher: Some(Publisher {
                channel: 7,
                seq: 42,
            }),
            message: message(b"hello"),
        },
        QueueOp::Enqueue {
            publisher: None,
            message: message(&[0u8; 3000]),
        },
        QueueOp::Command(Command::Checkout {
            consumer: key.clone(),
            node: 3,
            prefetch: 100,
            no_ack: true,
        }),
        QueueOp::Command(Command::Cancel {
            consumer: key.clone(),
        }),
        QueueOp::Command(Command::Settle {
            channel: key.channel,
            ids: vec![1, 2, u64::MAX],
        }),
        QueueOp::Command(Command::Return {
            channel: key.channel,
            ids: vec![],
        }),
        QueueOp::Command(Command::Discard {
            channel: 9,
            ids: vec![5],
        }),
        QueueOp::Command(Command::Dequeue {
            channel: 9,
            node: 2,
            no_ack: false,
        }),
        QueueOp::Command(Command::Purge),
        QueueOp::Command(Command::ChannelDown { channel: 7 }),
        QueueOp::Command(Command::NodeDown { node: 3 }),
        QueueOp::Command(Command::DeadLettered { ids: vec![4, 5] }),
        QueueOp::Command(Command::DeadLetterAgain),
        QueueOp::Command(Command::Configure {
            config: warren_core::quorum::QuorumConfig {
                message_ttl: Some(60_000),
                dead_letters: true,
                ..Default::default()
            },
        }),
    ]
}

fn id(index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(4, 2), index)
}

/// A message's body, routing key and raw properties.
type Said = (Vec<u8>, String, Vec<u8>);

/// What an op says, comparable (a message has no `PartialEq`).
fn said(op: &QueueOp) -> (Command, Option<Said>) {
    let body = match op {
        QueueOp::Enqueue { message, .. } => Some((
            message.body().to_vec(),
            message.routing_key().to_owned(),
            message.raw_properties().to_vec(),
        )),
        QueueOp::Command(_) => None,
    };
    (op.command(), body)
}

#[test]
fn entries_round_trip_in_binary() {
    let batch = QueueEntry {
        log_id: id(10),
        payload: EntryPayload::Normal(QueueBatch(every_op())),
    };
    let bytes = QueueRaft::encode_entry(&batch).expect("encode");
    let back = QueueRaft::decode_entry(&bytes).expect("decode");
    assert_eq!(back.log_id, id(10));
    let EntryPayload::Normal(ops) = back.payload else {
        panic!("not a batch")
    };
    let want: Vec<_> = every_op().iter().map(said).collect();
    let got: Vec<_> = ops.0.iter().map(said).collect();
    assert_eq!(got, want);
    // A 3000-byte body costs about 3000 bytes, not 3 digits and a comma each.
    assert!(bytes.len() < 3500, "{} bytes", bytes.len());

    let blank = QueueEntry {
        log_id: id(11),
        payload: EntryPayload::Blank,
    };
    let back =
        QueueRaft::decode_entry(&QueueRaft::encode_entry(&blank).expect("encode")).expect("decode");
    assert!(matches!(back.payload, EntryPayload::Blank));

    let nodes: BTreeMap<NodeId, BasicNode> = (1..=3)
        .map(|n| (n, BasicNode::new(format!("10.0.0.{n}:25672"))))
        .collect();
    let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
    let change = QueueEntry {
        log_id: id(12),
        payload: EntryPayload::Membership(membership.clone()),
    };
    let back = QueueRaft::decode_entry(&QueueRaft::encode_entry(&change).expect("encode"))
        .expect("decode");
    let EntryPayload::Membership(m) = back.payload else {
        panic!("not a membership")
    };
    assert_eq!(m, membership);
}

#[test]
fn a_corrupt_entry_is_an_error_never_a_panic() {
    let entry = QueueEntry {
        log_id: id(3),
        payload: EntryPayload::Normal(QueueBatch(every_op())),
    };
    let bytes = QueueRaft::encode_entry(&entry).expect("encode");
    for cut in 0..bytes.len() {
        assert!(
            QueueRaft::decode_entry(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(QueueRaft::decode_entry(&longer).is_err());
    // A count that claims four billion ops allocates nothing up front.
    let mut huge = Vec::new();
    Enc(&mut huge).u32(u32::MAX);
    assert!(decode_batch(&mut Dec(&huge)).is_err());
    let mut other = bytes;
    other[0] = 1;
    assert!(QueueRaft::decode_entry(&other).is_err());
}

#[test]
fn openraft_sees_a_batch_through_serde_as_its_bytes() {
    let batch = QueueBatch(every_op());
    let json = serde_json::to_vec(&batch).expect("serialize");
    let back: QueueBatch = serde_json::from_slice(&json).expect("deserialize");
    let want: Vec<_> = batch.0.iter().map(said).collect();
    let got: Vec<_> = back.0.iter().map(said).collect();
    assert_eq!(got, want);
}
