//! Configuration: typed, defaulted, layered and validated once at start.
//!
//! Each setting comes from, in order of precedence: a command-line flag, its
//! `WARREN_*` environment variable (both through clap), the TOML file given by
//! `--config`, the default. A node with no configuration at all is a working
//! single node: AMQP on 0.0.0.0:5672, data in `./data`, user guest/guest.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use warren_cluster::{ClusterSecret, Tls};

#[path = "config_values.rs"]
mod values;

#[path = "config_identity.rs"]
pub mod identity;

#[path = "config_security.rs"]
mod security;

pub use security::{ClusterClientArgs, SECRET_ENV, SecurityArgs};
use security::{NO_SECRET, resolve_security};

pub use values::{QueueType, Watermark};
use values::{number_or_text, parse_size};

impl ServerArgs {
    /// Takes the secrets only the environment carries: the cluster secret
    /// and the default user's password.
    pub fn with_env(mut self) -> Self {
        self.security = self.security.with_env();
        if let Ok(p) = std::env::var(PASS_ENV) {
            self.default_pass = Some(p);
        }
        self
    }
}

/// Why a configuration is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    #[error("{}: {cause}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        cause: String,
    },
    /// A setting's value does not parse.
    #[error("bad {setting} '{value}': {why}")]
    BadValue {
        /// The setting (as its flag is named).
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// Settings out of range, or that do not fit together.
    #[error("{0}")]
    Invalid(String),
}

fn bad(setting: &'static str, value: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        setting,
        value: value.into(),
        why: why.into(),
    }
}

/// AMQP heartbeat the server proposes, in seconds (RabbitMQ's default).
pub const DEFAULT_HEARTBEAT: u16 = 60;
/// Largest frame, overhead included (RabbitMQ's default).
pub const DEFAULT_FRAME_MAX: u32 = 131_072;
/// Most channels per connection (RabbitMQ's default).
pub const DEFAULT_CHANNEL_MAX: u16 = 2047;
/// Largest message body (RabbitMQ's classic `max_message_size`, 128 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 128 << 20;
/// Fraction of RAM messages may hold before publishers are blocked
/// (RabbitMQ's classic `vm_memory_high_watermark`).
pub const DEFAULT_WATERMARK: f64 = 0.4;

/// `warren server`'s WAL written at start: one memtable's worth, the most
/// a WAL holds before RocksDB switches to the next (crate warren-store,
/// `wal`).
pub const DEFAULT_WAL_PREALLOCATE: u64 = 64 << 20;

/// `warren server`'s HTTP listener when none is configured.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:15672";

/// Environment variable holding the default user's password.
pub const PASS_ENV: &str = "WARREN_DEFAULT_PASS";

