//! Publisher confirms and transactions.

mod common;

use common::TestServer;
use lapin::options::*;
use lapin::{BasicProperties, Channel, Confirmation};
use warren_testkit::client::*;

/// A channel in confirm mode with the durable queue `name` declared.
async fn confirmed_to_durable(s: &TestServer, name: &str) -> (lapin::Connection, Channel) {
    let (c, ch) = s.channel().await;
    declare_with(&ch, name, durable()).await.expect("declare");
    confirms(&ch).await;
    (c, ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_for_transient_and_persistent_messages() {
    let s = TestServer::start().await;
    let (_c, ch) = confirmed_to_durable(&s, "d").await;
    let mut pending = vec![];
    for i in 0..500u32 {
        let props = if i % 2 == 0 {
            persistent()
        } else {
            BasicProperties::default()
        };
        pending.push(
            try_publish(&ch, "", "d", &i.to_be_bytes(), props)
                .await
                .expect("publish"),
        );
    }
    for p in pending {
        assert!(matches!(p.await.expect("confirm"), Confirmation::Ack(_)));
    }
    assert_eq!(count(&ch, "d").await, 500);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_rollback() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    declare(&ch, "t").await.expect("declare");
    ch.tx_select().await.expect("select");
    publish(&ch, "", "t", b"rolled back").await;
    ch.tx_rollback().await.expect("rollback");
    publish(&ch, "", "t", b"committed").await;
    let reader = channel(&c).await;
    assert!(
        reader
            .basic_get("t".into(), BasicGetOptions::default())
            .await
            .expect("get")
            .is_none(),
        "nothing before commit"
    );
    ch.tx_commit().await.expect("commit");
    let m = get_one(&reader, "t", true).await;
    assert_eq!(m.delivery.data, b"committed");
    assert_eq!(m.message_count, 0);

    // Acks inside a transaction apply at commit.
    publish(&reader, "", "t", b"acked in tx").await;
    let m = get_one(&ch, "t", false).await;
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .expect("ack");
    ch.tx_rollback().await.expect("rollback drops the ack");
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .expect("recover");
    let again = get_one(&ch, "t", false).await;
    assert_eq!(again.delivery.data, b"acked in tx");
    ch.basic_ack(again.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .expect("ack");
    ch.tx_commit().await.expect("commit");

    let e = ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect_err("tx -> confirm");
    assert_eq!(code(&e), Some(406));
    let plain = channel(&c).await;
    let e = plain.tx_commit().await.expect_err("not transactional");
    assert_eq!(code(&e), Some(406));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_confirms_share_fsyncs() {
    let s = TestServer::start().await;
    let broker = s.server.as_ref().expect("running").broker.clone();
    let syncs_before = broker
        .writer()
        .stats()
        .syncs
        .load(std::sync::atomic::Ordering::Relaxed);
    const PUBLISHERS: usize = 4;
    const EACH: u32 = 500;
    let mut tasks = vec![];
    for p in 0..PUBLISHERS {
        let (c, ch) = confirmed_to_durable(&s, "gc").await;
        tasks.push(tokio::spawn(async move {
            let mut pending = vec![];
            for i in 0..EACH {
                let body = format!("{p}-{i}");
                pending.push(
                    try_publish(&ch, "", "gc", body.as_bytes(), persistent())
                        .await
                        .expect("publish"),
                );
            }
            for c in pending {
                assert!(c.await.expect("confirm").is_ack());
            }
            drop(c);
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    let syncs = broker
        .writer()
        .stats()
        .syncs
        .load(std::sync::atomic::Ordering::Relaxed)
        - syncs_before;
    let messages = PUBLISHERS as u64 * EACH as u64;
    println!("{messages} persistent messages confirmed with {syncs} WAL syncs");
    assert!(
        syncs * 4 < messages,
        "group commit: {syncs} syncs for {messages} messages"
    );
    s.stop().await;
}
