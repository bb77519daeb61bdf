//! The queues this node serves, one [`QueueHandle`] per queue of the
//! metadata, started with the queue's type.
//!
//! Every node applies the same metadata log; after each applied change the
//! registry is reconciled with it ([`Registry::reconcile`]): a queue that has
//! no handle gets one (the classic actor when this node is its home, a proxy
//! to its home otherwise), and a queue that is gone has its handle removed
//! (an actor deletes its messages, a proxy just stops). Which type serves a
//! queue is decided in one place, [`Kind::of`].
//!
//! Lock order: the registry's lock is taken after the metadata's (routing
//! holds both for the length of a lookup) and never across an `.await`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use warren_cluster::QueueGroups;
use warren_core::queue::QueueDef;
use warren_core::{Name, NodeId, QueueId};

use crate::api::{Ending, QueueHandle};
use crate::classic::{self, ClassicEnv};
use crate::link;
use crate::quorum::{self, QuorumEnv};
use crate::reply_to;

/// How this node serves a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A classic queue whose home is this node: its actor runs here.
    ClassicHome,
    /// A classic queue homed on another node: a proxy feeds the link to it.
    ClassicRemote,
    /// A quorum queue: its front runs on every node (see [`crate::quorum`]).
    Quorum,
}

impl Kind {
    /// The type that serves `def` on node `me`.
    fn of(def: &QueueDef, me: NodeId) -> Self {
        if def.is_quorum() {
            Kind::Quorum
        } else if def.home.node == me {
            Kind::ClassicHome
        } else {
            Kind::ClassicRemote
        }
    }
}

/// A queue's handle and the type behind it.
#[derive(Debug)]
struct Slot {
    handle: QueueHandle,
    kind: Kind,
}

/// The queue handles of this node, by queue id.
#[derive(Debug)]
pub struct Registry {
    me: NodeId,
    queues: RwLock<HashMap<QueueId, Slot>>,
    /// Serialises reconciliations (each compares, then starts and stops
    /// queues; two interleaved could undo each other).
    reconciling: tokio::sync::Mutex<()>,
    env: ClassicEnv,
    /// What quorum queue fronts need (links included).
    quorum: QuorumEnv,
    /// The node's queues are started: links from other nodes are served.
    ready: AtomicBool,
    /// The node is stopping: no queue starts any more.
    stopping: AtomicBool,
    /// Proxies that carry direct replies to other nodes, by node.
    reply_routes: Mutex<HashMap<NodeId, QueueHandle>>,
}

/// A read of the registry (see the lock order above).
#[derive(Debug)]
pub struct RegistryView<'a>(RwLockReadGuard<'a, HashMap<QueueId, Slot>>);

impl RegistryView<'_> {
    /// The handle of queue `id`, whatever its type.
    pub fn get(&self, id: QueueId) -> Option<&QueueHandle> {
        self.0.get(&id).map(|s| &s.handle)
    }
}

