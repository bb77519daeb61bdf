//! Messages across three real `warren` processes: a queue declared on node
//! 1 takes confirmed publishes through every exchange type on node 2 and
//! feeds a consumer on node 3 (acks flow back, prefetch holds); basic.get
//! and requeue work from any node; an exclusive queue goes when the node
//! of its connection is killed.

mod common;

use common::BIN;
use lapin::options::{BasicAckOptions, BasicQosOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Confirmation, ExchangeKind};
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, wait_for_async};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_one_node_consume_on_another_through_every_exchange_type() {
    let _turn = SERIAL.lock().await;
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    let [n1, n2, n3] = c.connect_each([1, 2, 3]).await;
    c.wait_leader(&[1, 2, 3]).await;

    // The queue and one exchange of each type, declared on node 1.
    let ch1 = channel(&n1).await;
    declare_with(&ch1, "flow", durable())
        .await
        .expect("declare");
    let bindings = [
        ("x.direct", ExchangeKind::Direct, "k", FieldTable::default()),
        ("x.fanout", ExchangeKind::Fanout, "", FieldTable::default()),
        ("x.topic", ExchangeKind::Topic, "a.*", FieldTable::default()),
        (
            "x.headers",
            ExchangeKind::Headers,
            "",
            headers(&[("x-match", "all"), ("h", "v")]),
        ),
    ];
    for (x, kind, key, args) in &bindings {
        declare_exchange(&ch1, x, kind.clone(), ExchangeDeclareOptions::default())
            .await
            .expect("exchange");
        bind_with(&ch1, "flow", x, key, args.clone())
            .await
            .expect("bind");
    }
    // Node 2 routes with its own replica: wait until it has applied every
    // binding (an unroutable message would be confirmed and dropped).
    let applied = c.applied(1).await.expect("node 1 applied index");
    c.wait_applied(&[2], applied).await;

    // Confirmed publishes on node 2: one per exchange, then a burst.
    let ch2 = channel(&n2).await;
    confirms(&ch2).await;
    let routed = [
        ("x.direct", "k", persistent()),
        ("x.fanout", "any", persistent()),
        ("x.topic", "a.b", persistent()),
        (
            "x.headers",
            "",
            persistent().with_headers(headers(&[("h", "v")])),
        ),
    ];
    let mut pending = Vec::new();
    for (x, key, props) in routed {
        let body = format!("via {x}");
        pending.push(
            try_publish(&ch2, x, key, body.as_bytes(), props)
                .await
                .expect("publish"),
        );
    }
    let burst = 1000u32;
    for i in 0..burst {
        pending.push(
            try_publish(&ch2, "", "flow", &i.to_be_bytes(), persistent())
                .await
                .expect("publish"),
        );
    }
    for p in pending {
        assert!(matches!(p.await.expect("confirm"), Confirmation::Ack(_)));
    }
    let total = burst + 4;
    assert_eq!(probe(&n1, "flow").await, (0, total), "all on the home node");
    assert_eq!(probe(&n3, "flow").await, (0, total), "counts from any node");

    // A consumer on node 3 with prefetch 50 acks every message.
    let ch3 = channel(&n3).await;
    ch3.basic_qos(50, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = consume(&ch3, "flow", "c3", false).await;
    let mut via = Vec::new();
    for _ in 0..total {
        let d = next(&mut consumer).await;
        if d.data.starts_with(b"via ") {
            via.push(String::from_utf8(d.data.clone()).expect("utf8"));
        }
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    via.sort();
    assert_eq!(
        via,
        [
            "via x.direct",
            "via x.fanout",
            "via x.headers",
            "via x.topic"
        ]
    );
    wait_for_async("acks reached the home node", || async {
        probe(&n1, "flow").await == (0, 0)
    })
    .await;
    ch3.close(200, "done".into()).await.expect("close");
    // The close travels to the home node on its own: wait until the home
    // has dropped the consumer, or the next message could still be sent to
    // it (and come back requeued, as RabbitMQ would do too).
    wait_for_async("the consumer is gone at home", || async {
        let ch = channel(&n1).await;
        passive(&ch, "flow")
            .await
            .is_ok_and(|q| q.consumer_count() == 0)
    })
    .await;

    // basic.get from node 2 without ack, channel closed: requeued, and
    // redelivered to a basic.get on node 3.
    publish(&channel(&n1).await, "", "flow", b"once").await;
    let g = channel(&n2).await;
    let m = get_one(&g, "flow", false).await;
    assert_eq!(m.delivery.data, b"once");
    assert!(!m.delivery.redelivered);
    g.close(200, "requeue".into()).await.expect("close");
    let m = get_one(&channel(&n3).await, "flow", true).await;
    assert_eq!(m.delivery.data, b"once");
    assert!(m.delivery.redelivered, "requeued after its channel closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_queue_goes_with_its_node() {
    let _turn = SERIAL.lock().await;
    let opts = Options {
        extra: vec!["--node-down-after-ms".into(), "1500".into()],
        ..Options::default()
    };
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], opts);
    let [n1, n3] = c.connect_each([1, 3]).await;
    c.wait_leader(&[1, 2, 3]).await;
    declare_with(&channel(&n3).await, "owned-by-3", exclusive())
        .await
        .expect("exclusive");
    // Node 1 sees it locked.
    wait_queue(&n1, "owned-by-3", 405).await;
    c.kill9(3);
    drop(n3);
    // The exclusive queue is gone.
    wait_queue(&n1, "owned-by-3", 404).await;
}
