//! Changing a quorum queue's replica set on a running cluster: a member
//! added (`warren queues add-member`) catches up and votes, a member
//! removed (`delete-member`) leaves no key of the group in its store and
//! its node goes on serving the queue through the others, and `grow` /
//! `shrink` do the same for every queue of a node.

mod common;

use std::process::Command;

use common::BIN;
use lapin::Confirmation;
use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable};
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
        .queue_members(up, "qq.members", down, false)
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
    while chd
        .basic_get("qq.members".into(), BasicGetOptions { no_ack: true })
        .await
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
