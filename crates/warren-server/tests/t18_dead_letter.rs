//! Dead-lettering on classic and quorum queues, as RabbitMQ does it: a message
//! rejected without requeue, expired, or dropped or refused for a length
//! limit goes to the queue's `x-dead-letter-exchange` (with
//! `x-dead-letter-routing-key` if set), carrying an `x-death` record
//! written field by field as RabbitMQ writes it; a fully automatic cycle is
//! dropped; a persistent message is never lost on the way (a quorum queue
//! keeps its dead letters in its replicated state until they are
//! re-published: at least once, where RabbitMQ's default is at most once).

mod common;

use common::TestServer;
use lapin::message::Delivery;
use lapin::options::{BasicNackOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use warren_testkit::client::*;
use warren_testkit::wait_for_async;

/// Declares a durable classic queue `name` with `args` (string values are
/// long strings, numbers long long ints).
async fn queue(ch: &Channel, name: &str, args: &[(&str, &str)]) {
    let mut t = FieldTable::default();
    for (k, v) in args {
        let value = match v.parse::<i64>() {
            Ok(n) => AMQPValue::LongLongInt(n),
            Err(_) => AMQPValue::LongString(LongString::from(*v)),
        };
        t.insert((*k).into(), value);
    }
    ch.queue_declare(name.into(), durable(), t)
        .await
        .expect("declare");
}

fn header<'a>(d: &'a Delivery, k: &str) -> &'a AMQPValue {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(k))
        .unwrap_or_else(|| panic!("no header {k}: {:?}", d.properties.headers()))
}

fn text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("not a long string: {other:?}"),
    }
}

/// The `x-death` entries of a delivery.
fn deaths(d: &Delivery) -> Vec<FieldTable> {
    match header(d, "x-death") {
        AMQPValue::FieldArray(a) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death entry {other:?}"),
            })
            .collect(),
        other => panic!("x-death {other:?}"),
    }
}

fn field<'a>(t: &'a FieldTable, k: &str) -> &'a AMQPValue {
    t.inner()
        .get(k)
        .unwrap_or_else(|| panic!("no {k} in {t:?}"))
}

