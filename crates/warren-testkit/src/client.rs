//! Lapin helpers for tests, the one set every test uses: connect, declare,
//! bind, publish, consume, get, and the reply code of a refusal. Each helper
//! that waits is bounded by [`DEADLINE`]; each that cannot fail in a passing
//! test expects, the others return lapin's `Result` for the test to check.

use std::time::Duration;

use futures::StreamExt;
use lapin::message::{BasicGetMessage, Delivery};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind, PublisherConfirm, Queue,
};

use crate::wait::{DEADLINE, wait_for_async};

// --- connections and errors

/// A connection to `uri` (bounded).
pub async fn connect(uri: &str) -> Connection {
    tokio::time::timeout(
        DEADLINE,
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// A new channel on `conn`.
pub async fn channel(conn: &Connection) -> Channel {
    conn.create_channel().await.expect("channel")
}

/// The AMQP reply code carried by a lapin error, if any.
pub fn code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(a) => Some(a.get_id()),
        _ => None,
    }
}

/// The reply text carried by a lapin error.
pub fn text(e: &lapin::Error) -> String {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(a) => a.get_message().to_string(),
        other => format!("{other:?}"),
    }
}

// --- queues

/// `queue.declare` options: durable.
pub fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// `queue.declare` options: exclusive to the connection.
pub fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

/// `queue.declare` of `name` with `opts` and no arguments.
pub async fn declare_with(
    ch: &Channel,
    name: &str,
    opts: QueueDeclareOptions,
) -> lapin::Result<Queue> {
    ch.queue_declare(name.into(), opts, FieldTable::default())
        .await
}

/// `queue.declare` of `name`, default options.
pub async fn declare(ch: &Channel, name: &str) -> lapin::Result<Queue> {
    declare_with(ch, name, QueueDeclareOptions::default()).await
}

/// `queue.declare passive` of `name` (an error closes the channel).
pub async fn passive(ch: &Channel, name: &str) -> lapin::Result<Queue> {
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    declare_with(ch, name, opts).await
}

/// The ready messages of `name`, which exists.
pub async fn count(ch: &Channel, name: &str) -> u32 {
    passive(ch, name).await.expect("passive").message_count()
}

/// `queue.declare passive` of `name` on a fresh channel of `conn`: the reply
/// code (0: it exists) and its ready messages.
pub async fn probe(conn: &Connection, name: &str) -> (u16, u32) {
    let ch = channel(conn).await;
    match passive(&ch, name).await {
        Ok(q) => {
            let _ = ch.close(200, "ok".into()).await;
            (0, q.message_count())
        }
        Err(e) => (code(&e).unwrap_or(1), 0),
    }
}

/// Waits until `name` answers `want` (0: it exists) on `conn`'s node.
pub async fn wait_queue(conn: &Connection, name: &str, want: u16) {
    wait_for_async(&format!("queue {name} answers {want}"), || async {
        probe(conn, name).await.0 == want
    })
    .await;
}

/// Waits until `name` holds `n` ready messages.
pub async fn wait_ready(ch: &Channel, name: &str, n: u32) {
    wait_for_async(&format!("{n} ready in {name}"), || async {
        passive(ch, name)
            .await
            .is_ok_and(|q| q.message_count() == n)
    })
    .await;
}

// --- exchanges and bindings

/// `exchange.declare` options: durable.
pub fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// `exchange.declare` options: passive.
pub fn passive_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

/// `exchange.declare` of `name` with `opts` and no arguments.
pub async fn declare_exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    opts: ExchangeDeclareOptions,
) -> lapin::Result<()> {
    ch.exchange_declare(name.into(), kind, opts, FieldTable::default())
        .await
}

/// `queue.bind` of `queue` to `exchange` with `key` and `args`.
pub async fn bind_with(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: FieldTable,
) -> lapin::Result<()> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    )
    .await
}

/// `queue.bind` of `queue` to `exchange` with `key`, no arguments.
pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    bind_with(ch, queue, exchange, key, FieldTable::default()).await
}

/// A table of string values: headers, or the arguments of a headers binding.
pub fn headers(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), AMQPValue::LongString((*v).into()));
    }
    t
}

// --- publishing

/// Message properties: persistent (delivery mode 2).
pub fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Puts `ch` in confirm mode.
pub async fn confirms(ch: &Channel) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
}

/// `basic.publish` as it went: the confirm to await, or why it was not sent.
pub async fn try_publish(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> lapin::Result<PublisherConfirm> {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
}

/// Publishes on `ch` (in confirm mode) what the broker refuses with a
/// channel error: the error, from the confirm or, if the confirm came
/// first, from the channel once it is closed.
pub async fn refused_publish(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> lapin::Error {
    let r = match try_publish(ch, exchange, key, body, props).await {
        Ok(confirm) => confirm.await.map(|_| ()),
        Err(e) => Err(e),
    };
    match r {
        Err(e) => e,
        Ok(()) => {
            wait_for_async("the channel to close", || async {
                ch.basic_qos(1, Default::default()).await.err()
            })
            .await
        }
    }
}

/// Publishes `body` with default properties.
pub async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    try_publish(ch, exchange, key, body, BasicProperties::default())
        .await
        .expect("publish");
}

/// Publishes `body` on a channel in confirm mode: the broker's confirmation.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Confirmation {
    try_publish(ch, exchange, key, body, props)
        .await
        .expect("publish")
        .await
        .expect("confirm")
}

// --- consuming

/// `basic.consume` of `queue` tagged `tag` (`""`: the broker names it).
pub async fn consume_with(
    ch: &Channel,
    queue: &str,
    tag: &str,
    opts: BasicConsumeOptions,
    args: FieldTable,
) -> lapin::Result<Consumer> {
    ch.basic_consume(queue.into(), tag.into(), opts, args).await
}

/// A consumer of `queue` tagged `tag`, acking or not, no arguments.
pub async fn consume(ch: &Channel, queue: &str, tag: &str, no_ack: bool) -> Consumer {
    let opts = BasicConsumeOptions {
        no_ack,
        ..Default::default()
    };
    consume_with(ch, queue, tag, opts, FieldTable::default())
        .await
        .expect("consume")
}

/// The next delivery of a consumer (bounded).
pub async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("delivery in time")
        .expect("stream open")
        .expect("delivery")
}

/// True when nothing reaches `consumer` for `quiet`.
pub async fn nothing_for(consumer: &mut Consumer, quiet: Duration) -> bool {
    tokio::time::timeout(quiet, consumer.next()).await.is_err()
}

/// Polls `basic.get` on `queue` until a message arrives (bounded).
pub async fn get_one(ch: &Channel, queue: &str, no_ack: bool) -> BasicGetMessage {
    wait_for_async(&format!("a message in {queue}"), || async {
        ch.basic_get(queue.into(), BasicGetOptions { no_ack })
            .await
            .expect("get")
    })
    .await
}

/// Publishes `body` to `queue` through `from` with a confirm, then gets it
/// through `to` (two nodes of a cluster, or the same one).
pub async fn publish_get(from: &Connection, to: &Connection, queue: &str, body: &[u8]) {
    let ch = channel(from).await;
    confirms(&ch).await;
    assert!(
        publish_confirmed(&ch, "", queue, body, persistent())
            .await
            .is_ack()
    );
    let got = get_one(&channel(to).await, queue, true).await;
    assert_eq!(got.delivery.data, body);
}
