//! # warren-testkit: what the tests share
//!
//! - [`client`]: the lapin helpers every AMQP test uses.
//! - [`wait_for`] and its family: bounded polls of named conditions, one
//!   [`DEADLINE`].
//! - [`Cluster`]: real `warren` processes, and [`SingleNode`], one of them
//!   measured from the outside (started by the same code).
//! - [`meta`]: metadata commands for tests that drive a Raft group directly.
//! - [`tls`]: a certificate authority made in the test (rcgen).
//!
//! A [`Cluster`] starts `warren server` processes, node `i` on its own
//! loopback address `127.0.0.<i+k>` (the cluster listener, and the address
//! its outgoing peer connections start from) with its own data dir and
//! ports, proving the cluster's secret ([`TEST_SECRET`] unless a test sets
//! another per node) and, with [`Options::tls`], mutual TLS with a CA of
//! the cluster's own, so that one node's links can be cut with iptables without touching
//! the others'. AMQP listens on 127.0.0.1 with a port the node picks and
//! writes to `amqp.addr`.
//!
//! Every wait polls a named condition with a deadline; faults are kill -9,
//! SIGSTOP / SIGCONT, restart on the same data dir, and cutting a node's
//! cluster links. Dropping the cluster kills every process and removes the
//! iptables rules, also when the test panicked (and then prints the tail of
//! each node's log).

pub mod client;
mod fault;
pub mod meta;
mod single;
pub mod tls;
mod wait;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

pub use single::{SingleNode, rss};
pub use wait::{
    DEADLINE, Ready, wait_for, wait_for_async, wait_for_async_within, wait_for_blocking,
};
pub use warren_cluster::admin_client::{ClusterStatus, MemberStatus};
use warren_cluster::{ClusterSecret, Security, Tls, TlsFiles};

/// The cluster secret nodes of a [`Cluster`] share unless a test sets
/// another.
pub const TEST_SECRET: &str = "warren-testkit-cluster-secret";

/// Spreads tests of one process over distinct address blocks.
static NEXT_BLOCK: AtomicU8 = AtomicU8::new(0);

/// How each node of a cluster is started.
#[derive(Clone, Debug)]
pub struct Options {
    /// Extra `warren server` flags for every node.
    pub extra: Vec<String>,
    /// Raft election timeout, ms.
    pub election_timeout_ms: u64,
    /// Raft heartbeat, ms.
    pub heartbeat_ms: u64,
    /// Bound on a metadata operation, ms.
    pub metadata_timeout_ms: u64,
    /// Mutual TLS on the cluster port, with a CA made for the cluster.
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            extra: Vec::new(),
            election_timeout_ms: 400,
            heartbeat_ms: 100,
            metadata_timeout_ms: 3000,
            tls: false,
        }
    }
}

/// One `warren server` process of a [`Cluster`].
#[derive(Debug)]
pub struct Node {
    /// Node id.
    pub id: u64,
    /// Its loopback address (cluster listener and outgoing peer links).
    pub ip: Ipv4Addr,
    /// Its cluster port.
    pub cluster_port: u16,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// The static peer list it is started with (`None`: none).
    pub peers: Option<String>,
    /// Started without any cluster option (a plain single node).
    pub plain: bool,
    /// The cluster secret it is started with (`None`: none).
    pub secret: Option<String>,
    /// Its TLS files (`None`: no TLS).
    pub tls: Option<TlsFiles>,
    child: Option<Child>,
    stopped: bool,
}

