//! A real `warren` process for tests that measure it from the outside.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::DEADLINE;

/// A `warren server` child process, killed on drop.
pub struct Process {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub dir: TempDir,
}

impl Process {
    pub async fn spawn(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("warren.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .arg("server")
            .args(["--amqp-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn warren");
        let addr_file: PathBuf = dir.path().join("amqp.addr");
        let deadline = std::time::Instant::now() + DEADLINE;
        let addr = loop {
            if let Ok(s) = std::fs::read_to_string(&addr_file)
                && let Ok(a) = s.trim().parse()
            {
                break a;
            }
            assert!(std::time::Instant::now() < deadline, "warren did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        Self { child, addr, dir }
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS")
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
