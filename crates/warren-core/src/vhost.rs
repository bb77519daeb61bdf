//! The metadata of one virtual host: exchanges, queues, bindings, and routing.
//!
//! Every mutation validates first and changes state only when it succeeds, so a
//! failed declare leaves nothing behind. Mutations return what changed besides
//! the obvious (bindings and auto-delete exchanges removed along the way) so the
//! runtime can persist exactly that.

use std::collections::HashMap;

use crate::binding::{Binding, DestinationKind};
use crate::exchange::{ExchangeDef, ExchangeKind, RoutingIndex, Target, Targets, XMatch};
use crate::queue::args::{QueueArgs, check_equivalent};
use crate::queue::{ConnectionId, Home, QueueDef};
use crate::{AmqpError, FieldTable, Name, QueueId, ReplyCode};

/// The exchanges every vhost has, as RabbitMQ predeclares them.
pub const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// Most exchange-to-exchange hops a message may take; cycles are also cut.
const MAX_ROUTING_HOPS: usize = 32;

/// `exchange.declare` as the domain sees it.
#[derive(Clone, Debug)]
pub struct ExchangeDeclare<'a> {
    /// Name.
    pub name: &'a str,
    /// Type as sent (validated here).
    pub kind: &'a str,
    /// Only check that it exists.
    pub passive: bool,
    /// Durable.
    pub durable: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// Internal.
    pub internal: bool,
    /// Arguments.
    pub arguments: &'a FieldTable,
}

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
}

