//! `x-max-length` and `x-max-length-bytes` with `x-overflow` on classic and
//! quorum queues, as RabbitMQ has them: `drop-head` (the default) keeps the
//! newest ready messages,
//! `reject-publish` nacks what does not fit, a waiting consumer takes
//! messages before the limit counts them, and what was dropped stays dropped
//! across a restart. Every test runs on both queue types.

mod common;

use common::TestServer;
use lapin::options::BasicQosOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use warren_testkit::client::*;

/// The queue types every test runs on.
const KINDS: [&str; 2] = ["classic", "quorum"];

/// A durable queue of type `kind` declared with `x-max-length: max` and, if
/// given, `x-overflow`; its name is `name` with the type appended.
async fn limited(ch: &Channel, name: &str, kind: &str, max: i64, overflow: Option<&str>) -> String {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(max));
    args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    if let Some(o) = overflow {
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from(o)),
        );
    }
    let name = format!("{name}-{kind}");
    ch.queue_declare(name.as_str().into(), durable(), args)
        .await
        .expect("declare a limited queue");
    name
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
    for kind in KINDS {
        let q = limited(&ch, "newest", kind, 2, None).await;
        let acks = publish_range(&ch, &q, 0..5, persistent()).await;
        assert_eq!(
            acks,
            vec![true; 5],
            "{kind}: dropped messages were accepted first"
        );
        assert_eq!(count(&ch, &q).await, 2, "{kind}");
        assert_eq!(drain(&ch, &q).await, vec!["m3", "m4"], "{kind}");

        let q = limited(&ch, "explicit", kind, 1, Some("drop-head")).await;
        publish_range(&ch, &q, 0..3, BasicProperties::default()).await;
        assert_eq!(drain(&ch, &q).await, vec!["m2"], "{kind}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_nacks_what_does_not_fit_until_there_is_room() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    // Quorum queues refuse `reject-publish-dlx` at declaration, as RabbitMQ.
    let modes = [
        ("classic", "reject-publish"),
        ("classic", "reject-publish-dlx"),
        ("quorum", "reject-publish"),
    ];
    for (kind, mode) in modes {
        let q = limited(&ch, mode, kind, 2, Some(mode)).await;
        let acks = publish_range(&ch, &q, 0..4, persistent()).await;
        assert_eq!(acks, vec![true, true, false, false], "{kind} {mode}");
        assert_eq!(count(&ch, &q).await, 2, "{kind} {mode}");
        // Room again once a message leaves.
        let first = get_one(&ch, &q, true).await;
        assert_eq!(first.delivery.data, b"m0");
        assert_eq!(
            publish_range(&ch, &q, 4..6, persistent()).await,
            vec![true, false],
            "{kind} {mode}"
        );
        assert_eq!(drain(&ch, &q).await, vec!["m1", "m4"], "{kind} {mode}");
    }
    {
        let (_c2, other) = s.channel().await;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish-dlx".into()),
        );
        let e = other
            .queue_declare("dlx-quorum".into(), durable(), args)
            .await
            .expect_err("a quorum queue refuses reject-publish-dlx");
        assert_eq!(code(&e), Some(406), "{e}");
    }
    // Unacked messages do not count: only ready ones do.
    for kind in KINDS {
        let q = limited(&ch, "unacked", kind, 1, Some("reject-publish")).await;
        publish_range(&ch, &q, 0..1, BasicProperties::default()).await;
        let held = get_one(&ch, &q, false).await;
        assert_eq!(held.delivery.data, b"m0");
        assert_eq!(
            publish_range(&ch, &q, 1..3, BasicProperties::default()).await,
            vec![true, false],
            "{kind}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_takes_what_a_full_queue_would_drop() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    for kind in KINDS {
        let q = limited(&ch, "zero", kind, 0, None).await;
        let (_c2, cons) = s.channel().await;
        cons.basic_qos(2, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut consumer = consume(&cons, &q, "c", false).await;
        // Two fit the consumer's prefetch; the third finds no taker and a
        // limit of zero, so it is dropped.
        let acks = publish_range(&ch, &q, 0..3, BasicProperties::default()).await;
        assert_eq!(acks, vec![true; 3], "{kind}");
        for want in [b"m0", b"m1"] {
            let d = next(&mut consumer).await;
            assert_eq!(&d.data[..], want, "{kind}");
            d.ack(Default::default()).await.expect("ack");
        }
        assert!(
            nothing_for(&mut consumer, std::time::Duration::from_millis(300)).await,
            "{kind}: the third was dropped, not kept for later"
        );
        assert_eq!(count(&ch, &q).await, 0, "{kind}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_persistent_messages_stay_dropped_after_a_restart() {
    let mut s = TestServer::start().await;
    let mut names = Vec::new();
    {
        let (_c, ch) = s.channel().await;
        confirms(&ch).await;
        for kind in KINDS {
            let q = limited(&ch, "kept", kind, 2, None).await;
            let acks = publish_range(&ch, &q, 0..6, persistent()).await;
            assert_eq!(acks, vec![true; 6], "{kind}");
            names.push(q);
        }
    }
    s.restart().await;
    let (_c, ch) = s.channel().await;
    for q in &names {
        wait_ready(&ch, q, 2).await;
        assert_eq!(drain(&ch, q).await, vec!["m4", "m5"], "{q}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bytes_limit_counts_the_bodies_of_ready_messages() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    for kind in KINDS {
        for overflow in ["drop-head", "reject-publish"] {
            let mut args = FieldTable::default();
            args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(5));
            args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
            args.insert(
                "x-overflow".into(),
                AMQPValue::LongString(LongString::from(overflow)),
            );
            let q = format!("bytes-{overflow}-{kind}");
            ch.queue_declare(q.as_str().into(), durable(), args)
                .await
                .expect("declare");
            // Bodies of 2 bytes: two fit in 5, a third does not.
            let acks = publish_range(&ch, &q, 0..4, persistent()).await;
            let (want_acks, want_left) = match overflow {
                "drop-head" => (vec![true; 4], vec!["m2", "m3"]),
                _ => (vec![true, true, false, false], vec!["m0", "m1"]),
            };
            assert_eq!(acks, want_acks, "{kind} {overflow}");
            assert_eq!(drain(&ch, &q).await, want_left, "{kind} {overflow}");
        }
    }
    s.stop().await;
}