fn keys(ks: &[&str]) -> AMQPValue {
    AMQPValue::FieldArray(FieldArray::from(
        ks.iter()
            .map(|k| AMQPValue::LongString(LongString::from(*k)))
            .collect::<Vec<_>>(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_goes_to_the_dead_letter_exchange_with_its_record() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    declare_exchange(&ch, "dlx", lapin::ExchangeKind::Fanout, durable_exchange())
        .await
        .expect("exchange");
    queue(&ch, "dlq", &[]).await;
    bind(&ch, "dlq", "dlx", "").await.expect("bind");
    queue(&ch, "work", &[("x-dead-letter-exchange", "dlx")]).await;
    let props = persistent()
        .with_expiration(ShortString::from("60000"))
        .with_correlation_id(ShortString::from("c-1"));
    publish_confirmed(&ch, "", "work", b"job", props).await;
    let got = get_one(&ch, "work", false).await;
    got.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .expect("reject");
    let (_c2, cons) = s.channel().await;
    let mut dlq = consume(&cons, "dlq", "c", true).await;
    let d = next(&mut dlq).await;
    assert_eq!(&d.data[..], b"job");
    assert_eq!(d.exchange.as_str(), "dlx");
    assert_eq!(d.routing_key.as_str(), "work", "its own routing key");
    assert_eq!(*d.properties.delivery_mode(), Some(2));
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|s| s.as_str()),
        Some("c-1")
    );
    assert_eq!(*d.properties.expiration(), None, "expiration is removed");
    let list = deaths(&d);
    assert_eq!(list.len(), 1);
    let e = &list[0];
    assert_eq!(field(e, "count"), &AMQPValue::LongLongInt(1));
    assert_eq!(text(field(e, "reason")), "rejected");
    assert_eq!(text(field(e, "queue")), "work");
    assert_eq!(text(field(e, "exchange")), "");
    assert_eq!(field(e, "routing-keys"), &keys(&["work"]));
    assert_eq!(text(field(e, "original-expiration")), "60000");
    assert!(matches!(field(e, "time"), AMQPValue::Timestamp(t) if *t > 1_600_000_000));
    for (k, want) in [("reason", "rejected"), ("queue", "work"), ("exchange", "")] {
        assert_eq!(text(header(&d, &format!("x-first-death-{k}"))), want);
        assert_eq!(text(header(&d, &format!("x-last-death-{k}"))), want);
    }
    assert_eq!(count(&ch, "work").await, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_retry_loop_counts_each_round_in_x_death() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    // Celery's and Spring's delayed retry: rejected work waits in `retry`
    // for its TTL, then goes back to `work`.
    queue(
        &ch,
        "work",
        &[
            ("x-dead-letter-exchange", ""),
            ("x-dead-letter-routing-key", "retry"),
        ],
    )
    .await;
    queue(
        &ch,
        "retry",
        &[
            ("x-message-ttl", "50"),
            ("x-dead-letter-exchange", ""),
            ("x-dead-letter-routing-key", "work"),
        ],
    )
    .await;
    publish_confirmed(&ch, "", "work", b"job", persistent()).await;
    let (_c2, cons) = s.channel().await;
    let mut work = consume(&cons, "work", "w", false).await;
    for round in 0..2 {
        let d = next(&mut work).await;
        assert_eq!(&d.data[..], b"job", "round {round}");
        d.nack(BasicNackOptions {
            requeue: false,
            ..Default::default()
        })
        .await
        .expect("nack");
    }
    let d = next(&mut work).await;
    d.ack(Default::default()).await.expect("ack");
    let list = deaths(&d);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(text(field(&list[0], "queue")), "retry");
    assert_eq!(text(field(&list[0], "reason")), "expired");
    assert_eq!(field(&list[0], "count"), &AMQPValue::LongLongInt(2));
    assert_eq!(field(&list[0], "routing-keys"), &keys(&["retry"]));
    assert_eq!(text(field(&list[1], "queue")), "work");
    assert_eq!(text(field(&list[1], "reason")), "rejected");
    assert_eq!(field(&list[1], "count"), &AMQPValue::LongLongInt(2));
    assert_eq!(field(&list[1], "routing-keys"), &keys(&["work"]));
    assert_eq!(text(header(&d, "x-first-death-reason")), "rejected");
    assert_eq!(text(header(&d, "x-first-death-queue")), "work");
    assert_eq!(text(header(&d, "x-last-death-reason")), "expired");
    assert_eq!(text(header(&d, "x-last-death-queue")), "retry");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_dead_letters_what_it_drops_or_refuses() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    queue(&ch, "dlq", &[]).await;
    for overflow in ["drop-head", "reject-publish-dlx"] {
        let q = format!("full-{overflow}");
        queue(
            &ch,
            &q,
            &[
                ("x-max-length", "1"),
                ("x-overflow", overflow),
                ("x-dead-letter-exchange", ""),
                ("x-dead-letter-routing-key", "dlq"),
            ],
        )
        .await;
        let a = publish_confirmed(&ch, "", &q, b"first", persistent()).await;
        let b = publish_confirmed(&ch, "", &q, b"second", persistent()).await;
        assert!(a.is_ack());
        let (kept, dead) = match overflow {
            "drop-head" => {
                assert!(b.is_ack());
                ("second", "first")
            }
            _ => {
                assert!(b.is_nack(), "refused, and nacked");
                ("first", "second")
            }
        };
        let d = get_one(&ch, "dlq", true).await;
        assert_eq!(&d.delivery.data[..], dead.as_bytes(), "{overflow}");
        let list = match d
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-death"))
        {
            Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
            other => panic!("{other:?}"),
        };
        match &list[0] {
            AMQPValue::FieldTable(e) => {
                assert_eq!(text(field(e, "reason")), "maxlen", "{overflow}");
                assert_eq!(text(field(e, "queue")), q);
            }
            other => panic!("{other:?}"),
        }
        let left = get_one(&ch, &q, true).await;
        assert_eq!(&left.delivery.data[..], kept.as_bytes(), "{overflow}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_cycle_is_dropped() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    // Expired messages go back to the same queue: RabbitMQ drops them.
    queue(
        &ch,
        "loop",
        &[
            ("x-message-ttl", "20"),
            ("x-dead-letter-exchange", ""),
            ("x-dead-letter-routing-key", "loop"),
        ],
    )
    .await;
    publish_confirmed(&ch, "", "loop", b"m", BasicProperties::default()).await;
    // Its death names `loop`, which it would go back to with no rejection
    // on the way: RabbitMQ's `detect_cycles` drops it.
    wait_for_async("the looping message to be dropped", || async {
        count(&ch, "loop").await == 0
    })
    .await;
    let (_c2, cons) = s.channel().await;
    let mut c = consume(&cons, "loop", "c", true).await;
    assert!(nothing_for(&mut c, std::time::Duration::from_millis(300)).await);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_persistent_message_is_not_lost_in_a_restart() {
    let mut s = TestServer::start().await;
    {
        let (_c, ch) = s.channel().await;
        confirms(&ch).await;
        queue(&ch, "dlq", &[]).await;
        queue(
            &ch,
            "work",
            &[
                ("x-dead-letter-exchange", ""),
                ("x-dead-letter-routing-key", "dlq"),
            ],
        )
        .await;
        publish_confirmed(&ch, "", "work", b"job", persistent()).await;
        let got = get_one(&ch, "work", false).await;
        got.delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .expect("reject");
        wait_ready(&ch, "dlq", 1).await;
    }
    s.restart().await;
    let (_c, ch) = s.channel().await;
    wait_ready(&ch, "dlq", 1).await;
    let d = get_one(&ch, "dlq", true).await;
    assert_eq!(&d.delivery.data[..], b"job");
    // Its first queue deletes its copy once the dead-letter queue has it;
    // a restart in between brings the copy back (at least once, never
    // lost), so the first queue holds it at most once.
    let back = count(&ch, "work").await;
    assert!(back <= 1, "{back} copies came back");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_dead_letters_what_it_rejects_expires_or_gives_up_on() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    queue(&ch, "dlq", &[]).await;
    queue(
        &ch,
        "qq",
        &[
            ("x-queue-type", "quorum"),
            ("x-dead-letter-exchange", ""),
            ("x-dead-letter-routing-key", "dlq"),
            ("x-delivery-limit", "1"),
        ],
    )
    .await;
    queue(
        &ch,
        "qq-ttl",
        &[
            ("x-queue-type", "quorum"),
            ("x-message-ttl", "50"),
            ("x-dead-letter-exchange", ""),
            ("x-dead-letter-routing-key", "dlq"),
        ],
    )
    .await;
    publish_confirmed(&ch, "", "qq", b"rejected", persistent()).await;
    publish_confirmed(&ch, "", "qq", b"given-up", persistent()).await;
    publish_confirmed(&ch, "", "qq-ttl", b"expired", persistent()).await;
    let (_c2, cons) = s.channel().await;
    let mut c = consume(&cons, "qq", "c", false).await;
    let d = next(&mut c).await;
    assert_eq!(&d.data[..], b"rejected");
    d.reject(BasicRejectOptions { requeue: false })
        .await
        .expect("reject");
    // Returned twice: past a delivery limit of 1.
    for _ in 0..2 {
        let d = next(&mut c).await;
        assert_eq!(&d.data[..], b"given-up");
        d.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .expect("nack");
    }
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let got = get_one(&ch, "dlq", true).await;
        let d = &got.delivery;
        let body = String::from_utf8_lossy(&d.data).into_owned();
        let e = &deaths(d)[0];
        reasons.push((body, text(field(e, "reason")), text(field(e, "queue"))));
    }
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            ("expired".into(), "expired".into(), "qq-ttl".into()),
            ("given-up".into(), "delivery_limit".into(), "qq".into()),
            ("rejected".into(), "rejected".into(), "qq".into()),
        ]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_exchange_takes_dead_letters_but_not_publishers() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    let internal = lapin::options::ExchangeDeclareOptions {
        internal: true,
        ..durable_exchange()
    };
    declare_exchange(&ch, "dlx-internal", lapin::ExchangeKind::Fanout, internal)
        .await
        .expect("exchange");
    queue(&ch, "dlq", &[]).await;
    bind(&ch, "dlq", "dlx-internal", "").await.expect("bind");
    queue(&ch, "work", &[("x-dead-letter-exchange", "dlx-internal")]).await;
    publish_confirmed(&ch, "", "work", b"job", persistent()).await;
    let got = get_one(&ch, "work", false).await;
    got.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .expect("reject");
    let dead = get_one(&ch, "dlq", true).await;
    assert_eq!(&dead.delivery.data[..], b"job");
    assert_eq!(dead.delivery.exchange.as_str(), "dlx-internal");

    // A publisher is still refused, as RabbitMQ refuses it.
    let (_c2, ch2) = s.channel().await;
    confirms(&ch2).await;
    let e = refused_publish(&ch2, "dlx-internal", "", b"x", BasicProperties::default()).await;
    assert_eq!(code(&e), Some(403));
    s.stop().await;
}

/// A quorum queue's dead letters are re-published, then forgotten: after a
/// restart (a new leader asks for every dead letter not yet re-published)
/// none comes again and none is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queues_dead_letters_are_neither_lost_nor_repeated_in_a_restart() {
    let mut s = TestServer::start().await;
    {
        let (_c, ch) = s.channel().await;
        confirms(&ch).await;
        queue(&ch, "dlq", &[]).await;
        queue(
            &ch,
            "qq",
            &[
                ("x-queue-type", "quorum"),
                ("x-dead-letter-exchange", ""),
                ("x-dead-letter-routing-key", "dlq"),
            ],
        )
        .await;
        for body in ["one", "two", "three"] {
            publish_confirmed(&ch, "", "qq", body.as_bytes(), persistent()).await;
        }
        let (_c2, cons) = s.channel().await;
        let mut c = consume(&cons, "qq", "c", false).await;
        for _ in 0..3 {
            next(&mut c)
                .await
                .reject(BasicRejectOptions { requeue: false })
                .await
                .expect("reject");
        }
        wait_ready(&ch, "dlq", 3).await;
    }
    s.restart().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    // The queue's new leader is up and has applied its first entries (the
    // ask for dead letters is in its first one).
    publish_confirmed(&ch, "", "qq", b"after", persistent()).await;
    let got = get_one(&ch, "qq", true).await;
    assert_eq!(&got.delivery.data[..], b"after");
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let got = get_one(&ch, "dlq", true).await;
        bodies.push(String::from_utf8_lossy(&got.delivery.data).into_owned());
    }
    bodies.sort();
    assert_eq!(bodies, vec!["one", "three", "two"]);
    assert_eq!(count(&ch, "dlq").await, 0, "none re-published twice");
    assert_eq!(count(&ch, "qq").await, 0);
    s.stop().await;
}