/// The `warren server` flags (each also an environment variable).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServerArgs {
    /// TOML configuration file.
    #[arg(long, env = "WARREN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address for AMQP clients [default: 0.0.0.0:5672].
    #[arg(long, env = "WARREN_AMQP_LISTEN")]
    pub amqp_listen: Option<String>,
    /// Directory for the node's data [default: ./data].
    #[arg(long, env = "WARREN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log level or tracing filter (RUST_LOG wins when set) [default: info].
    #[arg(long, env = "WARREN_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Threads that run connections and queues [default: one fewer than the
    /// machine's CPUs, at least 1].
    #[arg(long, env = "WARREN_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Memory messages may hold before publishers are blocked: a fraction of
    /// RAM (0.4) or a size (512MiB, 2GB, 1000000) [default: 0.4].
    #[arg(long, env = "WARREN_MEMORY_HIGH_WATERMARK")]
    pub memory_high_watermark: Option<String>,
    /// WAL written at start so that the first syncs overwrite a file instead
    /// of growing one (faster confirms); 0 turns it off [default: 64MiB].
    #[arg(long, env = "WARREN_WAL_PREALLOCATE")]
    pub wal_preallocate: Option<String>,
    /// Heartbeat interval proposed to clients, seconds; 0 disables [default: 60].
    #[arg(long, env = "WARREN_HEARTBEAT")]
    pub heartbeat: Option<u16>,
    /// Largest frame clients may negotiate [default: 131072].
    #[arg(long, env = "WARREN_FRAME_MAX")]
    pub frame_max: Option<u32>,
    /// Most channels per connection [default: 2047].
    #[arg(long, env = "WARREN_CHANNEL_MAX")]
    pub channel_max: Option<u16>,
    /// Address for HTTP (/health, /ready), or `off` [default: 0.0.0.0:15672].
    #[arg(long, env = "WARREN_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// This node's id in the cluster, non-zero [default: 1].
    #[arg(long, env = "WARREN_NODE_ID")]
    pub node_id: Option<u64>,
    /// Take the node id from the host name's ordinal, as a StatefulSet names
    /// its pods: `warren-0` is node 1, `warren-1` node 2, ...
    #[arg(long, env = "WARREN_NODE_ID_FROM_HOSTNAME", num_args = 0..=1,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub node_id_from_hostname: Option<bool>,
    /// The peers from a pattern instead of --peers: `{i}` is replaced by
    /// 0..cluster-size, node `i+1`'s address, e.g.
    /// `warren-{i}.warren-headless.NAMESPACE.svc.cluster.local:25672`.
    #[arg(long, env = "WARREN_PEERS_FROM_DNS")]
    pub peers_from_dns: Option<String>,
    /// How many nodes --peers-from-dns names.
    #[arg(long, env = "WARREN_CLUSTER_SIZE")]
    pub cluster_size: Option<u64>,
    /// An AMQP user created instead of `guest` (added to the config file's
    /// users, if it lists any); its password is WARREN_DEFAULT_PASS. As the
    /// RabbitMQ image's RABBITMQ_DEFAULT_USER / _PASS.
    #[arg(long, env = "WARREN_DEFAULT_USER")]
    pub default_user: Option<String>,
    /// The default user's password, from WARREN_DEFAULT_PASS only (never a
    /// flag: command lines are visible to every user of the machine).
    #[arg(skip)]
    pub default_pass: Option<String>,
    /// Address of the cluster listener (Raft and forwarding, gRPC); none: a
    /// one-node cluster that no other node can join.
    #[arg(long, env = "WARREN_CLUSTER_LISTEN")]
    pub cluster_listen: Option<String>,
    /// The cluster's nodes, `1=host:port,2=host:port,...` (this one may be
    /// listed; its entry is the address peers reach it at).
    #[arg(long, env = "WARREN_PEERS")]
    pub peers: Option<String>,
    /// Raft heartbeat interval, ms [default: 100].
    #[arg(long, env = "WARREN_RAFT_HEARTBEAT_MS")]
    pub raft_heartbeat_ms: Option<u64>,
    /// Raft election timeout, ms: a follower that hears nothing for a random
    /// time between this and twice this starts an election [default: 400].
    #[arg(long, env = "WARREN_RAFT_ELECTION_TIMEOUT_MS")]
    pub raft_election_timeout_ms: Option<u64>,
    /// Build a metadata snapshot every this many log entries [default: 5000].
    #[arg(long, env = "WARREN_RAFT_SNAPSHOT_EVERY")]
    pub raft_snapshot_every: Option<u64>,
    /// How long a metadata operation may wait for a Raft majority before the
    /// channel gets an error, ms [default: 5000].
    #[arg(long, env = "WARREN_METADATA_TIMEOUT_MS")]
    pub metadata_timeout_ms: Option<u64>,
    /// A node that has not answered the leader for this long is declared
    /// down: its exclusive and transient queues are deleted, ms [default: 10000].
    #[arg(long, env = "WARREN_NODE_DOWN_AFTER_MS")]
    pub node_down_after_ms: Option<u64>,
    /// Type of the durable, non-exclusive, non-auto-delete queues declared
    /// without `x-queue-type`: classic or quorum [default: classic].
    #[arg(long, env = "WARREN_DEFAULT_QUEUE_TYPE")]
    pub default_queue_type: Option<String>,
    /// The cluster secret and mutual TLS of the cluster port.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// A user allowed to log in.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Password (plain text in the file; this is a development default).
    pub password: String,
}

