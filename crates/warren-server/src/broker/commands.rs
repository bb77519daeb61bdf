//! What channels ask of metadata. Each change is proposed to group 0 (the
//! leader may be another node) and answered once applied on this node; the
//! state machine decides equivalence errors, so the reply code is the same
//! whichever node the client is on. Passive declarations read the local
//! replica. The Raft log is the durable record: nothing else is written.

use std::sync::Arc;
use std::time::Duration;

use warren_core::binding::Binding;
use warren_core::meta::{Command, Outcome};
use warren_core::queue::{ConnectionId, QueueArgs, QueueDef};
use warren_core::vhost::{ExchangeDeclare, QueueDeclare};
use warren_core::{AMQPValue, AmqpError, FieldTable, Name, NodeId, QueueId, ReplyCode};
use warren_queues::QueueHandle;

use super::Broker;
use crate::config::QueueType;

/// Replicas of a quorum queue unless `x-quorum-initial-group-size` says.
const QUORUM_GROUP_SIZE: usize = 3;
/// How long `queue.declare` of a new quorum queue waits for its leader.
const QUORUM_LEADER_WAIT: Duration = Duration::from_secs(10);

/// First pause before retrying a connection's exclusive-queue removal.
const DROP_RETRY_MIN: Duration = Duration::from_millis(200);
/// Longest pause between those retries.
const DROP_RETRY_MAX: Duration = Duration::from_secs(5);

impl Broker {
    /// Proposes `cmd` and gives the outcome `expect` accepts; any other
    /// outcome is an internal error (the state machine answered another
    /// command).
    async fn propose<T>(
        &self,
        cmd: Command,
        expect: impl FnOnce(Outcome) -> Option<T>,
    ) -> Result<T, AmqpError> {
        let outcome = self.node.propose(cmd).await?;
        expect(outcome).ok_or_else(|| {
            AmqpError::new(
                ReplyCode::InternalError,
                "metadata state machine returned an unexpected outcome",
            )
        })
    }

    /// `exchange.declare`.
    pub async fn declare_exchange(
        &self,
        vhost: &str,
        d: &ExchangeDeclare<'_>,
    ) -> Result<(), AmqpError> {
        if d.passive {
            return match self.read().vhost(vhost)?.exchange(d.name) {
                Some(_) => Ok(()),
                None => Err(AmqpError::not_found("exchange", d.name, vhost)),
            };
        }
        let cmd = Command::DeclareExchange {
            vhost: vhost.into(),
            name: d.name.into(),
            kind: d.kind.into(),
            durable: d.durable,
            auto_delete: d.auto_delete,
            internal: d.internal,
            arguments: d.arguments.clone(),
        };
        self.propose(cmd, |o| {
            matches!(o, Outcome::ExchangeDeclared { .. }).then_some(())
        })
        .await
    }

    /// `exchange.delete`.
    pub async fn delete_exchange(
        &self,
        vhost: &str,
        name: &str,
        if_unused: bool,
    ) -> Result<(), AmqpError> {
        let cmd = Command::DeleteExchange {
            vhost: vhost.into(),
            name: name.into(),
            if_unused,
        };
        self.propose(cmd, |o| {
            matches!(o, Outcome::ExchangeDeleted(_)).then_some(())
        })
        .await
    }

    /// `queue.declare` (the name is already chosen). Returns the queue with its
    /// ready-message and consumer counts.
    pub async fn declare_queue(
        &self,
        vhost: &str,
        d: &QueueDeclare<'_>,
    ) -> Result<(QueueDef, u32, u32), AmqpError> {
        let def = if d.passive {
            self.read()
                .vhost(vhost)?
                .queue_for(d.name, d.owner)?
                .clone()
        } else {
            let arguments = self.typed_arguments(vhost, d)?;
            let d = &QueueDeclare {
                arguments: &arguments,
                ..d.clone()
            };
            let cmd = Command::DeclareQueue {
                vhost: vhost.into(),
                name: d.name.into(),
                durable: d.durable,
                exclusive: d.exclusive,
                auto_delete: d.auto_delete,
                arguments: d.arguments.clone(),
                owner: d.owner,
                server_named: d.server_named,
                home: self.home(),
                replicas: self.replica_set(vhost, d),
            };
            let (queue, created) = self
                .propose(cmd, |o| match o {
                    Outcome::QueueDeclared { queue, created } => Some((queue, created)),
                    _ => None,
                })
                .await?;
            if created {
                self.reconcile().await;
                if queue.is_quorum() {
                    self.wait_quorum_leader(vhost, &queue).await?;
                }
                return Ok((queue, 0, 0));
            }
            queue
        };
        let Some(handle) = self.read().queue(def.id).cloned() else {
            // Not started here yet: its counts live with its home.
            return Ok((def, 0, 0));
        };
        let (msgs, consumers) = handle.status().await?;
        Ok((def, msgs, consumers))
    }

