//! Memory: the high watermark blocks a fast publisher and releases it as a
//! slow consumer drains; message and connection footprints stay within budget.
//! Measured on a real `warren` process from /proc.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{AMQPClass, basic, channel, tx};
use common::BIN;
use common::paced::{CONSUME, PUBLISHED, peak_backlog};
use common::raw::{Raw, bytes, method, publishes};
use futures::{FutureExt, StreamExt};
use lapin::Event;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use tokio::io::AsyncWriteExt;
use warren_testkit::client::*;
use warren_testkit::{DEADLINE, SingleNode, wait_for, wait_for_async};

/// One test at a time: each measures a broker (its RSS, or how closely a
/// publisher is kept to its consumer's pace), and on CI's two cores the
/// load of another (a million messages) made the quorum queue's backlog
/// peak at 3,380 where it is about 550 alone.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: u64 = 1024 * 1024;

/// Prints the broker's RSS after `what` (and `before` it), and checks that
/// it is at most `limit` MiB.
fn assert_rss_within(p: &SingleNode, what: &str, before: u64, limit: u64) {
    let rss = p.rss();
    println!(
        "{what}: broker RSS {} MiB (before: {} MiB)",
        rss / MIB,
        before / MIB
    );
    assert!(rss <= limit * MIB, "RSS {} MiB", rss / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_blocks_a_fast_publisher_and_nothing_is_lost() {
    let _serial = SERIAL.lock().await;
    let p = SingleNode::start(BIN, &["--memory-high-watermark", "8MiB"]).await;
    const N: u32 = 60_000;
    const SIZE: usize = 4096; // 240 MiB published in all, 30x the watermark
    let publisher = p.connect().await;
    let consumer = p.connect().await;
    let pch = channel(&publisher).await;
    declare(&pch, "wm").await.expect("declare");

    let blocked = Arc::new(AtomicBool::new(false));
    let unblocked_after_block = Arc::new(AtomicBool::new(false));
    {
        let mut events = publisher.events_listener();
        let (b, u) = (blocked.clone(), unblocked_after_block.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                match ev {
                    Event::ConnectionBlocked(_) => b.store(true, Ordering::SeqCst),
                    Event::ConnectionUnblocked if b.load(Ordering::SeqCst) => {
                        u.store(true, Ordering::SeqCst)
                    }
                    _ => {}
                }
            }
        });
    }

    // The consumer starts once the publisher has been blocked (a queue
    // with a consumer slows its publisher to the consumer's pace, so the
    // alarm would never be reached), then drains fast.
    let received = Arc::new(AtomicU64::new(0));
    let cch = channel(&consumer).await;
    cch.basic_qos(200, BasicQosOptions::default())
        .await
        .expect("qos");
    let drain = {
        let (received, blocked) = (received.clone(), blocked.clone());
        tokio::spawn(async move {
            wait_for("the publisher blocked by the memory alarm", || {
                blocked.load(Ordering::SeqCst)
            })
            .await;
            let mut cons = consume(&cch, "wm", "c", false).await;
            let mut seen = vec![false; N as usize];
            while received.load(Ordering::SeqCst) < N as u64 {
                let d = tokio::time::timeout(DEADLINE * 3, cons.next())
                    .await
                    .expect("deliveries keep coming")
                    .expect("open")
                    .expect("delivery");
                let i = u32::from_be_bytes(d.data[..4].try_into().expect("4 bytes"));
                assert!(!seen[i as usize], "message {i} delivered twice");
                seen[i as usize] = true;
                d.ack(BasicAckOptions::default()).await.expect("ack");
                received.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let max_rss = Arc::new(AtomicU64::new(0));
    let sampling = {
        let (max_rss, pid) = (max_rss.clone(), p.pid());
        tokio::spawn(async move {
            loop {
                if let Some(rss) = warren_testkit::rss(pid) {
                    max_rss.fetch_max(rss, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut body = vec![7u8; SIZE];
    for i in 0..N {
        body[..4].copy_from_slice(&i.to_be_bytes());
        publish(&pch, "", "wm", &body).await;
    }
    tokio::time::timeout(Duration::from_secs(120), drain)
        .await
        .expect("drained in time")
        .expect("consumer task");
    sampling.abort();
    let peak = max_rss.load(Ordering::SeqCst);
    println!(
        "watermark test: peak broker RSS {} MiB for {} MiB published",
        peak / MIB,
        N as u64 * SIZE as u64 / MIB
    );
    assert_eq!(received.load(Ordering::SeqCst), N as u64);
    assert!(
        blocked.load(Ordering::SeqCst),
        "publisher received connection.blocked"
    );
    assert!(
        unblocked_after_block.load(Ordering::SeqCst),
        "publisher received connection.unblocked"
    );
    assert!(peak < 120 * MIB, "broker RSS peaked at {} MiB", peak / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_million_small_messages_fit_in_300_mib() {
    let _serial = SERIAL.lock().await;
    let p = SingleNode::start(BIN, &[]).await;
    let c = p.connect().await;
    let ch = channel(&c).await;
    declare(&ch, "million").await.expect("declare");
    let before = p.rss();
    let mut raw = Raw::open(p.addr, 0).await;
    let chunk = publishes("million", 10_000, 100);
    for _ in 0..100 {
        raw.stream.write_all(&chunk).await.expect("write");
    }
    wait_ready(&ch, "million", 1_000_000).await;
    assert_rss_within(&p, "1M x 100 B transient messages", before, 300);
    drop(raw);
    c.close(200, "ok".into()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_fit_in_100_mib() {
    let _serial = SERIAL.lock().await;
    let p = SingleNode::start(BIN, &[]).await;
    let before = p.rss();
    let mut conns = Vec::with_capacity(1000);
    for _ in 0..1000 {
        conns.push(Raw::open(p.addr, 0).await);
    }
    assert_rss_within(&p, "1000 idle connections with a channel each", before, 100);
    drop(conns);
}

/// A publisher far faster than the only consumer of its queue is slowed down to
/// the consumer's pace (queue flow control): the backlog stays at what the
/// consumer takes in a few tens of milliseconds (`Backlog::TARGET`, never
/// under `Backlog::FLOOR`), instead of taking everything the publisher can
/// write (before: a fixed 20,000 messages, seconds of latency).
async fn slowed_publisher(queue_type: &str) {
    let p = SingleNode::start(BIN, &[]).await;
    let c = p.connect().await;
    let ch = channel(&c).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(queue_type.into()),
    );
    ch.queue_declare("paced".into(), durable(), args)
        .await
        .expect("declare");
    let cch = channel(&c).await;
    let peak = peak_backlog(&cch, &ch, p.addr, "paced").await;
    println!(
        "{queue_type}: peak backlog {peak} ready while {CONSUME} were consumed of {PUBLISHED} published"
    );
    // Seen: 566-819 (classic), about 1,100 (quorum, whose leader counts
    // the enqueues it proposed and has not applied). The 20,000-message
    // threshold this replaced peaked near 22,000.
    assert!(
        peak < 3_000,
        "the publisher was not kept near the consumer's pace: {peak} ready"
    );
    c.close(200, "ok".into()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumed_classic_queue_slows_its_publisher() {
    let _serial = SERIAL.lock().await;
    slowed_publisher("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumed_quorum_queue_slows_its_publisher() {
    let _serial = SERIAL.lock().await;
    slowed_publisher("quorum").await;
}

/// Channels a client may open (Warren's default `channel_max`).
const CHANNELS: u16 = 2047;
/// What the half-sending client below may push before the test gives up on
/// being stopped: far over the watermark.
const HALF_SENT_CAP: u64 = 768 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_never_finish_count_against_the_watermark() {
    let _serial = SERIAL.lock().await;
    let p = SingleNode::start(BIN, &["--memory-high-watermark", "64MiB"]).await;
    let before = p.rss();
    // Another client's queue, with a message waiting, before anything; the
    // other client never publishes (publishers are blocked by any alarm).
    let publisher = p.connect().await;
    let pch = channel(&publisher).await;
    declare(&pch, "other").await.expect("declare");
    publish(&pch, "", "other", b"for the other client").await;
    wait_ready(&pch, "other", 1).await;
    let other = p.connect().await;
    let och = channel(&other).await;

    // One connection opens every channel and announces a 128 MiB body on
    // each, then sends body frames round-robin and never finishes one.
    let mut raw = Raw::open(p.addr, 0).await;
    let opens: Vec<u8> = (2..=CHANNELS)
        .flat_map(|ch| {
            method(
                ch,
                AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            )
        })
        .collect();
    raw.send(&opens).await;
    for _ in 2..=CHANNELS {
        assert!(matches!(
            raw.frame().await,
            Some(AMQPFrame::Method(
                _,
                AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
            ))
        ));
    }
    let body_size = 128 * MIB;
    let starts: Vec<u8> = (1..=CHANNELS)
        .flat_map(|ch| {
            [
                method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                        exchange: "".into(),
                        routing_key: "nowhere".into(),
                        mandatory: false,
                        immediate: false,
                    })),
                ),
                bytes(&AMQPFrame::Header(
                    ch,
                    AMQPContentHeader {
                        class_id: 60,
                        body_size,
                        properties: Default::default(),
                    },
                )),
            ]
            .concat()
        })
        .collect();
    raw.send(&starts).await;
    let chunk = vec![b'x'; 128 * 1024 - 8];
    let mut sent = 0u64;
    let mut stopped = None;
    'rounds: while sent < HALF_SENT_CAP {
        for ch in 1..=CHANNELS {
            // The server said something (connection.close): it stopped
            // taking this connection's bodies.
            let mut peek = [0u8; 1];
            if let Some(r) = raw.stream.peek(&mut peek).now_or_never() {
                stopped = Some(if r.is_ok_and(|n| n > 0) {
                    "closed"
                } else {
                    "dropped"
                });
                break 'rounds;
            }
            let frame = bytes(&AMQPFrame::Body(ch, chunk.clone()));
            // A write the server does not take within 3 s: it stopped
            // reading this connection.
            let w = tokio::time::timeout(Duration::from_secs(3), raw.stream.write_all(&frame));
            match w.await {
                Err(_) => {
                    stopped = Some("blocked");
                    break 'rounds;
                }
                Ok(Err(_)) => {
                    stopped = Some("dropped");
                    break 'rounds;
                }
                Ok(Ok(())) => sent += chunk.len() as u64,
            }
        }
    }
    let rss = p.rss();
    println!(
        "half-sent bodies: the server stopped the connection ({stopped:?}) after {} MiB; RSS {} MiB (before: {} MiB)",
        sent / MIB,
        rss / MIB,
        before / MIB
    );
    // Publishes under way on 2,047 channels when the alarm rises: closed
    // with 506, what they held released.
    assert_eq!(
        stopped,
        Some("closed"),
        "the server took {} MiB without stopping",
        sent / MIB
    );
    assert!(rss < 3 * 64 * MIB, "RSS {} MiB", rss / MIB);
    let (code, text) = raw.expect_connection_close().await;
    assert_eq!(code, 506, "{text}");

    // Other clients still consume and declare (publishers are blocked, as
    // with any memory alarm).
    let got = get_one(&och, "other", true).await;
    assert_eq!(got.delivery.data, b"for the other client");
    declare(&channel(&other).await, "declared-meanwhile")
        .await
        .expect("declare during the alarm");

    // The half-sending client goes: what it held is released, publishers
    // go on.
    drop(raw);
    confirms(&pch).await;
    let ok = publish_confirmed(&pch, "", "other", b"after", persistent()).await;
    assert!(ok.is_ack());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_counts_against_the_watermark() {
    let _serial = SERIAL.lock().await;
    let p = SingleNode::start(BIN, &["--memory-high-watermark", "64MiB"]).await;
    const MSG: usize = 1024 * 1024;
    let body = vec![3u8; MSG];
    let setup = p.connect().await;
    declare(&channel(&setup).await, "in-tx")
        .await
        .expect("declare");

    // 48 MiB published in a transaction, not committed: below the
    // watermark on its own. A raw client: it does not announce
    // `connection.blocked` (lapin stops writing when told, so it could not
    // send the rollback below).
    let mut raw = Raw::open(p.addr, 0).await;
    let select = AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {}));
    assert!(matches!(
        raw.call(1, select).await,
        Some(AMQPFrame::Method(
            1,
            AMQPClass::Tx(tx::AMQPMethod::SelectOk(_))
        ))
    ));
    let one: Vec<u8> = [
        method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: "in-tx".into(),
                mandatory: false,
                immediate: false,
            })),
        ),
        bytes(&AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: MSG as u64,
                properties: Default::default(),
            },
        )),
        body.chunks(64 * 1024)
            .flat_map(|c| bytes(&AMQPFrame::Body(1, c.to_vec())))
            .collect(),
    ]
    .concat();
    raw.send(&one.repeat(48)).await;
    // A round trip on the channel: the server has taken all 48.
    let qos = AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
        prefetch_count: 10,
        global: false,
    }));
    assert!(matches!(
        raw.call(1, qos).await,
        Some(AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::QosOk(_))
        ))
    ));

    // Another publisher's 24 MiB cross the watermark together with the
    // transaction's.
    let other = p.connect().await;
    let blocked = Arc::new(AtomicBool::new(false));
    {
        let mut events = other.events_listener();
        let b = blocked.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if let Event::ConnectionBlocked(_) = ev {
                    b.store(true, Ordering::SeqCst);
                }
            }
        });
    }
    let och = channel(&other).await;
    declare(&och, "plain").await.expect("declare");
    let publisher = tokio::spawn({
        let body = body.clone();
        async move {
            for _ in 0..24 {
                publish(&och, "", "plain", &body).await;
            }
            och
        }
    });
    wait_for_async("the other publisher is blocked", || async {
        blocked.load(Ordering::SeqCst)
    })
    .await;

    // A rollback is not a publish: it goes through while the alarm is on,
    // and what the transaction held is released.
    let rollback = AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {}));
    assert!(matches!(
        raw.call(1, rollback).await,
        Some(AMQPFrame::Method(
            1,
            AMQPClass::Tx(tx::AMQPMethod::RollbackOk(_))
        ))
    ));
    let och = tokio::time::timeout(DEADLINE, publisher)
        .await
        .expect("the other publisher finishes once the rollback freed memory")
        .expect("publisher task");
    wait_ready(&och, "plain", 24).await;
    assert_eq!(count(&och, "in-tx").await, 0);
}
