//! The loss checker: publishers with confirms on every node of a three-node
//! cluster, each to every one of three durable queues (one homed on each
//! node), while nodes are killed with -9, frozen with SIGSTOP, stopped and
//! restarted, or cut off from their peers (iptables), queue homes and
//! leaders included. At the end every node runs again, the
//! queues are drained, and every message a publisher saw confirmed must be
//! there: 0 confirmed messages lost.
//!
//! Beside the classic queues, three quorum queues (three replicas each,
//! their first leaders on nodes 1, 2 and 3) take the same publishes in the
//! same run; the duplicates the drain finds (a publish nacked after it was
//! committed, sent again by the publisher) are counted and reported.
//!
//! A consumer on every node takes from the quorum queues meanwhile, one ack
//! per message, reconnecting as the publishers do. Once the faults end,
//! every message confirmed to a quorum queue must reach a consumer; then,
//! with the consumers closed, no quorum queue may keep a consumer: one
//! whose channel's close never reached a leader (it died with its node, or
//! the link was down) must not hold messages forever.
//!
//! The default run is short (CI); `WARREN_LOSS_SECS=600` runs ten minutes of
//! faults, `WARREN_LOSS_SEED` replays a fault sequence.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::BIN;
use futures::StreamExt;
use lapin::Confirmation;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, wait_for_async};

const NODES: [u64; 3] = [1, 2, 3];
/// Seconds of faults in the default run.
const SHORT_SECS: u64 = 20;

/// Where each node serves AMQP now (`None` while it is down).
type Addresses = Arc<Mutex<HashMap<u64, Option<String>>>>;
/// What the publishers saw confirmed: (queue, body).
type Confirmed = Arc<Mutex<BTreeSet<(String, String)>>>;

/// The queues: a classic one homed on each node, then the quorum ones.
const QUEUES: [&str; 6] = [
    "loss-1", "loss-2", "loss-3", "qloss-1", "qloss-2", "qloss-3",
];

fn queue_of(n: u64) -> String {
    QUEUES[(n % QUEUES.len() as u64) as usize].to_owned()
}

/// A connection to node `via`, if it is up and answers within 3 s.
async fn connect_via(via: u64, addrs: &Addresses) -> Option<lapin::Connection> {
    let uri = addrs.lock().expect("addrs").get(&via).cloned().flatten()?;
    tokio::time::timeout(
        Duration::from_secs(3),
        lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
    )
    .await
    .ok()?
    .ok()
}

