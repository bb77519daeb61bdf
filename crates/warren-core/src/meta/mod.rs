//! The metadata state machine: every change of exchanges, queues, bindings,
//! users and permissions
//! as a [`Command`], applied by [`MetaState::apply`].
//!
//! In a cluster these commands are the entries of Raft group 0: each node
//! applies the same log to its own `MetaState`, so `apply` must be a function
//! of the state and the command alone (no clock, no randomness, no hash-map
//! iteration order leaking into the state or the outcome). Equivalence errors
//! (406, 405, 404, 403) are decided here, so the node that proposed a command
//! gets the same answer whichever node applied it first. Queue ids are
//! allocated by the state machine for the same reason.
//!
//! [`MetaSnapshot`] is the canonical, ordered image of the state: what a Raft
//! snapshot carries and what tests compare. Commands and snapshots are serde
//! types: they travel in Raft log entries and snapshot transfers.
//!
//! - `command`: [`Command`] and [`Outcome`], the replicated protocol.
//! - `apply`: [`MetaState::apply`], one small method per command.
//! - `snapshot`: [`MetaSnapshot`], snapshot and restore, canonical order.
//! - `users`: [`AccessState`], users and permissions, and the checks
//!   logins and operations make against them.
//!
//! This file holds the state itself and its read side.

mod apply;
mod command;
mod snapshot;
mod users;

use std::collections::BTreeMap;

pub use command::{Command, Outcome};
pub use snapshot::{MetaSnapshot, VHostSnapshot, sort_bindings};
pub use users::{AccessState, LoginRefused, PermissionEntry, UserDef};

use crate::queue::QueueDef;
use crate::vhost::{PREDECLARED, VHost};
use crate::{AmqpError, Name, QueueId, ReplyCode};

/// The vhost every node starts with (RabbitMQ's default).
pub const DEFAULT_VHOST: &str = "/";

/// Every vhost's metadata, plus the queue id counter.
#[derive(Debug)]
pub struct MetaState {
    /// `/`, always present, so the hot path reaches it without a lookup that
    /// could fail.
    default: VHost,
    /// Other vhosts by name.
    others: BTreeMap<Name, VHost>,
    next_queue_id: QueueId,
    /// The cluster's id, once chosen (see [`Command::ChooseClusterId`]).
    cluster_id: Option<u128>,
    /// Users and their permissions.
    access: AccessState,
}

impl Default for MetaState {
    fn default() -> Self {
        Self::new()
    }
}

impl MetaState {
    /// The default vhost `/` with its predeclared exchanges, no queues.
    pub fn new() -> Self {
        Self {
            default: VHost::new(DEFAULT_VHOST),
            others: BTreeMap::new(),
            next_queue_id: 1,
            cluster_id: None,
            access: AccessState::default(),
        }
    }

    /// A vhost by name.
    pub fn vhost(&self, name: &str) -> Option<&VHost> {
        if name == DEFAULT_VHOST {
            Some(&self.default)
        } else {
            self.others.get(name)
        }
    }

    /// Every vhost's name, `/` first, then by name.
    pub fn vhost_names(&self) -> impl Iterator<Item = &str> {
        self.vhosts().map(VHost::name)
    }

    /// Every queue of every vhost, with its vhost (`/` first).
    pub fn all_queues(&self) -> impl Iterator<Item = (&VHost, &QueueDef)> {
        self.vhosts().flat_map(|v| v.queues().map(move |q| (v, q)))
    }

    /// The queue with id `id` and its vhost (a scan: for rare paths only).
    pub fn queue_by_id(&self, id: QueueId) -> Option<(&VHost, &QueueDef)> {
        self.all_queues().find(|(_, q)| q.id == id)
    }

    /// The default vhost `/`.
    pub fn default_vhost(&self) -> &VHost {
        &self.default
    }

    /// The id the next created queue gets.
    pub fn next_queue_id(&self) -> QueueId {
        self.next_queue_id
    }

    /// The cluster's id, once one was chosen.
    pub fn cluster_id(&self) -> Option<u128> {
        self.cluster_id
    }

    /// Users and permissions.
    pub fn access(&self) -> &AccessState {
        &self.access
    }

    /// Nothing declared yet: no queues, no bindings, no vhost but the
    /// default, only the predeclared exchanges.
    pub fn is_pristine(&self) -> bool {
        let v = &self.default;
        self.others.is_empty()
            && v.queues().next().is_none()
            && v.bindings().next().is_none()
            && v.exchanges().count() == PREDECLARED.len()
    }

    fn vhost_mut(&mut self, name: &str) -> Result<&mut VHost, AmqpError> {
        if name == DEFAULT_VHOST {
            return Ok(&mut self.default);
        }
        self.others
            .get_mut(name)
            .ok_or_else(|| AmqpError::new(ReplyCode::NotAllowed, format!("vhost {name} not found")))
    }

    /// Every vhost, `/` first, then the others by name: the same order on
    /// every node.
    fn vhosts(&self) -> impl Iterator<Item = &VHost> {
        std::iter::once(&self.default).chain(self.others.values())
    }

    /// [`MetaState::vhosts`], to change them.
    fn vhosts_mut(&mut self) -> impl Iterator<Item = &mut VHost> {
        std::iter::once(&mut self.default).chain(self.others.values_mut())
    }
}

#[cfg(test)]
#[path = "meta_test.rs"]
mod tests;

#[cfg(test)]
#[path = "users_test.rs"]
mod users_tests;