/// The TOML file's shape: the same settings as the flags, plus users.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    amqp_listen: Option<String>,
    http_listen: Option<String>,
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    worker_threads: Option<usize>,
    memory_high_watermark: Option<toml::Value>,
    wal_preallocate: Option<toml::Value>,
    heartbeat: Option<u16>,
    frame_max: Option<u32>,
    channel_max: Option<u16>,
    max_message_size: Option<u64>,
    node_id: Option<u64>,
    node_id_from_hostname: Option<bool>,
    cluster_listen: Option<String>,
    peers: Option<String>,
    peers_from_dns: Option<String>,
    cluster_size: Option<u64>,
    raft_heartbeat_ms: Option<u64>,
    raft_election_timeout_ms: Option<u64>,
    raft_snapshot_every: Option<u64>,
    metadata_timeout_ms: Option<u64>,
    node_down_after_ms: Option<u64>,
    default_queue_type: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    cluster_secret: Option<String>,
    cluster_tls_cert: Option<PathBuf>,
    cluster_tls_key: Option<PathBuf>,
    cluster_tls_ca: Option<PathBuf>,
    #[serde(default)]
    users: Vec<User>,
}

/// The resolved configuration of a node.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where AMQP clients connect.
    pub amqp_listen: SocketAddr,
    /// Where /health and /ready are served; none when `off`. The library's
    /// default is none (embedded nodes and tests start many per process);
    /// `warren server`'s is 0.0.0.0:15672, as RabbitMQ's management port.
    pub http_listen: Option<SocketAddr>,
    /// Where data lives.
    pub data_dir: PathBuf,
    /// Tracing filter.
    pub log_level: String,
    /// Threads of the runtime that serves connections and queues.
    pub worker_threads: usize,
    /// Memory limit for messages.
    pub memory_high_watermark: Watermark,
    /// Bytes of WAL written at start (`Store::prepare_wal`). The library's
    /// default is none (tests start many nodes); `warren server`'s is
    /// [`DEFAULT_WAL_PREALLOCATE`].
    pub wal_preallocate: u64,
    /// Proposed heartbeat, seconds.
    pub heartbeat: u16,
    /// Largest frame.
    pub frame_max: u32,
    /// Most channels per connection.
    pub channel_max: u16,
    /// Largest message body.
    pub max_message_size: u64,
    /// Users; `guest` may log in only from loopback, as in RabbitMQ.
    pub users: Vec<User>,
    /// This node's id.
    pub node_id: u64,
    /// The cluster listener, if any.
    pub cluster_listen: Option<SocketAddr>,
    /// The static peer list (this node may be in it).
    pub peers: BTreeMap<u64, String>,
    /// Raft heartbeat, ms.
    pub raft_heartbeat_ms: u64,
    /// Raft election timeout (lower bound), ms.
    pub raft_election_timeout_ms: u64,
    /// Entries between metadata snapshots.
    pub raft_snapshot_every: u64,
    /// Bound on a metadata operation, ms.
    pub metadata_timeout_ms: u64,
    /// Silence after which the leader declares a node down, ms.
    pub node_down_after_ms: u64,
    /// The type of queues declared without `x-queue-type` that may be quorum.
    pub default_queue_type: QueueType,
    /// The secret every call on the cluster port proves (required with
    /// cluster options).
    pub cluster_secret: Option<ClusterSecret>,
    /// Mutual TLS on the cluster port.
    pub cluster_tls: Option<Tls>,
}

