//! No confirmed message is dropped: a message routed to a queue is either
//! taken by that queue (enqueued, and written first when it must be) and
//! confirmed, or nacked. Each test is a finding of the hardening issue:
//! a delete that failed to commit, a queue declared through another node a
//! moment ago, a transaction whose messages could not be delivered, a home
//! node that stops while another node publishes to it, a connection closed
//! while its node is cut off.

mod common;

use std::collections::BTreeSet;

use common::BIN;
use lapin::options::QueueDeleteOptions;
use lapin::{BasicProperties, Confirmation};
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, wait_for_async};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three nodes and `queue` homed on node 1; node 1 alone on its side of a
/// cut, the other two hold the majority.
async fn three_nodes(
    queue: &str,
    q_opts: lapin::options::QueueDeclareOptions,
) -> (Cluster, lapin::Connection, lapin::Connection) {
    let opts = Options {
        // Longer than the cuts below last, so node 1 is never declared
        // down (which would drop its exclusive queues on its own).
        extra: vec!["--node-down-after-ms".into(), "60000".into()],
        ..Options::default()
    };
    Cluster::three_with_queue(BIN, opts, queue, q_opts).await
}

/// Publishes `n` persistent messages `prefix-i` on `ch` (confirm mode) to
/// `queue`: the bodies the broker acked.
async fn publish_many(ch: &lapin::Channel, queue: &str, prefix: &str, n: u32) -> BTreeSet<String> {
    let mut pending = Vec::new();
    for i in 0..n {
        let body = format!("{prefix}-{i}");
        if let Ok(c) = try_publish(ch, "", queue, body.as_bytes(), persistent()).await {
            pending.push((body, c));
        }
    }
    let mut acked = BTreeSet::new();
    for (body, c) in pending {
        if let Ok(Confirmation::Ack(_)) = c.await {
            acked.insert(body);
        }
    }
    acked
}

/// Every message of `queue`, taken with `basic.get` until it is empty.
async fn drain(ch: &lapin::Channel, queue: &str) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    while let Some(m) = ch
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("get")
    {
        got.insert(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_fails_to_commit_leaves_the_queue_whole() {
    let _turn = SERIAL.lock().await;
    let (mut c, n1, n2) = three_nodes("kept", durable()).await;
    let ch1 = channel(&n1).await;
    confirms(&ch1).await;
    let before = publish_many(&ch1, "kept", "before", 50).await;
    assert_eq!(before.len(), 50);

    tracing::info!("--- node 1 cut off: its queue.delete cannot commit");
    c.cut(1);
    let e = ch1
        .queue_delete("kept".into(), QueueDeleteOptions::default())
        .await
        .expect_err("no majority");
    assert_eq!(code(&e), Some(541), "{}", text(&e));
    c.heal(1);

    tracing::info!("--- healed: the queue still takes and keeps confirmed messages");
    let ch1 = wait_for_async("node 1 serves again", || async {
        let ch = n1.create_channel().await.ok()?;
        passive(&ch, "kept").await.ok().map(|_| ch)
    })
    .await;
    confirms(&ch1).await;
    let after = publish_many(&ch1, "kept", "after", 50).await;
    let ch2 = channel(&n2).await;
    confirms(&ch2).await;
    let remote = publish_many(&ch2, "kept", "remote", 50).await;
    let got = drain(&ch1, "kept").await;
    for m in before.iter().chain(&after).chain(&remote) {
        assert!(got.contains(m), "confirmed message {m} is in the queue");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_right_after_a_declare_elsewhere_is_never_confirmed_and_lost() {
    let _turn = SERIAL.lock().await;
    let (_c, n1, n2) = three_nodes("unused", durable()).await;
    let ch1 = channel(&n1).await;
    let ch2 = channel(&n2).await;
    confirms(&ch2).await;
    const ROUNDS: u32 = 1000;
    let mut acked = Vec::new();
    let mut returned = 0;
    let started = std::time::Instant::now();
    for i in 0..ROUNDS {
        let q = format!("fresh-{i}");
        declare(&ch1, &q).await.expect("declare on node 1");
        let body = format!("m{i}");
        let confirm = ch2
            .basic_publish(
                "".into(),
                q.as_str().into(),
                lapin::options::BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish on node 2")
            .await
            .expect("confirm");
        match confirm {
            Confirmation::Ack(None) => acked.push((q, body)),
            // Node 2 had not applied the declaration yet: unroutable.
            Confirmation::Ack(Some(_)) => returned += 1,
            _ => {}
        }
    }
    tracing::info!(
        acked = acked.len(),
        returned,
        secs = started.elapsed().as_secs_f64(),
        "--- every acked message is in its queue"
    );
    for (q, body) in &acked {
        let m = get_one(&ch1, q, true).await;
        assert_eq!(String::from_utf8_lossy(&m.delivery.data), *body, "{q}");
    }
    assert_eq!(
        returned, 0,
        "a declaration is routed to on every node once declare-ok is sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_queue_is_unreachable_does_not_commit() {
    let _turn = SERIAL.lock().await;
    let (mut c, _n1, n2) = three_nodes("tx-target", durable()).await;

    c.cut(1);
    let ch2 = channel(&n2).await;
    ch2.tx_select().await.expect("tx.select");
    publish(&ch2, "", "tx-target", b"never").await;
    let e = ch2.tx_commit().await.expect_err("the home is unreachable");
    assert_eq!(code(&e), Some(406), "{}", text(&e));
    c.heal(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_that_stops_gracefully_nacks_what_it_did_not_keep() {
    let _turn = SERIAL.lock().await;
    let (mut c, n1, n2) = three_nodes("stopping", durable()).await;
    drop(n1);

    tracing::info!("--- node 2 publishes to node 1's queue while node 1 stops");
    let ch2 = channel(&n2).await;
    confirms(&ch2).await;
    let publisher = tokio::spawn(async move {
        let mut acked = BTreeSet::new();
        for round in 0..400 {
            let batch = publish_many(&ch2, "stopping", &format!("r{round}"), 25).await;
            let done = batch.len() < 25;
            acked.extend(batch);
            if done {
                break;
            }
        }
        acked
    });
    wait_for_async("some messages are in the queue", || async {
        let conn = c.connect(1).await;
        let ch = channel(&conn).await;
        (count(&ch, "stopping").await > 100).then_some(())
    })
    .await;
    assert!(c.terminate(1), "node 1 stops cleanly");
    let acked = publisher.await.expect("publisher");

    tracing::info!("--- after a restart every confirmed message is there");
    c.restart(1);
    let n1 = c.connect(1).await;
    let got = drain(&channel(&n1).await, "stopping").await;
    let missing: Vec<&String> = acked.iter().filter(|m| !got.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "{} confirmed messages lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_queue_goes_with_its_connection_after_a_partition() {
    let _turn = SERIAL.lock().await;
    let (mut c, n1, n2) = three_nodes("mine", exclusive()).await;

    tracing::info!("--- the connection closes while its node is cut off");
    c.cut(1);
    let _ = n1.close(200, "bye".into()).await;
    c.heal(1);
    wait_for_async("the exclusive queue is gone on node 2", || async {
        let ch = n2.create_channel().await.ok()?;
        let e = passive(&ch, "mine").await.err()?;
        (code(&e) == Some(404)).then_some(())
    })
    .await;
}
