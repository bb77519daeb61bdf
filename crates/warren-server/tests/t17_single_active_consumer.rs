//! `x-single-active-consumer` on classic and quorum queues, as RabbitMQ has
//! it: of a queue's consumers the first gets every message and the others
//! wait; when the active one's connection dies, the next takes over, with
//! what the dead one held redelivered first. An exclusive consume of a
//! classic one is refused with 403.

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
