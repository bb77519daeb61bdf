//! The node: its metadata replica, its queues, storage and memory, and the
//! metadata operations channels ask for.
//!
//! - [`commands`]: what channels ask of metadata (declare, delete, bind...):
//!   each change is a [`warren_core::meta::Command`] proposed to Raft group 0
//!   and answered once this node has applied it.
//! - [`join`]: joining the group at start (and seeding it from an older
//!   single-node store).
//! - [`follow`]: keeping the queue registry in step with what is applied.
//! - [`health`]: the group leader declaring silent nodes down.
//! - [`access`]: logins, vhost access and permission checks against the
//!   replicated users.
//! - `dead_letter`: re-publishing what queues dead-letter.
//!
//! Lock order: the metadata replica's lock, then the queue registry's, then
//! anything else; none is held across an `.await` (see docs/architecture.md).
//! A node without cluster options is a one-member group: the same code path,
//! its log on the same RocksDB.

mod access;
pub use access::gone_reason;
mod commands;
mod dead_letter;
mod follow;
mod health;
mod join;

pub use follow::follow_applied;
pub use health::watch_nodes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLockReadGuard, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use warren_cluster::{
    LiveChannels, MetaNode, Network, NodeOptions, OpenChannel, QueueGroups, QueueTiming, Security,
    Timing,
};
use warren_core::meta::MetaState;
use warren_core::queue::{ConnectionId, Home, QueueDef};
use warren_core::vhost::VHost;
use warren_core::{AmqpError, Name, QueueId};
use warren_queues::classic::{AutoDeleted, ClassicEnv};
use warren_queues::link::{Links, LocalQueues, Lookup, LookupFuture};
use warren_queues::quorum::QuorumEnv;
use warren_queues::registry::RegistryView;
use warren_queues::reply_to::ReplyConsumers;
use warren_queues::{Ids, Memory, QueueHandle, Registry};
use warren_store::{Recovered, Store, Writer};

use crate::config::Config;
use crate::error::ServerError;

/// The vhost every node has, which cannot be deleted.
pub const DEFAULT_VHOST: &str = warren_core::meta::DEFAULT_VHOST;

/// A vhost that does not exist (any more): a connection-level 530, as
/// RabbitMQ closes the connections of a deleted vhost.
pub fn no_vhost(name: &str) -> AmqpError {
    AmqpError::new(
        warren_core::ReplyCode::NotAllowed,
        format!("vhost {name} not found"),
    )
}
/// Batches of dead letters queued for the node's publisher before a queue
/// that dead-letters waits.
const DEAD_LETTER_BATCHES: usize = 64;

/// What routing reads: the metadata replica and the node's queue handles,
/// locked in that order.
#[derive(Debug)]
pub struct View<'a> {
    meta: RwLockReadGuard<'a, MetaState>,
    queues: RegistryView<'a>,
}

impl View<'_> {
    /// A vhost's metadata; 530 if it is gone (deleted while a connection
    /// had it open).
    pub fn vhost(&self, name: &str) -> Result<&VHost, AmqpError> {
        self.meta.vhost(name).ok_or_else(|| no_vhost(name))
    }

    /// The vhost holding queue `id`, and its definition.
    pub fn queue_def(&self, id: QueueId) -> Option<(&VHost, &QueueDef)> {
        self.meta.queue_by_id(id)
    }

    /// The handle of queue `id`, whatever its type.
    pub fn queue(&self, id: QueueId) -> Option<&QueueHandle> {
        self.queues.get(id)
    }
}

/// Shared by every connection of the node.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    node: Arc<MetaNode>,
    node_options: NodeOptions,
    epoch: u64,
    registry: Arc<Registry>,
    writer: Writer,
    store: Store,
    memory: Arc<Memory>,
    ids: Arc<Ids>,
    /// The channels open on this node (quorum queue leaders ask).
    channels: Arc<LiveChannels>,
    /// Direct reply-to consumers of this node's channels.
    replies: Arc<ReplyConsumers>,
    /// Metadata the store held before Raft, until it is seeded (see
    /// [`join`]).
    legacy: Mutex<Option<(Recovered, QueueId)>>,
    /// Quorum queue groups left behind by deleted queues were looked for.
    orphans_checked: AtomicBool,
    /// The vhosts and users as last applied, as a fingerprint: connections
    /// watch it to close when theirs is deleted (`access::gone_reason`).
    access_seen: tokio::sync::watch::Sender<u64>,
}