impl Node {
    /// `ip:port` of its cluster listener.
    pub fn cluster_addr(&self) -> String {
        format!("{}:{}", self.ip, self.cluster_port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    fn secret_path(&self) -> PathBuf {
        self.data_dir.with_extension("secret")
    }
}

/// A set of `warren` processes and everything to tear them down.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    opts: Options,
    nodes: BTreeMap<u64, Node>,
    block: u8,
    cut: Vec<u64>,
    ca: Option<tls::TestCa>,
    /// What the test's own admin calls prove.
    admin: Security,
    dir: tempfile::TempDir,
}

/// A free TCP port on `ip` (bound, then released for the node to take).
fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

impl Cluster {
    /// Nodes `ids`, not started yet, run from `bin` (the test's
    /// `env!("CARGO_BIN_EXE_warren")`).
    pub fn new(bin: impl Into<PathBuf>, ids: &[u64], opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // 127.0.<block>.<id>: tests of one binary run in parallel.
        let block = 10 + NEXT_BLOCK.fetch_add(1, Ordering::Relaxed) % 200;
        let pid_block = (std::process::id() % 50) as u8;
        let ca = opts.tls.then(|| tls::TestCa::new("warren test cluster CA"));
        let mut nodes = BTreeMap::new();
        for &id in ids {
            let ip = Ipv4Addr::new(
                127,
                pid_block + 1,
                block,
                u8::try_from(id).expect("id < 256"),
            );
            let cluster_port = free_port(ip);
            let data_dir = dir.path().join(format!("node{id}"));
            let tls = ca
                .as_ref()
                .map(|ca| ca.issue(dir.path(), &format!("node{id}"), ip));
            nodes.insert(
                id,
                Node {
                    id,
                    ip,
                    cluster_port,
                    data_dir,
                    peers: None,
                    plain: false,
                    secret: Some(TEST_SECRET.to_owned()),
                    tls,
                    child: None,
                    stopped: false,
                },
            );
        }
        let admin_tls = ca.as_ref().map(|ca| {
            let files = ca.issue(dir.path(), "admin", Ipv4Addr::LOCALHOST);
            Tls::load(&files).expect("admin TLS")
        });
        let secret = ClusterSecret::new(TEST_SECRET).expect("test secret");
        Self {
            bin: bin.into(),
            opts,
            nodes,
            block,
            cut: Vec::new(),
            ca,
            admin: Security::new(Some(secret), admin_tls),
            dir,
        }
    }

    /// The secret node `id` is started with from now on (`None`: none).
    pub fn set_secret(&mut self, id: u64, secret: Option<&str>) {
        self.node_mut(id).secret = secret.map(str::to_owned);
    }

    /// The TLS files node `id` is started with from now on (`None`: none).
    pub fn set_tls(&mut self, id: u64, tls: Option<TlsFiles>) {
        self.node_mut(id).tls = tls;
    }

    /// The cluster's CA (with [`Options::tls`]).
    pub fn ca(&self) -> Option<&tls::TestCa> {
        self.ca.as_ref()
    }

    /// What the test's own calls to the cluster port prove (the cluster's
    /// secret, and a certificate of its CA with TLS).
    pub fn security(&self) -> &Security {
        &self.admin
    }

    /// A directory that lives as long as the cluster (for files a test
    /// makes).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts every node with the whole list as its static peers.
    pub fn start_all(bin: impl Into<PathBuf>, ids: &[u64], opts: Options) -> Self {
        let mut c = Self::new(bin, ids, opts);
        let peers = c.peer_list(ids);
        for id in ids {
            c.node_mut(*id).peers = Some(peers.clone());
            c.spawn(*id);
        }
        c
    }

