//! The HTTP listener container platforms probe: `/health` answers from the
//! start, `/ready` says 503 (with why) until the node has joined a formed
//! cluster and opened its AMQP listener, and again once it is cut off from
//! a majority; `warren probe` reports both by its exit code. A node whose
//! peers do not resolve yet (a StatefulSet's DNS appears pod by pod) keeps
//! trying and names them in its log. `warren drain`
//! (a Kubernetes preStop hook) hands the quorum queues a node leads to
//! their other members.

mod common;

use std::process::Command;
use std::time::Duration;

use common::BIN;
use lapin::types::{AMQPValue, FieldTable};
use warren_server::http::probe;
use warren_testkit::client::*;
use warren_testkit::{Cluster, Options, TEST_SECRET, wait_for_async};

const ASK: Duration = Duration::from_secs(2);

/// `warren probe <what>` against `addr`: its exit code and output.
fn cli_probe(what: &str, addr: &str) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["probe", what, "--http", addr])
        .output()
        .expect("run warren probe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `warren drain` against node `id`, with the cluster's secret.
fn cli_drain(c: &Cluster, id: u64) -> std::process::Output {
    Command::new(BIN)
        .args(["drain", "--server", &c.node(id).cluster_addr()])
        .env("WARREN_CLUSTER_SECRET", TEST_SECRET)
        .env_remove("WARREN_CLUSTER_SECRET_FILE")
        .output()
        .expect("run warren drain")
}

async fn ready(addr: &str) -> Option<(u16, String)> {
    probe::get(addr, "/ready", ASK).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_in_a_formed_cluster_and_not_once_cut_off() {
    let mut c = Cluster::new(BIN, &[1, 2, 3], Options::default());
    let peers = c.peer_list(&[1, 2, 3]);
    c.start_with_peers(1, Some(peers.clone()));
    let h1 = c.http_addr(1).await.to_string();

    // Alone, node 1 is alive but waits for a majority: not ready.
    assert_eq!(cli_probe("health", &h1).0, 0);
    // It opens its storage first, then waits to join.
    let (code, body) = wait_for_async("node 1 to wait for its peers", || async {
        ready(&h1)
            .await
            .filter(|(_, body)| !body.contains("opening storage"))
    })
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"ready\":false"), "{body}");
    assert!(body.contains("joining the cluster"), "{body}");
    let (code, out) = cli_probe("ready", &h1);
    assert_eq!(code, 1, "{out}");

    // A majority forms the cluster: both become ready.
    c.start_with_peers(2, Some(peers.clone()));
    let h2 = c.http_addr(2).await.to_string();
    for h in [&h1, &h2] {
        wait_for_async(&format!("{h} ready"), || async {
            ready(h).await.is_some_and(|(code, _)| code == 200)
        })
        .await;
    }
    let (code, out) = cli_probe("ready", &h1);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"ready\":true"), "{out}");
    c.start_with_peers(3, Some(peers));
    let h3 = c.http_addr(3).await.to_string();
    wait_for_async("node 3 ready", || async {
        ready(&h3).await.is_some_and(|(code, _)| code == 200)
    })
    .await;
    let (code, body) = probe::get(&h3, "/nowhere", ASK).await.expect("answer");
    assert_eq!(code, 404, "{body}");

    // Cut off from the majority (two of three killed), node 3 stays alive
    // but is not ready: it knows no leader.
    c.kill9(1);
    c.kill9(2);
    let (code, body) = wait_for_async("node 3 not ready once alone", || async {
        ready(&h3).await.filter(|(code, _)| *code == 503)
    })
    .await;
    assert_eq!(code, 503);
    assert!(body.contains("no metadata leader"), "{body}");
    assert_eq!(cli_probe("health", &h3).0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_the_leaderships_of_a_node_to_the_others() {
    let c = Cluster::start_all(BIN, &[1, 2, 3], Options::default());
    c.wait_leader(&[1, 2, 3]).await;
    let conn = c.connect(1).await;
    let ch = channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let queues = ["d1", "d2", "d3", "d4", "d5", "d6"];
    for q in queues {
        ch.queue_declare(q.into(), durable(), args.clone())
            .await
            .expect("declare a quorum queue");
    }
    let leaders = || async {
        let status = c.queue_status(1).await;
        let leaders: Vec<(String, u64)> = status
            .iter()
            .filter(|r| r.state == "leader")
            .map(|r| (r.queue.clone(), r.node))
            .collect();
        (leaders.len() == queues.len()).then_some(leaders)
    };
    let before = wait_for_async("every queue to have a leader", leaders).await;
    // Leaders are spread: node 2 leads some.
    let led_by_2 = before.iter().filter(|(_, n)| *n == 2).count();
    assert!(led_by_2 > 0, "{before:?}");

    let out = cli_drain(&c, 2);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed.matches("leader ->").count(), led_by_2, "{printed}");

    let after = wait_for_async("node 2 to lead nothing", || async {
        leaders().await.filter(|l| l.iter().all(|(_, n)| *n != 2))
    })
    .await;
    assert_eq!(after.len(), queues.len());

    // Nothing to move: a second drain says so and succeeds.
    let out = cli_drain(&c, 2);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("leads no quorum queue"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_peers_do_not_resolve_keeps_trying_and_says_which() {
    let pattern = "warren-{i}.warren-headless.nowhere.invalid:25672";
    let opts = Options {
        extra: vec![
            "--peers-from-dns".into(),
            pattern.into(),
            "--cluster-size".into(),
            "3".into(),
        ],
        ..Options::default()
    };
    let mut c = Cluster::new(BIN, &[1], opts);
    c.start_with_peers(1, None);
    let h1 = c.http_addr(1).await.to_string();
    wait_for_async("the log to name the peers that do not resolve", || async {
        let log = c.log(1);
        log.contains("waiting for a majority of peers")
            && log.contains("warren-1.warren-headless.nowhere.invalid:25672")
            && log.contains("warren-2.warren-headless.nowhere.invalid:25672")
    })
    .await;
    let (code, body) = ready(&h1).await.expect("/ready answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("joining the cluster"), "{body}");
    // Still alive, still trying.
    assert_eq!(cli_probe("health", &h1).0, 0);
}
