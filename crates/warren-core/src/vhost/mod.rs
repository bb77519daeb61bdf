//! The metadata of one virtual host: exchanges, queues, bindings, and routing.
//!
//! Every mutation validates first and changes state only when it succeeds, so a
//! failed declare leaves nothing behind. Mutations return what changed besides
//! the obvious (bindings and auto-delete exchanges removed along the way) so the
//! runtime can persist exactly that.
//!
//! [`VHost`] is one type; its methods are grouped by concept, one file each:
//! - `exchanges`: `exchange.declare` (with equivalence), delete, restore.
//! - `queues`: `queue.declare` (with equivalence), delete, restore, and a
//!   connection's exclusive queues.
//! - `bindings`: the binding table: bind, unbind, restore, and the cascade
//!   when a binding's end goes (auto-delete exchanges).
//! - `router`: `route`: from an exchange to queue ids, through
//!   exchange-to-exchange bindings and alternate exchanges.
//!
//! This file holds the type, its lookups (`queue_for` among them: the one
//! gate to another connection's exclusive queue) and what the others share.
//! Calls go one way: `exchanges` and `queues` call into `bindings` (a deleted
//! end takes its bindings along), every file calls into this one, and this
//! one calls none of them.

mod bindings;
mod exchanges;
mod queues;
mod router;

use std::collections::HashMap;
use std::fmt::Display;

pub use exchanges::ExchangeDeclare;
pub use queues::QueueDeclare;

use crate::binding::Binding;
use crate::exchange::{ExchangeDef, ExchangeKind, RoutingIndex, Target};
use crate::queue::{ConnectionId, QueueDef};
use crate::{AmqpError, FieldTable, Name, ReplyCode};

/// The exchanges every vhost has, as RabbitMQ predeclares them.
pub const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// Side effects of a removal, for the runtime to persist.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Removed {
    /// Bindings that went away.
    pub bindings: Vec<Binding>,
    /// Exchanges that went away (the deleted one and auto-deleted ones).
    pub exchanges: Vec<ExchangeDef>,
}

/// An exchange with the routing index derived from the bindings it is the
/// source of: the two change together.
struct ExchangeEntry {
    def: ExchangeDef,
    index: RoutingIndex,
}

/// A virtual host's metadata.
pub struct VHost {
    name: Name,
    exchanges: HashMap<Name, ExchangeEntry>,
    queues: HashMap<Name, QueueDef>,
    /// Bindings grouped by source exchange, each with its resolved target.
    bindings: HashMap<Name, Vec<(Binding, Target)>>,
}

impl std::fmt::Debug for VHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VHost")
            .field("name", &self.name)
            .field("exchanges", &self.exchanges.len())
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl VHost {
    /// A vhost with the predeclared exchanges.
    pub fn new(name: &str) -> Self {
        let mut v = Self {
            name: name.into(),
            exchanges: HashMap::new(),
            queues: HashMap::new(),
            bindings: HashMap::new(),
        };
        for (n, kind) in PREDECLARED {
            v.insert_exchange(ExchangeDef {
                name: (*n).into(),
                kind: *kind,
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: FieldTable::default(),
            });
        }
        v
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds an exchange with an empty routing index, or replaces one.
    fn insert_exchange(&mut self, def: ExchangeDef) {
        let index = RoutingIndex::new(def.kind);
        self.exchanges
            .insert(def.name.clone(), ExchangeEntry { def, index });
    }

    /// An exchange by name.
    pub fn exchange(&self, name: &str) -> Option<&ExchangeDef> {
        self.exchanges.get(name).map(|e| &e.def)
    }

    /// All exchanges.
    pub fn exchanges(&self) -> impl Iterator<Item = &ExchangeDef> {
        self.exchanges.values().map(|e| &e.def)
    }

    /// A queue by name.
    pub fn queue(&self, name: &str) -> Option<&QueueDef> {
        self.queues.get(name)
    }

    /// All queues.
    pub fn queues(&self) -> impl Iterator<Item = &QueueDef> {
        self.queues.values()
    }

    /// All bindings.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.values().flatten().map(|(b, _)| b)
    }

    /// A queue that `conn` may use: it exists and is not another connection's
    /// exclusive queue (405, as RabbitMQ).
    pub fn queue_for(&self, name: &str, conn: ConnectionId) -> Result<&QueueDef, AmqpError> {
        let q = self
            .queues
            .get(name)
            .ok_or_else(|| self.not_found("queue", name))?;
        if q.exclusive_owner.is_some_and(|o| o != conn) {
            return Err(self.locked(name));
        }
        Ok(q)
    }

    fn locked(&self, name: &str) -> AmqpError {
        AmqpError::new(
            ReplyCode::ResourceLocked,
            format!(
                "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                self.name
            ),
        )
    }

    fn not_found(&self, kind: &str, name: &str) -> AmqpError {
        AmqpError::not_found(kind, name, &self.name)
    }

    /// A redeclare that differs from the existing `kind` (exchange or queue)
    /// `name` in `arg` (406, worded as RabbitMQ does).
    fn inequivalent(
        &self,
        kind: &str,
        name: &str,
        arg: &str,
        got: impl Display,
        cur: impl Display,
    ) -> AmqpError {
        AmqpError::precondition(format!(
            "inequivalent arg '{arg}' for {kind} '{name}' in vhost '{}': received '{got}' but current is '{cur}'",
            self.name
        ))
    }
}

#[cfg(test)]
#[path = "vhost_test.rs"]
mod tests;
