//! The node's shared state: metadata, the queue registry, storage, memory.
//!
//! Metadata (the vhost's exchanges, queues and bindings) and the registry of
//! queue actors sit under one `std::sync::RwLock`: routing takes the read lock
//! for the length of a hash lookup or trie walk and never across an `.await`;
//! declarations take the write lock briefly. Durable changes are written with a
//! WAL sync before the `*-ok` goes back, so an acknowledged declaration
//! survives a crash.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use warren_core::binding::{Binding, DestinationKind};
use warren_core::meta::{Command, MetaSnapshot, MetaState, Outcome, VHostSnapshot};
use warren_core::queue::{ConnectionId, QueueDef};
use warren_core::vhost::{ExchangeDeclare, PREDECLARED, QueueDeclare, Removed, VHost};
use warren_core::{AmqpError, Name, QueueId, ReplyCode};
use warren_store::{Op, Store, StoreError, Writer, codec, keys};

use crate::config::Config;
use crate::memory::{Memory, total_memory};
use crate::queue_actor::{self, QueueEnv, QueueHandle, QueueMsg};

/// The only vhost until vhosts are manageable.
pub const DEFAULT_VHOST: &str = warren_core::meta::DEFAULT_VHOST;

/// Metadata plus the actors of the queues it names.
#[derive(Debug)]
pub struct BrokerState {
    /// Exchanges, queues, bindings: every change goes through
    /// [`MetaState::apply`], the state machine a cluster replicates.
    pub meta: MetaState,
    /// Queue actors by id.
    pub queues: HashMap<QueueId, QueueHandle>,
}

impl BrokerState {
    /// The default vhost's metadata (routing reads it).
    pub fn vhost(&self) -> &VHost {
        self.meta.default_vhost()
    }
}

/// Shared by every connection and queue of the node.
#[derive(Debug)]
pub struct Broker {
    /// The node's configuration.
    pub config: Config,
    state: RwLock<BrokerState>,
    /// The group-commit writer.
    pub writer: Writer,
    /// Memory held by messages, and the publisher block flag.
    pub memory: Arc<Memory>,
    next_conn: AtomicU64,
    next_consumer: AtomicU64,
    next_channel: AtomicU64,
    /// What queue actors are started with (their tasks are tracked there).
    env: QueueEnv,
}

/// `MetaState::apply` answered a command with another command's outcome.
fn unexpected() -> AmqpError {
    AmqpError::new(
        ReplyCode::InternalError,
        "metadata state machine returned an unexpected outcome",
    )
}

fn internal(e: StoreError) -> AmqpError {
    AmqpError::new(ReplyCode::InternalError, format!("storage failure: {e}"))
}

impl Broker {
    /// Opens the store, recovers durable metadata and messages, starts queues.
    pub fn open(config: Config) -> Result<Arc<Self>, StoreError> {
        let store = Store::open(&config.data_dir.join("rocksdb"))?;
        let recovered = store.recover()?;
        let max_id = store.max_queue_id(&recovered)?;
        let writer = store.start_writer();
        let high = config.memory_high_watermark.bytes(total_memory());
        let memory = Arc::new(Memory::new(high));
        let mut snap = VHostSnapshot {
            name: DEFAULT_VHOST.into(),
            ..VHostSnapshot::default()
        };
        for (vh, e) in recovered.exchanges {
            if vh == DEFAULT_VHOST && !PREDECLARED.iter().any(|(n, _)| *n == &*e.name) {
                snap.exchanges.push(e);
            }
        }
        for (vh, q) in recovered.queues {
            if vh == DEFAULT_VHOST {
                snap.queues.push(q);
            }
        }
        for (vh, b) in recovered.bindings {
            if vh == DEFAULT_VHOST {
                snap.bindings.push(b);
            }
        }
        let to_start = snap.queues.clone();
        let (meta, dropped) = MetaState::restore(&MetaSnapshot {
            vhosts: vec![snap],
            next_queue_id: max_id + 1,
        });
        tracing::info!(
            exchanges = meta.default_vhost().exchanges().count(),
            queues = to_start.len(),
            bindings = meta.default_vhost().bindings().count(),
            dropped_bindings = dropped,
            watermark_bytes = high,
            "recovered metadata"
        );
        let tasks = TaskTracker::new();
        let broker = Arc::new_cyclic(|me: &Weak<Broker>| {
            let env = QueueEnv {
                writer: writer.clone(),
                store,
                memory: memory.clone(),
                broker: me.clone(),
                tasks,
            };
            let mut queues = HashMap::new();
            for def in to_start {
                let h = queue_actor::spawn(def, DEFAULT_VHOST.into(), true, &env);
                queues.insert(h.id, h);
            }
            Broker {
                config,
                state: RwLock::new(BrokerState { meta, queues }),
                writer,
                memory,
                next_conn: AtomicU64::new(1),
                next_consumer: AtomicU64::new(1),
                next_channel: AtomicU64::new(1),
                env,
            }
        });
        Ok(broker)
    }

