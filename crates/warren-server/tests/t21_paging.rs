//! A backlog bigger than the page budget: bodies go to disk only and come back
//! in order, across a restart too; a priority queue's levels each page on
//! their own and still serve the highest priority first.

mod common;

use common::TestServer;
use lapin::Channel;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use warren_queues::classic::PAGE_BUDGET;
use warren_testkit::client::*;

const N: u32 = 30_000;
const SIZE: usize = 1024; // 30 MiB of bodies, several times the budget

async fn publish_backlog(ch: &Channel) {
    publish_to(ch, "backlog", N).await;
}

/// `n` persistent 1 KiB messages numbered 0.. to the durable queue `queue`,
/// confirmed.
async fn publish_to(ch: &Channel, queue: &str, n: u32) {
    declare_with(ch, queue, durable()).await.expect("declare");
    confirms(ch).await;
    publish_numbered(ch, queue, 0, n, 0).await;
}

/// Publishes `n` persistent 1 KiB messages of priority `p` to `queue`,
/// numbered from `from` (the number in bytes 0..4, the priority in byte 4),
/// confirmed (the channel is in confirm mode).
async fn publish_numbered(ch: &Channel, queue: &str, from: u32, n: u32, p: u8) {
    let mut body = vec![0u8; SIZE];
    body[4] = p;
    let props = if p == 0 {
        persistent()
    } else {
        persistent().with_priority(p)
    };
    let mut pending = Vec::new();
    for i in from..from + n {
        body[..4].copy_from_slice(&i.to_be_bytes());
        pending.push(
            try_publish(ch, "", queue, &body, props.clone())
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

/// No-ack consumers take a paged backlog to the end: when the part in
/// memory runs out, the queue pages the next bodies in and goes on
/// dispatching by itself (no ack or credit comes back to wake it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_backlog_drains_to_no_ack_consumers() {
    const MANY: u32 = 100_000;
    let s = TestServer::start().await;
    let (c, ch) = s.channel().await;
    publish_to(&ch, "no-ack", MANY).await;
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let ch = channel(&c).await;
        consumers.push((consume(&ch, "no-ack", "", true).await, ch));
    }
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for (mut cons, ch) in consumers {
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            use futures::StreamExt;
            let _ch = ch;
            while let Some(Ok(_)) = cons.next().await {
                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    warren_testkit::wait_for("every message reaches a no-ack consumer", || {
        received.load(std::sync::atomic::Ordering::Relaxed) == MANY
    })
    .await;
    assert_eq!(count(&ch, "no-ack").await, 0);
    for t in tasks {
        t.abort();
    }
    s.stop().await;
}

/// Consumes `n` messages of `queue`: (number, priority) of each, acked.
async fn take(ch: &Channel, queue: &str, n: u32) -> Vec<(u32, u8)> {
    ch.basic_qos(200, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut cons = consume(ch, queue, "", false).await;
    let mut got = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let d = next(&mut cons).await;
        assert_eq!(d.data.len(), SIZE);
        let i = u32::from_be_bytes(d.data[..4].try_into().expect("4"));
        got.push((i, d.data[4]));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    ch.basic_cancel(cons.tag(), BasicCancelOptions::default())
        .await
        .expect("cancel");
    got
}

/// A durable priority queue with a backlog several times the page budget:
/// low-priority messages fill memory, then high-priority ones arrive and are
/// paged (their level pages on its own). Memory stays within the budget, the
/// high level is served first although every one of its messages was on
/// disk only, publish order holds within each level, and all of it survives
/// a restart halfway through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_backlog_pages_per_level_and_keeps_priority_order() {
    const LOW: u32 = 16_000; // 16 MiB at priority 1: twice the budget
    const HIGH: u32 = 6_000; // then 6 MiB at priority 7, all of it paged
    const TAIL: u32 = 2_000; // then more at priority 1
    let queue = "prio-backlog";
    let mut s = TestServer::start().await;
    {
        let (_c, ch) = s.channel().await;
        let mut args = FieldTable::default();
        args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(9));
        ch.queue_declare(queue.into(), durable(), args)
            .await
            .expect("declare");
        confirms(&ch).await;
        publish_numbered(&ch, queue, 0, LOW, 1).await;
        publish_numbered(&ch, queue, LOW, HIGH, 7).await;
        publish_numbered(&ch, queue, LOW + HIGH, TAIL, 1).await;
        let broker = s.server.as_ref().expect("running").broker.clone();
        let used = broker.memory().used() as usize;
        assert!(
            used < PAGE_BUDGET * 2,
            "{used} bytes held for a {} byte priority backlog",
            (LOW + HIGH + TAIL) as usize * SIZE
        );
        assert_eq!(count(&ch, queue).await, LOW + HIGH + TAIL);
        tracing::info!("--- half of the high level first, then a restart");
        let got = take(&ch, queue, HIGH / 2).await;
        let want: Vec<(u32, u8)> = (LOW..LOW + HIGH / 2).map(|i| (i, 7)).collect();
        assert!(got == want, "the paged high level first, in publish order");
    }
    s.restart().await;
    {
        let (_c, ch) = s.channel().await;
        let broker = s.server.as_ref().expect("running").broker.clone();
        assert!(
            (broker.memory().used() as usize) < PAGE_BUDGET * 2,
            "recovery keeps only the budget in memory, across levels"
        );
        assert_eq!(count(&ch, queue).await, LOW + HIGH / 2 + TAIL);
        let got = take(&ch, queue, LOW + HIGH / 2 + TAIL).await;
        let want: Vec<(u32, u8)> = (LOW + HIGH / 2..LOW + HIGH)
            .map(|i| (i, 7))
            .chain((0..LOW).map(|i| (i, 1)))
            .chain((LOW + HIGH..LOW + HIGH + TAIL).map(|i| (i, 1)))
            .collect();
        let first_wrong = got.iter().zip(&want).position(|(g, w)| g != w);
        assert!(
            got.len() == want.len() && first_wrong.is_none(),
            "after the restart: the rest of the high level, then the low one, in order (first difference at {first_wrong:?})"
        );
        assert_eq!(count(&ch, queue).await, 0);
    }
    s.stop().await;
}
