//! What survives a restart: durable entities and persistent messages in
//! durable queues; nothing else.

mod common;

use common::*;
use lapin::ExchangeKind;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_things_survive_and_transient_things_do_not() {
    let mut s = TestServer::start().await;
    {
        tracing::info!("--- declare durable and transient entities, publish with confirms");
        let (c, ch) = s.channel().await;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            "dx".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("dx");
        ch.exchange_declare(
            "tx".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("tx");
        ch.queue_declare("dq".into(), durable, FieldTable::default())
            .await
            .expect("dq");
        ch.queue_declare(
            "tq".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("tq");
        ch.queue_bind(
            "dq".into(),
            "dx".into(),
            "a.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        for (body, mode) in [
            (&b"persistent-1"[..], 2),
            (b"transient", 1),
            (b"persistent-2", 2),
        ] {
            let c = ch
                .basic_publish(
                    "dx".into(),
                    "a.b".into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(mode),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(matches!(c, Confirmation::Ack(_)));
        }
        // One persistent message consumed and acked: it must not come back.
        ch.basic_publish(
            "".into(),
            "dq".into(),
            BasicPublishOptions::default(),
            b"acked",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
        let m = get_one(&ch, "dq", false).await;
        assert_eq!(m.delivery.data, b"persistent-1");
        let _ = m;
        c.close(200, "bye".into()).await.expect("close");
    }
    s.restart().await;
    {
        tracing::info!("--- after restart: durable ones are back, with their persistent messages");
        let (c, ch) = s.channel().await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare("dq".into(), passive, FieldTable::default())
            .await
            .expect("dq survives");
        assert_eq!(
            q.message_count(),
            3,
            "persistent-1 (was unacked), persistent-2, acked-not-yet"
        );
        let mut bodies = vec![];
        while let Some(m) = ch
            .basic_get("dq".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            bodies.push(String::from_utf8(m.delivery.data.clone()).expect("utf8"));
        }
        assert_eq!(bodies, vec!["persistent-1", "persistent-2", "acked"]);
        // The binding survived too.
        ch.basic_publish(
            "dx".into(),
            "a.c".into(),
            BasicPublishOptions::default(),
            b"routed",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
        assert_eq!(get_one(&ch, "dq", true).await.delivery.data, b"routed");
        for name in ["tq"] {
            let ch = c.create_channel().await.expect("ch");
            let e = ch
                .queue_declare(name.into(), passive, FieldTable::default())
                .await
                .expect_err("transient queue gone");
            assert_eq!(code(&e), Some(404));
        }
        let ch = c.create_channel().await.expect("ch");
        let e = ch
            .exchange_declare(
                "tx".into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect_err("transient exchange gone");
        assert_eq!(code(&e), Some(404));
    }
    {
        tracing::info!("--- acked messages are deleted from disk");
        let (_c, ch) = s.channel().await;
        ch.basic_publish(
            "".into(),
            "dq".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish");
        let m = get_one(&ch, "dq", false).await;
        m.delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        ch.queue_declare(
            "sync".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("a durable declare syncs the writer");
    }
    s.restart().await;
    let (_c, ch) = s.channel().await;
    let q = ch
        .queue_declare(
            "dq".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("dq");
    assert_eq!(q.message_count(), 0);
    s.stop().await;
}
