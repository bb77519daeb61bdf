//! Queues of a vhost: declare (with RabbitMQ's equivalence rules), delete,
//! restore, and exclusive queues.
//!
//! An exclusive queue belongs to the connection that declared it: any other
//! connection touching it gets a 405 (a redeclare here, anything else through
//! [`VHost::queue_for`]), and when the connection goes its queues go with it
//! ([`VHost::exclusive_queues_of`]).

use super::{Removed, VHost};
use crate::binding::DestinationKind;
use crate::queue::args::{DeclareFlags, QueueArgs, check_equivalent};
use crate::queue::{ConnectionId, Home, QueueDef};
use crate::{AmqpError, FieldTable, Name, NodeId, QueueId};

/// `queue.declare` as the domain sees it (server-named queues are named by the caller).
#[derive(Clone, Debug)]
pub struct QueueDeclare<'a> {
    /// Name (never empty here).
    pub name: &'a str,
    /// Only check that it exists.
    pub passive: bool,
    /// Durable.
    pub durable: bool,
    /// Exclusive to the declaring connection.
    pub exclusive: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// Arguments.
    pub arguments: &'a FieldTable,
    /// The declaring connection.
    pub owner: ConnectionId,
    /// The server chose the name (`amq.gen-...`), so the reserved prefix is allowed.
    pub server_named: bool,
    /// Where a new queue lives.
    pub home: Home,
    /// A new quorum queue's replica set (the home node alone if empty).
    pub replicas: &'a [NodeId],
}

impl VHost {
    /// `queue.declare` (non-empty name). Returns the queue and whether it was created.
    pub fn declare_queue(
        &mut self,
        d: &QueueDeclare<'_>,
        new_id: QueueId,
    ) -> Result<(QueueDef, bool), AmqpError> {
        if let Some(q) = self.queues.get(d.name) {
            if q.exclusive_owner.is_some_and(|o| o != d.owner) {
                return Err(self.locked(d.name));
            }
            if !d.passive {
                self.check_queue_equivalent(q, d)?;
            }
            return Ok((q.clone(), false));
        }
        if d.passive {
            return Err(self.not_found("queue", d.name));
        }
        if d.name.starts_with("amq.") && !d.server_named {
            return Err(AmqpError::access_refused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        }
        let args = QueueArgs::parse(d.arguments, d.name, &self.name)?;
        let flags = DeclareFlags {
            durable: d.durable,
            exclusive: d.exclusive,
            auto_delete: d.auto_delete,
            server_named: d.server_named,
        };
        args.check_quorum(d.arguments, flags, d.name, &self.name)?;
        let replicas = match (args.is_quorum(), d.replicas.is_empty()) {
            (false, _) => Vec::new(),
            (true, true) => vec![d.home.node],
            (true, false) => d.replicas.to_vec(),
        };
        let def = QueueDef {
            name: d.name.into(),
            id: new_id,
            durable: d.durable,
            exclusive_owner: d.exclusive.then_some(d.owner),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
            args,
            home: d.home,
            replicas,
            formed: false,
        };
        self.queues.insert(def.name.clone(), def.clone());
        Ok((def, true))
    }

    /// A redeclare of `q` must ask for what it is: 406 naming the first
    /// difference, 405 when exclusivity differs (as RabbitMQ).
    fn check_queue_equivalent(&self, q: &QueueDef, d: &QueueDeclare<'_>) -> Result<(), AmqpError> {
        if q.durable != d.durable {
            return Err(self.inequivalent("queue", d.name, "durable", d.durable, q.durable));
        }
        if q.exclusive_owner.is_some() != d.exclusive {
            return Err(self.locked(d.name));
        }
        if q.auto_delete != d.auto_delete {
            return Err(self.inequivalent(
                "queue",
                d.name,
                "auto_delete",
                d.auto_delete,
                q.auto_delete,
            ));
        }
        check_equivalent(&q.arguments, d.arguments, d.name, &self.name)
    }

    /// Restores a queue from storage.
    pub fn restore_queue(&mut self, def: QueueDef) {
        self.queues.insert(def.name.clone(), def);
    }

    /// Deletes a queue with its bindings (and any auto-delete exchange left
    /// without bindings). Emptiness and usage checks are the runtime's, which
    /// knows the queue's contents.
    pub fn delete_queue(&mut self, name: &str) -> Result<(QueueDef, Removed), AmqpError> {
        let q = self
            .queues
            .remove(name)
            .ok_or_else(|| self.not_found("queue", name))?;
        let mut removed = Removed::default();
        self.remove_bindings_to(DestinationKind::Queue, name, &mut removed);
        Ok((q, removed))
    }

    /// A quorum queue's new replica set (not empty, each node once). 404 if
    /// `name` does not name queue `id`, 406 if it is not a quorum queue.
    pub fn set_replicas(
        &mut self,
        name: &str,
        id: QueueId,
        replicas: &[NodeId],
    ) -> Result<QueueDef, AmqpError> {
        let not_found = self.not_found("queue", name);
        let vhost = self.name.clone();
        let q = self
            .queues
            .get_mut(name)
            .filter(|q| q.id == id)
            .ok_or(not_found)?;
        if !q.is_quorum() {
            return Err(AmqpError::precondition(format!(
                "queue '{name}' in vhost '{vhost}' is not a quorum queue"
            )));
        }
        let mut set = replicas.to_vec();
        set.sort_unstable();
        set.dedup();
        if set.is_empty() || set.len() != replicas.len() {
            return Err(AmqpError::precondition(format!(
                "a replica set names each node once and at least one: {replicas:?}"
            )));
        }
        q.replicas = replicas.to_vec();
        q.formed = true;
        Ok(q.clone())
    }

    /// Queues owned by a connection (deleted when it closes).
    pub fn exclusive_queues_of(&self, conn: ConnectionId) -> Vec<Name> {
        self.queue_names_where(|q| q.exclusive_owner == Some(conn))
    }

    /// Names of the queues `pick` selects, sorted: the same order on every
    /// node whatever the hash map's, for deletions that must replay alike.
    pub(crate) fn queue_names_where(&self, pick: impl Fn(&QueueDef) -> bool) -> Vec<Name> {
        let mut v: Vec<Name> = self
            .queues
            .values()
            .filter(|q| pick(q))
            .map(|q| q.name.clone())
            .collect();
        v.sort();
        v
    }
}
