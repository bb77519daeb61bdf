use std::io::Write;

use openraft::{CommittedLeaderId, Entry, RaftSnapshotBuilder};
use tokio::io::AsyncReadExt;
use warren_core::message::MessageFlags;
use warren_core::quorum::{Command, ConsumerKey, Publisher};

use super::super::queue::QueueBatch;
use super::*;
use crate::codec::encode_message;

fn id(index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn message(body: &str) -> Message {
    Message::new(
        "".into(),
        "qq",
        &[],
        [body.as_bytes()],
        MessageFlags {
            persistent: true,
            priority: 0,
            expires: None,
        },
    )
}

/// A body as the store holds it once the writer has written what the
/// applies so far handed it (they do not wait for it).
async fn stored(sm: &QueueStateMachine, id: MsgId) -> Option<Message> {
    sm.writer.write(Vec::new()).await.expect("writer");
    sm.body(id).expect("read")
}

fn enqueue(seq: u64, body: &str) -> QueueOp {
    QueueOp::Enqueue {
        publisher: Some(Publisher { channel: 9, seq }),
        message: message(body),
    }
}

fn batch(index: u64, ops: Vec<QueueOp>) -> QueueEntry {
    Entry {
        log_id: id(index),
        payload: EntryPayload::Normal(QueueBatch(ops)),
    }
}

fn bodies(r: &QueueResponse) -> Vec<(MsgId, String)> {
    r.bodies
        .iter()
        .map(|(id, m)| (*id, String::from_utf8_lossy(m.body()).into_owned()))
        .collect()
}

const GROUP: GroupId = 5;

/// A store in `dir`, its writer, and group [`GROUP`]'s state machine on it.
fn open_at(dir: &std::path::Path) -> (Store, Writer, QueueStateMachine) {
    let store = Store::open(dir).expect("open");
    let writer = store.start_writer();
    let sm = QueueStateMachine::open(&store, writer.clone(), GROUP, QuorumConfig::default())
        .expect("open");
    (store, writer, sm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_kept_while_their_messages_live_and_sent_with_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, writer, mut sm) = open_at(dir.path());
    let consumer = ConsumerKey::new(3, "worker");
    let out = sm
        .apply([
            batch(1, vec![enqueue(1, "a"), enqueue(2, "b"), enqueue(3, "c")]),
            batch(
                2,
                vec![
                    // A re-send of seq 2 after a leader change: dropped.
                    enqueue(2, "b"),
                    QueueOp::Command(Command::Checkout {
                        consumer: consumer.clone(),
                        node: 2,
                        prefetch: 2,
                        no_ack: false,
                    }),
                ],
            ),
        ])
        .await
        .expect("apply");
    assert_eq!(
        out[0].replies,
        vec![
            Reply::Enqueued(Some(1)),
            Reply::Enqueued(Some(2)),
            Reply::Enqueued(Some(3))
        ]
    );
    assert_eq!(out[1].replies[0], Reply::Enqueued(None));
    // Delivered bodies of an earlier entry of the same apply call come from
    // that entry: the store does not have them yet.
    assert_eq!(bodies(&out[1]), vec![(1, "a".into()), (2, "b".into())]);
    // Live bodies stay in memory: their log entries are their stored copy
    // until a snapshot lets the log go.
    assert!(stored(&sm, 3).await.is_none());
    assert_eq!(
        sm.unwritten.get(3).map(|m| m.body().to_vec()),
        Some(b"c".to_vec())
    );

    // An ack removes the body and frees credit for message 3.
    let out = sm
        .apply([batch(
            3,
            vec![QueueOp::Command(Command::Settle {
                channel: consumer.channel,
                ids: vec![1],
            })],
        )])
        .await
        .expect("apply");
    assert_eq!(bodies(&out[0]), vec![(3, "c".into())]);
    assert!(stored(&sm, 1).await.is_none());

    // A basic.get with no-ack of a message that arrives in the same batch:
    // its body is in the response though it is gone from the store.
    let out = sm
        .apply([batch(
            4,
            vec![
                enqueue(4, "d"),
                QueueOp::Command(Command::Dequeue {
                    channel: 8,
                    node: 1,
                    no_ack: true,
                }),
            ],
        )])
        .await
        .expect("apply");
    assert_eq!(bodies(&out[0]), vec![(4, "d".into())]);
    assert!(stored(&sm, 4).await.is_none());

    // Snapshot, then send it to a replica on another store.
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    // The snapshot copied the live bodies to the store first.
    for (id, body) in [(2, b"b"), (3, b"c")] {
        let got = stored(&sm, id).await.map(|m| m.body().to_vec());
        assert_eq!(got, Some(body.to_vec()), "body {id} stored");
    }
    let sent = sm
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("a snapshot");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Store::open(other_dir.path()).expect("open");
    let other_writer = other.start_writer();
    let mut replica =
        QueueStateMachine::open(&other, other_writer.clone(), GROUP, QuorumConfig::default())
            .expect("open");
    // What the replica held before is replaced: a body the new state does
    // not name goes, another group's stays.
    let stale = |group: GroupId, id: MsgId| {
        let mut v = Vec::new();
        encode_message(&message("old"), &mut v);
        Op::RaftPut(RaftCf::Bodies, key::entry(group, id), v)
    };
    other_writer
        .write_sync(vec![stale(GROUP, 1), stale(GROUP, 9), stale(GROUP + 1, 1)])
        .await
        .expect("write");
    replica
        .install_snapshot(&sent.meta, sent.snapshot)
        .await
        .expect("install");
    assert_eq!(replica.state(), sm.state());
    for id in [2, 3] {
        assert!(replica.body(id).expect("read").is_some(), "body {id} sent");
    }
    assert!(replica.body(1).expect("read").is_none());
    assert!(replica.body(9).expect("read").is_none());
    replica.group = GROUP + 1;
    assert!(
        replica.body(1).expect("read").is_some(),
        "another group's body"
    );
    replica.group = GROUP;
    // The replica goes on from there as the original does.
    let next = batch(
        5,
        vec![QueueOp::Command(Command::ChannelDown { channel: 3 })],
    );
    let a = sm.apply([next.clone()]).await.expect("apply");
    let b = replica.apply([next]).await.expect("apply");
    assert_eq!(a[0].replies, b[0].replies);
    assert_eq!(replica.state(), sm.state());
    assert_eq!(replica.state().ready_len(), 2);
    other_writer.close().await.expect("close");

    // After a restart the state comes back from the stored snapshot.
    writer.close().await.expect("close");
    drop(sm);
    drop(store);
    let (_store, writer, mut sm) = open_at(dir.path());
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(id(4)));
    assert_eq!(sm.state().checked_len(), 2);
    writer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_snapshot_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, writer, mut sm) = open_at(dir.path());
    sm.apply([batch(1, vec![enqueue(1, "a")])])
        .await
        .expect("apply");
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let sent = sm
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("a snapshot");
    let mut bytes = Vec::new();
    let mut file = sent.snapshot;
    file.read_to_end(&mut bytes).await.expect("read");
    for cut in [2, 10, 20, bytes.len() - 1] {
        let mut part = tempfile::tempfile().expect("tempfile");
        part.write_all(&bytes[..cut]).expect("write");
        let r = sm
            .install_snapshot(&sent.meta, Box::new(tokio::fs::File::from_std(part)))
            .await;
        assert!(r.is_err(), "cut at {cut}");
    }
    // The whole file installs.
    let mut whole = tempfile::tempfile().expect("tempfile");
    whole.write_all(&bytes).expect("write");
    sm.install_snapshot(&sent.meta, Box::new(tokio::fs::File::from_std(whole)))
        .await
        .expect("install");
    assert_eq!(sm.state().ready_len(), 1);
    writer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_due_once_the_log_outweighs_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, writer, mut sm) = open_at(dir.path());
    let counts = sm.counts();
    let big = "x".repeat(3 << 20);
    for (i, seq) in (1..=3).enumerate() {
        assert!(!counts.take_snapshot_due(), "not due after {i} × 3 MiB");
        sm.apply([batch(seq, vec![enqueue(seq, &big)])])
            .await
            .expect("apply");
    }
    assert!(counts.take_snapshot_due(), "due after 9 MiB");
    assert!(!counts.take_snapshot_due(), "taken once");
    // Building one starts the count again.
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    sm.apply([batch(4, vec![enqueue(4, "small")])])
        .await
        .expect("apply");
    assert!(!counts.take_snapshot_due());
    // A long queue spaces them further: 64 bytes of log per message held.
    assert!(!snapshot_due(9 << 20, 1_000_000));
    assert!(snapshot_due(64_000_000, 1_000_000));
    writer.close().await.expect("close");
}

