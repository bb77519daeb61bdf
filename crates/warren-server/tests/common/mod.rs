//! Test harness: an in-process Warren node on an ephemeral port with its own
//! data directory, and small lapin helpers.
#![allow(dead_code)]

pub mod cluster;
pub mod process;
pub mod raw;

use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tempfile::TempDir;
use warren_server::config::Watermark;
use warren_server::{Config, Server};

/// Bound on every wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running node and its data directory.
pub struct TestServer {
    pub server: Option<Server>,
    pub dir: TempDir,
    config: Config,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            amqp_listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().to_path_buf(),
            memory_high_watermark: Watermark::Bytes(1 << 30),
            ..Config::default()
        };
        f(&mut config);
        let server = Server::start(config.clone()).await.expect("server starts");
        Self {
            server: Some(server),
            dir,
            config,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("running").amqp_addr
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr())
    }

    pub async fn connect(&self) -> Connection {
        self.connect_uri(&self.uri()).await
    }

    pub async fn connect_uri(&self, uri: &str) -> Connection {
        tokio::time::timeout(
            DEADLINE,
            Connection::connect(uri, ConnectionProperties::default()),
        )
        .await
        .expect("connect in time")
        .expect("connect")
    }

    pub async fn channel(&self) -> (Connection, Channel) {
        let c = self.connect().await;
        let ch = c.create_channel().await.expect("channel");
        (c, ch)
    }

    /// Graceful stop, then a new node on the same data directory.
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        let mut config = self.config.clone();
        config.amqp_listen = "127.0.0.1:0".parse().expect("addr");
        // openraft's state-machine task may still hold the old instance's
        // RocksDB for a moment after shutdown: wait until the store opens.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match Server::start(config.clone()).await {
                Ok(s) => {
                    self.server = Some(s);
                    return;
                }
                Err(e)
                    if tokio::time::Instant::now() < deadline && e.to_string().contains("lock") =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("restart: {e:#}"),
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// The AMQP reply code carried by a lapin error, if any.
pub fn code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(a) => Some(a.get_id()),
        _ => None,
    }
}

/// The reply text carried by a lapin error.
pub fn text(e: &lapin::Error) -> String {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(a) => a.get_message().to_string(),
        other => format!("{other:?}"),
    }
}

pub async fn declare(ch: &Channel, name: &str) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
}

pub async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        lapin::BasicProperties::default(),
    )
    .await
    .expect("publish");
}

/// Polls `basic.get` until a message arrives (bounded).
pub async fn get_one(ch: &Channel, queue: &str, no_ack: bool) -> lapin::message::BasicGetMessage {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack })
            .await
            .expect("get")
        {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message in {queue}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `f` is true, polling (bounded).
pub async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Receives the next delivery of a consumer (bounded).
pub async fn next(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    use futures::StreamExt;
    tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("delivery in time")
        .expect("stream open")
        .expect("delivery")
}