    /// The arguments a declaration is proposed with. One without
    /// `x-queue-type` takes the type of the queue of that name if it exists
    /// (a redeclare matches what is there), else the node's default type
    /// if the queue may be a quorum queue: durable, not exclusive, not
    /// auto-delete, named by the client (as RabbitMQ's default queue type).
    fn typed_arguments(&self, vhost: &str, d: &QueueDeclare<'_>) -> Result<FieldTable, AmqpError> {
        let mut args = d.arguments.clone();
        if args.inner().contains_key("x-queue-type") {
            return Ok(args);
        }
        let existing = self
            .read()
            .vhost(vhost)?
            .queue(d.name)
            .map(QueueDef::is_quorum);
        let quorum = existing.unwrap_or_else(|| {
            self.config.default_queue_type == QueueType::Quorum
                && d.durable
                && !d.exclusive
                && !d.auto_delete
                && !d.server_named
        });
        if quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        Ok(args)
    }

    /// A new quorum queue's replica set: `x-quorum-initial-group-size`
    /// voters of group 0 (default 3, at most all of them), starting at a
    /// place that turns with each quorum queue declared, so that replica
    /// sets, and with them first leaders, spread over the nodes.
    fn replica_set(&self, vhost: &str, d: &QueueDeclare<'_>) -> Vec<NodeId> {
        let quorum = QueueArgs::parse(d.arguments, d.name, vhost)
            .ok()
            .filter(QueueArgs::is_quorum);
        let Some(args) = quorum else {
            return Vec::new();
        };
        let mut voters = self.node.voter_ids();
        let n = voters.len();
        let size = args
            .quorum_initial_group_size
            .map_or(QUORUM_GROUP_SIZE, |s| usize::try_from(s).unwrap_or(n))
            .clamp(1, n);
        let existing = self
            .read()
            .meta
            .all_queues()
            .filter(|(_, q)| q.is_quorum())
            .count();
        voters.rotate_left(existing % n);
        voters.truncate(size);
        voters
    }

