//! The node's shared state: metadata, the queue registry, storage, memory.
//!
//! - [`commands`]: what channels ask of metadata (declare, delete, bind...):
//!   each change is a [`warren_core::meta::Command`] proposed to Raft group 0
//!   and answered once this node has applied it.
//! - [`registry`]: the queue actors of the queues this node is home to,
//!   kept in step with the applied metadata; joining the group at start.
//!
//! Metadata is the group 0 state machine's replica on this node; routing
//! takes its read lock for the length of a hash lookup or trie walk, never
//! across an `.await`. The registry has its own lock, always taken after the
//! metadata's. A node without cluster options is a one-member group: the same
//! code path, its log on the same RocksDB.

mod commands;
mod health;
mod registry;

pub use health::watch_nodes;
pub use registry::follow_applied;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use warren_cluster::{MetaNode, Network, NodeOptions, Timing};
use warren_core::meta::MetaState;
use warren_core::queue::{ConnectionId, Home, NodeId, connection_id};
use warren_core::vhost::VHost;
use warren_core::{Name, QueueId};
use warren_store::{Recovered, Store, Writer};

use crate::config::Config;
use crate::memory::{Memory, total_memory};
use crate::queue_actor::{QueueEnv, QueueHandle};

/// The only vhost until vhosts are manageable.
pub const DEFAULT_VHOST: &str = warren_core::meta::DEFAULT_VHOST;

/// What routing reads: the metadata replica and the local queue actors.
#[derive(Debug)]
pub struct View<'a> {
    meta: RwLockReadGuard<'a, MetaState>,
    /// Queue actors on this node, by id.
    pub queues: RwLockReadGuard<'a, HashMap<QueueId, QueueHandle>>,
}

impl View<'_> {
    /// The default vhost's metadata.
    pub fn vhost(&self) -> &VHost {
        self.meta.default_vhost()
    }
}

/// Shared by every connection and queue of the node.
#[derive(Debug)]
pub struct Broker {
    /// The node's configuration.
    pub config: Config,
    /// This node's member of Raft group 0 (metadata).
    pub node: Arc<MetaNode>,
    /// What the cluster layer was started with (bootstrap reads the peers).
    pub node_options: NodeOptions,
    /// This start of the node (see [`Home`]).
    pub epoch: u64,
    queues: RwLock<HashMap<QueueId, QueueHandle>>,
    /// Serialises registry reconciliations (each reads the metadata, then
    /// starts and stops actors; two interleaved could undo each other).
    reconciling: tokio::sync::Mutex<()>,
    /// The group-commit writer.
    pub writer: Writer,
    /// Memory held by messages, and the publisher block flag.
    pub memory: Arc<Memory>,
    next_conn: AtomicU32,
    next_consumer: AtomicU64,
    next_channel: AtomicU64,
    /// What queue actors are started with (their tasks are tracked there).
    env: QueueEnv,
    /// Metadata the store held before Raft, until it is seeded (see
    /// [`registry`]).
    legacy: Mutex<Option<(Recovered, QueueId)>>,
    /// Links to the home nodes of queues used here (see `crate::remote`).
    links: Mutex<HashMap<NodeId, mpsc::Sender<crate::remote::link::Routed>>>,
    /// Joined the group and started the queues: serves AMQP and links.
    ready: AtomicBool,
    me: Weak<Broker>,
}