/// The inode of a snapshot's file, and its whole content read from where
/// the file's offset stands.
async fn inode_and_bytes(s: Snapshot<QueueRaft>) -> (u64, Vec<u8>) {
    use std::os::unix::fs::MetadataExt;
    let mut file = s.snapshot;
    let ino = file.metadata().await.expect("metadata").ino();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await.expect("read");
    (ino, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transfer_file_serves_every_send_of_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, writer, mut sm) = open_at(dir.path());
    sm.apply([batch(1, vec![enqueue(1, "a"), enqueue(2, "b")])])
        .await
        .expect("apply");
    let mut builder = sm.get_snapshot_builder().await;
    builder.build_snapshot().await.expect("build");
    let first = sm.get_current_snapshot().await.expect("current");
    let second = sm.get_current_snapshot().await.expect("current");
    let (ino1, bytes1) = inode_and_bytes(first.expect("a snapshot")).await;
    // The first send read to the end; the second starts at 0 all the same.
    let (ino2, bytes2) = inode_and_bytes(second.expect("a snapshot")).await;
    assert_eq!(ino1, ino2, "the file is written once");
    assert_eq!(bytes1, bytes2);
    assert!(
        bytes1.len() > 16,
        "state and bodies: {} bytes",
        bytes1.len()
    );

    // A newer snapshot gets a file of its own.
    sm.apply([batch(2, vec![enqueue(3, "c")])])
        .await
        .expect("apply");
    let mut builder = sm.get_snapshot_builder().await;
    builder.build_snapshot().await.expect("build");
    let third = sm.get_current_snapshot().await.expect("current");
    let (_, bytes3) = inode_and_bytes(third.expect("a snapshot")).await;
    assert!(
        bytes3.len() > bytes1.len(),
        "the newer state and its bodies"
    );
    writer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_after_the_snapshot_come_back_from_the_log_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, writer, mut sm) = open_at(dir.path());
    let first = batch(1, vec![enqueue(1, "a")]);
    let second = batch(2, vec![enqueue(2, "b")]);
    sm.apply([first]).await.expect("apply");
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    sm.apply([second.clone()]).await.expect("apply");
    assert!(stored(&sm, 2).await.is_none(), "only in its log entry");
    writer.close().await.expect("close");
    drop(sm);
    drop(store);

    // openraft applies the log after the snapshot again; the body of its
    // enqueue is then in memory, the snapshot's one in the store.
    let (_store, writer, mut sm) = open_at(dir.path());
    assert_eq!(sm.applied_state().await.expect("applied").0, Some(id(1)));
    sm.apply([second]).await.expect("apply");
    let consumer = ConsumerKey::new(3, "worker");
    let out = sm
        .apply([batch(
            3,
            vec![QueueOp::Command(Command::Checkout {
                consumer,
                node: 2,
                prefetch: 10,
                no_ack: false,
            })],
        )])
        .await
        .expect("apply");
    assert_eq!(bodies(&out[0]), vec![(1, "a".into()), (2, "b".into())]);
    writer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_an_earlier_process_spilled_is_deleted_with_its_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = "x".repeat(3 << 20);
    // One entry, the last of the log: the ids it creates may be stored.
    let entries = vec![batch(1, (1..=3).map(|i| enqueue(i, &big)).collect())];
    {
        let store = Store::open(dir.path()).expect("open");
        let writer = store.start_writer();
        // The log holds the entries (only their keys matter here).
        let log = vec![Op::RaftPut(RaftCf::Log, key::entry(GROUP, 1), Vec::new())];
        writer.write_sync(log).await.expect("write");
        let mut sm =
            QueueStateMachine::open(&store, writer.clone(), GROUP, QuorumConfig::default())
                .expect("open");
        sm.apply(entries.clone()).await.expect("apply");
        assert!(
            stored(&sm, 1).await.is_some(),
            "past the group's bound the oldest body is written"
        );
        writer.close().await.expect("close");
    }
    // A crash before any snapshot: the log is applied again, and message
    // 1's body is kept in memory, though the store has a copy too.
    let (_store, writer, mut sm) = open_at(dir.path());
    // One apply call, so message 1 goes before the call's spill: its body
    // is still the one kept in memory when it is removed.
    let consumer = ConsumerKey::new(3, "worker");
    let mut replay = entries;
    replay.extend([
        batch(
            2,
            vec![QueueOp::Command(Command::Checkout {
                consumer: consumer.clone(),
                node: 2,
                prefetch: 1,
                no_ack: false,
            })],
        ),
        batch(
            3,
            vec![QueueOp::Command(Command::Settle {
                channel: consumer.channel,
                ids: vec![1],
            })],
        ),
    ]);
    sm.apply(replay).await.expect("apply");
    assert!(
        stored(&sm, 1).await.is_none(),
        "the earlier copy is deleted"
    );
    writer.close().await.expect("close");
}

