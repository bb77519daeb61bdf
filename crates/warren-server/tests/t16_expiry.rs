//! Message expiry as RabbitMQ has it: a queue's `x-message-ttl` and a
//! message's `expiration` property. An expired message is never delivered
//! nor fetched, and leaves from the head of the queue: behind a longer-lived
//! message it waits, at the head it goes (also from a paged backlog, also
//! while a consumer holds others). A TTL of 0 delivers to a consumer that
//! can take the message at once and expires it otherwise. Deadlines are
//! kept on disk: a restart does not make a message live longer. Every test
//! but the paged backlog's (a classic queue's paging) runs on both queue
//! types. A queue with `x-expires` goes when it has been unused (no
//! consumer or fetch; for a classic queue, no declaration either) that long.

mod common;

use std::time::Duration;

use common::TestServer;
use lapin::options::{BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use warren_testkit::client::*;
use warren_testkit::wait_for_async;

/// The queue types every test runs on.
const KINDS: [&str; 2] = ["classic", "quorum"];

/// A durable queue of type `kind`, with `x-message-ttl: ttl` milliseconds
/// if given; its name is `name` with the type appended.
async fn queue(ch: &Channel, name: &str, kind: &str, ttl: Option<i64>) -> String {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    if let Some(ttl) = ttl {
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    }
    let name = format!("{name}-{kind}");
    ch.queue_declare(name.as_str().into(), durable(), args)
        .await
        .expect("declare a queue");
    name
}

/// Properties of a persistent message with `expiration` (milliseconds).
fn expiring(ms: &str) -> BasicProperties {
    persistent().with_expiration(ShortString::from(ms))
}

/// Waits until `queue` counts `n` ready messages (bounded).
async fn wait_count(ch: &Channel, queue: &str, n: u32) {
    wait_for_async(&format!("{n} ready in {queue}"), || async {
        count(ch, queue).await == n
    })
    .await;
}

/// `basic.get` with no-ack, once: the body, if a message was there.
async fn get_now(ch: &Channel, queue: &str) -> Option<String> {
    ch.basic_get(
        queue.into(),
        lapin::options::BasicGetOptions { no_ack: true },
    )
    .await
    .expect("get")
    .map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_ttl_expires_messages_that_are_never_fetched() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    for kind in KINDS {
        let q = queue(&ch, "ttl", kind, Some(200)).await;
        for i in 0..3 {
            let c = publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes(), persistent()).await;
            assert!(c.is_ack(), "{kind}: an expiring message is still confirmed");
        }
        wait_count(&ch, &q, 0).await;
        assert_eq!(get_now(&ch, &q).await, None, "{kind}");
        // A long TTL keeps its messages.
        let q = queue(&ch, "long", kind, Some(60_000)).await;
        publish_confirmed(&ch, "", &q, b"kept", persistent()).await;
        assert_eq!(get_now(&ch, &q).await.as_deref(), Some("kept"), "{kind}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_message_expiration_leaves_from_the_head_only() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    for kind in KINDS {
        let q = queue(&ch, "per", kind, None).await;
        publish_confirmed(&ch, "", &q, b"short", expiring("100")).await;
        publish_confirmed(&ch, "", &q, b"forever", persistent()).await;
        publish_confirmed(&ch, "", &q, b"behind", expiring("100")).await;
        // `short` expires at the head; `behind` has expired too but waits
        // behind `forever`, and is counted until it reaches the head.
        wait_count(&ch, &q, 2).await;
        assert_eq!(get_now(&ch, &q).await.as_deref(), Some("forever"), "{kind}");
        assert_eq!(
            get_now(&ch, &q).await,
            None,
            "{kind}: an expired message at the head is never fetched"
        );
        assert_eq!(count(&ch, &q).await, 0, "{kind}");
        // The queue's TTL and the message's: the earlier wins.
        let q = queue(&ch, "both", kind, Some(60_000)).await;
        publish_confirmed(&ch, "", &q, b"soon", expiring("50")).await;
        wait_count(&ch, &q, 0).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_of_zero_reaches_a_waiting_consumer_or_nobody() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    for kind in KINDS {
        let q = queue(&ch, "zero", kind, Some(0)).await;
        publish_confirmed(&ch, "", &q, b"nobody", BasicProperties::default()).await;
        assert_eq!(get_now(&ch, &q).await, None, "{kind}: no consumer: expired");
        assert_eq!(count(&ch, &q).await, 0, "{kind}");

        let (_c2, cons) = s.channel().await;
        cons.basic_qos(1, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut consumer = consume(&cons, &q, "c", false).await;
        publish_confirmed(&ch, "", &q, b"taken", BasicProperties::default()).await;
        let d = next(&mut consumer).await;
        assert_eq!(
            &d.data[..],
            b"taken",
            "{kind}: a consumer with credit takes it at once"
        );
        // Its prefetch is used: the next one finds no taker and expires.
        publish_confirmed(&ch, "", &q, b"late", BasicProperties::default()).await;
        d.ack(Default::default()).await.expect("ack");
        assert!(
            nothing_for(&mut consumer, Duration::from_millis(300)).await,
            "{kind}: a message that found no taker on arrival is gone"
        );
        // `expiration: 0` on a queue without a TTL behaves the same.
        let q = queue(&ch, "plain", kind, None).await;
        publish_confirmed(&ch, "", &q, b"x", expiring("0")).await;
        assert_eq!(get_now(&ch, &q).await, None, "{kind}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_expire_while_a_consumer_holds_others_and_after_a_requeue() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    for kind in KINDS {
        let q = queue(&ch, "held", kind, Some(300)).await;
        let (_c2, cons) = s.channel().await;
        cons.basic_qos(1, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut consumer = consume(&cons, &q, "c", false).await;
        for i in 0..3 {
            publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes(), persistent()).await;
        }
        let first = next(&mut consumer).await;
        assert_eq!(&first.data[..], b"m0", "{kind}");
        // m1 and m2 wait behind the consumer's prefetch and expire there.
        wait_count(&ch, &q, 0).await;
        // m0 comes back after its TTL: expired at the head, never redelivered.
        first
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .expect("nack");
        assert!(
            nothing_for(&mut consumer, Duration::from_millis(300)).await,
            "{kind}: neither the expired requeued message nor the others are delivered"
        );
        assert_eq!(count(&ch, &q).await, 0, "{kind}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_backlog_expires_without_being_read() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    let q = queue(&ch, "paged", "classic", Some(4_000)).await;
    // 12 MiB of persistent messages: past the queue's 8 MiB page budget.
    let body = vec![7u8; 64 << 10];
    let mut pending = Vec::new();
    for _ in 0..192 {
        pending.push(
            try_publish(&ch, "", &q, &body, persistent())
                .await
                .expect("publish"),
        );
    }
    for c in pending {
        assert!(c.await.expect("confirm").is_ack());
    }
    wait_count(&ch, &q, 0).await;
    let (_c2, cons) = s.channel().await;
    let mut consumer = consume(&cons, &q, "c", true).await;
    assert!(nothing_for(&mut consumer, Duration::from_millis(300)).await);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_survives_a_restart() {
    let mut s = TestServer::start().await;
    let mut names = Vec::new();
    {
        let (_c, ch) = s.channel().await;
        confirms(&ch).await;
        for kind in KINDS {
            let q = queue(&ch, "kept", kind, None).await;
            publish_confirmed(&ch, "", &q, b"short", expiring("1000")).await;
            publish_confirmed(&ch, "", &q, b"long", expiring("600000")).await;
            names.push(q);
        }
    }
    s.restart().await;
    let (_c, ch) = s.channel().await;
    for q in &names {
        // Without its deadline on disk, `short` would live on after a restart.
        wait_count(&ch, q, 1).await;
        assert_eq!(get_now(&ch, q).await.as_deref(), Some("long"), "{q}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_expiration_closes_the_channel_with_406() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    let q = queue(&ch, "q", "classic", None).await;
    let cases = [
        ("abc", "invalid expiration 'abc': no_integer"),
        ("-5", "invalid expiration '-5': {value_negative,-5}"),
        ("10s", "invalid expiration '10s': {leftover_string,\"s\"}"),
    ];
    for (value, want) in cases {
        let ch = channel(&c).await;
        confirms(&ch).await;
        let props = BasicProperties::default().with_expiration(ShortString::from(value));
        let e = refused_publish(&ch, "", &q, b"x", props).await;
        assert_eq!(code(&e), Some(406), "{value}: {e}");
        assert!(text(&e).contains(want), "{value}: {e}");
    }
    assert_eq!(count(&ch, &q).await, 0, "nothing was enqueued");
    s.stop().await;
}

/// True when a mandatory publish to `queue` through the default exchange
/// comes back unroutable: the queue is gone. Publishing does not count as
/// using a queue, so asking this way does not keep it alive (a passive
/// declaration would).
async fn gone(ch: &Channel, queue: &str) -> bool {
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"probe",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    confirm.take_message().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_queue_with_x_expires_goes_and_a_consumer_keeps_it() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    let declare = |name: String, kind: &'static str| {
        let ch = ch.clone();
        async move {
            let mut args = FieldTable::default();
            args.insert("x-expires".into(), AMQPValue::LongLongInt(300));
            args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
            ch.queue_declare(name.as_str().into(), durable(), args)
                .await
                .expect("declare");
            name
        }
    };
    for kind in KINDS {
        let unused = declare(format!("unused-{kind}"), kind).await;
        publish_confirmed(&ch, "", &unused, b"m", persistent()).await;
        wait_for_async("the unused queue to go", || gone(&ch, &unused)).await;

        let consumed = declare(format!("consumed-{kind}"), kind).await;
        let (_c2, cons) = s.channel().await;
        let mut consumer = consume(&cons, &consumed, "c", true).await;
        // Well past its x-expires, a consumer keeps it.
        assert!(nothing_for(&mut consumer, Duration::from_millis(900)).await);
        assert!(
            !gone(&ch, &consumed).await,
            "{kind}: a queue with a consumer stays"
        );
        assert_eq!(&next(&mut consumer).await.data[..], b"probe", "{kind}");
        cons.basic_cancel("c".into(), Default::default())
            .await
            .expect("cancel");
        wait_for_async("the queue to go after its last consumer", || {
            gone(&ch, &consumed)
        })
        .await;
    }
    s.stop().await;
}
