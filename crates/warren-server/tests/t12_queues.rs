//! Queue declaration, exclusivity, auto-delete, purge and delete.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_counts_and_server_names() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    let q = declare(&ch, "counted").await.expect("declare");
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    publish(&ch, "", "counted", b"a").await;
    publish(&ch, "", "counted", b"b").await;
    wait_until("2 ready", || async {
        ch.queue_declare("counted".into(), passive(), FieldTable::default())
            .await
            .map(|q| q.message_count())
            .unwrap_or(0)
            == 2
    })
    .await;
    let _consumer = ch
        .basic_consume(
            "counted".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let q = ch
        .queue_declare("counted".into(), passive(), FieldTable::default())
        .await
        .expect("passive");
    assert_eq!(q.consumer_count(), 1);

    let named = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
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
    let c = s.connect().await;
    let ch = c.create_channel().await.expect("ch");
    declare(&ch, "q").await.expect("declare");
    let mut ttl = FieldTable::default();
    ttl.insert("x-message-ttl".into(), AMQPValue::LongInt(100));
    let mut bad_type = FieldTable::default();
    bad_type.insert("x-max-length".into(), AMQPValue::LongString("ten".into()));
    let cases: Vec<(&str, QueueDeclareOptions, FieldTable, u16)> = vec![
        (
            "q",
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
            406,
        ),
        ("q", QueueDeclareOptions::default(), ttl, 406),
        ("fresh", QueueDeclareOptions::default(), bad_type, 406),
        (
            "amq.q",
            QueueDeclareOptions::default(),
            FieldTable::default(),
            403,
        ),
        ("missing", passive(), FieldTable::default(), 404),
    ];
    for (name, opts, args, expected) in cases {
        let ch = c.create_channel().await.expect("ch");
        let e = ch
            .queue_declare(name.into(), opts, args)
            .await
            .expect_err("must fail");
        assert_eq!(code(&e), Some(expected), "{name}: {e:?}");
    }
    // A failed declare left nothing behind.
    let ch = c.create_channel().await.expect("ch");
    let e = ch
        .queue_declare("fresh".into(), passive(), FieldTable::default())
        .await
        .expect_err("404");
    assert_eq!(code(&e), Some(404));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_locked_and_dies_with_its_connection() {
    let s = TestServer::start().await;
    let (owner, ch) = s.channel().await;
    ch.queue_declare(
        "mine".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let other = s.connect().await;
    for op in 0..4 {
        let ch2 = other.create_channel().await.expect("ch");
        let e = match op {
            0 => ch2
                .queue_declare(
                    "mine".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map(|_| ()),
            1 => ch2
                .basic_consume(
                    "mine".into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map(|_| ()),
            2 => ch2
                .queue_delete("mine".into(), QueueDeleteOptions::default())
                .await
                .map(|_| ()),
            _ => {
                ch2.queue_bind(
                    "mine".into(),
                    "amq.fanout".into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
            }
        }
        .expect_err("locked");
        assert_eq!(code(&e), Some(405), "op {op}: {e:?}");
    }
    owner.close(200, "bye".into()).await.expect("close");
    let ch2 = other.create_channel().await.expect("ch");
    wait_until("exclusive queue deleted", || async {
        ch2.queue_declare(
            "mine".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .is_ok()
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_with_its_last_consumer() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    ch.queue_declare(
        "ad".into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let a = ch
        .basic_consume(
            "ad".into(),
            "a".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("a");
    let b = ch
        .basic_consume(
            "ad".into(),
            "b".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("b");
    ch.basic_cancel(a.tag(), BasicCancelOptions::default())
        .await
        .expect("cancel a");
    ch.queue_declare("ad".into(), passive(), FieldTable::default())
        .await
        .expect("still there with one consumer");
    ch.basic_cancel(b.tag(), BasicCancelOptions::default())
        .await
        .expect("cancel b");
    wait_until("auto-deleted", || async {
        let ch = c.create_channel().await.expect("ch");
        matches!(ch.queue_declare("ad".into(), passive(), FieldTable::default()).await, Err(e) if code(&e) == Some(404))
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
    wait_until("3 ready", || async {
        ch.queue_declare("p".into(), passive(), FieldTable::default())
            .await
            .map(|q| q.message_count())
            .unwrap_or(0)
            == 3
    })
    .await;
    let e = ch
        .queue_delete(
            "p".into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await
        .expect_err("not empty");
    assert_eq!(code(&e), Some(406));
    let ch = c.create_channel().await.expect("ch");
    assert_eq!(
        ch.queue_purge("p".into(), QueuePurgeOptions::default())
            .await
            .expect("purge"),
        3
    );
    let _consumer = ch
        .basic_consume(
            "p".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let ch2 = c.create_channel().await.expect("ch");
    let e = ch2
        .queue_delete(
            "p".into(),
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .expect_err("in use");
    assert_eq!(code(&e), Some(406));
    let ch3 = c.create_channel().await.expect("ch");
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
    let c = s.connect().await;
    let ch = c.create_channel().await.expect("ch");
    declare(&ch, "b").await.expect("declare");
    let e = ch
        .queue_bind(
            "b".into(),
            "".into(),
            "b".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("default");
    assert_eq!(code(&e), Some(403));
    let ch = c.create_channel().await.expect("ch");
    let e = ch
        .queue_bind(
            "b".into(),
            "nope".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("no ex");
    assert_eq!(code(&e), Some(404));
    let ch = c.create_channel().await.expect("ch");
    let e = ch
        .queue_bind(
            "nope".into(),
            "amq.direct".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("no q");
    assert_eq!(code(&e), Some(404));
    let ch = c.create_channel().await.expect("ch");
    ch.queue_bind(
        "b".into(),
        "amq.direct".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
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
