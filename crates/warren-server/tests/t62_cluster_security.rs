//! The cluster port is not open to the world (issue 11): every call proves
//! the shared cluster secret, nodes of two clusters never mix, mutual TLS
//! works and refuses foreign certificates, and a node with cluster options
//! but no secret does not start. Real `warren` processes (warren-testkit).
//!
//! The tests take turns: each runs a cluster of its own.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::BIN;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use warren_cluster::pb::cluster_client::ClusterClient;
use warren_cluster::pb::queues::queues_client::QueuesClient;
use warren_cluster::pb::queues::{Up, UpItem, up_item};
use warren_cluster::pb::raft_client::RaftClient;
use warren_cluster::pb::{
    AddNodeRequest, ProposeRequest, RaftRequest, RemoveNodeRequest, StatusRequest,
};
use warren_cluster::{ClusterSecret, Security, admin_client};
use warren_core::meta::Command as MetaCommand;
use warren_testkit::client::*;
use warren_testkit::tls::TestCa;
use warren_testkit::{Cluster, Options, TEST_SECRET, wait_for, wait_for_blocking};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the tests watch for repeated refusals: many Raft heartbeats and
/// bootstrap probes, which must not each be logged.
const WATCH: Duration = Duration::from_secs(3);

/// Lines of `log` that contain every one of `parts`.
fn count_lines(log: &str, parts: &[&str]) -> usize {
    log.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// What a client without the secret, or with a wrong one, gets from each
/// service: the codes of every call, in order.
async fn attack(addr: &str, secret: Option<&str>, queue_id: u64) -> Vec<(String, tonic::Code)> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("the cluster port accepts connections");
    let sec = Security::new(secret.map(|s| ClusterSecret::new(s).expect("secret")), None);
    let ch = InterceptedService::new(channel, sec.signer());
    let mut raft = RaftClient::new(ch.clone());
    let mut cluster = ClusterClient::new(ch.clone());
    let mut queues = QueuesClient::new(ch);
    let raft_req = || RaftRequest {
        group: 0,
        payload: br#"{"vote":{"leader_id":{"term":999,"node_id":9},"committed":true}}"#.to_vec(),
        data: Vec::new(),
    };
    let delete = MetaCommand::DeleteQueue {
        vhost: "/".into(),
        name: "kept".into(),
        conn: None,
        id: None,
    };
    let mut codes = Vec::new();
    let mut record = |what: &str, r: Result<(), tonic::Status>| {
        codes.push((
            what.to_owned(),
            r.err().map_or(tonic::Code::Ok, |s| s.code()),
        ));
    };
    record("append", raft.append_entries(raft_req()).await.map(drop));
    record("vote", raft.vote(raft_req()).await.map(drop));
    record(
        "snapshot",
        raft.install_snapshot(raft_req()).await.map(drop),
    );
    let propose = ProposeRequest {
        group: 0,
        command: serde_json::to_vec(&delete).expect("json"),
    };
    record("propose", cluster.propose(propose).await.map(drop));
    let add = AddNodeRequest {
        id: 9,
        addr: "127.0.0.1:9".into(),
    };
    record("add-node", cluster.add_node(add).await.map(drop));
    record(
        "remove-node",
        cluster
            .remove_node(RemoveNodeRequest { id: 2 })
            .await
            .map(drop),
    );
    record("status", cluster.status(StatusRequest {}).await.map(drop));
    let purge = Up {
        items: vec![UpItem {
            queue: queue_id,
            op: Some(up_item::Op::Purge(1)),
        }],
    };
    let link = queues.link(tokio_stream::iter(vec![purge])).await.map(drop);
    record("link", link);
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_the_secret_is_refused_on_every_service_and_changes_nothing() {
    let _turn = SERIAL.lock().await;
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    let [n1] = c.connect_each([1]).await;
    c.wait_leader(&[1, 2, 3]).await;
    let ch = channel(&n1).await;
    declare_with(&ch, "kept", durable()).await.expect("declare");
    confirms(&ch).await;
    for i in 0..10u8 {
        assert!(
            publish_confirmed(&ch, "", "kept", &[i], persistent())
                .await
                .is_ack()
        );
    }
    let before = c.status(1).await.expect("status");

    let addr = c.node(1).cluster_addr();
    for secret in [None, Some("not the secret of this cluster")] {
        // Queue ids are small integers: aim at the first few.
        for queue_id in 1..=3 {
            let codes = attack(&addr, secret, queue_id).await;
            for (what, code) in &codes {
                assert_eq!(
                    *code,
                    tonic::Code::Unauthenticated,
                    "{what} with secret {secret:?}: {codes:?}"
                );
            }
        }
    }
    // The same raw client with the cluster's secret gets through: the
    // refusals above were the secret's doing.
    let raw = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let signer = c.security().signer();
    let status = ClusterClient::new(InterceptedService::new(raw, signer))
        .status(StatusRequest {})
        .await
        .expect("the secret's holder is served")
        .into_inner();
    assert_eq!(status.id, 1);

    // Nothing changed: the queue keeps its messages, the membership stands.
    assert_eq!(count(&channel(&n1).await, "kept").await, 10);
    let after = c.status(1).await.expect("status");
    let ids = |s: &warren_testkit::ClusterStatus| {
        s.members
            .iter()
            .map(|m| (m.id, m.voter))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&after), ids(&before));
    assert_eq!(ids(&after), vec![(1, true), (2, true), (3, true)]);
    assert!(after.cluster_id.is_some(), "the cluster has an id");
    // 48 refused calls from one address: logged once per kind of refusal.
    let refused = count_lines(&c.log(1), &["refused a cluster call"]);
    assert!((1..=3).contains(&refused), "{refused} refusal lines");

    // `warren cluster status` proves the secret from the environment, and
    // says what is missing without it.
    let cli = |secret: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["cluster", "status", "--json", "--server", &addr])
            .env_remove("WARREN_CLUSTER_SECRET")
            .env_remove("WARREN_CLUSTER_SECRET_FILE");
        if let Some(s) = secret {
            cmd.env("WARREN_CLUSTER_SECRET", s);
        }
        cmd.output().expect("warren cluster status")
    };
    let ok = cli(Some(TEST_SECRET));
    assert!(ok.status.success(), "{ok:?}");
    let json: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("json");
    assert_eq!(json["members"].as_array().map(Vec::len), Some(3));
    let no = cli(None);
    assert!(!no.status.success());
    assert!(
        String::from_utf8_lossy(&no.stderr).contains("needs a cluster secret"),
        "{no:?}"
    );
    let wrong = cli(Some("not the secret of this cluster"));
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("wrong cluster secret"),
        "{wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wrong_secret_cannot_join_and_says_so_once() {
    let _turn = SERIAL.lock().await;
    let mut c = Cluster::new(BIN, &[1, 2, 3, 4], Options::default());
    let peers = c.peer_list(&[1, 2, 3]);
    for id in [1, 2, 3] {
        c.start_with_peers(id, Some(peers.clone()));
    }
    c.set_secret(4, Some("the secret of some other cluster"));
    let peers4 = c.peer_list(&[1, 4]);
    c.start_with_peers(4, Some(peers4));
    c.wait_leader(&[1, 2, 3]).await;
    // Node 4 probes node 1 every 200 ms while it waits to be added: node
    // 1 refuses each probe, node 4 logs that once.
    let n4_ip = c.node(4).ip.to_string();
    wait_for("node 4 logs the refusal", || {
        count_lines(&c.log(4), &["a peer refused this node"]) > 0
    })
    .await;

    let e = admin_client::add_node(
        c.security(),
        &c.node(1).cluster_addr(),
        4,
        &c.node(4).cluster_addr(),
    )
    .await
    .expect_err("node 4 cannot join");
    assert!(e.to_string().contains("cannot join"), "{e}");
    assert!(e.to_string().contains("wrong cluster secret"), "{e}");

    // Let many probes and retries go by: the logs do not grow with them.
    tokio::time::sleep(WATCH).await;
    let log4 = c.log(4);
    let log1 = c.log(1);
    assert_eq!(
        count_lines(&log4, &["a peer refused this node"]),
        1,
        "{log4}"
    );
    assert!(
        count_lines(&log4, &["refused a cluster call"]) <= 1,
        "node 4 refused the leader's probe once"
    );
    assert_eq!(
        count_lines(&log1, &["refused a cluster call", &n4_ip]),
        1,
        "node 1 logs node 4's refusals once"
    );

    // The others keep working, node 4 is not a member.
    let st = c.status(2).await.expect("status");
    assert_eq!(
        st.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let [n2, n3] = c.connect_each([2, 3]).await;
    declare_with(&channel(&n2).await, "after", durable())
        .await
        .expect("declare");
    wait_queue(&n3, "after", 0).await;
    publish_get(&n3, &n2, "after", b"still serving").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_with_overlapping_peer_lists_never_exchange_entries() {
    let _turn = SERIAL.lock().await;
    let mut c = Cluster::new(BIN, &[1, 2, 3, 4], Options::default());
    // Cluster X: nodes 1 and 2.
    let x_peers = c.peer_list(&[1, 2]);
    for id in [1, 2] {
        c.start_with_peers(id, Some(x_peers.clone()));
    }
    c.wait_leader(&[1, 2]).await;
    let [n1, n2] = c.connect_each([1, 2]).await;
    declare_with(&channel(&n1).await, "x-only", durable())
        .await
        .expect("declare on X");
    let x_id = wait_for_async_id(&c, 1).await;

    // Node 1 does not answer while cluster Y forms from a list naming it:
    // nodes 3 and 4 are a majority of {1, 3, 4} and form a second group
    // that keeps sending Raft traffic to node 1.
    c.pause(1);
    let y_peers = c.peer_list(&[1, 3, 4]);
    for id in [3, 4] {
        c.start_with_peers(id, Some(y_peers.clone()));
    }
    c.wait_leader(&[3, 4]).await;
    let [n3, n4] = c.connect_each([3, 4]).await;
    declare_with(&channel(&n3).await, "y-only", durable())
        .await
        .expect("declare on Y");
    let y_id = wait_for_async_id(&c, 3).await;
    assert_ne!(x_id, y_id, "each cluster chose its own id");
    c.resume(1);

    // Node 1 refuses Y's traffic (once per peer in its log) and stays in X.
    wait_for("node 1 refuses cluster Y's calls", || {
        count_lines(&c.log(1), &["refused a cluster call", "belongs to cluster"]) > 0
    })
    .await;
    declare_with(&channel(&n2).await, "x-after", durable())
        .await
        .expect("X serves again");
    wait_queue(&n1, "x-after", 0).await;
    tokio::time::sleep(WATCH).await;

    for conn in [&n1, &n2] {
        wait_queue(conn, "x-only", 0).await;
        assert_eq!(probe(conn, "y-only").await.0, 404, "no entry of Y in X");
    }
    for conn in [&n3, &n4] {
        wait_queue(conn, "y-only", 0).await;
        assert_eq!(probe(conn, "x-only").await.0, 404, "no entry of X in Y");
        assert_eq!(probe(conn, "x-after").await.0, 404, "no entry of X in Y");
    }
    let s1 = c.status(1).await.expect("status of node 1");
    assert_eq!(s1.cluster_id.as_deref(), Some(x_id.as_str()));
    assert_eq!(
        s1.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2],
        "node 1's cluster is still X"
    );
    let s3 = c.status(3).await.expect("status of node 3");
    assert_eq!(s3.cluster_id.as_deref(), Some(y_id.as_str()));
    // Y's members each send to node 1: logged once per peer and kind.
    let refusals = count_lines(&c.log(1), &["refused a cluster call"]);
    assert!((1..=4).contains(&refusals), "{refusals} refusal lines");
    // Y's leader backs off from node 1 (1 s, 2 s, 4 s...) instead of retrying
    // at its 100 ms heartbeat: over these seconds openraft reports a
    // handful of refused replications, not dozens.
    let retries: usize = [3, 4]
        .iter()
        .map(|id| {
            count_lines(
                &c.log(*id),
                &["error replication to target=1", "belongs to cluster"],
            )
        })
        .sum();
    assert!(
        (1..=12).contains(&retries),
        "{retries} refused replications to node 1"
    );

    // Adding a node of one cluster to the other is refused, and changes
    // nothing.
    let e = admin_client::add_node(
        c.security(),
        &c.node(1).cluster_addr(),
        3,
        &c.node(3).cluster_addr(),
    )
    .await
    .expect_err("a node of Y cannot join X");
    assert!(e.to_string().contains("belongs to cluster"), "{e}");
    let s1 = c.status(1).await.expect("status of node 1");
    assert_eq!(s1.members.len(), 2);
}

