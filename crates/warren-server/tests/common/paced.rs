//! A publisher far faster than the only consumer of its queue, for the tests
//! of queue flow control (t50 on one node, t67 across a link).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicQosOptions};
use tokio::io::AsyncWriteExt;
use warren_testkit::client::*;
use warren_testkit::{DEADLINE, wait_for_async};

use super::raw::{Raw, publishes};

/// Messages the publisher writes, as fast as its socket takes them.
pub const PUBLISHED: usize = 150_000;
/// Messages the consumer takes before the run ends.
pub const CONSUME: u64 = 20_000;

/// Runs a raw publisher of 100-byte messages to `queue` through the node at
/// `publish_to`, while a consumer on channel `consumer` (prefetch 50, one ack per
/// message, about 10k messages a second at most) takes [`CONSUME`]. Returns
/// the most ready messages `counter` saw once the consumer's first second
/// had passed (its rate known to the queue by then).
pub async fn peak_backlog(
    consumer: &Channel,
    counter: &Channel,
    publish_to: std::net::SocketAddr,
    queue: &str,
) -> u64 {
    consumer
        .basic_qos(50, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut cons = consume(consumer, queue, "c", false).await;
    let received = Arc::new(AtomicU64::new(0));
    let slow = {
        let received = received.clone();
        tokio::spawn(async move {
            while received.load(Ordering::SeqCst) < CONSUME {
                let d = next(&mut cons).await;
                d.ack(BasicAckOptions::default()).await.expect("ack");
                if received.fetch_add(1, Ordering::SeqCst).is_multiple_of(10) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let mut raw = Raw::open(publish_to, 0).await;
    let chunk = publishes(queue, 10_000, 100);
    let publisher = tokio::spawn(async move {
        for _ in 0..PUBLISHED / 10_000 {
            if raw.stream.write_all(&chunk).await.is_err() {
                break;
            }
        }
        raw
    });
    let peak = AtomicU64::new(0);
    let started = tokio::time::Instant::now();
    wait_for_async(&format!("the consumer took {CONSUME}"), || async {
        if received.load(Ordering::SeqCst) >= CONSUME {
            return true;
        }
        let n = u64::from(count(counter, queue).await);
        if started.elapsed() > Duration::from_secs(1) {
            peak.fetch_max(n, Ordering::SeqCst);
        }
        false
    })
    .await;
    tokio::time::timeout(DEADLINE, slow)
        .await
        .expect("consumer finished")
        .expect("consumer task");
    publisher.abort();
    peak.into_inner()
}
