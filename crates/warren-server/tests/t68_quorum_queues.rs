//! Quorum queues on three real `warren` processes: each replica holds the
//! queue's group in its own store, and a queue deleted while a replica was
//! down leaves no key of its group on that replica once it is back; the
//! leaders of many queues spread evenly over the nodes.

mod common;

use common::BIN;
use lapin::options::QueueDeleteOptions;
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
