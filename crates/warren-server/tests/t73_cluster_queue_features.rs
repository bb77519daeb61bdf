//! RabbitMQ's everyday queue features on a queue homed on one node of a
//! three-node cluster and used through the others: message TTL, a
//! dead-letter exchange (the home node re-publishes, the dead-letter queue's
//! messages are fetched elsewhere with their `x-death`), and a single active
//! consumer whose connection, on another node, goes.

mod common;

use std::time::Duration;

use common::BIN;
use lapin::options::BasicNackOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, wait_for_async};

/// A durable queue `name` with `args` (numbers as long long ints, the rest
/// as long strings, `true` as a boolean).
async fn queue(ch: &Channel, name: &str, args: &[(&str, &str)]) {
    let mut t = FieldTable::default();
    for (k, v) in args {
        let value = match (v.parse::<i64>(), *v) {
            (Ok(n), _) => AMQPValue::LongLongInt(n),
            (_, "true") => AMQPValue::Boolean(true),
            _ => AMQPValue::LongString(LongString::from(*v)),
        };
        t.insert((*k).into(), value);
    }
    ch.queue_declare(name.into(), durable(), t)
        .await
        .expect("declare");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_dead_letters_and_a_single_active_consumer_work_from_every_node() {
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    let [n1, n2, n3] = c.connect_each([1, 2, 3]).await;
    c.wait_leader(&[1, 2, 3]).await;

    // Every queue is homed on node 1, where it is declared.
    let ch1 = channel(&n1).await;
    queue(&ch1, "ttl", &[("x-message-ttl", "200")]).await;
    queue(&ch1, "dlq", &[]).await;
    queue(
        &ch1,
        "work",
        &[
            ("x-dead-letter-exchange", ""),
            ("x-dead-letter-routing-key", "dlq"),
        ],
    )
    .await;
    queue(&ch1, "sac", &[("x-single-active-consumer", "true")]).await;
    let applied = c.applied(1).await.expect("node 1 applied index");
    c.wait_applied(&[2, 3], applied).await;

    // TTL: published through node 2, gone as node 3 sees it.
    let ch2 = channel(&n2).await;
    confirms(&ch2).await;
    let ch3 = channel(&n3).await;
    for i in 0..3 {
        publish_confirmed(&ch2, "", "ttl", format!("t{i}").as_bytes(), persistent()).await;
    }
    wait_for_async("the TTL queue to empty", || async {
        count(&ch3, "ttl").await == 0
    })
    .await;

    // Dead-lettering: published on node 2, rejected by a consumer on node
    // 3, fetched from the dead-letter queue on node 2 with its record.
    publish_confirmed(&ch2, "", "work", b"job", persistent()).await;
    let mut worker = consume(&ch3, "work", "w", false).await;
    let d = next(&mut worker).await;
    d.nack(BasicNackOptions {
        requeue: false,
        ..Default::default()
    })
    .await
    .expect("nack");
    let dead = get_one(&ch2, "dlq", true).await;
    assert_eq!(&dead.delivery.data[..], b"job");
    let headers = dead.delivery.properties.headers().clone().expect("headers");
    let text = |k: &str| match headers.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("x-first-death-reason"), "rejected");
    assert_eq!(text("x-first-death-queue"), "work");

    // Single active consumer: the first, on node 2, takes everything; when
    // its connection goes, the one on node 3 takes over.
    let first_conn = c.connect(2).await;
    let first_ch = channel(&first_conn).await;
    let mut first = consume(&first_ch, "sac", "first", false).await;
    let mut second = consume(&ch3, "sac", "second", false).await;
    let ch1c = channel(&n1).await;
    confirms(&ch1c).await;
    for i in 0..3 {
        publish_confirmed(
            &ch1c,
            "",
            "sac",
            format!("s{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    for i in 0..3 {
        assert_eq!(next(&mut first).await.data, format!("s{i}").into_bytes());
    }
    assert!(nothing_for(&mut second, Duration::from_millis(300)).await);
    first_conn.close(200, "bye".into()).await.expect("close");
    for i in 0..3 {
        let d = next(&mut second).await;
        assert_eq!(d.data, format!("s{i}").into_bytes());
        assert!(d.redelivered);
        d.ack(Default::default()).await.expect("ack");
    }
}

/// Direct reply-to across nodes: the requester on node 3, the request queue
/// homed on node 1, the server consuming and replying through node 2. The
/// reply goes from node 2 to node 3 over their queue link, to the
/// requester's channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_reply_crosses_nodes_to_the_requesting_channel() {
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    let [n1, n2, n3] = c.connect_each([1, 2, 3]).await;
    c.wait_leader(&[1, 2, 3]).await;
    let ch1 = channel(&n1).await;
    queue(&ch1, "rpc", &[]).await;
    let applied = c.applied(1).await.expect("node 1 applied index");
    c.wait_applied(&[2, 3], applied).await;

    let srv = channel(&n2).await;
    confirms(&srv).await;
    let mut requests = consume(&srv, "rpc", "server", false).await;
    let cli = channel(&n3).await;
    let mut replies = consume(&cli, "amq.rabbitmq.reply-to", "", true).await;
    for i in 0..20 {
        let props = BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id(format!("c-{i}").as_str().into());
        try_publish(&cli, "", "rpc", format!("{i}").as_bytes(), props)
            .await
            .expect("request");
        let req = next(&mut requests).await;
        let to = req.properties.reply_to().clone().expect("reply_to");
        assert!(to.as_str().starts_with("amq.rabbitmq.reply-to."), "{to}");
        let props =
            BasicProperties::default().with_correlation_id(format!("c-{i}").as_str().into());
        publish_confirmed(&srv, "", to.as_str(), format!("re {i}").as_bytes(), props).await;
        req.ack(Default::default()).await.expect("ack");
        let got = next(&mut replies).await;
        assert_eq!(got.data, format!("re {i}").into_bytes());
        assert_eq!(
            got.properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string()),
            Some(format!("c-{i}"))
        );
    }
}
