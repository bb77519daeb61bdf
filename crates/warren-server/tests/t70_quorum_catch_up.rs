//! A replica of a quorum queue that was down while a long backlog built up
//! catches up through a snapshot the leader streams to it (the leader's log
//! was purged behind its snapshots long before), and is back in service: it
//! leads the queue and delivers every message, each body intact, once.
//!
//! The backlog is `WARREN_BACKLOG` messages (default 200,000 of 64 bytes, a
//! size two shared cores publish in well under a minute in the test
//! profile); the time from the restart until the replica has applied what
//! the leader had is printed. docs/benchmarks.md reports the release build
//! at one million.

mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::BIN;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use warren_cluster::pb::MemberChange;
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, wait_for_async, wait_for_async_within};

const QUEUE: &str = "qq.backlog";
/// Publishes awaiting their confirm at once.
const WINDOW: usize = 2000;
/// Bound on the catch-up wait: it ends a hang; the time is reported.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(180);

fn backlog() -> u64 {
    std::env::var("WARREN_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    t
}

/// A 64-byte body that names message `i`.
fn body(i: u64) -> Vec<u8> {
    format!("{i:0>64}").into_bytes()
}

/// Node `id`'s replica of the queue: (last applied index, ready messages).
async fn replica(c: &Cluster, id: u64) -> Option<(u64, u64)> {
    c.queue_status(id)
        .await
        .into_iter()
        .find(|r| r.queue == QUEUE && r.node == id)
        .map(|r| (r.last_applied.unwrap_or(0), r.ready))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_behind_a_long_backlog_catches_up_and_serves() {
    let n = backlog();
    let mut opts = Options::default();
    // `WARREN_CATCH_UP_LOG=debug` (a log level) for the nodes' logs.
    if let Ok(level) = std::env::var("WARREN_CATCH_UP_LOG") {
        opts.extra = vec!["--log-level".into(), level];
    }
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], opts);
    c.wait_leader(&[1, 2, 3]).await;
    let n1 = c.connect(1).await;
    let ch = channel(&n1).await;
    ch.queue_declare(QUEUE.into(), durable(), quorum())
        .await
        .expect("declare the quorum queue");
    let mut members = c.replica_nodes(1, QUEUE).await;
    members.sort_unstable();
    assert_eq!(members, vec![1, 2, 3]);
    // Node 1 leads, so the publisher's node and the leader stay up.
    c.queue_members(1, QUEUE, 1, MemberChange::TransferLeader)
        .await
        .expect("node 1 leads");

    c.kill9(3);
    confirms(&ch).await;
    let started = Instant::now();
    let mut pending = VecDeque::new();
    for i in 0..n {
        let confirm = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                &body(i),
                persistent(),
            )
            .await
            .expect("publish");
        pending.push_back(confirm);
        if pending.len() >= WINDOW
            && let Some(c) = pending.pop_front()
        {
            assert!(c.await.expect("confirm").is_ack(), "message nacked");
        }
    }
    for c in pending {
        assert!(c.await.expect("confirm").is_ack(), "message nacked");
    }
    let published = started.elapsed();
    let (target, ready) = replica(&c, 1).await.expect("node 1's replica");
    assert_eq!(ready, n, "the leader holds the backlog");
    println!("published {n} messages in {published:?}; the leader applied up to {target}");

    // Back: the leader's log no longer reaches back to where node 3 was,
    // so it gets the state and the bodies as a snapshot.
    c.restart(3);
    let restarted = Instant::now();
    wait_for_async_within(
        "node 3 caught up with the backlog",
        CATCH_UP_LIMIT,
        || async {
            replica(&c, 3)
                .await
                .is_some_and(|(applied, ready)| applied >= target && ready == n)
        },
    )
    .await;
    let caught_up = restarted.elapsed();
    println!("node 3 caught up with {n} messages {caught_up:?} after its restart");
    assert!(
        c.log(3).contains("installed a quorum queue snapshot"),
        "node 3 caught up through a snapshot"
    );

    // In service: node 3 leads and delivers every message from its own
    // store, in order, each once.
    c.queue_members(1, QUEUE, 3, MemberChange::TransferLeader)
        .await
        .expect("node 3 leads");
    wait_for_async("node 3 leads the queue", || async {
        c.queue_status(3)
            .await
            .iter()
            .any(|r| r.queue == QUEUE && r.node == 3 && r.state == "leader")
    })
    .await;
    c.kill9(1);
    let n3 = c.connect(3).await;
    let ch3 = channel(&n3).await;
    ch3.basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = consume(&ch3, QUEUE, "drain", false).await;
    let mut next = 0u64;
    while next < n {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("message {next} of {n} never came"))
            .expect("the consumer ended")
            .expect("a delivery");
        if d.data != body(next) {
            if std::env::var("WARREN_CATCH_UP_LOG").is_ok() {
                println!("--- node 3\n{}", c.log(3));
            }
            panic!(
                "message {next} expected, got {}",
                String::from_utf8_lossy(&d.data)
            );
        }
        next += 1;
        if next.is_multiple_of(500) || next == n {
            d.ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
    }
    assert_eq!(count(&ch3, QUEUE).await, 0);
}
