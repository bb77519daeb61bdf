//! Test harness: an in-process Warren node on an ephemeral port with its own
//! data directory, for single-node tests that need its internals. The lapin
//! helpers, waits and real processes are warren-testkit's.
#![allow(dead_code)]

pub mod paced;
pub mod raw;

use lapin::{Channel, Connection};
use tempfile::TempDir;
use warren_server::config::Watermark;
use warren_server::{Config, Server};
use warren_testkit::client;
use warren_testkit::wait_for_async;

/// The `warren` binary the tests of real processes run.
pub const BIN: &str = env!("CARGO_BIN_EXE_warren");

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
        client::connect(&self.uri()).await
    }

    /// A connection whose URI carries `query` (`frame_max=4096`, ...).
    pub async fn connect_with(&self, query: &str) -> Connection {
        client::connect(&format!("{}?{query}", self.uri())).await
    }

    /// A new connection and a channel on it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let c = self.connect().await;
        let ch = client::channel(&c).await;
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
        let server = wait_for_async("the restarted node opens its store", || async {
            match Server::start(config.clone()).await {
                Ok(s) => Some(s),
                Err(e) if e.to_string().contains("lock") => None,
                Err(e) => panic!("restart: {e:#}"),
            }
        })
        .await;
        self.server = Some(server);
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}