    /// `id=ip:port,...` for `ids`.
    pub fn peer_list(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|id| format!("{id}={}", self.node(*id).cluster_addr()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts, on its data dir) node `id` with `peers`.
    pub fn start_with_peers(&mut self, id: u64, peers: Option<String>) {
        let n = self.node_mut(id);
        n.peers = peers;
        n.plain = false;
        self.spawn(id);
    }

    /// Starts node `id` as a plain single node: no node id, no cluster
    /// listener, no peers (what `warren server` does with no options).
    pub fn start_plain(&mut self, id: u64) {
        let n = self.node_mut(id);
        n.peers = None;
        n.plain = true;
        self.spawn(id);
    }

    /// A node.
    pub fn node(&self, id: u64) -> &Node {
        self.nodes.get(&id).expect("no such node")
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    fn spawn(&mut self, id: u64) {
        let bin = self.bin.clone();
        let opts = self.opts.clone();
        let n = self.node_mut(id);
        assert!(n.child.is_none(), "node {id} already runs");
        std::fs::create_dir_all(&n.data_dir).expect("data dir");
        let _ = std::fs::remove_file(n.data_dir.join("amqp.addr"));
        let _ = std::fs::remove_file(n.data_dir.join("http.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.log_path())
            .expect("log file");
        let mut cmd = Command::new(&bin);
        cmd.arg("server");
        if !n.plain {
            cmd.arg("--node-id")
                .arg(id.to_string())
                .arg("--cluster-listen")
                .arg(n.cluster_addr());
            if let Some(secret) = &n.secret {
                std::fs::write(n.secret_path(), secret).expect("secret file");
                cmd.arg("--cluster-secret-file").arg(n.secret_path());
            }
            if let Some(tls) = &n.tls {
                cmd.arg("--cluster-tls-cert")
                    .arg(&tls.cert)
                    .arg("--cluster-tls-key")
                    .arg(&tls.key)
                    .arg("--cluster-tls-ca")
                    .arg(&tls.ca);
            }
        }
        cmd.arg("--amqp-listen")
            .arg("127.0.0.1:0")
            .arg("--http-listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&n.data_dir)
            .arg("--raft-heartbeat-ms")
            .arg(opts.heartbeat_ms.to_string())
            .arg("--raft-election-timeout-ms")
            .arg(opts.election_timeout_ms.to_string())
            .arg("--metadata-timeout-ms")
            .arg(opts.metadata_timeout_ms.to_string())
            // Every start prepares a reused WAL as `warren server` does
            // (kills and restarts included), at 4 MiB rather than 64: the
            // suite starts hundreds of nodes.
            .arg("--wal-preallocate")
            .arg("4MiB")
            .args(&opts.extra)
            .env_remove("RUST_LOG")
            .env_remove("WARREN_CLUSTER_SECRET")
            .env_remove("WARREN_CLUSTER_SECRET_FILE")
            .env_remove("WARREN_CLUSTER_TLS_CERT")
            .env_remove("WARREN_CLUSTER_TLS_KEY")
            .env_remove("WARREN_CLUSTER_TLS_CA")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(p) = &n.peers {
            cmd.arg("--peers").arg(p);
        }
        n.child = Some(cmd.spawn().expect("start warren"));
        n.stopped = false;
    }

    /// Restarts a node that was killed, on its data dir.
    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
    }

    /// The HTTP address (/health, /ready) once the node listens there: it
    /// does first thing, before it joins the cluster.
    pub async fn http_addr(&self, id: u64) -> SocketAddr {
        let path = self.node(id).data_dir.join("http.addr");
        wait_for_async(&format!("node {id} to listen for HTTP"), || async {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .await
    }

    /// The AMQP address once the node serves (it has joined the group).
    pub async fn amqp_addr(&self, id: u64) -> SocketAddr {
        let path = self.node(id).data_dir.join("amqp.addr");
        wait_for_async(&format!("node {id} serves AMQP"), || {
            let path = path.clone();
            async move { read_addr(&path) }
        })
        .await
    }

    /// `amqp://` URI of node `id` (waits until it serves).
    pub async fn amqp_uri(&self, id: u64) -> String {
        format!("amqp://guest:guest@{}/%2f", self.amqp_addr(id).await)
    }

    /// A lapin connection to node `id` (waits until it serves).
    pub async fn connect(&self, id: u64) -> lapin::Connection {
        client::connect(&self.amqp_uri(id).await).await
    }

    /// A lapin connection to each node of `ids`, in that order.
    pub async fn connect_each<const N: usize>(&self, ids: [u64; N]) -> [lapin::Connection; N] {
        let mut conns = Vec::with_capacity(N);
        for id in ids {
            conns.push(self.connect(id).await);
        }
        conns
            .try_into()
            .unwrap_or_else(|_| unreachable!("one connection per id"))
    }

    /// Three nodes started with `opts` and a leader elected; `queue`
    /// declared with `q_opts` on node 1 (its home) and applied on node 2;
    /// connections to nodes 1 and 2.
    pub async fn three_with_queue(
        bin: impl Into<PathBuf>,
        opts: Options,
        queue: &str,
        q_opts: lapin::options::QueueDeclareOptions,
    ) -> (Self, lapin::Connection, lapin::Connection) {
        let c = Self::start_all(bin, &[1, 2, 3], opts);
        c.wait_leader(&[1, 2, 3]).await;
        let [n1, n2] = c.connect_each([1, 2]).await;
        client::declare_with(&client::channel(&n1).await, queue, q_opts)
            .await
            .expect("declare on node 1");
        let applied = c.applied(1).await.expect("node 1 applied index");
        c.wait_applied(&[2], applied).await;
        (c, n1, n2)
    }

    /// What node `id` reports of the cluster, if it answers.
    pub async fn status(&self, id: u64) -> Option<ClusterStatus> {
        warren_cluster::admin_client::cluster_status(&self.admin, &self.node(id).cluster_addr())
            .await
            .ok()
    }

    /// Every quorum queue replica of the cluster, as the members `id`
    /// knows report them (empty if `id` does not answer).
    pub async fn queue_status(&self, id: u64) -> Vec<warren_cluster::admin_client::ReplicaStatus> {
        warren_cluster::admin_client::queue_status(&self.admin, &self.node(id).cluster_addr())
            .await
            .unwrap_or_default()
    }

    /// `warren queues add-member|delete-member|transfer-leader` through
    /// node `via`, for a queue of `/`: its replica set after the change.
    pub async fn queue_members(
        &self,
        via: u64,
        queue: &str,
        node: u64,
        change: warren_cluster::pb::MemberChange,
    ) -> Result<Vec<u64>, warren_cluster::ClusterError> {
        let addr = self.node(via).cluster_addr();
        warren_cluster::admin_client::queue_members(&self.admin, &addr, "/", queue, node, change)
            .await
    }

    /// `warren cluster remove-node` through node `via`.
    pub async fn remove_node(&self, via: u64, id: u64) -> Result<(), warren_cluster::ClusterError> {
        let addr = self.node(via).cluster_addr();
        warren_cluster::admin_client::remove_node(&self.admin, &addr, id)
            .await
            .map(|_| ())
    }

    /// The nodes holding a replica of `queue`, as node `via` finds them.
    pub async fn replica_nodes(&self, via: u64, queue: &str) -> Vec<u64> {
        self.queue_status(via)
            .await
            .into_iter()
            .filter(|r| r.queue == queue)
            .map(|r| r.node)
            .collect()
    }

    /// Waits until every node of `ids` names the same leader, one of `ids`.
    pub async fn wait_leader(&self, ids: &[u64]) -> u64 {
        wait_for_async("one leader known to all", || async {
            let mut leader = None;
            for id in ids {
                let s = self.status(*id).await?;
                let me = s.members.iter().find(|m| m.id == *id)?;
                let l = me.leader?;
                if leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
            }
            leader.filter(|l| ids.contains(l))
        })
        .await
    }

    /// Waits until every node of `ids` has applied at least `index`.
    pub async fn wait_applied(&self, ids: &[u64], index: u64) {
        for id in ids {
            wait_for_async(&format!("node {id} applied {index}"), || async {
                let s = self.status(*id).await?;
                let me = s.members.iter().find(|m| m.id == *id)?;
                (me.last_applied? >= index).then_some(())
            })
            .await;
        }
    }

    /// The last applied index node `id` reports.
    pub async fn applied(&self, id: u64) -> Option<u64> {
        let s = self.status(id).await?;
        s.members.iter().find(|m| m.id == id)?.last_applied
    }

    /// A node's whole log.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.node(id).log_path()).unwrap_or_default()
    }

    /// Tail of a node's log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(self.node(id).log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The address block of this cluster (for logs).
    pub fn block(&self) -> u8 {
        self.block
    }

    /// The running binary's path.
    pub fn bin(&self) -> &Path {
        &self.bin
    }
}

fn read_addr(path: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for id in self.cut.clone() {
            self.heal(id);
        }
        let ids = self.ids();
        for id in ids {
            self.kill9(id);
            if panicking {
                eprintln!(
                    "--- node {id} log (last 40 lines) ---\n{}",
                    self.log_tail(id, 40)
                );
            }
        }
    }
}
