//! Exchange declaration rules and routing through every exchange type.

mod common;

use common::*;
use lapin::ExchangeKind;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};

fn ex_opts(durable: bool) -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_rules() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    let ch = c.create_channel().await.expect("ch");
    ch.exchange_declare(
        "logs".into(),
        ExchangeKind::Fanout,
        ex_opts(false),
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.exchange_declare(
        "logs".into(),
        ExchangeKind::Fanout,
        ex_opts(false),
        FieldTable::default(),
    )
    .await
    .expect("same again");
    ch.exchange_declare(
        "logs".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive");

    let cases: Vec<(&str, ExchangeKind, ExchangeDeclareOptions, u16)> = vec![
        ("logs", ExchangeKind::Direct, ex_opts(false), 406),
        ("logs", ExchangeKind::Fanout, ex_opts(true), 406),
        ("amq.mine", ExchangeKind::Direct, ex_opts(false), 403),
        (
            "odd",
            ExchangeKind::Custom("x-nonsense".into()),
            ex_opts(false),
            406,
        ),
        (
            "missing",
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            404,
        ),
    ];
    for (name, kind, opts, expected) in cases {
        let ch = c.create_channel().await.expect("ch");
        let e = ch
            .exchange_declare(name.into(), kind.clone(), opts, FieldTable::default())
            .await
            .expect_err("must fail");
        assert_eq!(code(&e), Some(expected), "{name} {kind:?}: {e:?}");
    }
    // Deleting predeclared exchanges is refused; deleting a missing one is fine.
    let ch = c.create_channel().await.expect("ch");
    let e = ch
        .exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default())
        .await
        .expect_err("403");
    assert_eq!(code(&e), Some(403));
    let ch = c.create_channel().await.expect("ch");
    ch.exchange_delete("never-was".into(), ExchangeDeleteOptions::default())
        .await
        .expect("idempotent");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    ch.exchange_declare(
        "x".into(),
        ExchangeKind::Direct,
        ex_opts(false),
        FieldTable::default(),
    )
    .await
    .expect("x");
    declare(&ch, "q").await.expect("q");
    ch.queue_bind(
        "q".into(),
        "x".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let e = ch
        .exchange_delete(
            "x".into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .expect_err("in use");
    assert_eq!(code(&e), Some(406));
    let ch = c.create_channel().await.expect("ch");
    ch.exchange_delete("x".into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete");
    let e = ch
        .exchange_declare(
            "x".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("gone");
    assert_eq!(code(&e), Some(404));
    s.stop().await;
}

async fn bind(ch: &lapin::Channel, q: &str, x: &str, key: &str, args: FieldTable) {
    ch.queue_bind(
        q.into(),
        x.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    )
    .await
    .expect("bind");
}

async fn count(ch: &lapin::Channel, q: &str) -> u32 {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive")
    .message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_direct_fanout_topic_headers_and_e2e() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    for q in ["d", "f1", "f2", "t", "h", "e2e"] {
        declare(&ch, q).await.expect("q");
    }
    bind(&ch, "d", "amq.direct", "k", FieldTable::default()).await;
    bind(&ch, "f1", "amq.fanout", "", FieldTable::default()).await;
    bind(&ch, "f2", "amq.fanout", "whatever", FieldTable::default()).await;
    bind(&ch, "t", "amq.topic", "*.critical", FieldTable::default()).await;
    let mut hargs = FieldTable::default();
    hargs.insert("x-match".into(), AMQPValue::LongString("all".into()));
    hargs.insert("format".into(), AMQPValue::LongString("pdf".into()));
    hargs.insert("type".into(), AMQPValue::LongString("report".into()));
    bind(&ch, "h", "amq.headers", "", hargs).await;
    ch.exchange_declare(
        "up".into(),
        ExchangeKind::Topic,
        ex_opts(false),
        FieldTable::default(),
    )
    .await
    .expect("up");
    ch.exchange_bind(
        "amq.direct".into(),
        "up".into(),
        "#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("e2e");
    bind(&ch, "e2e", "up", "a.#", FieldTable::default()).await;

    publish(&ch, "amq.direct", "k", b"1").await;
    publish(&ch, "amq.direct", "other", b"2").await;
    publish(&ch, "amq.fanout", "zzz", b"3").await;
    publish(&ch, "amq.topic", "kern.critical", b"4").await;
    publish(&ch, "amq.topic", "kern.critical.x", b"5").await;
    let mut headers = FieldTable::default();
    headers.insert("format".into(), AMQPValue::LongString("pdf".into()));
    headers.insert("type".into(), AMQPValue::LongString("report".into()));
    ch.basic_publish(
        "amq.headers".into(),
        "".into(),
        BasicPublishOptions::default(),
        b"6",
        lapin::BasicProperties::default().with_headers(headers),
    )
    .await
    .expect("publish");
    let mut half = FieldTable::default();
    half.insert("format".into(), AMQPValue::LongString("pdf".into()));
    ch.basic_publish(
        "amq.headers".into(),
        "".into(),
        BasicPublishOptions::default(),
        b"7",
        lapin::BasicProperties::default().with_headers(half),
    )
    .await
    .expect("publish");
    // Through `up` (topic) to amq.direct and to e2e: "k" reaches d, "a.b" reaches e2e.
    publish(&ch, "up", "k", b"8").await;
    publish(&ch, "up", "a.b", b"9").await;

    wait_until("routing settled", || async {
        count(&ch, "e2e").await == 1 && count(&ch, "d").await == 2
    })
    .await;
    assert_eq!(count(&ch, "f1").await, 1);
    assert_eq!(count(&ch, "f2").await, 1);
    assert_eq!(count(&ch, "t").await, 1);
    assert_eq!(count(&ch, "h").await, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_and_internal() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    let ch = c.create_channel().await.expect("ch");
    declare(&ch, "unrouted").await.expect("q");
    ch.exchange_declare(
        "ae".into(),
        ExchangeKind::Fanout,
        ex_opts(false),
        FieldTable::default(),
    )
    .await
    .expect("ae");
    bind(&ch, "unrouted", "ae", "", FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("ae".into()),
    );
    ch.exchange_declare("main".into(), ExchangeKind::Direct, ex_opts(false), args)
        .await
        .expect("main");
    publish(&ch, "main", "nobody", b"x").await;
    let m = get_one(&ch, "unrouted", true).await;
    assert_eq!(m.delivery.data, b"x");

    ch.exchange_declare(
        "inner".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("internal");
    let _ = ch
        .basic_publish(
            "inner".into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            lapin::BasicProperties::default(),
        )
        .await;
    wait_until("channel closed by 403", || async {
        !ch.status().connected()
    })
    .await;
    let ch = c.create_channel().await.expect("ch");
    let _ = ch
        .basic_publish(
            "nope".into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            lapin::BasicProperties::default(),
        )
        .await;
    wait_until("channel closed by 404", || async {
        !ch.status().connected()
    })
    .await;
    assert!(
        c.status().connected(),
        "channel errors leave the connection open"
    );
    s.stop().await;
}
