//! Changing a quorum queue's replica set on a running cluster: a member
//! added (`warren queues add-member`) catches up and votes, a member
//! removed (`delete-member`) leaves no key of the group in its store and
//! its node goes on serving the queue through the others, and `grow` /
//! `shrink` do the same for every queue of a node; leaders are handed over
//! (`transfer-leader`) and spread again (`rebalance`); a node removed from
//! the cluster has its replicas replaced on the others.

mod common;

use std::process::Command;

use common::BIN;
use lapin::Confirmation;
use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable};
use warren_cluster::pb::MemberChange;
use warren_store::Store;
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, TEST_SECRET, wait_for_async};

fn quorum_of(size: i32) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    t.insert(
        "x-quorum-initial-group-size".into(),
        AMQPValue::LongInt(size),
    );
    t
}

/// `warren queues <args>` against node `via`, with the cluster's secret.
fn cli(c: &Cluster, via: u64, args: &[&str]) -> String {
    let addr = c.node(via).cluster_addr();
    let out = Command::new(BIN)
        .arg("queues")
        .args(args)
        .args(["--server", &addr])
        .env("WARREN_CLUSTER_SECRET", TEST_SECRET)
        .env_remove("WARREN_CLUSTER_SECRET_FILE")
        .output()
        .expect("run warren queues");
    assert!(out.status.success(), "warren queues {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Publishes `n` persistent messages with confirms through `ch`, each sent
/// again until confirmed (a leader may be changing).
async fn publish_all(ch: &lapin::Channel, queue: &str, from: u32, n: u32) {
    for i in from..from + n {
        let sent = std::time::Instant::now();
        loop {
            let p = try_publish(ch, "", queue, &i.to_be_bytes(), persistent())
                .await
                .expect("the channel stays open");
            if matches!(p.await, Ok(Confirmation::Ack(None))) {
                break;
            }
            assert!(sent.elapsed().as_secs() < 30, "message {i} never confirmed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed_while_the_queue_serves() {
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    let n1 = c.connect(1).await;
    let ch = channel(&n1).await;
    ch.queue_declare("qq.members".into(), durable(), quorum_of(2))
        .await
        .expect("declare with two replicas");
    let mut first = wait_for_async("the queue's two replicas", || async {
        let rs = c.replica_nodes(1, "qq.members").await;
        (rs.len() == 2).then_some(rs)
    })
    .await;
    first.sort_unstable();
    let outsider = (1..=3).find(|n| !first.contains(n)).expect("a third node");
    confirms(&ch).await;
    publish_all(&ch, "qq.members", 0, 100).await;

    // Added through the CLI: the new replica gets every message.
    let out = cli(&c, 1, &["add-member", "qq.members", &outsider.to_string()]);
    assert!(out.contains("replicas"), "{out}");
    wait_for_async("the new member holds the 100 messages", || async {
        c.queue_status(1)
            .await
            .into_iter()
            .any(|r| r.queue == "qq.members" && r.node == outsider && r.ready == 100)
    })
    .await;

    // It votes: with one of the first two down, it and the other one are
    // the majority that goes on.
    let down = first[0];
    let up = first[1];
    c.kill9(down);
    let nu = c.connect(up).await;
    let chu = channel(&nu).await;
    confirms(&chu).await;
    publish_all(&chu, "qq.members", 100, 20).await;
    c.restart(down);

    // Removed: its store keeps no key of the group; its node still serves
    // the queue through the others.
    let members = c
        .queue_members(up, "qq.members", down, MemberChange::DeleteMember)
        .await
        .expect("delete-member");
    assert!(!members.contains(&down), "{members:?}");
    wait_for_async("no replica left on the removed node", || async {
        !c.replica_nodes(up, "qq.members").await.contains(&down)
    })
    .await;
    let nd = c.connect(down).await;
    let chd = channel(&nd).await;
    let mut got = 0;
    // Bounded: each get answers within 30 s, and there are 120.
    while got <= 120
        && tokio::time::timeout(
            std::time::Duration::from_secs(30),
            chd.basic_get("qq.members".into(), BasicGetOptions { no_ack: true }),
        )
        .await
        .expect("a get through the removed node is answered")
        .expect("get through the removed node")
        .is_some()
    {
        got += 1;
    }
    assert_eq!(
        got, 120,
        "every confirmed message, through the removed node"
    );
    drop(nd);
    c.terminate(down);
    let store = Store::open(&c.node(down).data_dir.join("rocksdb")).expect("open the store");
    assert_eq!(
        store.quorum_groups().expect("list groups"),
        Vec::<u64>::new(),
        "the removed member's store holds no group"
    );
    drop(store);
    c.restart(down);

    // `grow` puts it back, `shrink` takes the outsider out again.
    let out = cli(&c, up, &["grow", &down.to_string()]);
    assert!(out.contains("qq.members"), "{out}");
    wait_for_async("three replicas again", || async {
        c.replica_nodes(up, "qq.members").await.len() == 3
    })
    .await;
    cli(&c, up, &["shrink", &outsider.to_string()]);
    wait_for_async("the outsider's replica gone", || async {
        let rs = c.replica_nodes(up, "qq.members").await;
        rs.len() == 2 && !rs.contains(&outsider)
    })
    .await;
    publish_all(&chu, "qq.members", 120, 10).await;
    assert_eq!(count(&chu, "qq.members").await, 10);
}

/// Which node leads each of `queues`, as node `via` finds them.
async fn leaders(c: &Cluster, via: u64, queues: &[String]) -> Vec<Option<u64>> {
    let status = c.queue_status(via).await;
    queues
        .iter()
        .map(|q| {
            status
                .iter()
                .find(|r| &r.queue == q && r.state == "leader")
                .map(|r| r.node)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_are_transferred_and_rebalanced() {
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    let n2 = c.connect(2).await;
    let ch = channel(&n2).await;
    let queues: Vec<String> = (0..6).map(|i| format!("qq.lead-{i}")).collect();
    for q in &queues {
        ch.queue_declare(q.as_str().into(), durable(), quorum_of(3))
            .await
            .expect("declare");
    }
    // Every leader moved to node 1, each move through the CLI.
    for q in &queues {
        let out = cli(&c, 3, &["transfer-leader", q, "1"]);
        assert!(out.contains("replicas"), "{out}");
    }
    wait_for_async("node 1 leads every queue", || async {
        leaders(&c, 1, &queues).await.iter().all(|l| *l == Some(1))
    })
    .await;
    // The queues took publishes again once handed over.
    confirms(&ch).await;
    for q in &queues {
        publish_all(&ch, q, 0, 5).await;
    }
    // Rebalanced: each node leads two.
    let out = cli(&c, 2, &["rebalance"]);
    assert!(out.contains("->"), "{out}");
    wait_for_async("each node leads two queues", || async {
        let ls = leaders(&c, 1, &queues).await;
        (1..=3).all(|n| ls.iter().filter(|l| **l == Some(n)).count() == 2)
    })
    .await;
    for q in &queues {
        publish_all(&ch, q, 5, 5).await;
        assert_eq!(count(&ch, q).await, 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_has_its_replicas_replaced() {
    let mut c = Cluster::start_all(BIN, &[1, 2, 3, 4], Options::default());
    c.wait_leader(&[1, 2, 3, 4]).await;
    let n1 = c.connect(1).await;
    let ch = channel(&n1).await;
    // Queues until one has a replica on a node other than 1 (the one used).
    let mut queues = Vec::new();
    let mut gone = None;
    for i in 0..4 {
        let q = format!("qq.moved-{i}");
        ch.queue_declare(q.as_str().into(), durable(), quorum_of(3))
            .await
            .expect("declare");
        let rs = wait_for_async("the queue's three replicas", || async {
            let rs = c.replica_nodes(1, &q).await;
            (rs.len() == 3).then_some(rs)
        })
        .await;
        queues.push(q);
        if gone.is_none() {
            gone = rs.into_iter().find(|n| *n != 1);
        }
    }
    let gone = gone.expect("a replica off node 1");
    confirms(&ch).await;
    for q in &queues {
        publish_all(&ch, q, 0, 10).await;
    }

    // The node dies and is removed from the cluster.
    c.kill9(gone);
    c.remove_node(1, gone).await.expect("remove the node");

    // Every queue is back to three replicas, none of them on it.
    for q in &queues {
        wait_for_async(
            &format!("{q} has three replicas without node {gone}"),
            || async {
                let rs = c.replica_nodes(1, q).await;
                rs.len() == 3 && !rs.contains(&gone)
            },
        )
        .await;
    }
    for q in &queues {
        publish_all(&ch, q, 10, 5).await;
        assert_eq!(count(&ch, q).await, 15);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_spread_again_when_a_node_returns() {
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    let n1 = c.connect(1).await;
    let ch = channel(&n1).await;
    let queues: Vec<String> = (0..6).map(|i| format!("qq.back-{i}")).collect();
    for q in &queues {
        ch.queue_declare(q.as_str().into(), durable(), quorum_of(3))
            .await
            .expect("declare");
    }
    let even =
        |ls: &[Option<u64>]| (1..=3).all(|n| ls.iter().filter(|l| **l == Some(n)).count() == 2);
    wait_for_async("the leaders spread two per node", || async {
        even(&leaders(&c, 1, &queues).await)
    })
    .await;
    // Node 3 dies: the others take its queues over.
    c.kill9(3);
    wait_for_async("nodes 1 and 2 lead every queue", || async {
        leaders(&c, 1, &queues)
            .await
            .iter()
            .all(|l| matches!(l, Some(1 | 2)))
    })
    .await;
    // Back: some seconds later it leads two again, nobody asking.
    c.restart(3);
    wait_for_async("the leaders spread two per node again", || async {
        even(&leaders(&c, 1, &queues).await)
    })
    .await;
    confirms(&ch).await;
    for q in &queues {
        publish_all(&ch, q, 0, 3).await;
    }
}

/// `warren <args>` against node `via`: its output, success or not.
fn warren(c: &Cluster, via: u64, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .args(["--server", &c.node(via).cluster_addr()])
        .env("WARREN_CLUSTER_SECRET", TEST_SECRET)
        .env_remove("WARREN_CLUSTER_SECRET_FILE")
        .output()
        .expect("run warren")
}

/// A quorum queue of another vhost is managed like one of `/`: by name
/// with `--vhost`, and by `grow` and `shrink`, which take every vhost's
/// queues; the same name in `/` is another queue (or none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_another_vhost_has_its_members_changed() {
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    for args in [
        &["vhosts", "add", "prod"][..],
        &[
            "permissions",
            "add",
            "guest",
            ".*",
            ".*",
            ".*",
            "--vhost",
            "prod",
        ],
    ] {
        let out = warren(&c, 1, args);
        assert!(out.status.success(), "warren {args:?}: {out:?}");
    }
    let uri = format!("amqp://guest:guest@{}/prod", c.amqp_addr(1).await);
    let conn = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
        .await
        .expect("prod opens");
    let ch = channel(&conn).await;
    ch.queue_declare("orders".into(), durable(), quorum_of(2))
        .await
        .expect("declare");
    let shown = "prod/orders";
    let rs = wait_for_async("the queue's two replicas", || async {
        let rs = c.replica_nodes(1, shown).await;
        (rs.len() == 2).then_some(rs)
    })
    .await;
    let missing = [1, 2, 3]
        .into_iter()
        .find(|n| !rs.contains(n))
        .expect("a node without a replica");
    let node = missing.to_string();

    // By name: `/` has no such queue; `--vhost prod` names it.
    let out = warren(&c, 2, &["queues", "add-member", "orders", &node]);
    assert!(!out.status.success(), "found in '/': {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no queue 'orders' in vhost '/'"),
        "{out:?}"
    );
    cli(&c, 2, &["add-member", "orders", &node, "--vhost", "prod"]);
    wait_for_async("a third replica in prod/orders", || async {
        c.replica_nodes(1, shown).await.len() == 3
    })
    .await;

    // `shrink` takes it off the node again, whatever its vhost.
    cli(&c, 1, &["shrink", &node]);
    wait_for_async("prod/orders without the node", || async {
        let rs = c.replica_nodes(1, shown).await;
        rs.len() == 2 && !rs.contains(&missing)
    })
    .await;
    confirms(&ch).await;
    publish_all(&ch, "orders", 0, 5).await;
    assert_eq!(count(&ch, "orders").await, 5);
}