impl Broker {
    /// Opens the store and starts group 0's Raft instance. The node is not
    /// serving yet: [`Broker::join`] waits for the group.
    pub async fn open(config: Config) -> Result<Arc<Self>, ServerError> {
        let store = Store::open(&config.data_dir.join("rocksdb"))?;
        if config.wal_preallocate > 0 && !store.prepare_wal(config.wal_preallocate)? {
            tracing::warn!("the first WAL could not be a reused file: its syncs grow it");
        }
        let epoch = store.bump_epoch()?;
        let legacy = store.recover()?;
        let legacy_next = store.max_queue_id(&legacy)? + 1;
        let writer = store.start_writer();
        let high = config
            .memory_high_watermark
            .bytes(warren_queues::memory::total_memory());
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
        let security = Security::new(config.cluster_secret.clone(), config.cluster_tls.clone());
        let network = Network::new(local_ip, security);
        let node = MetaNode::start(&store, writer.clone(), &opts, network.clone()).await?;
        let groups = QueueGroups::new(
            config.node_id,
            &store,
            writer.clone(),
            network,
            QueueTiming::default(),
        )?;
        tracing::info!(
            node = config.node_id,
            epoch,
            watermark_bytes = high,
            "node starting"
        );
        let (auto_deleted, auto_deleted_rx) = mpsc::unbounded_channel();
        let (dead_letters, dead_letters_rx) = mpsc::channel(DEAD_LETTER_BATCHES);
        let env = ClassicEnv {
            writer: writer.clone(),
            store: store.clone(),
            memory: memory.clone(),
            auto_deleted,
            tasks: TaskTracker::new(),
            dead_letters: Some(dead_letters),
        };
        let channels = Arc::new(LiveChannels::default());
        let quorum = QuorumEnv {
            me: config.node_id,
            channels: channels.clone(),
            groups,
            node: Arc::downgrade(&node),
            links: Arc::new(Links::new(Arc::downgrade(&node), memory.clone())),
            tasks: env.tasks.clone(),
            stopping: tokio_util::sync::CancellationToken::new(),
            dead_letters: env.dead_letters.clone(),
            auto_deleted: Some(env.auto_deleted.clone()),
        };
        let registry = Arc::new(Registry::new(config.node_id, env, quorum));
        let has_legacy = !legacy.exchanges.is_empty()
            || !legacy.queues.is_empty()
            || !legacy.bindings.is_empty();
        let broker = Arc::new(Broker {
            ids: Arc::new(Ids::new(config.node_id, epoch, {
                let store = store.clone();
                Box::new(move || {
                    store
                        .bump_epoch()
                        .inspect_err(|e| tracing::error!("storing a new epoch: {e}"))
                        .ok()
                })
            })),
            channels,
            replies: Arc::new(ReplyConsumers::new(config.node_id)),
            config,
            node,
            node_options: opts,
            epoch,
            registry,
            writer,
            store,
            memory,
            legacy: Mutex::new(has_legacy.then_some((legacy, legacy_next))),
            orphans_checked: AtomicBool::new(false),
            access_seen: tokio::sync::watch::Sender::new(0),
        });
        tokio::spawn(forget_auto_deleted(
            Arc::downgrade(&broker),
            auto_deleted_rx,
        ));
        tokio::spawn(dead_letter::run(
            Arc::downgrade(&broker),
            dead_letters_rx,
            broker.writer.clone(),
        ));
        Ok(broker)
    }

    /// Read access to metadata and queue handles (never hold across `.await`).
    pub fn read(&self) -> View<'_> {
        let meta = self
            .node
            .meta()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        View {
            meta,
            queues: self.registry.read(),
        }
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node's member of Raft group 0.
    pub fn node(&self) -> &Arc<MetaNode> {
        &self.node
    }

    /// What the cluster layer was started with (bootstrap reads the peers).
    pub fn node_options(&self) -> &NodeOptions {
        &self.node_options
    }

    /// The node's queue handles.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Memory held by messages, and the publisher block flag.
    pub fn memory(&self) -> &Arc<Memory> {
        &self.memory
    }