    /// Read access to metadata and registry (never hold across `.await`).
    pub fn read(&self) -> RwLockReadGuard<'_, BrokerState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BrokerState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh id for an opening of a channel.
    pub fn next_channel_id(&self) -> u64 {
        self.next_channel.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh consumer id.
    pub fn next_consumer_id(&self) -> u64 {
        self.next_consumer.fetch_add(1, Ordering::Relaxed)
    }

    async fn persist(&self, ops: Vec<Op>) -> Result<(), AmqpError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.writer.write_sync(ops).await.map_err(internal)
    }

    fn removal_ops(removed: &Removed, ops: &mut Vec<Op>) {
        for b in &removed.bindings {
            ops.push(Op::DeleteMeta(codec::binding_key(DEFAULT_VHOST, b)));
        }
        for e in &removed.exchanges {
            if e.durable {
                ops.push(Op::DeleteMeta(keys::entity(
                    keys::EXCHANGE,
                    DEFAULT_VHOST,
                    &e.name,
                )));
            }
        }
    }

    /// `exchange.declare`.
    pub async fn declare_exchange(&self, d: &ExchangeDeclare<'_>) -> Result<(), AmqpError> {
        let record = {
            let mut st = self.write();
            if d.passive {
                return match st.vhost().exchange(d.name) {
                    Some(_) => Ok(()),
                    None => Err(AmqpError::not_found("exchange", d.name, DEFAULT_VHOST)),
                };
            }
            let Outcome::ExchangeDeclared { created } =
                st.meta.apply(&Command::DeclareExchange {
                    vhost: DEFAULT_VHOST.into(),
                    name: d.name.into(),
                    kind: d.kind.into(),
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments.clone(),
                })?
            else {
                return Err(unexpected());
            };
            match st.vhost().exchange(d.name) {
                Some(e) if created && e.durable => Some(codec::encode_exchange(e)),
                _ => None,
            }
        };
        if let Some(v) = record {
            let k = keys::entity(keys::EXCHANGE, DEFAULT_VHOST, d.name);
            self.persist(vec![Op::PutMeta(k, v)]).await?;
        }
        Ok(())
    }

