//! `x-max-length` with `x-overflow` on classic queues, as RabbitMQ has them:
//! `drop-head` (the default) keeps the newest ready messages, `reject-publish`
//! nacks what does not fit, a waiting consumer takes messages before the
//! limit counts them, and what was dropped stays dropped across a restart.

mod common;

use common::TestServer;
use lapin::options::BasicQosOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use warren_testkit::client::*;

/// A queue declared with `x-max-length: max` and, if given, `x-overflow`.
async fn limited(ch: &Channel, name: &str, max: i64, overflow: Option<&str>, is_durable: bool) {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(max));
    if let Some(o) = overflow {
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from(o)),
        );
    }
    let opts = if is_durable {
        durable()
    } else {
        Default::default()
    };
    ch.queue_declare(name.into(), opts, args)
        .await
        .expect("declare a limited queue");
}

/// Publishes `m{i}` for each `i` of `range` with a confirm; the acks.
async fn publish_range(
    ch: &Channel,
    queue: &str,
    range: std::ops::Range<u32>,
    props: BasicProperties,
) -> Vec<bool> {
    let mut acks = Vec::new();
    for i in range {
        let c = publish_confirmed(ch, "", queue, format!("m{i}").as_bytes(), props.clone()).await;
        acks.push(c.is_ack());
    }
    acks
}

/// Takes every ready message of `queue` with `basic.get` (no-ack).
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..100 {
        let got = ch
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("get");
        match got {
            Some(m) => out.push(String::from_utf8_lossy(&m.delivery.data).into_owned()),
            None => return out,
        }
    }
    panic!("more messages than were published: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_head_keeps_the_newest_messages_and_confirms_them_all() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    limited(&ch, "newest", 2, None, false).await;
    let acks = publish_range(&ch, "newest", 0..5, BasicProperties::default()).await;
    assert_eq!(acks, vec![true; 5], "dropped messages were accepted first");
    assert_eq!(count(&ch, "newest").await, 2);
    assert_eq!(drain(&ch, "newest").await, vec!["m3", "m4"]);

    limited(&ch, "explicit", 1, Some("drop-head"), false).await;
    publish_range(&ch, "explicit", 0..3, BasicProperties::default()).await;
    assert_eq!(drain(&ch, "explicit").await, vec!["m2"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_nacks_what_does_not_fit_until_there_is_room() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    for (q, mode) in [
        ("full", "reject-publish"),
        ("full-dlx", "reject-publish-dlx"),
    ] {
        limited(&ch, q, 2, Some(mode), true).await;
        let acks = publish_range(&ch, q, 0..4, persistent()).await;
        assert_eq!(acks, vec![true, true, false, false], "{mode}");
        assert_eq!(count(&ch, q).await, 2, "{mode}");
        // Room again once a message leaves.
        let first = get_one(&ch, q, true).await;
        assert_eq!(first.delivery.data, b"m0");
        assert_eq!(
            publish_range(&ch, q, 4..6, persistent()).await,
            vec![true, false]
        );
        assert_eq!(drain(&ch, q).await, vec!["m1", "m4"], "{mode}");
    }
    // Unacked messages do not count: only ready ones do.
    limited(&ch, "unacked", 1, Some("reject-publish"), false).await;
    publish_range(&ch, "unacked", 0..1, BasicProperties::default()).await;
    let held = get_one(&ch, "unacked", false).await;
    assert_eq!(held.delivery.data, b"m0");
    assert_eq!(
        publish_range(&ch, "unacked", 1..3, BasicProperties::default()).await,
        vec![true, false]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_takes_what_a_full_queue_would_drop() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    limited(&ch, "zero", 0, None, false).await;
    let (_c2, cons) = s.channel().await;
    cons.basic_qos(2, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = consume(&cons, "zero", "c", false).await;
    confirms(&ch).await;
    // Two fit the consumer's prefetch; the third finds no taker and a
    // limit of zero, so it is dropped.
    let acks = publish_range(&ch, "zero", 0..3, BasicProperties::default()).await;
    assert_eq!(acks, vec![true; 3]);
    for want in [b"m0", b"m1"] {
        let d = next(&mut consumer).await;
        assert_eq!(&d.data[..], want);
        d.ack(Default::default()).await.expect("ack");
    }
    assert!(
        nothing_for(&mut consumer, std::time::Duration::from_millis(300)).await,
        "the third was dropped, not kept for later"
    );
    assert_eq!(count(&ch, "zero").await, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_persistent_messages_stay_dropped_after_a_restart() {
    let mut s = TestServer::start().await;
    {
        let (_c, ch) = s.channel().await;
        confirms(&ch).await;
        limited(&ch, "kept", 2, None, true).await;
        let acks = publish_range(&ch, "kept", 0..6, persistent()).await;
        assert_eq!(acks, vec![true; 6]);
    }
    s.restart().await;
    let (_c, ch) = s.channel().await;
    assert_eq!(count(&ch, "kept").await, 2);
    assert_eq!(drain(&ch, "kept").await, vec!["m4", "m5"]);
    s.stop().await;
}
