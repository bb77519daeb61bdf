//! Malformed, truncated and random input over many connections: no panic, no
//! hang, no growth; every other client keeps working.

mod common;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{AMQPClass, basic, queue};
use common::BIN;
use common::raw::{Raw, bytes, method};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::AsyncWriteExt;
use warren_testkit::SingleNode;
use warren_testkit::client::*;

/// One hostile input: what is sent after (or instead of) a handshake.
fn garbage(rng: &mut StdRng) -> (bool, Vec<u8>) {
    let handshake = rng.random_bool(0.7);
    let mut v = Vec::new();
    match rng.random_range(0..8) {
        0 => {
            // Pure noise.
            let mut b = vec![0u8; rng.random_range(1..4096)];
            rng.fill_bytes(&mut b);
            v = b;
        }
        1 => {
            // A valid frame header announcing a huge payload, then nothing.
            v.extend_from_slice(&[1, 0, 1]);
            v.extend_from_slice(&rng.random::<u32>().to_be_bytes());
        }
        2 => {
            // A valid method frame cut short.
            let m = method(
                1,
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: "x".into(),
                    ..Default::default()
                })),
            );
            let cut = rng.random_range(1..m.len());
            v.extend_from_slice(&m[..cut]);
        }
        3 => {
            // A method frame with its payload bytes flipped.
            let mut m = method(
                1,
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: "x".into(),
                    ..Default::default()
                })),
            );
            for _ in 0..4 {
                let i = rng.random_range(7..m.len() - 1);
                m[i] = rng.random();
            }
            v = m;
        }
        4 => {
            // A publish whose header announces more than is sent, then a new method.
            v.extend(method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Publish(Default::default())),
            ));
            v.extend(bytes(&AMQPFrame::Header(
                1,
                amq_protocol::frame::AMQPContentHeader {
                    class_id: 60,
                    body_size: 1 << 40,
                    properties: Default::default(),
                },
            )));
        }
        5 => {
            // Frames on random channels.
            for _ in 0..10 {
                v.extend(method(
                    rng.random(),
                    AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                        prefetch_count: 1,
                        global: false,
                    })),
                ));
            }
        }
        6 => {
            // A valid prefix followed by noise.
            v.extend(method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Publish(Default::default())),
            ));
            let mut b = vec![0u8; 64];
            rng.fill_bytes(&mut b);
            v.extend(b);
        }
        _ => {
            // Many tiny heartbeats then a wrong frame end.
            for _ in 0..100 {
                v.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
            }
            v.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0xCD]);
        }
    }
    (handshake, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_leaves_the_broker_healthy() {
    let p = SingleNode::start(BIN, &["--heartbeat", "5"]).await;
    let mut rng = StdRng::seed_from_u64(0x5eed);
    // A healthy client connected throughout.
    let c = p.connect().await;
    let ch = channel(&c).await;
    declare(&ch, "healthy").await.expect("declare");

    let baseline = p.rss();
    for round in 0..10 {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (handshake, wire) = garbage(&mut rng);
            let addr = p.addr;
            tasks.push(tokio::spawn(async move {
                let mut r = if handshake {
                    Raw::open(addr, 0).await
                } else {
                    Raw::connect(addr).await
                };
                let _ = r.stream.write_all(&wire).await;
                // Either the server closes (error reply) or we hang up first;
                // both must leave nothing behind.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_millis(300), r.read_to_end())
                        .await;
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
        publish(&ch, "", "healthy", format!("round {round}").as_bytes()).await;
    }
    for round in 0..10 {
        let m = get_one(&ch, "healthy", true).await;
        assert_eq!(m.delivery.data, format!("round {round}").as_bytes());
    }
    let after = p.rss();
    assert!(
        after < baseline + 64 * 1024 * 1024,
        "RSS grew from {baseline} to {after} after 500 hostile connections"
    );
    // New clients are still served.
    let c2 = p.connect().await;
    c2.close(200, "ok".into()).await.expect("close");
}
