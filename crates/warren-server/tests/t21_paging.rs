//! A backlog bigger than the page budget: bodies go to disk only and come back
//! in order, across a restart too.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use warren_queues::classic::PAGE_BUDGET;

const N: u32 = 30_000;
const SIZE: usize = 1024; // 30 MiB of bodies, several times the budget

async fn publish_backlog(ch: &Channel) {
    ch.queue_declare(
        "backlog".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut body = vec![0u8; SIZE];
    let mut pending = Vec::new();
    for i in 0..N {
        body[..4].copy_from_slice(&i.to_be_bytes());
        pending.push(
            ch.basic_publish(
                "".into(),
                "backlog".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish"),
        );
        if pending.len() == 500 {
            for c in pending.drain(..) {
                assert!(c.await.expect("confirm").is_ack());
            }
        }
    }
    for c in pending {
        assert!(c.await.expect("confirm").is_ack());
    }
}

async fn consume_in_order(ch: &Channel, from: u32, to: u32) {
    ch.basic_qos(500, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut cons = ch
        .basic_consume(
            "backlog".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    for i in from..to {
        let d = next(&mut cons).await;
        assert_eq!(d.data.len(), SIZE);
        assert_eq!(
            u32::from_be_bytes(d.data[..4].try_into().expect("4")),
            i,
            "order kept"
        );
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    ch.basic_cancel(cons.tag(), BasicCancelOptions::default())
        .await
        .expect("cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_beyond_the_budget_pages_to_disk() {
    let mut s = TestServer::start().await;
    {
        let (_c, ch) = s.channel().await;
        publish_backlog(&ch).await;
        let broker = s.server.as_ref().expect("running").broker.clone();
        // Bodies of durable, confirmed messages past the budget left memory.
        let used = broker.memory().used() as usize;
        assert!(
            used < PAGE_BUDGET * 2,
            "{used} bytes held for a {} byte backlog",
            N as usize * SIZE
        );
        tracing::info!("--- consume the first half, in order");
        consume_in_order(&ch, 0, N / 2).await;
    }
    s.restart().await;
    {
        tracing::info!("--- after restart: the rest, paged in from disk, in order");
        let (_c, ch) = s.channel().await;
        let broker = s.server.as_ref().expect("running").broker.clone();
        assert!(
            (broker.memory().used() as usize) < PAGE_BUDGET * 2,
            "recovery keeps only the budget in memory"
        );
        let q = ch
            .queue_declare(
                "backlog".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive");
        assert_eq!(q.message_count(), N / 2);
        consume_in_order(&ch, N / 2, N).await;
    }
    s.stop().await;
}
