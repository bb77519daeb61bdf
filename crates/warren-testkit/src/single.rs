//! One plain `warren` process, measured from the outside.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::{Cluster, Options, client};

/// The node id of a [`SingleNode`] in its one-node [`Cluster`].
const ID: u64 = 1;

/// One plain `warren server` process (no cluster options, logging at
/// `warn`): a one-node [`Cluster`], so started, killed and reported on
/// panic by the same code as cluster nodes.
#[derive(Debug)]
pub struct SingleNode {
    cluster: Cluster,
    /// Its AMQP address.
    pub addr: SocketAddr,
}

impl SingleNode {
    /// Starts `bin` with the `extra` flags; returns once it serves AMQP.
    pub async fn start(bin: impl Into<PathBuf>, extra: &[&str]) -> Self {
        let mut flags = vec!["--log-level".to_owned(), "warn".to_owned()];
        flags.extend(extra.iter().map(|f| (*f).to_owned()));
        let opts = Options {
            extra: flags,
            ..Options::default()
        };
        let mut cluster = Cluster::new(bin, &[ID], opts);
        cluster.start_plain(ID);
        let addr = cluster.amqp_addr(ID).await;
        Self { cluster, addr }
    }

    /// Its `amqp://` URI.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// A lapin connection to it.
    pub async fn connect(&self) -> lapin::Connection {
        client::connect(&self.uri()).await
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.cluster.node(ID).pid().expect("warren runs")
    }

    /// Its resident set size in bytes.
    pub fn rss(&self) -> u64 {
        rss(self.pid()).expect("VmRSS of a running warren")
    }
}

/// Resident set size of process `pid` in bytes, from /proc (`None` once it
/// is gone).
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}
