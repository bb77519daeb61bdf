//! A backlog bigger than the page budget: bodies go to disk only and come back
//! in order, across a restart too.

mod common;

use common::TestServer;
use lapin::Channel;
use lapin::options::*;
use warren_queues::classic::PAGE_BUDGET;
use warren_testkit::client::*;

const N: u32 = 30_000;
const SIZE: usize = 1024; // 30 MiB of bodies, several times the budget

async fn publish_backlog(ch: &Channel) {
    declare_with(ch, "backlog", durable())
        .await
        .expect("declare");
    confirms(ch).await;
    let mut body = vec![0u8; SIZE];
    let mut pending = Vec::new();
    for i in 0..N {
        body[..4].copy_from_slice(&i.to_be_bytes());
        pending.push(
            try_publish(ch, "", "backlog", &body, persistent())
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
    let mut cons = consume(ch, "backlog", "", false).await;
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
        assert_eq!(count(&ch, "backlog").await, N / 2);
        consume_in_order(&ch, N / 2, N).await;
    }
    s.stop().await;
}
