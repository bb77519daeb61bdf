//! Queue declaration, exclusivity, auto-delete, purge and delete.

mod common;

use common::TestServer;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use warren_testkit::client::*;
use warren_testkit::wait_for_async;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_counts_and_server_names() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    let q = declare(&ch, "counted").await.expect("declare");
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    publish(&ch, "", "counted", b"a").await;
    publish(&ch, "", "counted", b"b").await;
    wait_ready(&ch, "counted", 2).await;
    let _consumer = consume(&ch, "counted", "", false).await;
    let q = passive(&ch, "counted").await.expect("passive");
    assert_eq!(q.consumer_count(), 1);

    let named = declare_with(&ch, "", exclusive())
        .await
        .expect("server-named");
    assert!(
        named.name().as_str().starts_with("amq.gen-"),
        "{}",
        named.name()
    );
    assert_eq!(named.name().as_str().len(), "amq.gen-".len() + 22);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_errors() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    declare(&ch, "q").await.expect("declare");
    let mut ttl = FieldTable::default();
    ttl.insert("x-message-ttl".into(), AMQPValue::LongInt(100));
    let mut bad_type = FieldTable::default();
    bad_type.insert("x-max-length".into(), AMQPValue::LongString("ten".into()));
    let passive_opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let cases: Vec<(&str, QueueDeclareOptions, FieldTable, u16)> = vec![
        ("q", durable(), FieldTable::default(), 406),
        ("q", QueueDeclareOptions::default(), ttl, 406),
        ("fresh", QueueDeclareOptions::default(), bad_type, 406),
        (
            "amq.q",
            QueueDeclareOptions::default(),
            FieldTable::default(),
            403,
        ),
        ("missing", passive_opts, FieldTable::default(), 404),
    ];
    for (name, opts, args, expected) in cases {
        let ch = channel(&c).await;
        let e = ch
            .queue_declare(name.into(), opts, args)
            .await
            .expect_err("must fail");
        assert_eq!(code(&e), Some(expected), "{name}: {e:?}");
    }
    // A failed declare left nothing behind.
    let ch = channel(&c).await;
    let e = passive(&ch, "fresh").await.expect_err("404");
    assert_eq!(code(&e), Some(404));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_locked_and_dies_with_its_connection() {
    let s = TestServer::start().await;
    let (owner, ch) = s.channel().await;
    declare_with(&ch, "mine", exclusive())
        .await
        .expect("declare");
    let other = s.connect().await;
    for op in 0..4 {
        let ch2 = channel(&other).await;
        let e = match op {
            0 => declare_with(&ch2, "mine", exclusive()).await.map(|_| ()),
            1 => consume_with(&ch2, "mine", "", Default::default(), FieldTable::default())
                .await
                .map(|_| ()),
            2 => ch2
                .queue_delete("mine".into(), QueueDeleteOptions::default())
                .await
                .map(|_| ()),
            _ => bind(&ch2, "mine", "amq.fanout", "").await,
        }
        .expect_err("locked");
        assert_eq!(code(&e), Some(405), "op {op}: {e:?}");
    }
    owner.close(200, "bye".into()).await.expect("close");
    let ch2 = channel(&other).await;
    wait_for_async("exclusive queue deleted", || async {
        declare(&ch2, "mine").await.is_ok()
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_with_its_last_consumer() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    let auto_delete = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare_with(&ch, "ad", auto_delete).await.expect("declare");
    let a = consume(&ch, "ad", "a", false).await;
    let b = consume(&ch, "ad", "b", false).await;
    ch.basic_cancel(a.tag(), BasicCancelOptions::default())
        .await
        .expect("cancel a");
    passive(&ch, "ad")
        .await
        .expect("still there with one consumer");
    ch.basic_cancel(b.tag(), BasicCancelOptions::default())
        .await
        .expect("cancel b");
    wait_for_async("auto-deleted", || async {
        let ch = channel(&c).await;
        matches!(passive(&ch, "ad").await, Err(e) if code(&e) == Some(404))
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_conditional_delete() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    declare(&ch, "p").await.expect("declare");
    for _ in 0..3 {
        publish(&ch, "", "p", b"x").await;
    }
    wait_ready(&ch, "p", 3).await;
    let if_empty = QueueDeleteOptions {
        if_empty: true,
        ..Default::default()
    };
    let e = ch
        .queue_delete("p".into(), if_empty)
        .await
        .expect_err("not empty");
    assert_eq!(code(&e), Some(406));
    let ch = channel(&c).await;
    assert_eq!(
        ch.queue_purge("p".into(), QueuePurgeOptions::default())
            .await
            .expect("purge"),
        3
    );
    let _consumer = consume(&ch, "p", "c", false).await;
    let ch2 = channel(&c).await;
    let if_unused = QueueDeleteOptions {
        if_unused: true,
        ..Default::default()
    };
    let e = ch2
        .queue_delete("p".into(), if_unused)
        .await
        .expect_err("in use");
    assert_eq!(code(&e), Some(406));
    let ch3 = channel(&c).await;
    assert_eq!(
        ch3.queue_delete("p".into(), QueueDeleteOptions::default())
            .await
            .expect("delete"),
        0
    );
    assert_eq!(
        ch3.queue_delete("p".into(), QueueDeleteOptions::default())
            .await
            .expect("idempotent"),
        0
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_errors_and_unbind() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    declare(&ch, "b").await.expect("declare");
    // Each refusal closes its channel.
    for (q, x, key, refusal, expected) in [
        ("b", "", "b", "default", 403),
        ("b", "nope", "k", "no ex", 404),
        ("nope", "amq.direct", "k", "no q", 404),
    ] {
        let ch = channel(&c).await;
        let e = bind(&ch, q, x, key).await.expect_err(refusal);
        assert_eq!(code(&e), Some(expected));
    }
    let ch = channel(&c).await;
    bind(&ch, "b", "amq.direct", "k").await.expect("bind");
    publish(&ch, "amq.direct", "k", b"1").await;
    get_one(&ch, "b", true).await;
    ch.queue_unbind(
        "b".into(),
        "amq.direct".into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .expect("unbind");
    publish(&ch, "amq.direct", "k", b"2").await;
    publish(&ch, "", "b", b"3").await;
    let m = get_one(&ch, "b", true).await;
    assert_eq!(m.delivery.data, b"3", "unbound key no longer routes");
    s.stop().await;
}
