//! [`MetaState::apply`]: one small method per [`Command`].
//!
//! `apply` only dispatches; each method checks, changes the state, and says
//! what it did. The checks and changes are the vhost's ([`crate::vhost`]);
//! what is added here is what a replicated log needs: queue ids allocated by
//! the log, and outcomes in a canonical order (names sorted, removals sorted)
//! so every replica reports the same thing.

use super::snapshot::canonical;
use super::{Command, DEFAULT_VHOST, MetaSnapshot, MetaState, Outcome};
use crate::binding::Binding;
use crate::queue::{ConnectionId, QueueDef};
use crate::vhost::{ExchangeDeclare, QueueDeclare, Removed, VHost};
use crate::{AmqpError, Name, NodeId, QueueId, ReplyCode};

/// Queues one command deleted, each with what went with it.
type Deleted = Vec<(QueueDef, Removed)>;

impl MetaState {
    /// Applies one command. On error the state is unchanged.
    pub fn apply(&mut self, cmd: &Command) -> Result<Outcome, AmqpError> {
        match cmd {
            Command::DeclareExchange {
                vhost,
                name,
                kind,
                durable,
                auto_delete,
                internal,
                arguments,
            } => self.declare_exchange(
                vhost,
                &ExchangeDeclare {
                    name,
                    kind,
                    passive: false,
                    durable: *durable,
                    auto_delete: *auto_delete,
                    internal: *internal,
                    arguments,
                },
            ),
            Command::DeleteExchange {
                vhost,
                name,
                if_unused,
            } => self.delete_exchange(vhost, name, *if_unused),
            Command::DeclareQueue {
                vhost,
                name,
                durable,
                exclusive,
                auto_delete,
                arguments,
                owner,
                server_named,
                home,
                replicas,
            } => self.declare_queue(
                vhost,
                &QueueDeclare {
                    name,
                    passive: false,
                    durable: *durable,
                    exclusive: *exclusive,
                    auto_delete: *auto_delete,
                    arguments,
                    owner: *owner,
                    server_named: *server_named,
                    home: *home,
                    replicas,
                },
            ),
            Command::DeleteQueue {
                vhost,
                name,
                conn,
                id,
            } => self.delete_queue(vhost, name, *conn, *id),
            Command::SetReplicas {
                vhost,
                name,
                id,
                replicas,
            } => {
                let def = self.vhost_mut(vhost)?.set_replicas(name, *id, replicas)?;
                Ok(Outcome::ReplicasSet(def))
            }
            Command::Bind {
                vhost,
                binding,
                conn,
            } => self.bind(vhost, binding, *conn),
            Command::Unbind {
                vhost,
                binding,
                conn,
            } => self.unbind(vhost, binding, *conn),
            Command::DropConnection { conn } => self.drop_connection(*conn),
            Command::DropNodeQueues { node, before_epoch } => {
                self.drop_node_queues(*node, *before_epoch)
            }
            Command::DropTransient => self.drop_transient(),
            Command::Seed(snap) => self.seed(snap),
            Command::ChooseClusterId(id) => {
                Ok(Outcome::ClusterId(*self.cluster_id.get_or_insert(*id)))
            }
            Command::AddVhost { name } => self.add_vhost(name),
            Command::DeleteVhost { name } => self.delete_vhost(name),
            Command::AddUser(user) => {
                self.access.add_user(user)?;
                Ok(Outcome::AccessChanged { changed: true })
            }
            Command::DeleteUser { name } => {
                self.access.delete_user(name)?;
                Ok(Outcome::AccessChanged { changed: true })
            }
            Command::SetPermissions(e) => {
                if self.vhost(&e.vhost).is_none() {
                    return Err(AmqpError::new(
                        ReplyCode::NotFound,
                        format!("no vhost '{}'", e.vhost),
                    ));
                }
                self.access
                    .set_permission(&e.vhost, &e.user, &e.permission)?;
                Ok(Outcome::AccessChanged { changed: true })
            }
            Command::ClearPermissions { vhost, user } => {
                self.access.clear_permission(vhost, user)?;
                Ok(Outcome::AccessChanged { changed: true })
            }
            Command::SeedUsers { users, permissions } => Ok(Outcome::AccessChanged {
                changed: self.access.seed(users, permissions),
            }),
        }
    }

    fn declare_exchange(
        &mut self,
        vhost: &str,
        d: &ExchangeDeclare<'_>,
    ) -> Result<Outcome, AmqpError> {
        let created = self.vhost_mut(vhost)?.declare_exchange(d)?;
        Ok(Outcome::ExchangeDeclared { created })
    }

    fn delete_exchange(
        &mut self,
        vhost: &str,
        name: &str,
        if_unused: bool,
    ) -> Result<Outcome, AmqpError> {
        let removed = self.vhost_mut(vhost)?.delete_exchange(name, if_unused)?;
        Ok(Outcome::ExchangeDeleted(canonical(removed)))
    }

    /// A new queue takes the next id; an equivalent redeclare uses none up.
    fn declare_queue(&mut self, vhost: &str, d: &QueueDeclare<'_>) -> Result<Outcome, AmqpError> {
        let id = self.next_queue_id;
        let (queue, created) = self.vhost_mut(vhost)?.declare_queue(d, id)?;
        if created {
            self.next_queue_id += 1;
        }
        Ok(Outcome::QueueDeclared { queue, created })
    }

