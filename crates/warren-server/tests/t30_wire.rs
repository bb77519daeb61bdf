//! Wire-level errors, checked byte by byte against RabbitMQ's reply codes.

mod common;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{AMQPClass, basic, queue};
use common::TestServer;
use common::raw::{Raw, bytes, method};
use warren_testkit::client::declare;

fn publish(ch: u16) -> Vec<u8> {
    method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: false,
        })),
    )
}

fn header(ch: u16, size: u64) -> Vec<u8> {
    bytes(&AMQPFrame::Header(
        ch,
        AMQPContentHeader {
            class_id: 60,
            body_size: size,
            properties: Default::default(),
        },
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_header_gets_ours_back() {
    let s = TestServer::start().await;
    let mut r = Raw::connect(s.addr()).await;
    r.send(b"AMQP\x01\x01\x00\x09").await;
    assert_eq!(r.read_to_end().await, b"AMQP\x00\x00\x09\x01");
    let mut r = Raw::connect(s.addr()).await;
    r.send(b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.read_to_end().await, b"AMQP\x00\x00\x09\x01");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_errors_close_the_connection_with_rabbitmq_codes() {
    let s = TestServer::start().await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "oversized frame",
            vec![1, 0, 1, 0x00, 0x10, 0x00, 0x00],
            501,
        ),
        ("bad frame end", vec![8, 0, 0, 0, 0, 0, 0, 0x00], 501),
        ("unknown frame type", vec![7, 0, 0, 0, 0, 0, 0, 0xCE], 501),
        (
            "heartbeat on channel 1",
            vec![8, 0, 1, 0, 0, 0, 0, 0xCE],
            501,
        ),
        (
            "unknown method",
            vec![1, 0, 1, 0, 0, 0, 4, 0, 60, 0, 99, 0xCE],
            540,
        ),
        (
            "truncated method arguments",
            vec![1, 0, 1, 0, 0, 0, 5, 0, 50, 0, 10, 0, 0xCE],
            502,
        ),
        ("header without publish", header(1, 3), 505),
        (
            "body without publish",
            bytes(&AMQPFrame::Body(1, b"abc".to_vec())),
            505,
        ),
        (
            "method on unopened channel",
            method(
                9,
                AMQPClass::Queue(queue::AMQPMethod::Declare(Default::default())),
            ),
            504,
        ),
        ("content on channel 0", header(0, 1), 505),
        (
            "body longer than announced",
            [
                publish(1),
                header(1, 2),
                bytes(&AMQPFrame::Body(1, b"abc".to_vec())),
            ]
            .concat(),
            501,
        ),
        (
            "method where a body was expected",
            [publish(1), header(1, 2), publish(1)].concat(),
            505,
        ),
        (
            "immediate publish",
            method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                    exchange: "".into(),
                    routing_key: "q".into(),
                    mandatory: false,
                    immediate: true,
                })),
            )
            .into_iter()
            .chain(header(1, 0))
            .collect(),
            540,
        ),
        (
            "second channel.open",
            method(
                1,
                AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Open(
                    Default::default(),
                )),
            ),
            504,
        ),
    ];
    for (what, wire, expected) in cases {
        let mut r = Raw::open(s.addr(), 0).await;
        r.send(&wire).await;
        let (code, text) = r.expect_connection_close().await;
        assert_eq!(code, expected, "{what}: {text}");
    }
    // Every other client still works.
    let (_c, ch) = s.channel().await;
    declare(&ch, "alive").await.expect("declare");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_two_heartbeats() {
    let s = TestServer::start_with(|c| c.heartbeat = 1).await;
    let mut r = Raw::open(s.addr(), 1).await;
    let started = std::time::Instant::now();
    // Read (server heartbeats arrive) but never send anything.
    let mut heartbeats = 0;
    while let Some(f) = r.frame().await {
        if matches!(f, AMQPFrame::Heartbeat) {
            heartbeats += 1;
        }
    }
    let waited = started.elapsed();
    assert!(heartbeats >= 1, "the server sends heartbeats");
    assert!(
        waited >= std::time::Duration::from_millis(1500),
        "dropped too early: {waited:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_close_handshake_and_frames_after_close_are_ignored() {
    let s = TestServer::start().await;
    let mut r = Raw::open(s.addr(), 0).await;
    // A 404 closes channel 1; a publish sent before our close-ok is ignored.
    r.send(&method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "missing".into(),
            passive: true,
            ..Default::default()
        })),
    ))
    .await;
    let (code, text) = r.expect_channel_close(1).await;
    assert_eq!(
        (code, text.as_str()),
        (404, "NOT_FOUND - no queue 'missing' in vhost '/'")
    );
    // Reopen the channel and use it.
    let reopened = r
        .call(
            1,
            AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Open(
                Default::default(),
            )),
        )
        .await;
    assert!(matches!(
        reopened,
        Some(AMQPFrame::Method(1, AMQPClass::Channel(_)))
    ));
    let declared = r
        .call(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "q".into(),
                ..Default::default()
            })),
        )
        .await;
    assert!(matches!(
        declared,
        Some(AMQPFrame::Method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))
        ))
    ));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_secret_is_accepted() {
    use amq_protocol::protocol::connection;
    let s = TestServer::start().await;
    let mut r = Raw::open(s.addr(), 0).await;
    let update = connection::UpdateSecret {
        new_secret: "token".into(),
        reason: "refresh".into(),
    };
    let answer = r
        .connection_call(connection::AMQPMethod::UpdateSecret(update))
        .await;
    assert!(matches!(
        answer,
        Some(connection::AMQPMethod::UpdateSecretOk(_))
    ));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_gets_close_ok_and_the_socket_ends() {
    use amq_protocol::protocol::connection;
    let s = TestServer::start().await;
    let mut r = Raw::open(s.addr(), 0).await;
    let close = connection::Close {
        reply_code: 200,
        reply_text: "bye".into(),
        class_id: 0,
        method_id: 0,
    };
    let answer = r
        .connection_call(connection::AMQPMethod::Close(close))
        .await;
    assert!(matches!(answer, Some(connection::AMQPMethod::CloseOk(_))));
    assert!(r.frame().await.is_none(), "socket closed after close-ok");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_limits_are_enforced() {
    use amq_protocol::protocol::{channel, connection};
    let s = TestServer::start().await;
    // A client asking for more than we offer is refused with 530.
    for (channel_max, frame_max) in [(2047u16, 200_000u32), (3000, 131_072), (2047, 1024)] {
        let mut r = Raw::connect(s.addr()).await;
        r.login().await;
        r.send(&method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max,
                frame_max,
                heartbeat: 0,
            })),
        ))
        .await;
        let (code, text) = r.expect_connection_close().await;
        assert_eq!(code, 530, "{channel_max}/{frame_max}: {text}");
    }
    // Channel numbers above the negotiated maximum are refused.
    let mut r = Raw::open(s.addr(), 0).await;
    r.send(&method(
        2048,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    ))
    .await;
    assert_eq!(r.expect_connection_close().await.0, 530);
    s.stop().await;
}

/// RabbitMQ's reader accepts a frame whose payload is `frame_max` octets
/// (8 over the limit with the frame's overhead), as some clients (amqpstorm)
/// count the limit on the payload; one octet more is a frame error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_frame_of_frame_max_payload_is_accepted_as_rabbitmq_does() {
    const FRAME_MAX: usize = 131_072;
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    declare(&ch, "q").await.expect("declare");
    let body = |n: usize| bytes(&AMQPFrame::Body(1, vec![b'x'; n]));
    let mut r = Raw::open(s.addr(), 0).await;
    r.send(&[publish(1), header(1, FRAME_MAX as u64), body(FRAME_MAX)].concat())
        .await;
    let got = warren_testkit::wait_for_async("the message of one full frame", || async {
        ch.basic_get("q".into(), Default::default())
            .await
            .expect("get")
    })
    .await;
    assert_eq!(got.delivery.data.len(), FRAME_MAX);
    r.send(
        &[
            publish(1),
            header(1, FRAME_MAX as u64 + 1),
            body(FRAME_MAX + 1),
        ]
        .concat(),
    )
    .await;
    let (code, text) = r.expect_connection_close().await;
    assert_eq!(code, 501, "{text}");
    s.stop().await;
}