/// Publishes to every queue in turn through node `via`, reconnecting when
/// the node goes away, until `stop`.
async fn publisher(via: u64, addrs: Addresses, confirmed: Confirmed, stop: Arc<AtomicBool>) {
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(conn) = connect_via(via, &addrs).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else {
            continue;
        };
        if ch.confirm_select(Default::default()).await.is_err() {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let queue = queue_of(n);
            let body = format!("via{via}-{n}");
            let Ok(pending) = try_publish(&ch, "", &queue, body.as_bytes(), persistent()).await
            else {
                break;
            };
            match tokio::time::timeout(Duration::from_secs(30), pending).await {
                Ok(Ok(Confirmation::Ack(None))) => {
                    confirmed.lock().expect("confirmed").insert((queue, body));
                }
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
    }
}

/// Consumes the quorum queues through node `via`, one ack per message,
/// reconnecting when the node goes away, until `stop`; what it received
/// goes to `received`.
async fn consumer(via: u64, addrs: Addresses, received: Confirmed, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(conn) = connect_via(via, &addrs).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else {
            continue;
        };
        if ch.basic_qos(20, BasicQosOptions::default()).await.is_err() {
            continue;
        }
        let mut streams = Vec::new();
        for q in &QUEUES[3..] {
            let Ok(c) = ch
                .basic_consume(
                    (*q).into(),
                    format!("c{via}-{q}").as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
            else {
                break;
            };
            streams.push(c.map(move |d| (*q, d)));
        }
        if streams.len() < QUEUES.len() - 3 {
            continue;
        }
        let mut all = futures::stream::select_all(streams);
        while !stop.load(Ordering::Relaxed) {
            let Ok(next) = tokio::time::timeout(Duration::from_millis(200), all.next()).await
            else {
                continue;
            };
            let Some((queue, Ok(d))) = next else {
                break;
            };
            let body = String::from_utf8_lossy(&d.data).into_owned();
            received
                .lock()
                .expect("received")
                .insert((queue.to_owned(), body));
            if d.acker.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), conn.close(200, "done".into())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_confirmed_message_is_lost_while_nodes_fail() {
    let secs: u64 = std::env::var("WARREN_LOSS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SHORT_SECS);
    let seed: u64 = std::env::var("WARREN_LOSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    tracing::info!(secs, seed, "--- loss checker");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut opts = Options::default();
    if let Ok(level) = std::env::var("WARREN_LOSS_LOG") {
        opts.extra = vec!["--log-level".into(), level];
    }
    let mut c = Cluster::start_all(BIN, &NODES, opts);
    c.wait_leader(&NODES).await;
    let addrs: Addresses = Arc::new(Mutex::new(HashMap::new()));
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    for id in NODES {
        let uri = c.amqp_uri(id).await;
        let conn = c.connect(id).await;
        let ch = channel(&conn).await;
        let classic = format!("loss-{id}");
        ch.queue_declare(classic.as_str().into(), durable(), FieldTable::default())
            .await
            .expect("declare");
        addrs.lock().expect("addrs").insert(id, Some(uri));
    }
    let conn = c.connect(1).await;
    let ch = channel(&conn).await;
    for q in &QUEUES[3..] {
        ch.queue_declare((*q).into(), durable(), quorum.clone())
            .await
            .expect("declare");
    }
    drop(conn);

    tracing::info!("--- a publisher on every node, to every queue");
    let confirmed: Confirmed = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = NODES
        .iter()
        .map(|via| {
            tokio::spawn(publisher(
                *via,
                addrs.clone(),
                confirmed.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let received: Confirmed = Arc::default();
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = NODES
        .iter()
        .map(|via| {
            tokio::spawn(consumer(
                *via,
                addrs.clone(),
                received.clone(),
                stop_consumers.clone(),
            ))
        })
        .collect();

    tracing::info!("--- faults for {secs} s (seed {seed})");
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut faults = Vec::new();
    while tokio::time::Instant::now() < end {
        let id = NODES[rng.random_range(0..NODES.len())];
        let fault = rng.random_range(0..4);
        addrs.lock().expect("addrs").insert(id, None);
        match fault {
            0 => {
                c.kill9(id);
                c.restart(id);
            }
            1 => {
                c.pause(id);
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
                c.resume(id);
            }
            2 => {
                c.terminate(id);
                c.restart(id);
            }
            _ => {
                // A partition: the node runs, its clients stay connected,
                // and it is cut off from its peers (iptables).
                c.cut(id);
                tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
                c.heal(id);
            }
        }
        faults.push((id, fault));
        let uri = c.amqp_uri(id).await;
        addrs.lock().expect("addrs").insert(id, Some(uri));
        // Let the publishers work between faults.
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        let _ = p.await;
    }
    let confirmed = confirmed.lock().expect("confirmed").clone();
    assert!(!confirmed.is_empty(), "publishers got confirms at all");

    tracing::info!(
        ?faults,
        "--- every node runs: the consumers get every confirmed message"
    );
    let to_consume: BTreeSet<(String, String)> = confirmed
        .iter()
        .filter(|(q, _)| q.starts_with('q'))
        .cloned()
        .collect();
    let missing = || {
        let got = received.lock().expect("received");
        to_consume.difference(&got).count()
    };
    let end = tokio::time::Instant::now() + warren_testkit::DEADLINE;
    while missing() > 0 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unconsumed = missing();
    if unconsumed > 0 {
        // What the replicas hold, to tell a stuck consumer from a lost message.
        for r in c.queue_status(1).await {
            println!("{r:?}");
        }
        let got = received.lock().expect("received");
        let left: Vec<_> = to_consume.difference(&got).take(10).collect();
        if std::env::var("WARREN_LOSS_LOG").is_ok() {
            for id in NODES {
                println!("--- node {id}\n{}", c.log(id));
            }
        }
        panic!(
            "{unconsumed} confirmed quorum messages no consumer received, e.g. {left:?} \
             (seed {seed}, faults {faults:?})"
        );
    }
    stop_consumers.store(true, Ordering::Relaxed);
    for c in consumers {
        let _ = c.await;
    }

    tracing::info!("--- drain the queues");
    let received = received.lock().expect("received").clone();
    let mut present: BTreeSet<(String, String)> = BTreeSet::new();
    let mut duplicates = 0usize;
    for (i, queue) in QUEUES.iter().enumerate() {
        let queue = (*queue).to_owned();
        let id = NODES[i % NODES.len()];
        let ch = wait_for_async(&format!("node {id} serves {queue}"), || async {
            let conn = c.connect(id).await;
            let ch = conn.create_channel().await.ok()?;
            passive(&ch, &queue).await.ok()?;
            Some((conn, ch))
        })
        .await;
        // The consumers closed: none may stay, holding messages.
        wait_for_async(&format!("{queue} has no consumers left"), || async {
            passive(&ch.1, &queue)
                .await
                .is_ok_and(|q| q.consumer_count() == 0)
        })
        .await;
        while let Some(m) =
            ch.1.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("get")
        {
            let body = String::from_utf8_lossy(&m.delivery.data).into_owned();
            if !present.insert((queue.clone(), body)) {
                duplicates += 1;
            }
        }
    }
    let consumed = received.len();
    present.extend(received);
    let lost: Vec<_> = confirmed.difference(&present).collect();
    println!(
        "loss checker: {} confirmed, {consumed} consumed, {} lost, {duplicates} duplicates, \
         {} faults in {secs} s (kill -9, SIGSTOP, restart, partition: {:?}), seed {seed}",
        confirmed.len(),
        lost.len(),
        faults.len(),
        [0, 1, 2, 3].map(|k| faults.iter().filter(|(_, f)| *f == k).count())
    );
    assert!(
        lost.is_empty(),
        "{} of {} confirmed messages lost (seed {seed}, faults {faults:?}), e.g. {:?}",
        lost.len(),
        confirmed.len(),
        lost.first()
    );
}