/// Side effects of a removal, for the runtime to persist.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Removed {
    /// Bindings that went away.
    pub bindings: Vec<Binding>,
    /// Exchanges that went away (the deleted one and auto-deleted ones).
    pub exchanges: Vec<ExchangeDef>,
}

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

    fn not_found(&self, kind: &str, name: &str) -> AmqpError {
        AmqpError::not_found(kind, name, &self.name)
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

    /// `exchange.declare`. Returns true when it created the exchange.
    pub fn declare_exchange(&mut self, d: &ExchangeDeclare<'_>) -> Result<bool, AmqpError> {
        if d.passive {
            return match self.exchanges.get(d.name) {
                Some(_) => Ok(false),
                None => Err(self.not_found("exchange", d.name)),
            };
        }
        if d.name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if d.name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        }
        let kind = ExchangeKind::parse(d.kind)?;
        if let Some(ae) = d.arguments.inner().get("alternate-exchange")
            && !matches!(
                ae,
                crate::AMQPValue::LongString(_) | crate::AMQPValue::ShortString(_)
            )
        {
            return Err(AmqpError::precondition(format!(
                "invalid arg 'alternate-exchange' for exchange '{}' in vhost '{}': {{unacceptable_type,{ae:?}}}",
                d.name, self.name
            )));
        }
        if let Some(existing) = self.exchanges.get(d.name) {
            let e = &existing.def;
            let mismatch = |arg: &str, got: String, cur: String| {
                Err(AmqpError::precondition(format!(
                    "inequivalent arg '{arg}' for exchange '{}' in vhost '{}': received '{got}' but current is '{cur}'",
                    d.name, self.name
                )))
            };
            if e.kind != kind {
                return mismatch("type", kind.as_str().into(), e.kind.as_str().into());
            }
            if e.durable != d.durable {
                return mismatch("durable", d.durable.to_string(), e.durable.to_string());
            }
            if e.auto_delete != d.auto_delete {
                return mismatch(
                    "auto_delete",
                    d.auto_delete.to_string(),
                    e.auto_delete.to_string(),
                );
            }
            if e.internal != d.internal {
                return mismatch("internal", d.internal.to_string(), e.internal.to_string());
            }
            let ae_new = d.arguments.inner().get("alternate-exchange");
            let ae_cur = e.arguments.inner().get("alternate-exchange");
            let same = match (ae_new, ae_cur) {
                (None, None) => true,
                (Some(a), Some(b)) => crate::exchange::loosely_equal(a, b),
                _ => false,
            };
            if !same {
                return mismatch(
                    "alternate-exchange",
                    format!("{ae_new:?}"),
                    format!("{ae_cur:?}"),
                );
            }
            return Ok(false);
        }
        self.insert_exchange(ExchangeDef {
            name: d.name.into(),
            kind,
            durable: d.durable,
            auto_delete: d.auto_delete,
            internal: d.internal,
            arguments: d.arguments.clone(),
        });
        Ok(true)
    }

    /// Restores an exchange from storage (no checks beyond the type).
    pub fn restore_exchange(&mut self, def: ExchangeDef) {
        self.insert_exchange(def);
    }

    /// `exchange.delete`.
    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> Result<Removed, AmqpError> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "operation not permitted on exchange '{name}'"
            )));
        }
        if !self.exchanges.contains_key(name) {
            return Err(self.not_found("exchange", name));
        }
        let in_use = self.bindings.get(name).is_some_and(|b| !b.is_empty());
        if if_unused && in_use {
            return Err(AmqpError::precondition(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        let mut removed = Removed::default();
        // Bindings from it, and exchange-to-exchange bindings to it.
        if let Some(from) = self.bindings.remove(name) {
            removed.bindings.extend(from.into_iter().map(|(b, _)| b));
        }
        self.remove_bindings_to(DestinationKind::Exchange, name, &mut removed);
        if let Some(e) = self.exchanges.remove(name) {
            removed.exchanges.push(e.def);
        }
        Ok(removed)
    }

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
            if d.passive {
                return Ok((q.clone(), false));
            }
            let mismatch = |arg: &str, got: bool, cur: bool| {
                Err(AmqpError::precondition(format!(
                    "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received '{got}' but current is '{cur}'",
                    d.name, self.name
                )))
            };
            if q.durable != d.durable {
                return mismatch("durable", d.durable, q.durable);
            }
            if q.exclusive_owner.is_some() != d.exclusive {
                return Err(self.locked(d.name));
            }
            if q.auto_delete != d.auto_delete {
                return mismatch("auto_delete", d.auto_delete, q.auto_delete);
            }
            check_equivalent(&q.arguments, d.arguments, d.name, &self.name)?;
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
        let def = QueueDef {
            name: d.name.into(),
            id: new_id,
            durable: d.durable,
            exclusive_owner: d.exclusive.then_some(d.owner),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
            args,
            home: d.home,
        };
        self.queues.insert(def.name.clone(), def.clone());
        Ok((def, true))
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

    fn remove_bindings_to(&mut self, kind: DestinationKind, dest: &str, removed: &mut Removed) {
        let mut touched = vec![];
        let mut gone = vec![];
        for (source, list) in self.bindings.iter_mut() {
            let before = gone.len();
            list.retain(|(b, t)| {
                let hit = b.kind == kind && &*b.destination == dest;
                if hit {
                    gone.push((b.clone(), t.clone()));
                }
                !hit
            });
            if gone.len() != before {
                touched.push(source.clone());
            }
        }
        for (b, t) in gone {
            if let Some(e) = self.exchanges.get_mut(&*b.source) {
                e.index.remove(&b.routing_key, &b.arguments, &t);
            }
            removed.bindings.push(b);
        }
        touched.sort();
        for source in touched {
            self.after_unbind(&source, removed);
        }
    }

    /// Deletes an auto-delete exchange that no longer has bindings.
    fn after_unbind(&mut self, source: &str, removed: &mut Removed) {
        if self.bindings.get(source).is_some_and(|l| !l.is_empty()) {
            return;
        }
        self.bindings.remove(source);
        let auto = self
            .exchanges
            .get(source)
            .is_some_and(|e| e.def.auto_delete);
        if auto && let Some(e) = self.exchanges.remove(source) {
            removed.exchanges.push(e.def);
            self.remove_bindings_to(DestinationKind::Exchange, source, removed);
        }
    }

    fn check_bindable(&self, b: &Binding, conn: ConnectionId) -> Result<Target, AmqpError> {
        if b.source.is_empty() || (b.kind == DestinationKind::Exchange && b.destination.is_empty())
        {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        let target = match b.kind {
            DestinationKind::Queue => Target::Queue(self.queue_for(&b.destination, conn)?.id),
            DestinationKind::Exchange => {
                if !self.exchanges.contains_key(&*b.destination) {
                    return Err(self.not_found("exchange", &b.destination));
                }
                Target::Exchange(b.destination.clone())
            }
        };
        let source = self
            .exchanges
            .get(&*b.source)
            .ok_or_else(|| self.not_found("exchange", &b.source))?;
        if source.def.kind == ExchangeKind::Headers {
            XMatch::from_args(&b.arguments)?;
        }
        Ok(target)
    }

    /// `queue.bind` / `exchange.bind`. Returns true when the binding is new
    /// (binding twice is not an error).
    pub fn bind(&mut self, b: Binding, conn: ConnectionId) -> Result<bool, AmqpError> {
        let target = self.check_bindable(&b, conn)?;
        let list = self.bindings.entry(b.source.clone()).or_default();
        if list.iter().any(|(x, _)| *x == b) {
            return Ok(false);
        }
        if let Some(e) = self.exchanges.get_mut(&*b.source) {
            e.index.add(&b.routing_key, &b.arguments, target.clone());
        }
        list.push((b, target));
        Ok(true)
    }

    /// Restores a binding from storage; bindings whose ends are gone are dropped.
    pub fn restore_binding(&mut self, b: Binding) -> bool {
        let target = match b.kind {
            DestinationKind::Queue => self
                .queues
                .get(&*b.destination)
                .map(|q| Target::Queue(q.id)),
            DestinationKind::Exchange => self
                .exchanges
                .contains_key(&*b.destination)
                .then(|| Target::Exchange(b.destination.clone())),
        };
        match (target, self.exchanges.get_mut(&*b.source)) {
            (Some(t), Some(e)) => {
                e.index.add(&b.routing_key, &b.arguments, t.clone());
                self.bindings
                    .entry(b.source.clone())
                    .or_default()
                    .push((b, t));
                true
            }
            _ => false,
        }
    }

    /// `queue.unbind` / `exchange.unbind`. Unbinding a binding that does not
    /// exist is not an error (RabbitMQ); missing ends are 404s.
    pub fn unbind(&mut self, b: &Binding, conn: ConnectionId) -> Result<Removed, AmqpError> {
        self.check_bindable(b, conn)?;
        let mut removed = Removed::default();
        let Some(list) = self.bindings.get_mut(&*b.source) else {
            return Ok(removed);
        };
        let Some(pos) = list.iter().position(|(x, _)| x == b) else {
            return Ok(removed);
        };
        let (gone, target) = list.remove(pos);
        if let Some(e) = self.exchanges.get_mut(&*b.source) {
            e.index.remove(&gone.routing_key, &gone.arguments, &target);
        }
        removed.bindings.push(gone);
        self.after_unbind(&b.source, &mut removed);
        Ok(removed)
    }

    /// Routes a message published to `exchange`, appending the target queues'
    /// ids to `out` (sorted, without duplicates). A missing exchange is a 404,
    /// an internal one a 403, as in RabbitMQ.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut smallvec::SmallVec<[QueueId; 4]>,
    ) -> Result<(), AmqpError> {
        let e = self
            .exchanges
            .get(exchange)
            .ok_or_else(|| self.not_found("exchange", exchange))?;
        if e.def.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        if exchange.is_empty() {
            if let Some(q) = self.queues.get(routing_key) {
                out.push(q.id);
            }
            return Ok(());
        }
        let mut visited: smallvec::SmallVec<[&str; 8]> = smallvec::SmallVec::new();
        self.route_from(e, routing_key, headers, out, &mut visited);
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        Ok(())
    }

    fn route_from<'a>(
        &'a self,
        e: &'a ExchangeEntry,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut smallvec::SmallVec<[QueueId; 4]>,
        visited: &mut smallvec::SmallVec<[&'a str; 8]>,
    ) {
        if visited.len() >= MAX_ROUTING_HOPS || visited.contains(&&*e.def.name) {
            return;
        }
        visited.push(&e.def.name);
        let before = out.len();
        let mut targets = Targets::new();
        e.index.route(routing_key, headers, &mut targets);
        for t in targets {
            match t {
                Target::Queue(id) => out.push(id),
                Target::Exchange(name) => {
                    if let Some(next) = self.exchanges.get(&*name) {
                        self.route_from(next, routing_key, headers, out, visited);
                    }
                }
            }
        }
        if out.len() == before
            && let Some(ae) = e.def.alternate_exchange()
            && let Some(next) = self.exchanges.get(ae)
        {
            self.route_from(next, routing_key, headers, out, visited);
        }
    }

    /// Queues owned by a connection (deleted when it closes).
    pub fn exclusive_queues_of(&self, conn: ConnectionId) -> Vec<Name> {
        let mut v: Vec<Name> = self
            .queues
            .values()
            .filter(|q| q.exclusive_owner == Some(conn))
            .map(|q| q.name.clone())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
#[path = "vhost_test.rs"]
mod tests;
