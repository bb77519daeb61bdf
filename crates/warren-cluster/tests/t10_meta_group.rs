//! Raft group 0 across three in-process nodes talking gRPC over loopback:
//! the cluster forms, a command is committed and applied on every node, the
//! state machine's errors come back to the proposer, and after the leader is
//! stopped the other two elect a new one and keep applying.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use openraft::{BasicNode, Config, Raft};
use tokio_stream::wrappers::TcpListenerStream;
use warren_cluster::{MetaRaftNode, Network, QueueGroups, QueueTiming, RaftService};
use warren_core::ReplyCode;
use warren_core::meta::{Command, MetaState, Outcome};
use warren_store::Store;
use warren_store::raft::{Applied, META_GROUP, MetaRaft, MetaStateMachine, NodeId, RaftLogStore};
use warren_testkit::meta::declare_queue;
use warren_testkit::wait_for;

struct Node {
    id: NodeId,
    addr: String,
    raft: MetaRaftNode,
    state: Arc<RwLock<MetaState>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(id: NodeId) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("rocksdb")).expect("store");
    let writer = store.start_writer();
    let log = RaftLogStore::<MetaRaft>::new(&store, writer.clone(), META_GROUP);
    let groups = QueueGroups::new(
        id,
        &store,
        writer.clone(),
        Network::default(),
        QueueTiming::default(),
    )
    .expect("queue groups");
    let sm = MetaStateMachine::open(&store, writer, META_GROUP).expect("state machine");
    let state = sm.shared();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let config = Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        ..Default::default()
    }
    .validate()
    .expect("config");
    let raft = Raft::new(
        id,
        Arc::new(config),
        Network::default().for_group(META_GROUP),
        log,
        sm,
    )
    .await
    .expect("raft");
    let service = RaftService::new(raft.clone(), groups);
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    Node {
        id,
        addr,
        raft,
        state,
        server,
        _dir: dir,
    }
}

/// The leader every node of `nodes` names, if they agree on one of them.
fn leader_of<'a>(nodes: &[&'a Node]) -> Option<&'a Node> {
    let leaders: Vec<Option<NodeId>> = nodes
        .iter()
        .map(|n| n.raft.metrics().borrow().current_leader)
        .collect();
    let first = leaders[0]?;
    let leader = nodes.iter().find(|n| n.id == first)?;
    leaders.iter().all(|l| *l == Some(first)).then_some(*leader)
}

/// Proposes `cmd` through `n`: what the state machine answered.
async fn propose(n: &Node, cmd: Command) -> Applied {
    n.raft.client_write(cmd).await.expect("write").data
}

/// Stops node `n`'s Raft and its gRPC listener.
async fn stop(n: &Node) {
    n.raft.shutdown().await.expect("shutdown");
    n.server.abort();
}

fn has_queue(n: &Node, name: &str) -> bool {
    n.state
        .read()
        .map(|s| s.default_vhost().queue(name).is_some())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_metadata_and_survive_the_leader() {
    let nodes = vec![start(1).await, start(2).await, start(3).await];
    let members: BTreeMap<NodeId, BasicNode> = nodes
        .iter()
        .map(|n| (n.id, BasicNode::new(&n.addr)))
        .collect();
    nodes[0].raft.initialize(members).await.expect("initialize");
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = wait_for("a leader every node knows", || leader_of(&all)).await;
    let leader_id = leader.id;

    // A declaration is committed, and applied on every node.
    assert!(matches!(
        propose(leader, declare_queue("orders", true)).await,
        Applied(Some(Ok(Outcome::QueueDeclared { created: true, .. })))
    ));
    for n in &nodes {
        wait_for("queue applied everywhere", || has_queue(n, "orders")).await;
    }

    // The state machine decides equivalence: the proposer gets the 406.
    match propose(leader, declare_queue("orders", false)).await {
        Applied(Some(Err(e))) => assert_eq!(e.code, ReplyCode::PreconditionFailed),
        other => panic!("expected a 406, got {other:?}"),
    }

    // Stop the leader: the others elect a new one and keep going.
    let stopped = Instant::now();
    stop(leader).await;
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != leader_id).collect();
    let new_leader = wait_for("a new leader among the survivors", || {
        leader_of(&survivors).filter(|l| l.id != leader_id)
    })
    .await;
    println!(
        "new leader elected {} ms after the old one stopped",
        stopped.elapsed().as_millis()
    );
    assert!(matches!(
        propose(new_leader, declare_queue("after-failover", true)).await,
        Applied(Some(Ok(Outcome::QueueDeclared { created: true, .. })))
    ));
    for n in &survivors {
        wait_for("applied on the survivors", || {
            has_queue(n, "after-failover")
        })
        .await;
        assert!(has_queue(n, "orders"), "earlier entries kept");
    }
    for n in &survivors {
        stop(n).await;
    }
    drop(survivors);
    drop(nodes);
    // Every store closed before the process exits (RocksDB aborts otherwise).
    wait_for("stores closed", || warren_store::live_writers() == 0).await;
}
