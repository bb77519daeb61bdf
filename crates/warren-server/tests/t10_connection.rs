//! Connection-level behaviour through a real client (lapin).

mod common;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{AMQPClass, connection};
use common::TestServer;
use lapin::options::BasicPublishOptions;
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren_testkit::client::*;
use warren_testkit::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_advertises_rabbitmq_capabilities() {
    let s = TestServer::start().await;
    let mut raw = common::raw::Raw::connect(s.addr()).await;
    raw.send(b"AMQP\x00\x00\x09\x01").await;
    let start = match raw.frame().await {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(st)))) => st,
        other => panic!("expected connection.start, got {other:?}"),
    };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    assert_eq!(
        start.mechanisms.to_string(),
        "PLAIN AMQPLAIN",
        "no EXTERNAL without certificates"
    );
    let props = start.server_properties;
    assert_eq!(
        props.inner().get("product"),
        Some(&AMQPValue::LongString("Warren".into()))
    );
    let c = s.connect().await;
    let caps = match props.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.clone(),
        other => panic!("no capabilities: {other:?}"),
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(
            caps.inner().get(cap),
            Some(&AMQPValue::Boolean(true)),
            "{cap}"
        );
    }
    let conf = c.configuration();
    assert_eq!(conf.channel_max(), 2047);
    assert_eq!(conf.frame_max(), 131_072);
    c.close(200, "bye".into()).await.expect("close");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_vhost_are_refused() {
    let s = TestServer::start().await;
    let bad = format!("amqp://guest:nope@{}/%2f", s.addr());
    let e = Connection::connect(&bad, ConnectionProperties::default())
        .await
        .expect_err("refused");
    assert_eq!(code(&e), Some(403), "{e:?}");
    let vhost = format!("amqp://guest:guest@{}/other", s.addr());
    let e = Connection::connect(&vhost, ConnectionProperties::default())
        .await
        .expect_err("refused");
    assert_eq!(code(&e), Some(530), "{e:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_frame_max_gets_split_content() {
    let s = TestServer::start().await;
    let c = s.connect_with("frame_max=4096").await;
    assert_eq!(c.configuration().frame_max(), 4096);
    let ch = channel(&c).await;
    declare(&ch, "big").await.expect("declare");
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    publish(&ch, "", "big", &body).await;
    let m = get_one(&ch, "big", true).await;
    assert_eq!(m.delivery.data, body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_clients_with_320() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    s.stop().await;
    wait_for("client sees the close", || !c.status().connected()).await;
    let e = try_publish(&ch, "", "x", b"x", BasicProperties::default())
        .await
        .expect_err("closed");
    let _ = e;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_errors_close_only_the_channel() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    let bad = channel(&c).await;
    let good = channel(&c).await;
    let e = passive(&bad, "missing").await.expect_err("404");
    assert_eq!(code(&e), Some(404));
    assert_eq!(text(&e), "NOT_FOUND - no queue 'missing' in vhost '/'");
    declare(&good, "still-works")
        .await
        .expect("other channel unaffected");
    assert!(c.status().connected());
    let again = c.create_channel().await.expect("new channel after error");
    declare(&again, "x").await.expect("works");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_publish_is_a_540_connection_error() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    let _ = ch
        .basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions {
                immediate: true,
                ..Default::default()
            },
            b"x",
            BasicProperties::default(),
        )
        .await;
    wait_for("connection closed", || !c.status().connected()).await;
    let e = declare(&ch, "q").await.expect_err("connection is gone");
    let _ = e;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqplain_login_works() {
    let s = TestServer::start().await;
    let c = s.connect_with("auth_mechanism=amqplain").await;
    let ch = channel(&c).await;
    declare(&ch, "x").await.expect("declare");
    s.stop().await;
}