/// One worker thread fewer than the machine's CPUs, at least one: the
/// store's writer thread and RocksDB's background threads take the CPU
/// left, and every worker more than the load needs costs wake-ups (a task
/// woken on another worker is a futex call and a context switch). On two
/// cores, one worker carried scenario 2 with a plain client at 13.6k msg/s
/// and 50 µs of broker CPU per message, two workers at 12.1k and 64 µs
/// (docs/benchmarks.md, "One worker thread on two cores").
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            amqp_listen: SocketAddr::from(([0, 0, 0, 0], 5672)),
            http_listen: None,
            data_dir: PathBuf::from("data"),
            // openraft narrates every election at info.
            log_level: "info,openraft=warn".into(),
            worker_threads: default_worker_threads(),
            memory_high_watermark: Watermark::Fraction(DEFAULT_WATERMARK),
            wal_preallocate: 0,
            heartbeat: DEFAULT_HEARTBEAT,
            frame_max: DEFAULT_FRAME_MAX,
            channel_max: DEFAULT_CHANNEL_MAX,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            users: vec![User {
                name: "guest".into(),
                password: "guest".into(),
            }],
            node_id: 1,
            cluster_listen: None,
            peers: BTreeMap::new(),
            raft_heartbeat_ms: 100,
            raft_election_timeout_ms: 400,
            raft_snapshot_every: 5000,
            metadata_timeout_ms: 5000,
            node_down_after_ms: 10_000,
            default_queue_type: QueueType::Classic,
            cluster_secret: None,
            cluster_tls: None,
        }
    }
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: &str| bad("peer", part, why);
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| bad("expected id=host:port"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad("the id is not a number"))?;
        let addr = addr.trim();
        if id == 0 || !addr.contains(':') {
            return Err(bad("the id must be non-zero, the address host:port"));
        }
        if peers.insert(id, addr.to_owned()).is_some() {
            return Err(bad("listed twice"));
        }
    }
    Ok(peers)
}

