//! The canonical image of the metadata: [`MetaSnapshot`], and the fixed
//! orders that make it canonical.
//!
//! A snapshot is what a Raft snapshot carries and what tests compare, so two
//! replicas with the same state must produce the same bytes: every list is
//! sorted, never left in hash-map order. The same orders make the removals an
//! [`super::Outcome`] reports identical on every node ([`canonical`]).

use super::users::{AccessState, PermissionEntry, UserDef};
use super::{DEFAULT_VHOST, MetaState};
use crate::binding::Binding;
use crate::exchange::ExchangeDef;
use crate::queue::QueueDef;
use crate::vhost::{Removed, VHost};
use crate::{Name, QueueId};

/// The canonical image of a [`MetaState`]: every list sorted.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetaSnapshot {
    /// Vhosts by name.
    pub vhosts: Vec<VHostSnapshot>,
    /// The id the next created queue gets.
    pub next_queue_id: QueueId,
    /// The cluster's id, once chosen (absent in snapshots of older versions).
    #[serde(default)]
    pub cluster_id: Option<u128>,
    /// Users by name (absent in snapshots of older versions).
    #[serde(default)]
    pub users: Vec<UserDef>,
    /// Permissions by vhost, then user.
    #[serde(default)]
    pub permissions: Vec<PermissionEntry>,
    /// A config file's users were seeded.
    #[serde(default)]
    pub users_seeded: bool,
}

/// One vhost in a [`MetaSnapshot`].
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VHostSnapshot {
    /// Name.
    pub name: Name,
    /// Exchanges by name (the predeclared ones included).
    pub exchanges: Vec<ExchangeDef>,
    /// Queues by name.
    pub queues: Vec<QueueDef>,
    /// Bindings, sorted (see [`sort_bindings`]).
    pub bindings: Vec<Binding>,
}

impl MetaState {
    /// The canonical image of the state.
    pub fn snapshot(&self) -> MetaSnapshot {
        let mut snap = MetaSnapshot {
            next_queue_id: self.next_queue_id,
            cluster_id: self.cluster_id,
            users: self.access.users().cloned().collect(),
            permissions: self.access.permissions().collect(),
            users_seeded: self.access.seeded(),
            ..MetaSnapshot::default()
        };
        for v in self.vhosts() {
            let mut exchanges: Vec<ExchangeDef> = v.exchanges().cloned().collect();
            exchanges.sort_by(|a, b| a.name.cmp(&b.name));
            let mut queues: Vec<QueueDef> = v.queues().cloned().collect();
            queues.sort_by(|a, b| a.name.cmp(&b.name));
            let mut bindings: Vec<Binding> = v.bindings().cloned().collect();
            sort_bindings(&mut bindings);
            snap.vhosts.push(VHostSnapshot {
                name: v.name().into(),
                exchanges,
                queues,
                bindings,
            });
        }
        snap.vhosts.sort_by(|a, b| a.name.cmp(&b.name));
        snap
    }

    /// Rebuilds a state from its snapshot.
    ///
    /// Bindings whose ends are missing are dropped (a store written by an
    /// older version may hold some); their number is returned.
    pub fn restore(snap: &MetaSnapshot) -> (Self, usize) {
        let mut state = Self {
            next_queue_id: snap.next_queue_id.max(1),
            cluster_id: snap.cluster_id,
            access: AccessState::restore(&snap.users, &snap.permissions, snap.users_seeded),
            ..Self::new()
        };
        let mut dropped = 0;
        for vs in &snap.vhosts {
            let mut v = VHost::new(&vs.name);
            for e in &vs.exchanges {
                v.restore_exchange(e.clone());
            }
            for q in &vs.queues {
                state.next_queue_id = state.next_queue_id.max(q.id + 1);
                v.restore_queue(q.clone());
            }
            for b in &vs.bindings {
                if !v.restore_binding(b.clone()) {
                    dropped += 1;
                }
            }
            if &*vs.name == DEFAULT_VHOST {
                state.default = v;
            } else {
                state.others.insert(vs.name.clone(), v);
            }
        }
        (state, dropped)
    }
}

/// Removals in a fixed order, whatever order the indexes yielded them in.
pub(super) fn canonical(mut r: Removed) -> Removed {
    sort_bindings(&mut r.bindings);
    r.exchanges.sort_by(|a, b| a.name.cmp(&b.name));
    r
}

/// Sorts bindings by source, destination kind and name, key, then arguments.
pub fn sort_bindings(bindings: &mut [Binding]) {
    bindings.sort_by_cached_key(|b| {
        (
            b.source.clone(),
            b.kind as u8,
            b.destination.clone(),
            b.routing_key.clone(),
            format!("{:?}", b.arguments),
        )
    });
}