/// The cluster id node `id` reports, once it has one.
async fn wait_for_async_id(c: &Cluster, id: u64) -> String {
    warren_testkit::wait_for_async(&format!("node {id} knows its cluster id"), || async {
        c.status(id)
            .await?
            .members
            .iter()
            .find(|m| m.id == id)?
            .cluster_id
            .clone()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_forms_a_cluster_and_refuses_a_foreign_certificate() {
    let _turn = SERIAL.lock().await;
    let opts = Options {
        tls: true,
        ..Options::default()
    };
    let mut c = Cluster::new(BIN, &[1, 2, 3, 4], opts);
    let peers = c.peer_list(&[1, 2, 3]);
    for id in [1, 2, 3] {
        c.start_with_peers(id, Some(peers.clone()));
    }
    c.wait_leader(&[1, 2, 3]).await;
    let [n1, n2, n3] = c.connect_each([1, 2, 3]).await;
    // A queue at home on node 1, published to through node 2 and consumed
    // through node 3: both links run over TLS.
    declare_with(&channel(&n1).await, "over-tls", durable())
        .await
        .expect("declare");
    wait_queue(&n2, "over-tls", 0).await;
    wait_queue(&n3, "over-tls", 0).await;
    publish_get(&n2, &n3, "over-tls", b"across nodes, encrypted").await;

    // Node 4 has the secret but a certificate of another CA.
    let rogue = TestCa::new("some other CA");
    let files = rogue.issue(c.dir(), "rogue4", c.node(4).ip);
    c.set_tls(4, Some(files));
    let peers4 = c.peer_list(&[1, 4]);
    c.start_with_peers(4, Some(peers4));
    let e = admin_client::add_node(
        c.security(),
        &c.node(1).cluster_addr(),
        4,
        &c.node(4).cluster_addr(),
    )
    .await
    .expect_err("a node of another CA cannot join");
    assert!(e.to_string().contains("does not answer"), "{e}");
    // A client without a certificate is refused too, and so is plain text.
    let no_cert = Security::new(Some(ClusterSecret::new(TEST_SECRET).expect("secret")), None);
    assert!(
        admin_client::cluster_status(&no_cert, &c.node(1).cluster_addr())
            .await
            .is_err()
    );
    let st = c.status(1).await.expect("status over TLS");
    assert_eq!(
        st.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(st.members.iter().all(|m| m.reachable), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_cluster_options_and_no_secret_does_not_start() {
    let _turn = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .args([
            "server",
            "--node-id",
            "1",
            "--cluster-listen",
            "127.0.0.1:0",
        ])
        .arg("--amqp-listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("WARREN_CLUSTER_SECRET")
        .env_remove("WARREN_CLUSTER_SECRET_FILE")
        .env_remove("WARREN_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start warren");
    let status = wait_for_blocking("warren exits", || child.try_wait().ok().flatten());
    let out = child.wait_with_output().expect("output");
    assert!(!status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("need a cluster secret") && err.contains("--cluster-secret-file"),
        "{err}"
    );
    assert!(!dir.path().join("amqp.addr").exists(), "it never served");
}
