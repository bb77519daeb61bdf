//! Nothing a peer does freezes a node: a home node that stops answering
//! (SIGSTOP) makes its queues fail fast elsewhere instead of blocking their
//! publishers, and large messages cross a link without breaking it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::BIN;
use lapin::Confirmation;
use lapin::options::{BasicAckOptions, BasicQosOptions};
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, wait_for, wait_for_async};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How soon a publisher to a frozen home must hear a nack.
const NACK_WITHIN: Duration = Duration::from_secs(15);
/// How soon a declaration on a healthy node must be answered meanwhile.
const DECLARE_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_home_makes_its_queue_fail_fast_elsewhere() {
    let _turn = SERIAL.lock().await;
    let (mut c, n1, n2) =
        Cluster::three_with_queue(BIN, Options::default(), "steady", durable()).await;
    drop(n1);

    tracing::info!("--- a steady publisher on node 2, one confirm at a time");
    let ch2 = channel(&n2).await;
    confirms(&ch2).await;
    let acked = Arc::new(AtomicU32::new(0));
    let nacked = Arc::new(AtomicU32::new(0));
    let publisher = {
        let (acked, nacked) = (acked.clone(), nacked.clone());
        tokio::spawn(async move {
            for i in 0u32.. {
                let body = i.to_be_bytes();
                let Ok(c) = try_publish(&ch2, "", "steady", &body, persistent()).await else {
                    return;
                };
                match c.await {
                    Ok(Confirmation::Ack(_)) => acked.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => nacked.fetch_add(1, Ordering::Relaxed),
                    Err(_) => return,
                };
            }
        })
    };
    wait_for("publishes are confirmed", || {
        acked.load(Ordering::Relaxed) > 100
    })
    .await;

    tracing::info!("--- node 1 freezes: publishes are nacked, declarations go on");
    c.pause(1);
    let frozen = tokio::time::Instant::now();
    wait_for("a publish to the frozen home is nacked", || {
        nacked.load(Ordering::Relaxed) > 0
    })
    .await;
    assert!(
        frozen.elapsed() < NACK_WITHIN,
        "first nack after {:?}",
        frozen.elapsed()
    );
    let ch = channel(&n2).await;
    let declared = tokio::time::timeout(DECLARE_WITHIN, declare(&ch, "meanwhile")).await;
    assert!(
        matches!(declared, Ok(Ok(_))),
        "a declaration on node 2 is answered within {DECLARE_WITHIN:?}: {declared:?}"
    );

    tracing::info!("--- node 1 wakes up: every confirmed message is there");
    let at_resume = acked.load(Ordering::Relaxed);
    c.resume(1);
    wait_for("publishes are confirmed again", || {
        acked.load(Ordering::Relaxed) > at_resume + 10
    })
    .await;
    publisher.abort();
    let _ = publisher.await;
    let n1 = c.connect(1).await;
    let ch1 = channel(&n1).await;
    let confirmed = acked.load(Ordering::Relaxed);
    assert!(
        count(&ch1, "steady").await >= confirmed,
        "every one of {confirmed} confirmed messages is in the queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_cross_a_link_without_breaking_it() {
    const N: u32 = 600;
    const SIZE: usize = 1 << 20;
    let _turn = SERIAL.lock().await;
    let (_c, n1, n2) = Cluster::three_with_queue(BIN, Options::default(), "big", durable()).await;
    let ch1 = channel(&n1).await;

    tracing::info!("--- a consumer on node 2 with no prefetch limit");
    let ch2 = channel(&n2).await;
    ch2.basic_qos(0, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = consume(&ch2, "big", "big-consumer", false).await;

    tracing::info!("--- {N} messages of 1 MiB published on node 1");
    confirms(&ch1).await;
    let mut body = vec![7u8; SIZE];
    let mut pending = Vec::new();
    for i in 0..N {
        body[..4].copy_from_slice(&i.to_be_bytes());
        pending.push(
            try_publish(&ch1, "", "big", &body, persistent())
                .await
                .expect("publish"),
        );
        if pending.len() == 50 {
            for p in pending.drain(..) {
                assert!(p.await.expect("confirm").is_ack());
            }
        }
    }
    for p in pending {
        assert!(p.await.expect("confirm").is_ack());
    }

    for i in 0..N {
        let d = next(&mut consumer).await;
        assert_eq!(d.data.len(), SIZE);
        assert_eq!(u32::from_be_bytes(d.data[..4].try_into().expect("4")), i);
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    wait_for_async("the queue is empty", || async {
        (count(&ch1, "big").await == 0).then_some(())
    })
    .await;
    assert!(
        nothing_for(&mut consumer, Duration::from_millis(300)).await,
        "the consumer was not cancelled and got nothing more"
    );
}

/// How long a metadata proposal may wait in the test below (the node's
/// `--metadata-timeout-ms`): long enough that the other channel's work
/// finishes well inside it.
const PROPOSAL_WAIT_MS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declaration_waiting_on_a_partition_does_not_stall_other_channels() {
    let _turn = SERIAL.lock().await;
    let opts = Options {
        metadata_timeout_ms: PROPOSAL_WAIT_MS,
        ..Options::default()
    };
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], opts);
    c.wait_leader(&[1, 2, 3]).await;
    let n3 = c.connect(3).await;
    // A queue homed on node 3: publishing to it and consuming from it needs
    // no other node.
    declare_with(&channel(&n3).await, "local", durable())
        .await
        .expect("declare on node 3");

    tracing::info!("--- node 3 is cut off; one channel declares, it must wait");
    c.cut(3);
    let declaring = channel(&n3).await;
    let mut declare = Box::pin(async move {
        let r = declare_with(&declaring, "needs-the-majority", durable()).await;
        (r, tokio::time::Instant::now())
    });
    // One poll hands the declaration to the client's writer: it reaches the
    // server before anything the other channel sends below.
    assert!(futures::poll!(&mut declare).is_pending());
    let declare = tokio::spawn(declare);

    tracing::info!("--- another channel of the same connection keeps working");
    let worker = channel(&n3).await;
    confirms(&worker).await;
    for i in 0..20u32 {
        let ok = publish_confirmed(&worker, "", "local", &i.to_be_bytes(), persistent()).await;
        assert!(ok.is_ack(), "publish {i} confirmed");
        let got = get_one(&worker, "local", true).await;
        assert_eq!(got.delivery.data, i.to_be_bytes());
    }
    let worked = tokio::time::Instant::now();
    assert!(
        !declare.is_finished(),
        "the other channel finished its 20 round trips while the declaration still waits"
    );

    c.heal(3);
    let (result, answered) = declare.await.expect("declaring task");
    assert!(answered > worked);
    // Once healed the declaration goes through, or fails with the timeout
    // code; either way the channel answered on its own schedule.
    if let Err(e) = result {
        assert_eq!(code(&e), Some(541), "{e}");
    }
}