impl Registry {
    /// An empty registry of node `me`.
    pub fn new(me: NodeId, env: ClassicEnv, quorum: QuorumEnv) -> Self {
        Self {
            me,
            queues: RwLock::new(HashMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
            env,
            quorum,
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            reply_routes: Mutex::new(HashMap::new()),
        }
    }

    /// The proxy that carries direct replies to channels of `node` over
    /// the queue link to it, started on first use if `is_member` says the
    /// node is one (see [`reply_to`]); `None` for a node that is not.
    pub fn reply_route(
        &self,
        node: NodeId,
        is_member: impl FnOnce() -> bool,
    ) -> Option<QueueHandle> {
        let mut routes = self
            .reply_routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = routes.get(&node) {
            return Some(h.clone());
        }
        if !is_member() {
            return None;
        }
        let h = link::spawn_forwarder(
            reply_to::link_id(node),
            reply_to::PSEUDO_QUEUE.into(),
            false,
            warren_core::meta::DEFAULT_VHOST.into(),
            self.quorum.links.to(node),
        );
        routes.insert(node, h.clone());
        Some(h)
    }

    /// Read access (never hold across `.await`).
    pub fn read(&self) -> RegistryView<'_> {
        RegistryView(self.queues.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Marks the node's queues as started.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the node's queues are started.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether the node is stopping its queues.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The handle of a queue served from this node: a classic queue homed
    /// here, or a quorum queue (its front leads or forwards).
    pub fn local(&self, id: QueueId) -> Option<QueueHandle> {
        if self.is_stopping() {
            return None;
        }
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        queues
            .get(&id)
            .filter(|s| matches!(s.kind, Kind::ClassicHome | Kind::Quorum))
            .map(|s| s.handle.clone())
    }

    /// The node's quorum queue groups.
    pub fn groups(&self) -> &Arc<QueueGroups> {
        &self.quorum.groups
    }

    /// Brings the handles in line with what `wanted` gives: every queue of
    /// the metadata as applied on this node, with its vhost. `wanted` is read once the
    /// reconciliations before this one are done, so a slower one never
    /// applies an older picture over a newer one.
    pub async fn reconcile(&self, wanted: impl FnOnce() -> HashMap<QueueId, (Name, QueueDef)>) {
        let _serial = self.reconciling.lock().await;
        if self.is_stopping() {
            return;
        }
        let wanted = wanted();
        let gone: Vec<Slot> = {
            let mut queues = self.queues.write().unwrap_or_else(PoisonError::into_inner);
            let gone_ids: Vec<QueueId> = queues
                .keys()
                .filter(|id| !wanted.contains_key(id))
                .copied()
                .collect();
            let gone = gone_ids.iter().filter_map(|id| queues.remove(id)).collect();
            for (id, (vhost, def)) in wanted {
                if let Entry::Vacant(slot) = queues.entry(id) {
                    slot.insert(self.start(vhost, def));
                }
            }
            gone
        };
        // Told without waiting here: a queue whose mailbox is full (a proxy
        // whose home stalled) must not hold up every other reconciliation,
        // and with it every declaration on this node.
        for s in gone {
            tokio::spawn(async move {
                match s.kind {
                    Kind::ClassicRemote => {
                        s.handle.mark(Ending::Deleted);
                        s.handle.stop().await
                    }
                    // Deleted elsewhere (or through this node): consumers
                    // are cancelled, messages and their disk copies go
                    // (a quorum queue's replica with every key of its group).
                    Kind::ClassicHome | Kind::Quorum => s.handle.discard().await,
                }
            });
        }
    }

    /// Starts the handle of a queue that has none.
    fn start(&self, vhost: Name, def: QueueDef) -> Slot {
        let kind = Kind::of(&def, self.me);
        let handle = match kind {
            Kind::ClassicRemote => {
                let link = self.quorum.links.to(def.home.node);
                link::spawn_proxy(&def, vhost, link)
            }
            Kind::Quorum => quorum::spawn(def, vhost, &self.quorum),
            Kind::ClassicHome => {
                // Durable queues may have messages on disk from before a
                // restart; a new id has none, so the scan is one seek.
                let recover = def.durable;
                classic::spawn(def, vhost, recover, &self.env)
            }
        };
        Slot { handle, kind }
    }

    /// Stops every queue (messages stay on disk) and waits for the actors.
    /// What reaches a queue from now on is refused, not dropped as accepted.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.quorum.stopping.cancel();
        let _serial = self.reconciling.lock().await;
        let slots: Vec<Slot> = self
            .queues
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, s)| s)
            .collect();
        // Their proxies end with their handles.
        self.reply_routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        for s in slots {
            if s.kind == Kind::ClassicRemote {
                s.handle.mark(Ending::Stopped);
            }
            s.handle.stop().await;
        }
        self.env.tasks.close();
        self.env.tasks.wait().await;
        self.quorum.groups.shutdown().await;
    }
}
