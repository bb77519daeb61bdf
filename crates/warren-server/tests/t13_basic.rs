//! Consumers, acknowledgements, prefetch, get, returns and cancels.

mod common;

use std::time::Duration;

use common::TestServer;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, message::BasicReturnMessage};
use warren_testkit::client::*;
use warren_testkit::{DEADLINE, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_in_order_when_the_channel_closes() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    declare(&ch, "q").await.expect("declare");
    for i in 0..5 {
        publish(&ch, "", "q", format!("m{i}").as_bytes()).await;
    }
    let mut cons = consume(&ch, "q", "c1", false).await;
    let mut first = vec![];
    for _ in 0..5 {
        let d = next(&mut cons).await;
        assert!(!d.redelivered);
        first.push(d);
    }
    // Ack the second only; close the channel with the rest unacked.
    first[1].ack(BasicAckOptions::default()).await.expect("ack");
    ch.close(200, "bye".into()).await.expect("close");
    let ch2 = channel(&c).await;
    let mut cons2 = consume(&ch2, "q", "c2", false).await;
    let mut got = vec![];
    for _ in 0..4 {
        let d = next(&mut cons2).await;
        assert!(d.redelivered, "requeued messages are marked redelivered");
        got.push(String::from_utf8(d.data.clone()).expect("utf8"));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(got, vec!["m0", "m2", "m3", "m4"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_reject_and_recover() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    declare(&ch, "q").await.expect("declare");
    publish(&ch, "", "q", b"a").await;
    publish(&ch, "", "q", b"b").await;
    let m = get_one(&ch, "q", false).await;
    assert_eq!(m.delivery.data, b"a");
    m.delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .expect("nack");
    let m = get_one(&ch, "q", false).await;
    assert_eq!(
        (m.delivery.data.as_slice(), m.delivery.redelivered),
        (&b"a"[..], true)
    );
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .expect("reject drops");
    let m = get_one(&ch, "q", false).await;
    assert_eq!(m.delivery.data, b"b");
    assert_eq!(m.message_count, 0);
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .expect("recover");
    let m = get_one(&ch, "q", true).await;
    assert_eq!(
        (m.delivery.data.as_slice(), m.delivery.redelivered),
        (&b"b"[..], true)
    );
    assert!(
        ch.basic_get("q".into(), BasicGetOptions::default())
            .await
            .expect("get")
            .is_none(),
        "get-empty"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_delivery_tag_is_406_and_double_ack_too() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    let e_ch = channel(&c).await;
    e_ch.basic_ack(99, BasicAckOptions::default())
        .await
        .expect("sent");
    wait_for("406 closes the channel", || !e_ch.status().connected()).await;
    declare(&ch, "q").await.expect("declare");
    publish(&ch, "", "q", b"a").await;
    let m = get_one(&ch, "q", false).await;
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .expect("ack");
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .expect("sent");
    wait_for("double ack closes the channel", || !ch.status().connected()).await;
    assert!(c.status().connected());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_per_consumer_and_global() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    declare(&ch, "q").await.expect("declare");
    for i in 0..6 {
        publish(&ch, "", "q", &[i]).await;
    }
    ch.basic_qos(2, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut cons = consume(&ch, "q", "c", false).await;
    let a = next(&mut cons).await;
    let _b = next(&mut cons).await;
    // Two unacked: nothing more arrives until one is acked.
    assert!(nothing_for(&mut cons, Duration::from_millis(200)).await);
    a.ack(BasicAckOptions::default()).await.expect("ack");
    let _c3 = next(&mut cons).await;

    // Global: a limit of 1 shared by two consumers on another channel.
    let (_c2, ch2) = s.channel().await;
    declare(&ch2, "g").await.expect("declare");
    for i in 0..4 {
        publish(&ch2, "", "g", &[i]).await;
    }
    ch2.basic_qos(1, BasicQosOptions { global: true })
        .await
        .expect("qos");
    let mut g1 = consume(&ch2, "g", "g1", false).await;
    let mut g2 = consume(&ch2, "g", "g2", false).await;
    let first = tokio::select! { d = async { next(&mut g1).await } => d, d = async { next(&mut g2).await } => d };
    let none = tokio::time::timeout(Duration::from_millis(200), async {
        tokio::select! { d = futures::StreamExt::next(&mut g1) => d, d = futures::StreamExt::next(&mut g2) => d }
    })
    .await;
    assert!(
        none.is_err(),
        "channel-wide limit of 1 holds across consumers"
    );
    first.ack(BasicAckOptions::default()).await.expect("ack");
    let _second = tokio::select! { d = async { next(&mut g1).await } => d, d = async { next(&mut g2).await } => d };
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_is_returned_before_the_confirm() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    confirms(&ch).await;
    let confirm = ch
        .basic_publish(
            "amq.direct".into(),
            "nobody".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost?",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    let returned: Option<BasicReturnMessage> = confirm.take_message();
    let r = returned.expect("basic.return arrived before the ack");
    assert_eq!(r.reply_code, 312);
    assert_eq!(r.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(r.delivery.data, b"lost?");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_cancels_its_consumers() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    declare(&ch, "q").await.expect("declare");
    let mut cons = consume(&ch, "q", "c", false).await;
    let (_c2, ch2) = s.channel().await;
    ch2.queue_delete("q".into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
    let end = tokio::time::timeout(DEADLINE, futures::StreamExt::next(&mut cons))
        .await
        .expect("in time");
    assert!(
        end.is_none(),
        "server-sent basic.cancel ends the consumer stream"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer_tag_reuse_and_priorities() {
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    declare(&ch, "q").await.expect("declare");
    // lapin cancels a consumer when its handle is dropped: keep it.
    let exclusive = BasicConsumeOptions {
        exclusive: true,
        ..Default::default()
    };
    let _ex = consume_with(&ch, "q", "ex", exclusive, FieldTable::default())
        .await
        .expect("exclusive");
    let ch2 = channel(&c).await;
    let e = consume_with(
        &ch2,
        "q",
        "other",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .expect_err("403");
    assert_eq!(code(&e), Some(403));

    let ch3 = channel(&c).await;
    declare(&ch3, "p").await.expect("declare");
    let mut low = consume(&ch3, "p", "low", true).await;
    let mut args = FieldTable::default();
    args.insert("x-priority".into(), AMQPValue::LongInt(10));
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut high = consume_with(&ch3, "p", "high", no_ack, args)
        .await
        .expect("priority consumer");
    for i in 0..3 {
        publish(&ch3, "", "p", &[i]).await;
    }
    for _ in 0..3 {
        next(&mut high).await;
    }
    assert!(nothing_for(&mut low, Duration::from_millis(100)).await);

    // Reusing a consumer tag on the same channel is a 530 connection error.
    let ch4 = channel(&c).await;
    declare(&ch4, "r").await.expect("declare");
    let _same = consume(&ch4, "r", "same", true).await;
    let _ = consume_with(&ch4, "r", "same", Default::default(), FieldTable::default()).await;
    wait_for("connection closed", || !c.status().connected()).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_between_two_consumers() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    declare(&ch, "rr").await.expect("declare");
    let mut a = consume(&ch, "rr", "a", true).await;
    let mut b = consume(&ch, "rr", "b", true).await;
    for i in 0..10u8 {
        publish(&ch, "", "rr", &[i]).await;
    }
    let mut got_a = vec![];
    let mut got_b = vec![];
    for _ in 0..5 {
        got_a.push(next(&mut a).await.data[0]);
        got_b.push(next(&mut b).await.data[0]);
    }
    assert_eq!(got_a, vec![0, 2, 4, 6, 8]);
    assert_eq!(got_b, vec![1, 3, 5, 7, 9]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_pauses_and_resumes_deliveries() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    declare(&ch, "f").await.expect("declare");
    let mut cons = consume(&ch, "f", "c", true).await;
    ch.channel_flow(ChannelFlowOptions { active: false })
        .await
        .expect("flow off");
    publish(&ch, "", "f", b"held").await;
    assert!(
        nothing_for(&mut cons, Duration::from_millis(200)).await,
        "no delivery while flow is off"
    );
    ch.channel_flow(ChannelFlowOptions { active: true })
        .await
        .expect("flow on");
    assert_eq!(next(&mut cons).await.data, b"held");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_ack_and_nack() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    declare(&ch, "m").await.expect("declare");
    for i in 0..6u8 {
        publish(&ch, "", "m", &[i]).await;
    }
    let mut cons = consume(&ch, "m", "c", false).await;
    let mut ds = vec![];
    for _ in 0..6 {
        ds.push(next(&mut cons).await);
    }
    ds[2]
        .ack(BasicAckOptions { multiple: true })
        .await
        .expect("ack 0..=2");
    ds[4]
        .nack(BasicNackOptions {
            multiple: true,
            requeue: true,
        })
        .await
        .expect("nack 3..=4");
    let again: Vec<u8> = vec![next(&mut cons).await.data[0], next(&mut cons).await.data[0]];
    assert_eq!(again, vec![3, 4]);
    s.stop().await;
}

/// A delivery to a consumer that already holds unacked messages may wait a
/// moment for company in the connection's write buffer (one write for
/// several deliveries); it must still arrive on its own, one by one, with
/// nothing else happening on the connection, and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_a_consumer_with_messages_in_hand_arrive_one_by_one() {
    let s = TestServer::start().await;
    let (_c, ch) = s.channel().await;
    declare(&ch, "held").await.expect("declare");
    ch.basic_qos(50, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut cons = consume(&ch, "held", "c", false).await;
    let mut held = Vec::new();
    for i in 0..30 {
        // One publish at a time: each delivery past the eighth is written
        // alone, after its wait, while the consumer holds the earlier ones.
        publish(&ch, "", "held", format!("m{i}").as_bytes()).await;
        let d = next(&mut cons).await;
        assert_eq!(d.data, format!("m{i}").into_bytes());
        held.push(d);
    }
    for d in held {
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
}
