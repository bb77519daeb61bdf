//! A short benchmark run against a real (in-process) Warren node: rates are
//! positive and the counts sent, confirmed and received agree.

use clap::Parser;
use warren_bench::{Args, run};
use warren_server::config::Watermark;
use warren_server::{Config, Server};

async fn node() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        amqp_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        memory_high_watermark: Watermark::Bytes(1 << 30),
        ..Config::default()
    };
    (Server::start(config).await.expect("server"), dir)
}

fn args(uri: &str, extra: &[&str]) -> Args {
    let mut v = vec!["warren-bench", "--uri", uri, "--quiet"];
    v.extend_from_slice(extra);
    Args::try_parse_from(v).expect("args")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_agree_with_confirms_and_persistence() {
    let (server, _dir) = node().await;
    let uri = format!("amqp://guest:guest@{}/%2f", server.amqp_addr);
    let s = run(args(
        &uri,
        &[
            "--producers",
            "2",
            "--consumers",
            "2",
            "--count",
            "2000",
            "--duration",
            "0",
            "--persistent",
            "--durable",
            "--confirm",
            "50",
            "--pipeline",
            "16",
            "--size",
            "512",
            "--prefetch",
            "100",
            "--multi-ack",
            "10",
            "--queue",
            "t1",
        ],
    ))
    .await
    .expect("run");
    assert_eq!(s.sent, 4000);
    assert_eq!(s.confirmed, 4000);
    assert_eq!(s.received, 4000);
    assert_eq!(s.nacked, 0);
    assert!(
        s.publish_rate > 0.0 && s.confirm_rate > 0.0 && s.consume_rate > 0.0,
        "{s:?}"
    );
    assert!(s.latency_us.p50 > 0 && s.latency_us.p99 >= s.latency_us.p50);
    assert_eq!(s.confirm_latency_us.count, 4000);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_publish_only_then_consume_only() {
    let (server, dir) = node().await;
    let uri = format!("amqp://guest:guest@{}/%2f", server.amqp_addr);
    let json = dir.path().join("summary.json");
    let fan = [
        "--exchange",
        "fan",
        "--exchange-type",
        "fanout",
        "--queues",
        "3",
        "--queue",
        "f",
    ];
    let mut publish = vec![
        "--mode",
        "publish",
        "--count",
        "500",
        "--duration",
        "0",
        "--json",
    ];
    let json_s = json.to_str().expect("utf8").to_owned();
    publish.push(&json_s);
    publish.extend_from_slice(&fan);
    let p = run(args(&uri, &publish)).await.expect("publish");
    assert_eq!((p.sent, p.received), (500, 0));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("valid json");
    assert_eq!(written["sent"], 500);

    let mut consume = vec![
        "--mode",
        "consume",
        "--consumers",
        "3",
        "--count",
        "1500",
        "--duration",
        "30",
        "--auto-ack",
    ];
    consume.extend_from_slice(&fan);
    let c = run(args(&uri, &consume)).await.expect("consume");
    assert_eq!(c.received, 1500, "every queue got every message");
    assert!(c.consume_rate > 0.0);
    server.shutdown().await;
}