    /// Waits until a new quorum queue's group has a leader, so that a
    /// publish right after `declare-ok` is not nacked. This node waits on
    /// its own replica; a node outside the replica set does not wait.
    async fn wait_quorum_leader(&self, vhost: &str, q: &QueueDef) -> Result<(), AmqpError> {
        if !q.replicas.contains(&self.config.node_id) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + QUORUM_LEADER_WAIT;
        let groups = self.registry.groups().clone();
        let group = loop {
            if let Some(g) = groups.get(q.id) {
                break Some(g);
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
            // The queue's front starts its replica as it starts.
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let led = match group {
            Some(g) => g
                .raft
                .wait(Some(left))
                .metrics(|m| m.current_leader.is_some(), "quorum queue leader")
                .await
                .is_ok(),
            None => false,
        };
        if led {
            Ok(())
        } else {
            Err(AmqpError::new(
                ReplyCode::InternalError,
                format!(
                    "quorum queue '{}' in vhost '{vhost}' has no leader yet (too few of its replicas are up)",
                    q.name
                ),
            )
            .on_channel())
        }
    }

    /// The queue `conn` may use (404 / 405 otherwise), whatever its type.
    pub fn queue_handle(
        &self,
        vhost: &str,
        name: &str,
        conn: ConnectionId,
    ) -> Result<QueueHandle, AmqpError> {
        let st = self.read();
        let def = st.vhost(vhost)?.queue_for(name, conn)?;
        st.queue(def.id).cloned().ok_or_else(|| {
            AmqpError::new(
                ReplyCode::NotFound,
                format!(
                    "queue '{name}' in vhost '{vhost}' lives on node {}, which this node cannot reach it on yet",
                    def.home.node
                ),
            )
        })
    }

    /// `queue.delete`. Returns the number of messages deleted.
    pub async fn delete_queue(
        &self,
        vhost: &str,
        name: &str,
        conn: ConnectionId,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, AmqpError> {
        let (handle, home) = {
            let st = self.read();
            let def = st.vhost(vhost)?.queue_for(name, conn)?;
            (st.queue(def.id).cloned(), def.home.node)
        };
        // The queue checks if-unused / if-empty (its consumers and messages
        // live with it) and counts; it is deleted only once the metadata
        // change commits (the registry then deletes it on its home), so a
        // proposal that fails leaves it whole, with a live owner. A queue
        // whose home left the cluster has nothing left to check.
        let home_left = home != self.config.node_id && self.node.peer_addr(home).is_none();
        let n = match handle {
            Some(h) if !home_left => h.check_delete(if_unused, if_empty).await?,
            _ => 0,
        };
        let cmd = Command::DeleteQueue {
            vhost: vhost.into(),
            name: name.into(),
            conn: Some(conn),
            id: None,
        };
        match self
            .propose(cmd, |o| {
                matches!(o, Outcome::QueuesDeleted(_)).then_some(())
            })
            .await
        {
            // Deleted meanwhile by someone else: the queue is gone, as asked.
            Err(e) if e.code == ReplyCode::NotFound => {}
            other => other?,
        }
        self.reconcile().await;
        Ok(n)
    }

    /// Removes a stopped queue's metadata (auto-delete fired). Only if the
    /// name still maps to `id` when the command applies.
    pub async fn forget_queue(&self, name: &str, id: QueueId) {
        let vhost: Name = match self.read().queue_def(id) {
            Some((v, q)) if &*q.name == name => v.name().into(),
            _ => return,
        };
        let r = self
            .node
            .propose(Command::DeleteQueue {
                vhost,
                name: name.into(),
                conn: None,
                id: Some(id),
            })
            .await;
        if let Err(e) = r
            && e.code != ReplyCode::NotFound
        {
            tracing::warn!(queue = name, cause = %e, "could not delete an auto-delete or unused queue");
        }
        self.reconcile().await;
    }

    /// A connection closed: its exclusive queues go (one command for all).
    /// If the command cannot commit now (no majority), it is retried in the
    /// background until it does, so an exclusive queue never outlives its
    /// connection for longer than the partition.
    pub async fn drop_connection(self: &Arc<Self>, conn: ConnectionId) {
        if self.try_drop_connection(conn).await {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut pause = DROP_RETRY_MIN;
            loop {
                tokio::time::sleep(pause).await;
                let Some(b) = me.upgrade() else { return };
                if b.registry.is_stopping() || b.try_drop_connection(conn).await {
                    return;
                }
                pause = (pause * 2).min(DROP_RETRY_MAX);
            }
        });
    }

    /// One attempt at dropping `conn`'s exclusive queues: true when none
    /// is left.
    async fn try_drop_connection(&self, conn: ConnectionId) -> bool {
        if !self.has_exclusive_queues(conn) {
            return true;
        }
        let done = match self.node.propose(Command::DropConnection { conn }).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(conn, cause = %e, "could not delete exclusive queues yet; will retry");
                false
            }
        };
        self.reconcile().await;
        done
    }

    /// `queue.purge`.
    pub async fn purge_queue(
        &self,
        vhost: &str,
        name: &str,
        conn: ConnectionId,
    ) -> Result<u32, AmqpError> {
        self.queue_handle(vhost, name, conn)?.purge().await
    }

    /// `queue.bind` / `exchange.bind` (`bind`), or the unbinds.
    pub async fn bind(
        &self,
        vhost: &str,
        b: Binding,
        conn: ConnectionId,
        bind: bool,
    ) -> Result<(), AmqpError> {
        let vhost = vhost.into();
        if bind {
            let cmd = Command::Bind {
                vhost,
                binding: b,
                conn,
            };
            self.propose(cmd, |o| matches!(o, Outcome::Bound { .. }).then_some(()))
                .await
        } else {
            let cmd = Command::Unbind {
                vhost,
                binding: b,
                conn,
            };
            self.propose(cmd, |o| matches!(o, Outcome::Unbound(_)).then_some(()))
                .await
        }
    }
}
