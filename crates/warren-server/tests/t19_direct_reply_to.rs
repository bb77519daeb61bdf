//! Direct reply-to, as RabbitMQ has it: a client consumes from the
//! `amq.rabbitmq.reply-to` pseudo-queue without acks and publishes requests
//! with `reply_to` set to it; the server sees an address naming the
//! client's channel and publishes its reply there through the default
//! exchange. No queue holds the replies: once the channel is gone, a reply
//! to its address reaches nobody (returned under `mandatory`). The errors
//! (406 without no-ack, a second reply consumer, a publish asking for
//! replies on a channel without one) carry RabbitMQ's texts.

mod common;

use common::TestServer;
use lapin::options::{BasicCancelOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use warren_testkit::client::*;

const PSEUDO: &str = "amq.rabbitmq.reply-to";
const PREFIX: &str = "amq.rabbitmq.reply-to.";

fn passive_opts() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

/// A request to `queue` that asks for its reply on the pseudo-queue.
async fn request(ch: &Channel, queue: &str, correlation: &str, body: &[u8]) {
    let props = BasicProperties::default()
        .with_reply_to(PSEUDO.into())
        .with_correlation_id(correlation.into());
    try_publish(ch, "", queue, body, props)
        .await
        .expect("publish a request");
}

/// A mandatory reply to `address` with `correlation`; whether it came back
/// with `basic.return` (the channel is in confirm mode).
async fn reply(ch: &Channel, address: &str, correlation: &str, body: &[u8]) -> bool {
    let confirm = ch
        .basic_publish(
            "".into(),
            address.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            BasicProperties::default().with_correlation_id(correlation.into()),
        )
        .await
        .expect("publish a reply")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "a reply is confirmed");
    match confirm.take_message() {
        Some(r) => {
            assert_eq!(r.reply_code, 312);
            true
        }
        None => false,
    }
}

/// A request published on `ch` (in confirm mode) that the broker refuses:
/// the error the channel was closed with.
async fn refused_request(ch: &Channel) -> lapin::Error {
    let props = BasicProperties::default().with_reply_to(PSEUDO.into());
    let r = match try_publish(ch, "", "rpc", b"x", props).await {
        Ok(confirm) => confirm.await.map(|_| ()),
        Err(e) => Err(e),
    };
    r.expect_err("the request is refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_round_trip_goes_to_the_requesting_channel_without_a_queue() {
    let s = TestServer::start().await;
    let (_server_conn, srv) = s.channel().await;
    confirms(&srv).await;
    declare(&srv, "rpc").await.expect("declare rpc");
    let mut requests = consume(&srv, "rpc", "server", false).await;

    let (_client_conn, cli) = s.channel().await;
    let pseudo = cli
        .queue_declare(PSEUDO.into(), passive_opts(), FieldTable::default())
        .await
        .expect("the pseudo-queue is always there");
    assert_eq!((pseudo.message_count(), pseudo.consumer_count()), (0, 1));
    let mut replies = consume(&cli, PSEUDO, "", true).await;

    let mut address = String::new();
    for i in 0..50 {
        let correlation = format!("c-{i}");
        request(&cli, "rpc", &correlation, format!("{i}").as_bytes()).await;
        let req = next(&mut requests).await;
        let to = req
            .properties
            .reply_to()
            .as_ref()
            .expect("reply_to")
            .to_string();
        assert!(to.starts_with(PREFIX) && to.len() > PREFIX.len(), "{to}");
        if i == 0 {
            address = to.clone();
        }
        assert_eq!(to, address, "one address per reply consumer");
        let returned = reply(&srv, &to, &correlation, format!("re {i}").as_bytes()).await;
        assert!(!returned, "a reply to a live consumer is not returned");
        req.ack(Default::default()).await.expect("ack");
        let got = next(&mut replies).await;
        assert_eq!(got.data, format!("re {i}").as_bytes());
        assert_eq!(got.exchange.as_str(), "");
        assert_eq!(got.routing_key.as_str(), address);
        assert_eq!(
            got.properties.correlation_id().as_ref().map(|c| c.as_str()),
            Some(correlation.as_str())
        );
    }

    // The address is a queue name a server may check, while it lives.
    let probe = srv
        .queue_declare(
            address.as_str().into(),
            passive_opts(),
            FieldTable::default(),
        )
        .await
        .expect("the address is there");
    assert_eq!(probe.consumer_count(), 1);

    // The requester's channel goes: its replies reach nobody.
    cli.close(200, "bye".into()).await.expect("close");
    assert!(reply(&srv, &address, "late", b"late").await, "returned");
    let ch = channel(&_server_conn).await;
    let e = ch
        .queue_declare(
            address.as_str().into(),
            passive_opts(),
            FieldTable::default(),
        )
        .await
        .expect_err("404");
    assert_eq!(code(&e), Some(404));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pseudo_queue_refuses_what_rabbitmq_refuses() {
    let s = TestServer::start().await;
    let (conn, ch) = s.channel().await;

    // A reply consumer cannot acknowledge.
    let e = consume_with(&ch, PSEUDO, "", Default::default(), FieldTable::default())
        .await
        .expect_err("406");
    assert_eq!(code(&e), Some(406));
    assert!(
        text(&e).contains("reply consumer cannot acknowledge"),
        "{e}"
    );

    // One per channel.
    let ch = channel(&conn).await;
    let _replies = consume(&ch, PSEUDO, "r1", true).await;
    let opts = lapin::options::BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let e = consume_with(&ch, PSEUDO, "r2", opts, FieldTable::default())
        .await
        .expect_err("406");
    assert_eq!(code(&e), Some(406));
    assert!(text(&e).contains("reply consumer already set"), "{e}");

    // Asking for replies on a channel without a reply consumer.
    let ch = channel(&conn).await;
    declare(&ch, "rpc").await.expect("declare");
    confirms(&ch).await;
    let e = refused_request(&ch).await;
    assert_eq!(code(&e), Some(406), "{e:?}");
    assert!(
        text(&e).contains("fast reply consumer does not exist"),
        "{e}"
    );

    // Once cancelled, the channel has none either.
    let ch = channel(&conn).await;
    confirms(&ch).await;
    let _replies = consume(&ch, PSEUDO, "r", true).await;
    ch.basic_cancel("r".into(), BasicCancelOptions::default())
        .await
        .expect("cancel");
    let e = refused_request(&ch).await;
    assert_eq!(code(&e), Some(406));

    // A forged address reaches nobody, and the requests that went before
    // are in their queue untouched.
    let ch = channel(&conn).await;
    confirms(&ch).await;
    let forged = format!("{PREFIX}0001000100000001.{:032x}", 7);
    assert!(reply(&ch, &forged, "c", b"x").await, "returned");
    assert!(reply(&ch, &format!("{PREFIX}garbage"), "c", b"x").await);
    let e = ch
        .queue_declare(
            forged.as_str().into(),
            passive_opts(),
            FieldTable::default(),
        )
        .await
        .expect_err("404");
    assert_eq!(code(&e), Some(404));
    let (_c2, ch) = s.channel().await;
    assert_eq!(
        count(&ch, "rpc").await,
        0,
        "refused requests were not routed"
    );
    s.stop().await;
}
