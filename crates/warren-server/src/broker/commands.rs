//! What channels ask of metadata. Each change is proposed to group 0 (the
//! leader may be another node) and answered once applied on this node; the
//! state machine decides equivalence errors, so the reply code is the same
//! whichever node the client is on. Passive declarations read the local
//! replica. The Raft log is the durable record: nothing else is written.

use tokio::sync::oneshot;
use warren_core::binding::Binding;
use warren_core::meta::{Command, Outcome};
use warren_core::queue::{ConnectionId, QueueDef};
use warren_core::vhost::{ExchangeDeclare, QueueDeclare};
use warren_core::{AmqpError, ReplyCode};

use super::{Broker, DEFAULT_VHOST};
use crate::queue_actor::{QueueHandle, QueueMsg};

/// The state machine answered a command with another command's outcome.
fn unexpected() -> AmqpError {
    AmqpError::new(
        ReplyCode::InternalError,
        "metadata state machine returned an unexpected outcome",
    )
}

impl Broker {
    /// `exchange.declare`.
    pub async fn declare_exchange(&self, d: &ExchangeDeclare<'_>) -> Result<(), AmqpError> {
        if d.passive {
            return match self.read().vhost().exchange(d.name) {
                Some(_) => Ok(()),
                None => Err(AmqpError::not_found("exchange", d.name, DEFAULT_VHOST)),
            };
        }
        let outcome = self
            .node
            .propose(Command::DeclareExchange {
                vhost: DEFAULT_VHOST.into(),
                name: d.name.into(),
                kind: d.kind.into(),
                durable: d.durable,
                auto_delete: d.auto_delete,
                internal: d.internal,
                arguments: d.arguments.clone(),
            })
            .await?;
        match outcome {
            Outcome::ExchangeDeclared { .. } => Ok(()),
            _ => Err(unexpected()),
        }
    }

    /// `exchange.delete`.
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        let outcome = self
            .node
            .propose(Command::DeleteExchange {
                vhost: DEFAULT_VHOST.into(),
                name: name.into(),
                if_unused,
            })
            .await?;
        match outcome {
            Outcome::ExchangeDeleted(_) => Ok(()),
            _ => Err(unexpected()),
        }
    }

    /// `queue.declare` (the name is already chosen). Returns the queue with its
    /// ready-message and consumer counts.
    pub async fn declare_queue(
        &self,
        d: &QueueDeclare<'_>,
    ) -> Result<(QueueDef, u32, u32), AmqpError> {
        let def = if d.passive {
            self.read().vhost().queue_for(d.name, d.owner)?.clone()
        } else {
            let outcome = self
                .node
                .propose(Command::DeclareQueue {
                    vhost: DEFAULT_VHOST.into(),
                    name: d.name.into(),
                    durable: d.durable,
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    arguments: d.arguments.clone(),
                    owner: d.owner,
                    server_named: d.server_named,
                    home: self.home(),
                })
                .await?;
            let Outcome::QueueDeclared { queue, created } = outcome else {
                return Err(unexpected());
            };
            if created {
                self.reconcile().await;
                return Ok((queue, 0, 0));
            }
            queue
        };
        let Some(handle) = self.read().queues.get(&def.id).cloned() else {
            // Homed on another node: its counts live there.
            return Ok((def, 0, 0));
        };
        let (tx, rx) = oneshot::channel();
        let gone = || AmqpError::not_found("queue", d.name, DEFAULT_VHOST);
        handle
            .tx
            .send(QueueMsg::Status(tx))
            .await
            .map_err(|_| gone())?;
        let (msgs, consumers) = rx.await.map_err(|_| gone())?;
        Ok((def, msgs, consumers))
    }

    /// The actor of a queue `conn` may use (404 / 405 otherwise).
    pub fn queue_handle(&self, name: &str, conn: ConnectionId) -> Result<QueueHandle, AmqpError> {
        let st = self.read();
        let def = st.vhost().queue_for(name, conn)?;
        st.queues.get(&def.id).cloned().ok_or_else(|| {
            AmqpError::new(
                ReplyCode::NotFound,
                format!(
                    "queue '{name}' in vhost '{DEFAULT_VHOST}' lives on node {}, which this node cannot reach it on yet",
                    def.home.node
                ),
            )
        })
    }

    /// `queue.delete`. Returns the number of messages deleted.
    pub async fn delete_queue(
        &self,
        name: &str,
        conn: ConnectionId,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, AmqpError> {
        let local = {
            let st = self.read();
            let def = st.vhost().queue_for(name, conn)?;
            st.queues.get(&def.id).cloned()
        };
        let mut n = 0;
        if let Some(handle) = local {
            // The queue checks if-unused / if-empty (its consumers and
            // messages live with it), then stops.
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
            n = rx.await.map_err(|_| gone())??;
        }
        let outcome = self
            .node
            .propose(Command::DeleteQueue {
                vhost: DEFAULT_VHOST.into(),
                name: name.into(),
                conn: Some(conn),
                id: None,
            })
            .await;
        match outcome {
            Ok(Outcome::QueuesDeleted(_)) => {}
            // Deleted meanwhile by someone else: the queue is gone, as asked.
            Err(e) if e.code == ReplyCode::NotFound => {}
            Err(e) => return Err(e),
            Ok(_) => return Err(unexpected()),
        }
        self.reconcile().await;
        Ok(n)
    }

    /// Removes a stopped queue's metadata (auto-delete fired). Only if the
    /// name still maps to `id` when the command applies.
    pub async fn forget_queue(&self, name: &str, id: warren_core::QueueId) {
        if self.read().vhost().queue(name).map(|q| q.id) != Some(id) {
            return;
        }
        let r = self
            .node
            .propose(Command::DeleteQueue {
                vhost: DEFAULT_VHOST.into(),
                name: name.into(),
                conn: None,
                id: Some(id),
            })
            .await;
        if let Err(e) = r
            && e.code != ReplyCode::NotFound
        {
            tracing::warn!(queue = name, cause = %e, "could not delete auto-delete queue");
        }
        self.reconcile().await;
    }

    /// A connection closed: its exclusive queues go (one command for all).
    pub async fn drop_connection(&self, conn: ConnectionId) {
        if self.exclusive_queues_of(conn).is_empty() {
            return;
        }
        if let Err(e) = self.node.propose(Command::DropConnection { conn }).await {
            tracing::warn!(conn, cause = %e, "could not delete exclusive queues");
        }
        self.reconcile().await;
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

    /// `queue.bind` / `exchange.bind`.
    pub async fn bind(&self, b: Binding, conn: ConnectionId) -> Result<(), AmqpError> {
        let outcome = self
            .node
            .propose(Command::Bind {
                vhost: DEFAULT_VHOST.into(),
                binding: b,
                conn,
            })
            .await?;
        match outcome {
            Outcome::Bound { .. } => Ok(()),
            _ => Err(unexpected()),
        }
    }

    /// `queue.unbind` / `exchange.unbind`.
    pub async fn unbind(&self, b: &Binding, conn: ConnectionId) -> Result<(), AmqpError> {
        let outcome = self
            .node
            .propose(Command::Unbind {
                vhost: DEFAULT_VHOST.into(),
                binding: b.clone(),
                conn,
            })
            .await?;
        match outcome {
            Outcome::Unbound(_) => Ok(()),
            _ => Err(unexpected()),
        }
    }
}
