//! Messages across three real `warren` processes: a queue declared on node
//! 1 takes confirmed publishes through every exchange type on node 2 and
//! feeds a consumer on node 3 (acks flow back, prefetch holds); basic.get
//! and requeue work from any node; an exclusive queue goes when the node
//! of its connection is killed.

mod common;

use common::cluster::{BIN, channel, connect};

use common::{code, next};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ExchangeKind};
use warren_testkit::{Cluster, Options, wait_for_async};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `queue.declare passive` on a fresh channel: (reply code, message count).
async fn probe(conn: &Connection, name: &str) -> (u16, u32) {
    let ch = channel(conn).await;
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match ch
        .queue_declare(name.into(), opts, FieldTable::default())
        .await
    {
        Ok(q) => {
            let _ = ch.close(200, "ok".into()).await;
            (0, q.message_count())
        }
        Err(e) => (code(&e).unwrap_or(1), 0),
    }
}

fn headers(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), AMQPValue::LongString((*v).into()));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_one_node_consume_on_another_through_every_exchange_type() {
    let _turn = SERIAL.lock().await;
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    let (n1, n2, n3) = (
        connect(&c, 1).await,
        connect(&c, 2).await,
        connect(&c, 3).await,
    );
    c.wait_leader(&[1, 2, 3]).await;

    // The queue and one exchange of each type, declared on node 1.
    let ch1 = channel(&n1).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch1.queue_declare("flow".into(), durable, FieldTable::default())
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
        ch1.exchange_declare(
            (*x).into(),
            kind.clone(),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("exchange");
        ch1.queue_bind(
            "flow".into(),
            (*x).into(),
            (*key).into(),
            QueueBindOptions::default(),
            args.clone(),
        )
        .await
        .expect("bind");
    }
    // Node 2 routes with its own replica: wait until it has applied every
    // binding (an unroutable message would be confirmed and dropped).
    let applied = c.applied(1).await.expect("node 1 applied index");
    c.wait_applied(&[2], applied).await;

    // Confirmed publishes on node 2: one per exchange, then a burst.
    let ch2 = channel(&n2).await;
    ch2.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let routed = [
        ("x.direct", "k", persistent.clone()),
        ("x.fanout", "any", persistent.clone()),
        ("x.topic", "a.b", persistent.clone()),
        (
            "x.headers",
            "",
            persistent.clone().with_headers(headers(&[("h", "v")])),
        ),
    ];
    let mut pending = Vec::new();
    for (x, key, props) in &routed {
        let body = format!("via {x}");
        pending.push(
            ch2.basic_publish(
                (*x).into(),
                (*key).into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props.clone(),
            )
            .await
            .expect("publish"),
        );
    }
    let burst = 1000u32;
    for i in 0..burst {
        pending.push(
            ch2.basic_publish(
                "".into(),
                "flow".into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                persistent.clone(),
            )
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
    let mut consumer = ch3
        .basic_consume(
            "flow".into(),
            "c3".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
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
        (probe(&n1, "flow").await == (0, 0)).then_some(())
    })
    .await;
    ch3.close(200, "done".into()).await.expect("close");
    // The close travels to the home node on its own: wait until the home
    // has dropped the consumer, or the next message could still be sent to
    // it (and come back requeued, as RabbitMQ would do too).
    wait_for_async("the consumer is gone at home", || async {
        let ch = channel(&n1).await;
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare("flow".into(), opts, FieldTable::default())
            .await
            .ok()?;
        (q.consumer_count() == 0).then_some(())
    })
    .await;

    // basic.get from node 2 without ack, channel closed: requeued, and
    // redelivered to a basic.get on node 3.
    channel(&n1)
        .await
        .basic_publish(
            "".into(),
            "flow".into(),
            BasicPublishOptions::default(),
            b"once",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    let g = channel(&n2).await;
    let m = wait_for_async("a message to get on node 2", || async {
        g.basic_get("flow".into(), BasicGetOptions { no_ack: false })
            .await
            .expect("get")
    })
    .await;
    assert_eq!(m.delivery.data, b"once");
    assert!(!m.delivery.redelivered);
    g.close(200, "requeue".into()).await.expect("close");
    let g3 = channel(&n3).await;
    let m = wait_for_async("the requeued message on node 3", || async {
        g3.basic_get("flow".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
    })
    .await;
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
    let (n1, n3) = (connect(&c, 1).await, connect(&c, 3).await);
    c.wait_leader(&[1, 2, 3]).await;
    channel(&n3)
        .await
        .queue_declare(
            "owned-by-3".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exclusive");
    wait_for_async("node 1 sees it locked", || async {
        (probe(&n1, "owned-by-3").await.0 == 405).then_some(())
    })
    .await;
    c.kill9(3);
    drop(n3);
    wait_for_async("the exclusive queue is gone", || async {
        (probe(&n1, "owned-by-3").await.0 == 404).then_some(())
    })
    .await;
}