    /// The group-commit writer (its statistics show how fsyncs are shared).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Connection, channel and consumer ids.
    pub fn ids(&self) -> &Arc<Ids> {
        &self.ids
    }

    /// A fresh channel id, recorded as open until the returned guard drops.
    pub fn open_channel(&self) -> OpenChannel {
        self.channels.open(self.ids.channel())
    }

    /// The channels open on this node.
    pub fn channels(&self) -> &Arc<LiveChannels> {
        &self.channels
    }

    /// Direct reply-to consumers of this node's channels.
    pub fn replies(&self) -> &Arc<ReplyConsumers> {
        &self.replies
    }

    /// Where a queue declared on this node lives.
    pub fn home(&self) -> Home {
        Home {
            node: self.config.node_id,
            epoch: self.epoch,
        }
    }

    /// Brings the queue registry in line with the metadata applied so far.
    pub async fn reconcile(&self) {
        let wanted = || -> HashMap<QueueId, (Name, QueueDef)> {
            let meta = self
                .node
                .meta()
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            meta.all_queues()
                .map(|(v, q)| (q.id, (Name::from(v.name()), q.clone())))
                .collect()
        };
        self.registry.reconcile(wanted).await;
        // Once per start: later deletions reach running replicas through
        // the registry, which removes their groups.
        if !self.orphans_checked.swap(true, Ordering::AcqRel) {
            self.remove_orphan_groups().await;
        }
    }

    /// Removes the quorum queue groups this node holds keys of whose queue
    /// the metadata no longer has (deleted while this node was down, or
    /// its replica set moved). Only groups below the metadata's next queue
    /// id: a queue id at or above it may be declared by a metadata entry
    /// this node has not applied yet (the applied state is a prefix of the
    /// log), and its replica must not be taken for an orphan.
    async fn remove_orphan_groups(&self) {
        let groups = self.registry.groups();
        let me = self.config.node_id;
        let keep = {
            let meta = self
                .node
                .meta()
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let next = meta.next_queue_id();
            let live: std::collections::HashSet<QueueId> = meta
                .all_queues()
                .map(|(_, q)| q)
                .filter(|q| q.is_quorum() && q.replicas.contains(&me))
                .map(|q| q.id)
                .collect();
            move |g: QueueId| g >= next || live.contains(&g)
        };
        groups.remove_orphans(keep).await;
    }

    /// Stops every queue and the Raft instance, then writes everything
    /// pending and closes the store. Called last in a graceful shutdown.
    pub async fn stop(&self) {
        self.registry.stop().await;
        self.node.shutdown().await;
        if let Err(e) = self.writer.close().await {
            tracing::error!(cause = %e, "final storage flush failed");
        }
    }

    /// Whether a connection that is closing has exclusive queues (in any
    /// vhost: `DropConnection` deletes them wherever they are).
    pub fn has_exclusive_queues(&self, conn: ConnectionId) -> bool {
        let st = self.read();
        st.meta
            .all_queues()
            .any(|(_, q)| q.exclusive_owner == Some(conn))
    }
}

/// The home side of queue links sees the node through this.
impl LocalQueues for Broker {
    fn local(&self, id: QueueId) -> Option<QueueHandle> {
        self.registry.local(id)
    }

    fn catch_up(&self, id: QueueId) -> LookupFuture<'_> {
        Box::pin(async move {
            if self.registry.is_stopping() {
                return Lookup::Unavailable;
            }
            self.reconcile().await;
            if let Some(h) = self.registry.local(id) {
                return Lookup::Here(h);
            }
            let known = self.read().queue_def(id).is_some();
            if known {
                Lookup::Unavailable
            } else {
                Lookup::Gone
            }
        })
    }

    fn is_ready(&self) -> bool {
        self.registry.is_ready()
    }
}

/// Removes the metadata of auto-delete queues whose actors stopped. Ends
/// when the broker is gone.
async fn forget_auto_deleted(broker: Weak<Broker>, mut rx: mpsc::UnboundedReceiver<AutoDeleted>) {
    while let Some(q) = rx.recv().await {
        let Some(b) = broker.upgrade() else { return };
        tokio::spawn(async move { b.forget_queue(&q.name, q.id).await });
    }
}