    /// `exchange.delete`.
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        let outcome = self.write().meta.apply(&Command::DeleteExchange {
            vhost: DEFAULT_VHOST.into(),
            name: name.into(),
            if_unused,
        })?;
        let Outcome::ExchangeDeleted(removed) = outcome else {
            return Err(unexpected());
        };
        let mut ops = Vec::new();
        Self::removal_ops(&removed, &mut ops);
        self.persist(ops).await
    }

    /// `queue.declare` (the name is already chosen). Returns the queue with its
    /// ready-message and consumer counts.
    pub async fn declare_queue(
        &self,
        d: &QueueDeclare<'_>,
    ) -> Result<(QueueDef, u32, u32), AmqpError> {
        let (def, created, handle) = {
            let mut st = self.write();
            let (def, created) = if d.passive {
                (st.vhost().queue_for(d.name, d.owner)?.clone(), false)
            } else {
                let outcome = st.meta.apply(&Command::DeclareQueue {
                    vhost: DEFAULT_VHOST.into(),
                    name: d.name.into(),
                    durable: d.durable,
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    arguments: d.arguments.clone(),
                    owner: d.owner,
                    server_named: d.server_named,
                })?;
                let Outcome::QueueDeclared { queue, created } = outcome else {
                    return Err(unexpected());
                };
                (queue, created)
            };
            let handle = if created {
                let h = queue_actor::spawn(def.clone(), DEFAULT_VHOST.into(), false, &self.env);
                st.queues.insert(def.id, h.clone());
                h
            } else {
                match st.queues.get(&def.id) {
                    Some(h) => h.clone(),
                    None => return Err(AmqpError::not_found("queue", d.name, DEFAULT_VHOST)),
                }
            };
            (def, created, handle)
        };
        if created {
            if def.durable && def.exclusive_owner.is_none() {
                let k = keys::entity(keys::QUEUE, DEFAULT_VHOST, &def.name);
                self.persist(vec![Op::PutMeta(k, codec::encode_queue(&def))])
                    .await?;
            }
            return Ok((def, 0, 0));
        }
        let (tx, rx) = oneshot::channel();
        if handle.tx.send(QueueMsg::Status(tx)).await.is_err() {
            return Err(AmqpError::not_found("queue", d.name, DEFAULT_VHOST));
        }
        let (msgs, consumers) = rx
            .await
            .map_err(|_| AmqpError::not_found("queue", d.name, DEFAULT_VHOST))?;
        Ok((def, msgs, consumers))
    }

    /// The actor of a queue `conn` may use (404 / 405 otherwise).
    pub fn queue_handle(&self, name: &str, conn: ConnectionId) -> Result<QueueHandle, AmqpError> {
        let st = self.read();
        let def = st.vhost().queue_for(name, conn)?;
        st.queues
            .get(&def.id)
            .cloned()
            .ok_or_else(|| AmqpError::not_found("queue", name, DEFAULT_VHOST))
    }

    /// `queue.delete`. Returns the number of messages deleted.
    pub async fn delete_queue(
        &self,
        name: &str,
        conn: ConnectionId,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, AmqpError> {
        let handle = self.queue_handle(name, conn)?;
        let (tx, rx) = oneshot::channel();
        let gone = || AmqpError::not_found("queue", name, DEFAULT_VHOST);
        handle
            .tx
            .send(QueueMsg::Delete {
                if_unused,
                if_empty,
                reply: tx,
            })
            .await
            .map_err(|_| gone())?;
        let n = rx.await.map_err(|_| gone())??;
        self.forget_queue(name, handle.id).await;
        Ok(n)
    }

    /// Removes a stopped queue's metadata (after `queue.delete`, or by the
    /// queue itself when auto-delete fires). Only if the name still maps to `id`.
    pub async fn forget_queue(&self, name: &str, id: QueueId) {
        let removed = {
            let mut st = self.write();
            if st.vhost().queue(name).map(|q| q.id) != Some(id) {
                return;
            }
            st.queues.remove(&id);
            st.meta.apply(&Command::DeleteQueue {
                vhost: DEFAULT_VHOST.into(),
                name: name.into(),
                conn: None,
            })
        };
        if let Ok(Outcome::QueuesDeleted(gone)) = removed {
            for (def, removed) in gone {
                self.persist_queue_removal(&def, &removed).await;
            }
        }
    }

    async fn persist_queue_removal(&self, def: &QueueDef, removed: &Removed) {
        let name = &*def.name;
        let mut ops = vec![];
        if def.durable && def.exclusive_owner.is_none() {
            ops.push(Op::DeleteMeta(keys::entity(
                keys::QUEUE,
                DEFAULT_VHOST,
                name,
            )));
        }
        Self::removal_ops(removed, &mut ops);
        if let Err(e) = self.persist(ops).await {
            tracing::error!(queue = name, cause = %e, "could not persist queue deletion");
        }
    }

    /// `queue.purge`.
    pub async fn purge_queue(&self, name: &str, conn: ConnectionId) -> Result<u32, AmqpError> {
        let handle = self.queue_handle(name, conn)?;
        let (tx, rx) = oneshot::channel();
        let gone = || AmqpError::not_found("queue", name, DEFAULT_VHOST);
        handle
            .tx
            .send(QueueMsg::Purge(tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    fn binding_is_durable(vhost: &VHost, b: &Binding) -> bool {
        let source = vhost.exchange(&b.source).is_some_and(|e| e.durable);
        let dest = match b.kind {
            DestinationKind::Queue => vhost
                .queue(&b.destination)
                .is_some_and(|q| q.durable && q.exclusive_owner.is_none()),
            DestinationKind::Exchange => vhost.exchange(&b.destination).is_some_and(|e| e.durable),
        };
        source && dest
    }

    /// `queue.bind` / `exchange.bind`.
    pub async fn bind(&self, b: Binding, conn: ConnectionId) -> Result<(), AmqpError> {
        let key = {
            let mut st = self.write();
            let durable = Self::binding_is_durable(st.vhost(), &b);
            let key = codec::binding_key(DEFAULT_VHOST, &b);
            let Outcome::Bound { created } = st.meta.apply(&Command::Bind {
                vhost: DEFAULT_VHOST.into(),
                binding: b,
                conn,
            })?
            else {
                return Err(unexpected());
            };
            (created && durable).then_some(key)
        };
        if let Some(k) = key {
            self.persist(vec![Op::PutMeta(k, Vec::new())]).await?;
        }
        Ok(())
    }

    /// `queue.unbind` / `exchange.unbind`.
    pub async fn unbind(&self, b: &Binding, conn: ConnectionId) -> Result<(), AmqpError> {
        let outcome = self.write().meta.apply(&Command::Unbind {
            vhost: DEFAULT_VHOST.into(),
            binding: b.clone(),
            conn,
        })?;
        let Outcome::Unbound(removed) = outcome else {
            return Err(unexpected());
        };
        let mut ops = Vec::new();
        Self::removal_ops(&removed, &mut ops);
        self.persist(ops).await
    }

    /// Stops every queue actor, then writes everything pending and closes the
    /// store. Called last in a graceful shutdown, once connections are gone.
    pub async fn stop(&self) {
        let handles: Vec<QueueHandle> = self.write().queues.drain().map(|(_, h)| h).collect();
        for h in handles {
            let _ = h.tx.send(QueueMsg::Stop).await;
        }
        self.env.tasks.close();
        self.env.tasks.wait().await;
        if let Err(e) = self.writer.close().await {
            tracing::error!(cause = %e, "final storage flush failed");
        }
    }

    /// Exclusive queues of a connection that is closing.
    pub fn exclusive_queues_of(&self, conn: ConnectionId) -> Vec<Name> {
        self.read().vhost().exclusive_queues_of(conn)
    }
}
