//! Metadata larger than one gRPC message: a node that was down while
//! thousands of queues and bindings were declared catches up through a
//! snapshot several MiB long, and a fresh node added to such a cluster gets
//! the same snapshot. Before snapshots travelled as raw bytes in chunks of
//! bounded size, the snapshot was one JSON-encoded message over tonic's
//! 4 MiB limit, refused on every attempt: the node never caught up.

mod common;

use std::time::Instant;

use common::BIN;
use lapin::Connection;
use lapin::options::QueueBindOptions;
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options};

/// Concurrent declarers (one channel each).
const WORKERS: usize = 16;

/// `count` durable queues named `{prefix}-{i}`, each bound to `amq.topic`
/// with a key of its own, declared by [`WORKERS`] channels of `conn` at once.
/// Long names and keys make every definition a few hundred bytes.
async fn declare_bound(conn: &Connection, prefix: &str, count: usize) {
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let ch = channel(conn).await;
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (w..count).step_by(WORKERS) {
                let name = format!("{prefix}-{i:05}-{}", "q".repeat(80));
                declare_with(&ch, &name, durable()).await.expect("declare");
                let key = format!("{prefix}.{i}.{}", "k".repeat(80));
                ch.queue_bind(
                    name.as_str().into(),
                    "amq.topic".into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    headers(&[("x-match", "all"), ("padding", &"p".repeat(64))]),
                )
                .await
                .expect("bind");
            }
        }));
    }
    for t in tasks {
        t.await.expect("declarer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_thousands_of_queues_catches_up_through_a_large_snapshot() {
    let mut c = Cluster::new(BIN, &[1, 2, 3, 4], Options::default());
    let founders = c.peer_list(&[1, 2, 3]);
    for id in [1, 2, 3] {
        c.start_with_peers(id, Some(founders.clone()));
    }
    c.wait_leader(&[1, 2, 3]).await;
    let n1 = c.connect(1).await;

    // 5,000 queues with a binding each (10,000 entries: a snapshot is built).
    let started = Instant::now();
    declare_bound(&n1, "first", 5000).await;
    println!(
        "5,000 queues and bindings declared in {} ms",
        started.elapsed().as_millis()
    );

    // Node 3 stops; 6,000 more metadata changes go past it, enough for the
    // others to build a new snapshot and purge the log it would need.
    c.kill9(3);
    declare_bound(&n1, "second", 3000).await;
    let target = c.applied(1).await.expect("node 1 applied index");
    let st = c.status(1).await.expect("status");
    let me = st.members.iter().find(|m| m.id == 1).expect("self");
    assert!(
        me.snapshot.is_some_and(|s| s > 10_000),
        "node 1 built a snapshot after node 3 stopped: {me:?}"
    );

    // Node 3 returns and catches up (through a snapshot: the log it lacks
    // is gone); the bounded wait is the 30 s the issue allows.
    c.restart(3);
    let back = Instant::now();
    c.wait_applied(&[3], target).await;
    println!(
        "node 3 caught up to {target} in {} ms",
        back.elapsed().as_millis()
    );
    let st = c.status(3).await.expect("status of node 3");
    let me = st.members.iter().find(|m| m.id == 3).expect("self");
    assert!(
        me.snapshot.is_some_and(|s| s > 10_000),
        "node 3 installed a snapshot: {me:?}"
    );
    let n3 = c.connect(3).await;
    let last = format!("second-02999-{}", "q".repeat(80));
    let first = format!("first-00000-{}", "q".repeat(80));
    for q in [&first, &last] {
        wait_queue(&n3, q, 0).await;
    }

    // A fresh node added to the cluster gets the same snapshot.
    let peers = c.peer_list(&[1, 4]);
    c.start_with_peers(4, Some(peers));
    let voters = warren_cluster::admin_client::add_node(
        c.security(),
        &c.node(1).cluster_addr(),
        4,
        &c.node(4).cluster_addr(),
    )
    .await
    .expect("add node 4");
    assert!(voters.iter().any(|m| m.id == 4 && m.voter), "{voters:?}");
    let n4 = c.connect(4).await;
    for q in [&first, &last] {
        wait_queue(&n4, q, 0).await;
    }
    // The bindings came along: a publish through node 4 reaches the queue.
    let ch4 = channel(&n4).await;
    confirms(&ch4).await;
    let key = format!("first.0.{}", "k".repeat(80));
    let ok = publish_confirmed(&ch4, "amq.topic", &key, b"via node 4", persistent()).await;
    assert!(ok.is_ack());
    assert_eq!(count(&channel(&n1).await, &first).await, 1);
}
