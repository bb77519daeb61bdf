//! Quorum queue groups without heartbeats of their own (`peer_watch`):
//! idle queues send no Raft traffic; a follower that restarted while its
//! idle group moved on learns its leader and catches up without a write;
//! when a node dies, the queues it led elect new leaders, spread over the
//! survivors, and confirm again.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::BIN;
use lapin::types::{AMQPValue, FieldTable};
use warren_cluster::admin_client::ReplicaStatus;
use warren_cluster::pb::MemberChange;
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, wait_for_async, wait_for_async_within};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bound on a new leader's election after its node was killed: ends a
/// hang; the time is printed.
const FAILOVER_LIMIT: Duration = Duration::from_secs(20);

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    t
}

/// Raft RPCs each node has sent since it started.
async fn raft_rpcs(c: &Cluster) -> BTreeMap<u64, u64> {
    let s = c.status(1).await.expect("node 1 answers");
    s.members.iter().map(|m| (m.id, m.raft_rpcs)).collect()
}

/// Every replica of `queue` in `replicas`, by node.
fn of<'a>(replicas: &'a [ReplicaStatus], queue: &str) -> BTreeMap<u64, &'a ReplicaStatus> {
    replicas
        .iter()
        .filter(|r| r.queue == queue)
        .map(|r| (r.node, r))
        .collect()
}

/// Whether every replica of `queue` knows the same leader and has applied
/// everything that leader has.
fn settled(replicas: &[ReplicaStatus], queue: &str, members: usize) -> bool {
    let r = of(replicas, queue);
    let Some(leader) = r.values().find(|r| r.state == "leader") else {
        return false;
    };
    r.len() == members
        && r.values()
            .all(|x| x.leader == Some(leader.node) && x.last_applied == leader.last_log_index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_quorum_queues_send_no_raft_traffic_of_their_own() {
    let _turn = SERIAL.lock().await;
    const QUEUES: usize = 60;
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    let [n1, n2] = c.connect_each([1, 2]).await;
    let ch1 = channel(&n1).await;
    let ch2 = channel(&n2).await;
    confirms(&ch2).await;
    let names: Vec<String> = (0..QUEUES).map(|i| format!("qq.idle.{i}")).collect();
    for q in &names {
        ch1.queue_declare(q.as_str().into(), durable(), quorum())
            .await
            .expect("declare");
        publish_confirmed(&ch2, "", q, b"one", persistent()).await;
    }
    wait_for_async("every replica to apply what its leader has", || async {
        let replicas = c.queue_status(1).await;
        names.iter().all(|q| settled(&replicas, q, 3)).then_some(())
    })
    .await;

    // A measurement window, not a synchronisation: what is sent while
    // nothing happens.
    const WINDOW: Duration = Duration::from_secs(3);
    let before = raft_rpcs(&c).await;
    tokio::time::sleep(WINDOW).await;
    let after = raft_rpcs(&c).await;
    for (node, b) in &before {
        let sent = after.get(node).copied().unwrap_or(0).saturating_sub(*b);
        println!("node {node}: {sent} Raft RPCs in {WINDOW:?} with {QUEUES} idle quorum queues");
        // Group 0's leader heartbeats two followers 10 times a second (60
        // in the window); 60 queue groups heartbeating every 150 ms would
        // send about 800 per node.
        assert!(
            sent <= 120,
            "node {node} sent {sent} Raft RPCs in {WINDOW:?} while idle"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restarted_while_its_idle_group_moved_on_catches_up_and_takes_over() {
    let _turn = SERIAL.lock().await;
    const QUEUE: &str = "qq.moved.on";
    const MESSAGES: u32 = 50;
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    let n1 = c.connect(1).await;
    let ch1 = channel(&n1).await;
    ch1.queue_declare(QUEUE.into(), durable(), quorum())
        .await
        .expect("declare");
    c.queue_members(1, QUEUE, 1, MemberChange::TransferLeader)
        .await
        .expect("node 1 leads");

    // Node 3 misses every message; then nothing is written any more.
    c.kill9(3);
    confirms(&ch1).await;
    for i in 0..MESSAGES {
        publish_confirmed(&ch1, "", QUEUE, &i.to_be_bytes(), persistent()).await;
    }
    c.restart(3);
    wait_for_async(
        "node 3 to know its leader and apply what it has",
        || async {
            let replicas = c.queue_status(1).await;
            settled(&replicas, QUEUE, 3).then_some(())
        },
    )
    .await;

    // Node 3 serves: with the leader gone, it or node 2 takes over, and
    // every message is there.
    let n3 = c.connect(3).await;
    drop(ch1);
    drop(n1);
    let killed = Instant::now();
    c.kill9(1);
    wait_for_async_within("a new leader to count the messages", FAILOVER_LIMIT, || {
        let n3 = &n3;
        async move {
            // A channel per try: an answer without a leader closes it.
            let ch = channel(n3).await;
            let counted = passive(&ch, QUEUE).await.ok()?.message_count();
            (counted == MESSAGES).then_some(())
        }
    })
    .await;
    println!(
        "kill -9 of the leader to a count through node 3: {} ms",
        killed.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queues_of_a_dead_node_elect_leaders_spread_over_the_survivors() {
    let _turn = SERIAL.lock().await;
    const QUEUES: usize = 30;
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    let n2 = c.connect(2).await;
    let ch2 = channel(&n2).await;
    let names: Vec<String> = (0..QUEUES).map(|i| format!("qq.orphan.{i}")).collect();
    for q in &names {
        ch2.queue_declare(q.as_str().into(), durable(), quorum())
            .await
            .expect("declare");
    }
    let led_by_1: Vec<String> = wait_for_async("every queue to have a leader", || async {
        let replicas = c.queue_status(2).await;
        let leaders: Vec<(String, u64)> = replicas
            .iter()
            .filter(|r| r.state == "leader")
            .map(|r| (r.queue.clone(), r.node))
            .collect();
        (leaders.len() == QUEUES).then(|| {
            leaders
                .into_iter()
                .filter(|(_, n)| *n == 1)
                .map(|(q, _)| q)
                .collect()
        })
    })
    .await;
    assert!(!led_by_1.is_empty(), "node 1 leads some queues");

    let killed = Instant::now();
    c.kill9(1);
    let new_leaders: BTreeMap<String, u64> = wait_for_async_within(
        "node 1's queues to elect new leaders",
        FAILOVER_LIMIT,
        || {
            let (c, led_by_1) = (&c, &led_by_1);
            async move {
                let replicas = c.queue_status(2).await;
                let found: BTreeMap<String, u64> = replicas
                    .iter()
                    .filter(|r| r.state == "leader" && led_by_1.contains(&r.queue))
                    .map(|r| (r.queue.clone(), r.node))
                    .collect();
                (found.len() == led_by_1.len()).then_some(found)
            }
        },
    )
    .await;
    let elapsed = killed.elapsed();
    let on = |n: u64| new_leaders.values().filter(|l| **l == n).count();
    println!(
        "{} queues of node 1 led again after {} ms: node 2 leads {}, node 3 leads {}",
        led_by_1.len(),
        elapsed.as_millis(),
        on(2),
        on(3)
    );
    if led_by_1.len() >= 4 {
        assert!(
            on(2) > 0 && on(3) > 0,
            "the new leaders spread over both survivors: {new_leaders:?}"
        );
    }
    confirms(&ch2).await;
    for q in &names {
        publish_confirmed(&ch2, "", q, b"after", persistent()).await;
    }
}