impl Broker {
    /// Opens the store and starts group 0's Raft instance. The node is not
    /// serving yet: [`Broker::join`] waits for the group.
    pub async fn open(config: Config) -> anyhow::Result<Arc<Self>> {
        let store = Store::open(&config.data_dir.join("rocksdb"))?;
        let epoch = store.bump_epoch()?;
        let legacy = store.recover()?;
        let legacy_next = store.max_queue_id(&legacy)? + 1;
        let writer = store.start_writer();
        let high = config.memory_high_watermark.bytes(total_memory());
        let memory = Arc::new(Memory::new(high));
        let local_ip = config
            .cluster_listen
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let opts = NodeOptions {
            id: config.node_id,
            addr: config.advertised_addr(),
            peers: config.peers.clone(),
            timing: Timing {
                heartbeat_ms: config.raft_heartbeat_ms,
                election_min_ms: config.raft_election_timeout_ms,
                election_max_ms: config.raft_election_timeout_ms * 2,
                snapshot_every: config.raft_snapshot_every,
                propose_timeout: Duration::from_millis(config.metadata_timeout_ms),
            },
        };
        let node = MetaNode::start(&store, writer.clone(), &opts, Network::new(local_ip)).await?;
        tracing::info!(
            node = config.node_id,
            epoch,
            watermark_bytes = high,
            "node starting"
        );
        let tasks = TaskTracker::new();
        let broker = Arc::new_cyclic(|me: &Weak<Broker>| Broker {
            config,
            node,
            node_options: opts,
            epoch,
            queues: RwLock::new(HashMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
            writer: writer.clone(),
            memory: memory.clone(),
            next_conn: AtomicU32::new(1),
            next_consumer: AtomicU64::new(1),
            next_channel: AtomicU64::new(1),
            env: QueueEnv {
                writer,
                store,
                memory,
                broker: me.clone(),
                tasks,
            },
            legacy: Mutex::new(
                (!legacy.exchanges.is_empty()
                    || !legacy.queues.is_empty()
                    || !legacy.bindings.is_empty())
                .then_some((legacy, legacy_next)),
            ),
            links: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
            me: me.clone(),
        });
        Ok(broker)
    }

    /// Read access to metadata and registry (never hold across `.await`).
    pub fn read(&self) -> View<'_> {
        let meta = self
            .node
            .meta()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        View { meta, queues }
    }

    /// Whether the node has joined the group and started its queues.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The actor of a queue homed on this node.
    pub fn local_queue(&self, id: QueueId) -> Option<QueueHandle> {
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        queues.get(&id).filter(|h| !h.remote).cloned()
    }

    /// The link task to `home` (started on first use).
    fn link_to(&self, home: NodeId) -> mpsc::Sender<crate::remote::link::Routed> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links
            .entry(home)
            .or_insert_with(|| crate::remote::link::spawn_link(self.me.clone(), home))
            .clone()
    }

    /// Where a queue declared on this node lives.
    pub fn home(&self) -> Home {
        Home {
            node: self.config.node_id,
            epoch: self.epoch,
        }
    }

    /// A fresh connection id, unique in the cluster and across restarts.
    pub fn next_connection_id(&self) -> ConnectionId {
        let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
        connection_id(self.config.node_id, self.epoch, n)
    }

    /// A fresh id for an opening of a channel, unique in the cluster (the
    /// node id in the top bits): queues homed elsewhere key their unacked
    /// messages by it.
    pub fn next_channel_id(&self) -> u64 {
        connection_id(self.config.node_id, self.epoch, 0)
            | (self.next_channel.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff)
    }

    /// A fresh consumer id, unique in the cluster.
    pub fn next_consumer_id(&self) -> u64 {
        connection_id(self.config.node_id, self.epoch, 0)
            | (self.next_consumer.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff)
    }

    /// Stops every queue actor and the Raft instance, then writes everything
    /// pending and closes the store. Called last in a graceful shutdown.
    pub async fn stop(&self) {
        let handles: Vec<QueueHandle> = self
            .queues
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in handles {
            let _ = h.tx.send(crate::queue_actor::QueueMsg::Stop).await;
        }
        self.env.tasks.close();
        self.env.tasks.wait().await;
        self.node.shutdown().await;
        if let Err(e) = self.writer.close().await {
            tracing::error!(cause = %e, "final storage flush failed");
        }
    }

    /// Exclusive queues of a connection that is closing.
    pub fn exclusive_queues_of(&self, conn: ConnectionId) -> Vec<Name> {
        self.read().vhost().exclusive_queues_of(conn)
    }
}