    /// `conn` may not delete another connection's exclusive queue; with `id`,
    /// only that queue goes, not one declared again under its name.
    fn delete_queue(
        &mut self,
        vhost: &str,
        name: &str,
        conn: Option<ConnectionId>,
        id: Option<QueueId>,
    ) -> Result<Outcome, AmqpError> {
        let v = self.vhost_mut(vhost)?;
        if let Some(conn) = conn {
            v.queue_for(name, conn)?;
        }
        if let Some(id) = id
            && v.queue(name).map(|q| q.id) != Some(id)
        {
            return Err(AmqpError::not_found("queue", name, vhost));
        }
        let (queue, removed) = v.delete_queue(name)?;
        Ok(Outcome::QueuesDeleted(vec![(queue, canonical(removed))]))
    }

    fn bind(
        &mut self,
        vhost: &str,
        binding: &Binding,
        conn: ConnectionId,
    ) -> Result<Outcome, AmqpError> {
        let created = self.vhost_mut(vhost)?.bind(binding.clone(), conn)?;
        Ok(Outcome::Bound { created })
    }

    fn unbind(
        &mut self,
        vhost: &str,
        binding: &Binding,
        conn: ConnectionId,
    ) -> Result<Outcome, AmqpError> {
        let removed = self.vhost_mut(vhost)?.unbind(binding, conn)?;
        Ok(Outcome::Unbound(canonical(removed)))
    }

    /// A connection's exclusive queues go with it.
    fn drop_connection(&mut self, conn: ConnectionId) -> Result<Outcome, AmqpError> {
        self.drop_queues(|q| q.exclusive_owner == Some(conn))
    }

    /// A node's transient and exclusive queues of epochs before `before_epoch`.
    fn drop_node_queues(&mut self, node: NodeId, before_epoch: u64) -> Result<Outcome, AmqpError> {
        self.drop_queues(|q| q.home.node == node && q.home.epoch < before_epoch && is_transient(q))
    }

    /// Deletes, in every vhost, the queues `doomed` picks.
    fn drop_queues(&mut self, doomed: impl Fn(&QueueDef) -> bool) -> Result<Outcome, AmqpError> {
        let mut gone = Deleted::new();
        for v in self.vhosts_mut() {
            delete_queues(v, &doomed, &mut gone)?;
        }
        Ok(Outcome::QueuesDeleted(gone))
    }

    /// Every transient queue and exchange, vhost by vhost.
    fn drop_transient(&mut self) -> Result<Outcome, AmqpError> {
        let mut gone = Deleted::new();
        for v in self.vhosts_mut() {
            delete_queues(v, is_transient, &mut gone)?;
            delete_transient_exchanges(v)?;
        }
        Ok(Outcome::QueuesDeleted(gone))
    }

    /// A new vhost with the predeclared exchanges.
    fn add_vhost(&mut self, name: &Name) -> Result<Outcome, AmqpError> {
        if name.is_empty() || name.len() > 255 {
            return Err(AmqpError::precondition(
                "a vhost name is 1 to 255 bytes long",
            ));
        }
        if self.vhost(name).is_some() {
            return Err(AmqpError::precondition(format!(
                "vhost '{name}' already exists"
            )));
        }
        self.others.insert(name.clone(), VHost::new(name));
        Ok(Outcome::VhostAdded)
    }

    /// A vhost and all it holds: its queues are reported as deleted (by
    /// name), so every node drops their actors and stored messages.
    fn delete_vhost(&mut self, name: &str) -> Result<Outcome, AmqpError> {
        if name == DEFAULT_VHOST {
            return Err(AmqpError::precondition(format!(
                "the default vhost '{DEFAULT_VHOST}' cannot be deleted"
            )));
        }
        let Some(mut v) = self.others.remove(name) else {
            return Err(AmqpError::new(
                ReplyCode::NotFound,
                format!("no vhost '{name}'"),
            ));
        };
        let mut gone = Deleted::new();
        delete_queues(&mut v, |_| true, &mut gone)?;
        self.access.drop_vhost(name);
        Ok(Outcome::QueuesDeleted(gone))
    }

    /// Takes a single node's metadata as the whole state, once: a replayed
    /// seed finds the state no longer pristine and changes nothing.
    fn seed(&mut self, snap: &MetaSnapshot) -> Result<Outcome, AmqpError> {
        if !self.is_pristine() {
            return Err(AmqpError::precondition(
                "metadata already present: a seed applies to an empty cluster only",
            ));
        }
        let (mut state, dropped) = Self::restore(snap);
        // The seed is a single node's old store: the cluster keeps its id
        // and its users (an old store has none).
        state.cluster_id = self.cluster_id.or(snap.cluster_id);
        state.access = std::mem::take(&mut self.access);
        *self = state;
        Ok(Outcome::Seeded { dropped })
    }
}

/// A queue that does not outlive its node's epoch: not durable, or exclusive
/// (its connection dies with the node).
fn is_transient(q: &QueueDef) -> bool {
    !q.durable || q.exclusive_owner.is_some()
}

/// Deletes the queues of `v` that `doomed` picks, by name (the same order on
/// every node), adding each to `gone` with what went with it.
fn delete_queues(
    v: &mut VHost,
    doomed: impl Fn(&QueueDef) -> bool,
    gone: &mut Deleted,
) -> Result<(), AmqpError> {
    for name in v.queue_names_where(doomed) {
        let (queue, removed) = v.delete_queue(&name)?;
        gone.push((queue, canonical(removed)));
    }
    Ok(())
}

/// Deletes the non-durable exchanges of `v`, by name.
fn delete_transient_exchanges(v: &mut VHost) -> Result<(), AmqpError> {
    let mut exchanges: Vec<Name> = v
        .exchanges()
        .filter(|e| !e.durable)
        .map(|e| e.name.clone())
        .collect();
    exchanges.sort();
    for name in exchanges {
        // An earlier deletion may have auto-deleted it.
        if v.exchange(&name).is_some() {
            v.delete_exchange(&name, false)?;
        }
    }
    Ok(())
}
