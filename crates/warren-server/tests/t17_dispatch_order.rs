//! `x-single-active-consumer` on classic and quorum queues, as RabbitMQ has
//! it: of a queue's consumers the first gets every message and the others
//! wait; when the active one's connection dies, the next takes over, with
//! what the dead one held redelivered first. An exclusive consume of a
//! classic one is refused with 403. And `x-max-priority`, the other rule of
//! who gets what first: a classic priority queue serves the highest
//! priority first, in publish order within one, also after a restart.

mod common;

use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{AMQPClass, basic};
use common::TestServer;
use common::raw::Raw;
use lapin::options::BasicConsumeOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use warren_testkit::client::*;

/// The queue types every test runs on.
const KINDS: [&str; 2] = ["classic", "quorum"];

/// A durable single-active-consumer queue of type `kind`.
async fn sac_queue(ch: &Channel, kind: &str) -> String {
    let mut args = FieldTable::default();
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    let name = format!("sac-{kind}");
    ch.queue_declare(name.as_str().into(), durable(), args)
        .await
        .expect("declare a single-active-consumer queue");
    name
}

/// Reads frames until `n` deliveries came; their bodies.
async fn deliveries(raw: &mut Raw, n: usize) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    while bodies.len() < n {
        match raw.frame().await {
            Some(AMQPFrame::Body(_, b)) => bodies.push(b),
            Some(_) => {}
            None => panic!("the connection closed after {} deliveries", bodies.len()),
        }
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_consumer_gets_everything_and_the_next_takes_over_when_it_dies() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    for kind in KINDS {
        let q = sac_queue(&ch, kind).await;
        // The first consumer is on a raw connection, so it can die abruptly.
        let mut first = Raw::open(s.addr(), 0).await;
        let ok = first
            .call(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                    queue: q.as_str().into(),
                    consumer_tag: "first".into(),
                    no_local: false,
                    no_ack: false,
                    exclusive: false,
                    nowait: false,
                    arguments: Default::default(),
                })),
            )
            .await;
        assert!(
            matches!(
                ok,
                Some(AMQPFrame::Method(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))
                ))
            ),
            "{kind}: {ok:?}"
        );
        let (_c2, ch2) = s.channel().await;
        let mut second = consume(&ch2, &q, "second", false).await;
        for i in 0..5 {
            let c = publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes(), persistent()).await;
            assert!(c.is_ack());
        }
        let got = deliveries(&mut first, 5).await;
        let want: Vec<Vec<u8>> = (0..5).map(|i| format!("m{i}").into_bytes()).collect();
        assert_eq!(got, want, "{kind}: the active consumer gets every message");
        assert!(
            nothing_for(&mut second, Duration::from_millis(300)).await,
            "{kind}: the waiting consumer gets nothing"
        );
        // The active consumer's connection dies without a goodbye.
        drop(first);
        for i in 0..5 {
            let d = next(&mut second).await;
            assert_eq!(d.data, format!("m{i}").into_bytes(), "{kind}");
            assert!(d.redelivered, "{kind}: held by the dead consumer");
            d.ack(Default::default()).await.expect("ack");
        }
        publish_confirmed(&ch, "", &q, b"after", BasicProperties::default()).await;
        assert_eq!(&next(&mut second).await.data[..], b"after", "{kind}");
        if kind == "quorum" {
            // Quorum queues do not look at `exclusive` on consume (yet).
            continue;
        }
        // An exclusive consume is refused, as RabbitMQ refuses it.
        let (_c3, ch3) = s.channel().await;
        let e = consume_with(
            &ch3,
            &q,
            "ex",
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("an exclusive consume of a single-active-consumer queue");
        assert_eq!(code(&e), Some(403), "{kind}: {e}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_queue_serves_the_highest_priority_first() {
    let mut s = TestServer::start().await;
    {
        let (_c, ch) = s.channel().await;
        confirms(&ch).await;
        let mut args = FieldTable::default();
        args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(5));
        ch.queue_declare("prio".into(), durable(), args)
            .await
            .expect("declare");
        // A backlog: priorities 0..=9 twice (above 5 counts as 5), and one
        // without a priority.
        for round in 0..2 {
            for p in 0..10u8 {
                let props = persistent().with_priority(p);
                publish_confirmed(&ch, "", "prio", format!("{round}-{p}").as_bytes(), props).await;
            }
        }
        publish_confirmed(&ch, "", "prio", b"none", persistent()).await;
    }
    // The order survives a restart (the messages come back from disk).
    s.restart().await;
    let (_c, ch) = s.channel().await;
    wait_ready(&ch, "prio", 21).await;
    ch.basic_qos(3, Default::default()).await.expect("qos");
    let mut c = consume(&ch, "prio", "c", false).await;
    let mut got = Vec::new();
    for _ in 0..21 {
        let d = next(&mut c).await;
        got.push(String::from_utf8_lossy(&d.data).into_owned());
        d.ack(Default::default()).await.expect("ack");
    }
    let want: Vec<String> = [
        // Level 5 (5 to 9) in publish order, then 4 down to 1, then 0.
        "0-5", "0-6", "0-7", "0-8", "0-9", "1-5", "1-6", "1-7", "1-8", "1-9", "0-4", "1-4", "0-3",
        "1-3", "0-2", "1-2", "0-1", "1-1", "0-0", "1-0", "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);
    s.stop().await;
}