impl Config {
    /// Resolves flags/env over the file over defaults, then validates.
    pub fn resolve(args: &ServerArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let mut c = Config::default();
        (c.cluster_secret, c.cluster_tls) = resolve_security(&args.security, &file)?;
        if let Some(a) = args.amqp_listen.clone().or(file.amqp_listen) {
            c.amqp_listen = a
                .parse()
                .map_err(|e: std::net::AddrParseError| bad("amqp-listen", &a, e.to_string()))?;
        }
        let http = args
            .http_listen
            .clone()
            .or(file.http_listen)
            .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_owned());
        c.http_listen = match http.trim() {
            "off" | "none" | "" => None,
            a => Some(a.parse().map_err(|e: std::net::AddrParseError| {
                bad("http-listen", a, format!("{e} (or `off`)"))
            })?),
        };
        set(&mut c.data_dir, args.data_dir.clone().or(file.data_dir));
        set(&mut c.log_level, args.log_level.clone().or(file.log_level));
        if let Some(n) = args.worker_threads.or(file.worker_threads) {
            if n == 0 {
                return Err(bad("worker-threads", "0", "at least 1"));
            }
            c.worker_threads = n;
        }
        let wm = number_or_text(
            "memory-high-watermark",
            &args.memory_high_watermark,
            file.memory_high_watermark,
        )?;
        if let Some(w) = wm {
            c.memory_high_watermark = Watermark::parse(&w)?;
        }
        c.wal_preallocate = match number_or_text(
            "wal-preallocate",
            &args.wal_preallocate,
            file.wal_preallocate,
        )? {
            Some(size) => parse_size("wal-preallocate", &size)?,
            None => DEFAULT_WAL_PREALLOCATE,
        };
        set(&mut c.heartbeat, args.heartbeat.or(file.heartbeat));
        set(&mut c.frame_max, args.frame_max.or(file.frame_max));
        set(&mut c.channel_max, args.channel_max.or(file.channel_max));
        set(&mut c.max_message_size, file.max_message_size);
        if !file.users.is_empty() {
            c.users = file.users;
        }
        if let Some(name) = &args.default_user {
            let Some(password) = args.default_pass.clone() else {
                return Err(ConfigError::Invalid(format!(
                    "--default-user {name} needs its password in {PASS_ENV}"
                )));
            };
            let user = User {
                name: name.clone(),
                password,
            };
            // Instead of guest, as the RabbitMQ image does; beside the
            // file's users when it lists some.
            if c.users == Config::default().users {
                c.users = vec![user];
            } else {
                c.users.retain(|u| u.name != user.name);
                c.users.push(user);
            }
        }
        set(&mut c.node_id, args.node_id.or(file.node_id));
        if args
            .node_id_from_hostname
            .or(file.node_id_from_hostname)
            .unwrap_or(false)
        {
            let host = identity::hostname()
                .map_err(|e| ConfigError::Invalid(format!("reading the host name: {e}")))?;
            c.node_id = identity::node_id_from_hostname(&host)?;
        }
        if let Some(a) = args.cluster_listen.clone().or(file.cluster_listen) {
            c.cluster_listen =
                Some(a.parse().map_err(|e: std::net::AddrParseError| {
                    bad("cluster-listen", &a, e.to_string())
                })?);
        }
        let pattern = args.peers_from_dns.clone().or(file.peers_from_dns);
        let size = args.cluster_size.or(file.cluster_size);
        match (args.peers.clone().or(file.peers), pattern) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give the peers either as a list (--peers) or as a pattern \
                     (--peers-from-dns), not both"
                        .into(),
                ));
            }
            (Some(p), None) => c.peers = parse_peers(&p)?,
            (None, Some(pattern)) => c.peers = identity::peers_from_pattern(&pattern, size)?,
            (None, None) => {}
        }
        set(
            &mut c.raft_heartbeat_ms,
            args.raft_heartbeat_ms.or(file.raft_heartbeat_ms),
        );
        set(
            &mut c.raft_election_timeout_ms,
            args.raft_election_timeout_ms
                .or(file.raft_election_timeout_ms),
        );
        set(
            &mut c.raft_snapshot_every,
            args.raft_snapshot_every.or(file.raft_snapshot_every),
        );
        set(
            &mut c.metadata_timeout_ms,
            args.metadata_timeout_ms.or(file.metadata_timeout_ms),
        );
        set(
            &mut c.node_down_after_ms,
            args.node_down_after_ms.or(file.node_down_after_ms),
        );
        if let Some(t) = args.default_queue_type.clone().or(file.default_queue_type) {
            c.default_queue_type = QueueType::parse(&t)?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |why: &str| Err(ConfigError::Invalid(why.into()));
        if self.frame_max < warren_amqp::FRAME_MIN_SIZE {
            return Err(ConfigError::Invalid(format!(
                "frame-max {} is below the protocol minimum {}",
                self.frame_max,
                warren_amqp::FRAME_MIN_SIZE
            )));
        }
        if self.channel_max == 0 {
            return invalid("channel-max must be at least 1");
        }
        if self.users.is_empty() {
            return invalid("at least one user is needed");
        }
        if self.node_id == 0 || self.node_id > 0xffff {
            return Err(ConfigError::Invalid(format!(
                "node-id {} must be in 1..=65535",
                self.node_id
            )));
        }
        let others = self.peers.keys().any(|id| *id != self.node_id);
        if others && self.cluster_listen.is_none() {
            return invalid("--peers names other nodes: --cluster-listen is needed");
        }
        if (self.cluster_listen.is_some() || !self.peers.is_empty())
            && self.cluster_secret.is_none()
        {
            return invalid(NO_SECRET);
        }
        if self.raft_election_timeout_ms <= self.raft_heartbeat_ms {
            return invalid("the raft election timeout must exceed the heartbeat");
        }
        if self.raft_snapshot_every == 0 {
            return invalid("raft-snapshot-every must be at least 1");
        }
        Ok(())
    }
}

impl Config {
    /// The address peers reach this node at: its entry in the peer list, or
    /// its cluster listener; empty without one.
    pub fn advertised_addr(&self) -> String {
        if let Some(a) = self.peers.get(&self.node_id) {
            return a.clone();
        }
        self.cluster_listen
            .map(|a| a.to_string())
            .unwrap_or_default()
    }
}

/// `slot` takes `value` when one was given (by a flag, the environment or
/// the file).
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let file = |cause: String| ConfigError::File {
        path: path.to_owned(),
        cause,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
    toml::from_str(&text).map_err(|e| file(e.to_string()))
}

#[cfg(test)]
#[path = "config_test.rs"]
mod tests;