/// A dead letter of a dead-lettering queue keeps its body until the leader
/// reports it re-published: across a snapshot and a restart, a new
/// leader's `DeadLetterAgain` gets it back with its body, and only
/// `DeadLettered` deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_keeps_its_body_until_re_published_across_a_restart() {
    use warren_core::dead_letter::Reason;
    let config = QuorumConfig {
        dead_letters: true,
        ..QuorumConfig::default()
    };
    let open = |dir: &std::path::Path| {
        let store = Store::open(dir).expect("open");
        let writer = store.start_writer();
        let sm =
            QueueStateMachine::open(&store, writer.clone(), GROUP, config.clone()).expect("open");
        (store, writer, sm)
    };
    let dead = |r: &QueueResponse| -> Vec<(MsgId, Reason, String)> {
        r.dead
            .iter()
            .map(|(id, why, m)| (*id, *why, String::from_utf8_lossy(m.body()).into_owned()))
            .collect()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, writer, mut sm) = open(dir.path());
    let consumer = ConsumerKey::new(3, "worker");
    let out = sm
        .apply([
            batch(1, vec![enqueue(1, "a"), enqueue(2, "b")]),
            batch(
                2,
                vec![QueueOp::Command(Command::Checkout {
                    consumer: consumer.clone(),
                    node: 2,
                    prefetch: 0,
                    no_ack: false,
                })],
            ),
            batch(
                3,
                vec![QueueOp::Command(Command::Discard {
                    channel: 3,
                    ids: vec![1],
                })],
            ),
        ])
        .await
        .expect("apply");
    assert_eq!(dead(&out[2]), vec![(1, Reason::Rejected, "a".into())]);
    // The snapshot spills the live bodies, the dead letter's among them.
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert!(stored(&sm, 1).await.is_some(), "kept until re-published");
    writer.close().await.expect("close");
    drop(sm);
    drop(store);

    // The leader died before re-publishing it: the next one asks again.
    let (_store, writer, mut sm) = open(dir.path());
    assert_eq!(sm.applied_state().await.expect("applied").0, Some(id(3)));
    assert_eq!(sm.state().dead_letters_len(), 1);
    let again = batch(4, vec![QueueOp::Command(Command::DeadLetterAgain)]);
    let out = sm.apply([again]).await.expect("apply");
    assert_eq!(dead(&out[0]), vec![(1, Reason::Rejected, "a".into())]);
    let settled = batch(
        5,
        vec![QueueOp::Command(Command::DeadLettered { ids: vec![1] })],
    );
    let out = sm.apply([settled]).await.expect("apply");
    assert!(dead(&out[0]).is_empty());
    assert_eq!(sm.state().dead_letters_len(), 0);
    assert!(stored(&sm, 1).await.is_none(), "gone once re-published");
    assert!(stored(&sm, 2).await.is_some(), "the live message stays");
    writer.close().await.expect("close");
}
