//! Three real `warren` processes on loopback (warren-testkit): metadata
//! declared on any node is seen by all, equivalence errors come back from the
//! state machine, a killed leader is replaced and catches up through a
//! snapshot when it returns, membership grows and shrinks online (also by
//! removing a leader killed a moment before), and a node cut off from the
//! majority refuses metadata changes, then converges.
//!
//! The tests take turns (one cluster at a time): three nodes per test on two
//! cores is already enough load for elections to be honest.

mod common;

use std::time::{Duration, Instant};

use common::BIN;
use lapin::ExchangeKind;
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, wait_for_async};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_declared_on_one_node_is_seen_and_checked_on_all() {
    let _turn = SERIAL.lock().await;
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    let [n1, n2, n3] = c.connect_each([1, 2, 3]).await;
    c.wait_leader(&[1, 2, 3]).await;

    // Every exchange type, declared and bound on node 1.
    let ch1 = channel(&n1).await;
    declare_with(&ch1, "q1", durable())
        .await
        .expect("declare q1");
    let kinds = [
        ("x.direct", ExchangeKind::Direct),
        ("x.fanout", ExchangeKind::Fanout),
        ("x.topic", ExchangeKind::Topic),
        ("x.headers", ExchangeKind::Headers),
    ];
    for (name, kind) in &kinds {
        declare_exchange(&ch1, name, kind.clone(), durable_exchange())
            .await
            .expect("declare exchange");
        bind(&ch1, "q1", name, "k").await.expect("bind");
    }

    // Nodes 2 and 3 see them (a declare-ok on node 1 means applied on node
    // 1; the others may lag a heartbeat, hence the wait).
    for conn in [&n2, &n3] {
        wait_queue(conn, "q1", 0).await;
        for (name, kind) in &kinds {
            let ch = channel(conn).await;
            declare_exchange(&ch, name, kind.clone(), passive_exchange())
                .await
                .expect("exchange visible");
        }
    }

    // The state machine decides equivalence, whichever node asks.
    let ch3 = channel(&n3).await;
    let e = declare_exchange(&ch3, "x.topic", ExchangeKind::Fanout, durable_exchange())
        .await
        .expect_err("inequivalent type");
    assert_eq!(code(&e), Some(406));
    let ch3 = channel(&n3).await;
    let e = bind(&ch3, "q1", "missing", "k")
        .await
        .expect_err("no such exchange");
    assert_eq!(code(&e), Some(404));

    // An exclusive queue of a node-2 connection: locked for others, gone
    // when its connection closes.
    let ch2 = channel(&n2).await;
    declare_with(&ch2, "excl", exclusive())
        .await
        .expect("exclusive");
    wait_queue(&n1, "excl", 405).await;
    n2.close(200, "bye".into()).await.expect("close");
    wait_queue(&n1, "excl", 404).await;
    wait_queue(&n3, "excl", 404).await;

    // A queue homed on node 1 deleted from node 3 is gone everywhere.
    let ch3 = channel(&n3).await;
    ch3.queue_delete("q1".into(), Default::default())
        .await
        .expect("delete from another node");
    wait_queue(&n1, "q1", 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_catches_up_through_a_snapshot() {
    let _turn = SERIAL.lock().await;
    let opts = Options {
        extra: vec!["--raft-snapshot-every".into(), "200".into()],
        ..Options::default()
    };
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], opts);
    for id in [1, 2, 3] {
        c.amqp_addr(id).await;
    }
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let s = c.connect(survivors[0]).await;
    let ch = channel(&s).await;
    declare_with(&ch, "before", durable())
        .await
        .expect("declare");

    // kill -9 the leader; a declaration on a survivor goes through once a
    // new leader is elected (the proposal itself retries until then).
    c.kill9(leader);
    let killed = Instant::now();
    let failover = wait_for_async("a declaration after the leader died", || async {
        let ch = channel(&s).await;
        declare_with(&ch, "after-failover", durable())
            .await
            .ok()
            .map(|_| killed.elapsed())
    })
    .await;
    println!(
        "leader {leader} killed: declarations work again after {} ms",
        failover.as_millis()
    );
    let new_leader = c.wait_leader(&survivors).await;
    assert_ne!(new_leader, leader);
    // Publishes continue too: into a queue on one survivor, out of the other.
    let other = c.connect(survivors[1]).await;
    wait_queue(&other, "after-failover", 0).await;
    publish_get(&s, &other, "after-failover", b"after the leader died").await;

    // Thousands of entries while it is down: its log falls behind the
    // survivors' purged logs, so it can only catch up from a snapshot.
    let ch = channel(&s).await;
    for i in 0..1200 {
        let name = format!("bulk-{i}");
        declare_with(&ch, &name, durable())
            .await
            .expect("bulk declare");
        ch.queue_delete(name.as_str().into(), Default::default())
            .await
            .expect("bulk delete");
    }
    declare_with(&ch, "last", durable()).await.expect("declare");
    let target = c
        .applied(survivors[0])
        .await
        .expect("survivor applied index");
    let snap = c.status(survivors[0]).await.expect("status");
    let me = snap
        .members
        .iter()
        .find(|m| m.id == survivors[0])
        .expect("self");
    assert!(
        me.snapshot.is_some_and(|s| s > 1000),
        "a snapshot was built: {me:?}"
    );

    c.restart(leader);
    c.wait_applied(&[leader], target).await;
    let back = c.connect(leader).await;
    for q in ["before", "after-failover", "last"] {
        wait_queue(&back, q, 0).await;
    }
    assert_eq!(probe(&back, "bulk-7").await.0, 404);
    let st = c.status(leader).await.expect("status");
    let me = st.members.iter().find(|m| m.id == leader).expect("self");
    assert!(
        me.snapshot.is_some_and(|s| s > 1000),
        "caught up through a snapshot: {me:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_grows_into_three_and_shrinks_back_to_two() {
    let _turn = SERIAL.lock().await;
    let mut c = Cluster::new(BIN, &[1, 2, 3], Options::default());
    // Node 1 starts as a plain single node (no cluster options at all) and
    // takes a durable queue and a confirmed persistent message.
    c.start_plain(1);
    {
        let n1 = c.connect(1).await;
        let ch = channel(&n1).await;
        declare_with(&ch, "early", durable())
            .await
            .expect("declare");
        confirms(&ch).await;
        let confirm =
            publish_confirmed(&ch, "", "early", b"from the single node", persistent()).await;
        assert!(confirm.is_ack());
    }
    // Its data dir becomes the first member of a cluster: restarted with a
    // cluster listener, it is a one-member group that others can join.
    c.kill9(1);
    c.start_with_peers(1, None);
    let n1 = c.connect(1).await;

    // Nodes 2 and 3 know node 1 only; they wait until added.
    for id in [2, 3] {
        let peers = c.peer_list(&[1, id]);
        c.start_with_peers(id, Some(peers));
    }
    let n1_addr = c.node(1).cluster_addr();
    for id in [2, 3] {
        let voters = warren_cluster::admin_client::add_node(
            c.security(),
            &n1_addr,
            id,
            &c.node(id).cluster_addr(),
        )
        .await
        .expect("add node");
        assert!(voters.iter().any(|m| m.id == id && m.voter), "{voters:?}");
    }
    let n3 = c.connect(3).await;
    wait_queue(&n3, "early", 0).await;
    // The single node's message is served to a consumer on a new member.
    let got = get_one(&channel(&n3).await, "early", true).await;
    assert_eq!(got.delivery.data, b"from the single node");
    declare_with(&channel(&n3).await, "grown", durable())
        .await
        .expect("declare on a new member");
    wait_queue(&n1, "grown", 0).await;
    let st = c.status(2).await.expect("status");
    assert_eq!(st.members.iter().filter(|m| m.voter).count(), 3);

    // Remove node 3 (asked through node 2, a follower or the leader), stop
    // it: the two left keep serving.
    let voters =
        warren_cluster::admin_client::remove_node(c.security(), &c.node(2).cluster_addr(), 3)
            .await
            .expect("remove node");
    assert_eq!(voters.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2]);
    drop(n3);
    c.kill9(3);
    let n2 = c.connect(2).await;
    declare_with(&channel(&n2).await, "shrunk", durable())
        .await
        .expect("declare after shrinking");
    wait_queue(&n1, "shrunk", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_a_moment_ago_is_removed_through_a_follower() {
    let _turn = SERIAL.lock().await;
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();

    // The follower still names the dead leader when the request arrives: the
    // change waits for the election and goes to the new leader.
    c.kill9(leader);
    let voters = warren_cluster::admin_client::remove_node(
        c.security(),
        &c.node(others[0]).cluster_addr(),
        leader,
    )
    .await
    .expect("remove the dead leader");
    assert_eq!(voters.iter().map(|m| m.id).collect::<Vec<_>>(), others);
    let n = c.connect(others[1]).await;
    declare_with(&channel(&n).await, "after-removal", durable())
        .await
        .expect("declare with two members");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_refuses_metadata_changes_then_converges() {
    let _turn = SERIAL.lock().await;
    let opts = Options {
        metadata_timeout_ms: 2000,
        ..Options::default()
    };
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], opts);
    let conns = c.connect_each([1, 2, 3]).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let cut = leader;
    let majority: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != cut).collect();
    let on = |id: u64| &conns[usize::try_from(id - 1).expect("id")];

    c.cut(cut);
    // The cut node answers a declaration with a channel error in bounded
    // time; its connection stays usable.
    let asked = Instant::now();
    let ch = channel(on(cut)).await;
    let e = declare_with(&ch, "refused", durable())
        .await
        .expect_err("no majority");
    let waited = asked.elapsed();
    println!(
        "cut node refused a declaration after {} ms",
        waited.as_millis()
    );
    assert_eq!(code(&e), Some(541), "{e}");
    assert!(waited < Duration::from_secs(10), "bounded: {waited:?}");
    assert_eq!(
        probe(on(cut), "nothing-here").await.0,
        404,
        "connection still usable"
    );

    // The majority elects a leader of its own and keeps declaring.
    let new_leader = c.wait_leader(&majority).await;
    assert_ne!(new_leader, cut);
    declare_with(&channel(on(majority[0])).await, "during-cut", durable())
        .await
        .expect("majority declares");
    wait_queue(on(majority[1]), "during-cut", 0).await;
    publish_get(
        on(majority[0]),
        on(majority[1]),
        "during-cut",
        b"routed by the majority",
    )
    .await;

    // Healed, the cut node converges to the majority's state; what it
    // could not commit is gone.
    c.heal(cut);
    wait_queue(on(cut), "during-cut", 0).await;
    assert_eq!(probe(on(majority[0]), "refused").await.0, 404);
    assert_eq!(probe(on(cut), "refused").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_rejoins_as_a_follower() {
    let _turn = SERIAL.lock().await;
    let mut c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    let conns = c.connect_each([1, 2, 3]).await;
    let on = |id: u64| &conns[usize::try_from(id - 1).expect("id")];
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();

    // SIGSTOP: the process keeps its sockets but answers nothing.
    c.pause(leader);
    let new_leader = c.wait_leader(&others).await;
    assert_ne!(new_leader, leader);
    declare_with(&channel(on(others[0])).await, "while-frozen", durable())
        .await
        .expect("the others declare");

    // SIGCONT: it learns of the new term, follows, and catches up.
    c.resume(leader);
    wait_queue(on(leader), "while-frozen", 0).await;
    let st = c.status(leader).await.expect("status");
    let me = st.members.iter().find(|m| m.id == leader).expect("self");
    assert_eq!(me.state, "follower", "{me:?}");
    assert_eq!(me.leader, Some(new_leader));
}
