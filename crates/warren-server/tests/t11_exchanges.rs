//! Exchange declaration rules and routing through every exchange type.

mod common;

use common::TestServer;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use warren_testkit::client::*;
use warren_testkit::{wait_for, wait_for_async};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_rules() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    let transient = ExchangeDeclareOptions::default();
    for (opts, what) in [
        (transient, "declare"),
        (transient, "same again"),
        (passive_exchange(), "passive"),
    ] {
        declare_exchange(&ch, "logs", ExchangeKind::Fanout, opts)
            .await
            .expect(what);
    }

    let cases: Vec<(&str, ExchangeKind, ExchangeDeclareOptions, u16)> = vec![
        (
            "logs",
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            406,
        ),
        ("logs", ExchangeKind::Fanout, durable_exchange(), 406),
        (
            "amq.mine",
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            403,
        ),
        (
            "odd",
            ExchangeKind::Custom("x-nonsense".into()),
            ExchangeDeclareOptions::default(),
            406,
        ),
        ("missing", ExchangeKind::Direct, passive_exchange(), 404),
    ];
    for (name, kind, opts, expected) in cases {
        let ch = channel(&c).await;
        let e = declare_exchange(&ch, name, kind.clone(), opts)
            .await
            .expect_err("must fail");
        assert_eq!(code(&e), Some(expected), "{name} {kind:?}: {e:?}");
    }
    // Deleting predeclared exchanges is refused; deleting a missing one is fine.
    let ch = channel(&c).await;
    let e = ch
        .exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default())
        .await
        .expect_err("403");
    assert_eq!(code(&e), Some(403));
    let ch = channel(&c).await;
    ch.exchange_delete("never-was".into(), ExchangeDeleteOptions::default())
        .await
        .expect("idempotent");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    declare_exchange(&ch, "x", ExchangeKind::Direct, Default::default())
        .await
        .expect("x");
    declare(&ch, "q").await.expect("q");
    bind(&ch, "q", "x", "k").await.expect("bind");
    let if_unused = ExchangeDeleteOptions {
        if_unused: true,
        ..Default::default()
    };
    let e = ch
        .exchange_delete("x".into(), if_unused)
        .await
        .expect_err("in use");
    assert_eq!(code(&e), Some(406));
    let ch = channel(&c).await;
    ch.exchange_delete("x".into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete");
    let e = declare_exchange(&ch, "x", ExchangeKind::Direct, passive_exchange())
        .await
        .expect_err("gone");
    assert_eq!(code(&e), Some(404));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_direct_fanout_topic_headers_and_e2e() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    for q in ["d", "f1", "f2", "t", "h", "e2e"] {
        declare(&ch, q).await.expect("q");
    }
    for (q, x, key) in [
        ("d", "amq.direct", "k"),
        ("f1", "amq.fanout", ""),
        ("f2", "amq.fanout", "whatever"),
        ("t", "amq.topic", "*.critical"),
    ] {
        bind(&ch, q, x, key).await.expect("bind");
    }
    let hargs = headers(&[("x-match", "all"), ("format", "pdf"), ("type", "report")]);
    bind_with(&ch, "h", "amq.headers", "", hargs)
        .await
        .expect("bind");
    declare_exchange(&ch, "up", ExchangeKind::Topic, Default::default())
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
    bind(&ch, "e2e", "up", "a.#").await.expect("bind");

    publish(&ch, "amq.direct", "k", b"1").await;
    publish(&ch, "amq.direct", "other", b"2").await;
    publish(&ch, "amq.fanout", "zzz", b"3").await;
    publish(&ch, "amq.topic", "kern.critical", b"4").await;
    publish(&ch, "amq.topic", "kern.critical.x", b"5").await;
    for (body, with) in [
        (b"6", headers(&[("format", "pdf"), ("type", "report")])),
        (b"7", headers(&[("format", "pdf")])),
    ] {
        let props = BasicProperties::default().with_headers(with);
        try_publish(&ch, "amq.headers", "", body, props)
            .await
            .expect("publish");
    }
    // Through `up` (topic) to amq.direct and to e2e: "k" reaches d, "a.b" reaches e2e.
    publish(&ch, "up", "k", b"8").await;
    publish(&ch, "up", "a.b", b"9").await;

    wait_for_async("routing settled", || async {
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
    let (c, ch) = s.channel().await;
    declare(&ch, "unrouted").await.expect("q");
    declare_exchange(&ch, "ae", ExchangeKind::Fanout, Default::default())
        .await
        .expect("ae");
    bind(&ch, "unrouted", "ae", "").await.expect("bind");
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("ae".into()),
    );
    ch.exchange_declare(
        "main".into(),
        ExchangeKind::Direct,
        Default::default(),
        args,
    )
    .await
    .expect("main");
    publish(&ch, "main", "nobody", b"x").await;
    let m = get_one(&ch, "unrouted", true).await;
    assert_eq!(m.delivery.data, b"x");

    let internal = ExchangeDeclareOptions {
        internal: true,
        ..Default::default()
    };
    declare_exchange(&ch, "inner", ExchangeKind::Direct, internal)
        .await
        .expect("internal");
    // A publish to an internal exchange, then to a missing one: each closes
    // its channel, neither the connection.
    for (x, refusal) in [
        ("inner", "channel closed by 403"),
        ("nope", "channel closed by 404"),
    ] {
        let ch = channel(&c).await;
        let _ = try_publish(&ch, x, "k", b"x", BasicProperties::default()).await;
        wait_for(refusal, || !ch.status().connected()).await;
    }
    assert!(
        c.status().connected(),
        "channel errors leave the connection open"
    );
    s.stop().await;
}

/// A topic binding of many `#` words against a long routing key: the route
/// must not take exponential time under the metadata lock, which every
/// publish and declare of the node needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_hash_words_do_not_stall_routing() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    declare(&ch, "deep").await.expect("declare");
    let binding = format!("{}z", "#.".repeat(16));
    bind(&ch, "deep", "amq.topic", &binding)
        .await
        .expect("bind");
    confirms(&ch).await;
    // 100 words in a short string's 255 bytes.
    let key = format!("{}z", "a.".repeat(99));
    let props = lapin::BasicProperties::default();
    let confirm = try_publish(&ch, "amq.topic", &key, b"deep", props).await;
    // Meanwhile another connection declares: it needs the same lock.
    let (_c2, ch2) = s.channel().await;
    declare(&ch2, "other")
        .await
        .expect("declare on another connection");
    assert!(
        confirm.expect("publish").await.expect("confirm").is_ack(),
        "the publish is confirmed"
    );
    assert_eq!(get_one(&ch, "deep", true).await.delivery.data, b"deep");
    s.stop().await;
}
