//! What survives a restart: durable entities and persistent messages in
//! durable queues; nothing else.

mod common;

use common::TestServer;
use lapin::options::*;
use lapin::{BasicProperties, Confirmation, ExchangeKind};
use warren_testkit::client::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_things_survive_and_transient_things_do_not() {
    let mut s = TestServer::start().await;
    {
        tracing::info!("--- declare durable and transient entities, publish with confirms");
        let (c, ch) = s.channel().await;
        declare_exchange(&ch, "dx", ExchangeKind::Topic, durable_exchange())
            .await
            .expect("dx");
        declare_exchange(&ch, "tx", ExchangeKind::Topic, Default::default())
            .await
            .expect("tx");
        declare_with(&ch, "dq", durable()).await.expect("dq");
        declare(&ch, "tq").await.expect("tq");
        bind(&ch, "dq", "dx", "a.*").await.expect("bind");
        confirms(&ch).await;
        for (body, mode) in [
            (&b"persistent-1"[..], 2),
            (b"transient", 1),
            (b"persistent-2", 2),
        ] {
            let props = BasicProperties::default().with_delivery_mode(mode);
            let c = publish_confirmed(&ch, "dx", "a.b", body, props).await;
            assert!(matches!(c, Confirmation::Ack(_)));
        }
        // One persistent message consumed and acked: it must not come back.
        publish_confirmed(&ch, "", "dq", b"acked", persistent()).await;
        let m = get_one(&ch, "dq", false).await;
        assert_eq!(m.delivery.data, b"persistent-1");
        let _ = m;
        c.close(200, "bye".into()).await.expect("close");
    }
    s.restart().await;
    {
        tracing::info!("--- after restart: durable ones are back, with their persistent messages");
        let (c, ch) = s.channel().await;
        let q = passive(&ch, "dq").await.expect("dq survives");
        assert_eq!(
            q.message_count(),
            3,
            "persistent-1 (was unacked), persistent-2, acked-not-yet"
        );
        let mut bodies = vec![];
        while let Some(m) = ch
            .basic_get("dq".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            bodies.push(String::from_utf8(m.delivery.data.clone()).expect("utf8"));
        }
        assert_eq!(bodies, vec!["persistent-1", "persistent-2", "acked"]);
        // The binding survived too.
        publish(&ch, "dx", "a.c", b"routed").await;
        assert_eq!(get_one(&ch, "dq", true).await.delivery.data, b"routed");
        for name in ["tq"] {
            let ch = channel(&c).await;
            let e = passive(&ch, name).await.expect_err("transient queue gone");
            assert_eq!(code(&e), Some(404));
        }
        let ch = channel(&c).await;
        let e = declare_exchange(&ch, "tx", ExchangeKind::Topic, passive_exchange())
            .await
            .expect_err("transient exchange gone");
        assert_eq!(code(&e), Some(404));
    }
    {
        tracing::info!("--- acked messages are deleted from disk");
        let (_c, ch) = s.channel().await;
        try_publish(&ch, "", "dq", b"x", persistent())
            .await
            .expect("publish");
        let m = get_one(&ch, "dq", false).await;
        m.delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        declare_with(&ch, "sync", durable())
            .await
            .expect("a durable declare syncs the writer");
    }
    s.restart().await;
    let (_c, ch) = s.channel().await;
    let q = passive(&ch, "dq").await.expect("dq");
    assert_eq!(q.message_count(), 0);
    s.stop().await;
}

/// A stored message that cannot be read at start is skipped, and the
/// queue's next messages take seqs after the last one on disk: nothing
/// recovered after it, or still on disk, is overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_does_not_let_new_messages_overwrite_the_rest() {
    let mut s = TestServer::start().await;
    let id = {
        let (_c, ch) = s.channel().await;
        declare_with(&ch, "scarred", durable())
            .await
            .expect("declare");
        confirms(&ch).await;
        for i in 1..=10 {
            let body = format!("old-{i}");
            publish_confirmed(&ch, "", "scarred", body.as_bytes(), persistent()).await;
        }
        let broker = s.server.as_ref().expect("running").broker.clone();
        let st = broker.read();
        st.vhost("/")
            .expect("vhost")
            .queue("scarred")
            .expect("queue")
            .id
    };
    if let Some(server) = s.server.take() {
        server.shutdown().await;
    }

    tracing::info!("--- the record of the fifth message is damaged on disk");
    let path = s.dir.path().join("rocksdb");
    let db = warren_testkit::wait_for_blocking("the store is closed", || {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).ok()?;
        rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, cfs).ok()
    });
    let cf = db.cf_handle("messages").expect("messages column family");
    db.put_cf(cf, warren_store::keys::message(id, 5), [0xff, 0xff])
        .expect("damage");
    drop(db);

    tracing::info!("--- restart: nine old messages come back; new ones overwrite none");
    s.restart().await;
    let (_c, ch) = s.channel().await;
    assert_eq!(count(&ch, "scarred").await, 9);
    confirms(&ch).await;
    for i in 1..=5 {
        let body = format!("new-{i}");
        publish_confirmed(&ch, "", "scarred", body.as_bytes(), persistent()).await;
    }
    s.restart().await;
    let (_c, ch) = s.channel().await;
    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get("scarred".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
    {
        got.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    let want: Vec<String> = (1..=10)
        .filter(|i| *i != 5)
        .map(|i| format!("old-{i}"))
        .chain((1..=5).map(|i| format!("new-{i}")))
        .collect();
    assert_eq!(got, want);
    s.stop().await;
}
