//! Quorum queues on three real `warren` processes: each replica holds the
//! queue's group in its own store, and a queue deleted while a replica was
//! down leaves no key of its group on that replica once it is back; the
//! leaders of many queues spread evenly over the nodes; the seed's work
//! queue keeps every task across a kill -9 of its leader, and its worker on
//! a survivor is never cancelled; a node outside a queue's replica set
//! goes on when the member it forwards to dies; `basic.get` through a
//! survivor never answers empty while messages remain across a leader kill;
//! a leader cut off from its peers confirms nothing while the majority goes
//! on.

mod common;

use common::BIN;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::Confirmation;
use lapin::options::{BasicAckOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use warren_store::Store;
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, wait_for_async};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    t
}

/// The quorum queue groups node `id`'s store holds (the node is stopped).
fn stored_groups(c: &Cluster, id: u64) -> Vec<u64> {
    let store = Store::open(&c.node(id).data_dir.join("rocksdb")).expect("open the node's store");
    store.quorum_groups().expect("list groups")
}

/// Three nodes and quorum queue `name`, declared through node 1; returns
/// the cluster and the node that leads the queue.
async fn three_nodes_with_queue(name: &str) -> (Cluster, u64) {
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    let n1 = c.connect(1).await;
    channel(&n1)
        .await
        .queue_declare(name.into(), durable(), quorum())
        .await
        .expect("declare");
    let leader = wait_for_async("the queue's leader", || async {
        c.queue_status(1)
            .await
            .into_iter()
            .find(|r| r.queue == name && r.state == "leader")
            .map(|r| r.node)
    })
    .await;
    (c, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_deleted_while_a_replica_is_down_leaves_no_keys_on_it() {
    let _turn = SERIAL.lock().await;
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    let [n1, n2] = c.connect_each([1, 2]).await;
    let ch1 = channel(&n1).await;
    ch1.queue_declare("qq.gone".into(), durable(), quorum())
        .await
        .expect("declare the quorum queue");
    let ch2 = channel(&n2).await;
    confirms(&ch2).await;
    for i in 0..20u32 {
        publish_confirmed(&ch2, "", "qq.gone", &i.to_be_bytes(), persistent()).await;
    }
    assert_eq!(count(&ch2, "qq.gone").await, 20);

    // Node 3 is a replica: its store holds the group.
    c.kill9(3);
    let held = stored_groups(&c, 3);
    assert_eq!(held.len(), 1, "node 3 holds the queue's group: {held:?}");

    // Deleted while node 3 is down; nodes 1 and 2 are a majority.
    let deleted = ch1
        .queue_delete("qq.gone".into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
    assert_eq!(deleted, 20);

    // Back, caught up with the metadata (the delete included).
    c.restart(3);
    let applied = c.applied(1).await.expect("node 1 applied index");
    c.wait_applied(&[3], applied).await;
    let n3 = c.connect(3).await;
    let ch3 = channel(&n3).await;
    let e = passive(&ch3, "qq.gone")
        .await
        .expect_err("the queue is gone");
    assert_eq!(code(&e), Some(404));
    drop(n3);
    // Its store is locked while it runs: stopped, started once more (a
    // start removes what a stop may have cut short before it serves),
    // stopped again, and read.
    assert!(c.terminate(3), "node 3 stops cleanly");
    c.restart(3);
    c.amqp_addr(3).await;
    assert!(c.terminate(3), "node 3 stops cleanly");
    assert_eq!(stored_groups(&c, 3), Vec::<u64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_of_three_hundred_queues_spread_over_three_nodes() {
    let _turn = SERIAL.lock().await;
    const QUEUES: usize = 300;
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    // All declared through one node: placement, not the client, spreads them.
    let n1 = c.connect(1).await;
    let ch = channel(&n1).await;
    for i in 0..QUEUES {
        ch.queue_declare(
            format!("qq.spread.{i}").as_str().into(),
            durable(),
            quorum(),
        )
        .await
        .expect("declare");
    }
    let leaders = wait_for_async("every queue to report one leader", || async {
        let replicas = c.queue_status(1).await;
        let led: Vec<u64> = replicas
            .iter()
            .filter(|r| r.state == "leader")
            .map(|r| r.node)
            .collect();
        (led.len() == QUEUES && replicas.len() == 3 * QUEUES).then_some(led)
    })
    .await;
    for node in [1, 2, 3] {
        let n = leaders.iter().filter(|l| **l == node).count();
        println!("node {node} leads {n} of {QUEUES} quorum queues");
        assert!(
            (90..=110).contains(&n),
            "node {node} leads {n} of {QUEUES} queues"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_queue_keeps_every_task_across_a_kill_of_its_leader() {
    let _turn = SERIAL.lock().await;
    const TASKS: u32 = 200;
    let (mut c, leader) = three_nodes_with_queue("task_queue").await;
    let [worker_node, producer_node] = match leader {
        1 => [2, 3],
        2 => [3, 1],
        _ => [1, 2],
    };

    // The worker: prefetch 1, one ack per task, on a survivor.
    let wconn = c.connect(worker_node).await;
    let wch = channel(&wconn).await;
    wch.basic_qos(1, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = consume(&wch, "task_queue", "worker", false).await;
    let done: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let worker = {
        let done = done.clone();
        tokio::spawn(async move {
            // Ends only if the stream does: a basic.cancel, or the channel closed.
            while let Some(d) = consumer.next().await {
                let Ok(d) = d else { return };
                let n = u32::from_be_bytes(d.data[..4].try_into().expect("a task number"));
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                done.lock().expect("done").insert(n);
            }
        })
    };

    // The producer: persistent tasks with confirms, sent again if nacked.
    let pconn = c.connect(producer_node).await;
    let pch = channel(&pconn).await;
    confirms(&pch).await;
    let mut failover = None;
    for n in 0..TASKS {
        if n == TASKS / 2 {
            c.kill9(leader);
            failover = Some(Instant::now());
        }
        let sent = Instant::now();
        loop {
            let confirmed =
                match try_publish(&pch, "", "task_queue", &n.to_be_bytes(), persistent()).await {
                    Ok(p) => matches!(p.await, Ok(Confirmation::Ack(None))),
                    Err(e) => panic!("the producer's channel failed: {e}"),
                };
            if confirmed {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(30),
                "task {n} never confirmed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(t) = failover.take() {
            println!(
                "kill -9 of the leader (node {leader}) to the next confirmed publish on node {producer_node}: {} ms",
                t.elapsed().as_millis()
            );
        }
    }
    wait_for_async("every task done by the worker", || async {
        assert!(!worker.is_finished(), "the worker's consumer was cancelled");
        (done.lock().expect("done").len() == TASKS as usize).then_some(())
    })
    .await;
    assert!(!worker.is_finished(), "the worker's consumer was cancelled");
    worker.abort();
}

/// `basic.get` through a survivor while the queue's leader is killed: a get
/// the queue could not answer (no leader yet, or the leader changed under
/// it) is an error that closes the channel, never a `get-empty` while
/// confirmed messages remain (before, such gets answered empty); a message
/// a refused get took returns with its channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_never_answers_empty_while_messages_remain_across_a_leader_kill() {
    let _turn = SERIAL.lock().await;
    const N: u32 = 50;
    let (mut c, leader) = three_nodes_with_queue("gets").await;
    let survivor = if leader == 1 { 2 } else { 1 };
    let conn = c.connect(survivor).await;
    let pch = channel(&conn).await;
    confirms(&pch).await;
    for n in 0..N {
        let p = try_publish(&pch, "", "gets", &n.to_be_bytes(), persistent())
            .await
            .expect("publish");
        assert!(
            matches!(p.await, Ok(Confirmation::Ack(None))),
            "message {n} confirmed"
        );
    }
    c.kill9(leader);
    let got: Mutex<BTreeSet<u32>> = Mutex::default();
    let errors = Mutex::new(0u32);
    let ch: tokio::sync::Mutex<Option<lapin::Channel>> = tokio::sync::Mutex::new(None);
    wait_for_async("every message got through the survivor", || async {
        let mut slot = ch.lock().await;
        if slot.as_ref().is_none_or(|c| !c.status().connected()) {
            *slot = Some(channel(&conn).await);
        }
        let Some(gch) = slot.as_ref() else {
            return false;
        };
        match gch
            .basic_get(
                "gets".into(),
                lapin::options::BasicGetOptions { no_ack: false },
            )
            .await
        {
            Ok(Some(m)) => {
                let n = u32::from_be_bytes(m.delivery.data[..4].try_into().expect("a number"));
                let _ = m.delivery.acker.ack(BasicAckOptions::default()).await;
                got.lock().expect("got").insert(n);
            }
            Ok(None) => {
                // Legitimate only while a message taken by a refused get
                // is on its way back from that get's closed channel.
                let have = got.lock().expect("got").len();
                assert!(
                    *errors.lock().expect("errors") > 0,
                    "get-empty with {have} of {N} messages got and no get refused"
                );
            }
            Err(_) => *errors.lock().expect("errors") += 1,
        }
        got.lock().expect("got").len() == N as usize
    })
    .await;
    println!(
        "all {N} got after the kill of leader {leader}; {} gets refused meanwhile",
        errors.lock().expect("errors")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_replica_set_goes_on_when_the_member_it_uses_dies() {
    let _turn = SERIAL.lock().await;
    let mut c = Cluster::start_all(BIN, &[1, 2, 3, 4], Options::default());
    c.wait_leader(&[1, 2, 3, 4]).await;
    let n4 = c.connect(4).await;
    let ch = channel(&n4).await;
    ch.queue_declare("qq.far".into(), durable(), quorum())
        .await
        .expect("declare");
    let replicas = wait_for_async("the queue's three replicas", || async {
        let rs: Vec<u64> = c
            .queue_status(4)
            .await
            .into_iter()
            .filter(|r| r.queue == "qq.far")
            .map(|r| r.node)
            .collect();
        (rs.len() == 3).then_some(rs)
    })
    .await;
    assert_eq!(replicas, vec![1, 2, 3], "node 4 is outside the replica set");

    // A consumer and a publisher on node 4.
    let cch = channel(&n4).await;
    let mut consumer = consume(&cch, "qq.far", "far", true).await;
    confirms(&ch).await;
    let mut got = BTreeSet::new();
    for n in 0..20u32 {
        publish_confirmed(&ch, "", "qq.far", &n.to_be_bytes(), persistent()).await;
    }
    while got.len() < 20 {
        let d = next(&mut consumer).await;
        got.insert(u32::from_be_bytes(
            d.data[..4].try_into().expect("a number"),
        ));
    }

    // Node 1, the first member (the one node 4 forwards to, and the
    // queue's first leader), dies.
    c.kill9(1);
    for n in 20..40u32 {
        let sent = Instant::now();
        loop {
            let p = try_publish(&ch, "", "qq.far", &n.to_be_bytes(), persistent())
                .await
                .expect("the channel stays open");
            if matches!(p.await, Ok(Confirmation::Ack(None))) {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(30),
                "message {n} never confirmed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while got.len() < 40 {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
        else {
            for r in c.queue_status(2).await {
                println!("{r:?}");
            }
            panic!("stalled at {}", got.len());
        };
        got.insert(u32::from_be_bytes(
            d.data[..4].try_into().expect("a number"),
        ));
    }
    assert_eq!(got, (0..40).collect::<BTreeSet<u32>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_confirms_nothing_while_the_majority_goes_on() {
    let _turn = SERIAL.lock().await;
    let (mut c, leader) = three_nodes_with_queue("qq.split").await;
    let other = if leader == 1 { 2 } else { 1 };
    let [minority, majority] = c.connect_each([leader, other]).await;
    let min_ch = channel(&minority).await;
    confirms(&min_ch).await;
    let maj_ch = channel(&majority).await;
    confirms(&maj_ch).await;
    publish_confirmed(&maj_ch, "", "qq.split", b"before", persistent()).await;

    // The leader is cut off from its peers; its clients stay connected.
    c.cut(leader);
    let mut pending = Vec::new();
    for n in 0..5u32 {
        let body = format!("minority-{n}");
        let p = try_publish(&min_ch, "", "qq.split", body.as_bytes(), persistent())
            .await
            .expect("the minority's channel stays open");
        pending.push(p);
    }
    // The majority elects a leader of its own and goes on.
    for n in 0..20u32 {
        let body = format!("majority-{n}");
        let sent = Instant::now();
        loop {
            let p = try_publish(&maj_ch, "", "qq.split", body.as_bytes(), persistent())
                .await
                .expect("the majority's channel stays open");
            if matches!(p.await, Ok(Confirmation::Ack(None))) {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(30),
                "{body} never confirmed on the majority side"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Meanwhile the minority confirmed nothing.
    for p in &mut pending {
        let now = futures::FutureExt::now_or_never(&mut *p);
        assert!(
            !matches!(now, Some(Ok(Confirmation::Ack(_)))),
            "the cut-off leader confirmed a publish"
        );
    }

    // Healed: the old leader's publishes are refused, never kept unconfirmed.
    c.heal(leader);
    for p in pending {
        let r = tokio::time::timeout(Duration::from_secs(30), p)
            .await
            .expect("the minority's publishes are answered once healed");
        assert!(
            matches!(r, Ok(Confirmation::Nack(_))),
            "a publish of the cut-off leader: {r:?}"
        );
    }
    // Every publish is answered: the queue holds what was confirmed.
    let mut got = BTreeSet::new();
    let ch = channel(&majority).await;
    while let Some(m) = ch
        .basic_get(
            "qq.split".into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("get")
    {
        got.insert(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    let want: BTreeSet<String> = std::iter::once("before".to_owned())
        .chain((0..20).map(|n| format!("majority-{n}")))
        .collect();
    assert_eq!(
        got, want,
        "exactly what was confirmed, nothing of the minority's"
    );
}
