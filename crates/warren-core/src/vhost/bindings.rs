//! The binding table of a vhost: bind, unbind, restore, and the cascade when
//! one end of a binding goes.
//!
//! The table (bindings by source exchange) is the source of truth; each
//! exchange's routing index is derived from it, so every change here updates
//! both. An auto-delete exchange goes with its last binding, which may remove
//! exchange-to-exchange bindings to it in turn: the cascade lives here.

use super::{Removed, VHost};
use crate::AmqpError;
use crate::binding::{Binding, DestinationKind};
use crate::exchange::{ExchangeKind, Target, XMatch};
use crate::queue::ConnectionId;

impl VHost {
    /// Removes every binding to `dest` (a queue or an exchange that is going),
    /// then the auto-delete exchanges this leaves without bindings.
    pub(super) fn remove_bindings_to(
        &mut self,
        kind: DestinationKind,
        dest: &str,
        removed: &mut Removed,
    ) {
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

    /// Both ends exist and `conn` may use them; returns the resolved target.
    fn check_bindable(&self, b: &Binding, conn: ConnectionId) -> Result<Target, AmqpError> {
        check_not_default(b)?;
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
        // As RabbitMQ's `rabbit_binding:remove`: unbinding what is not bound,
        // or from an exchange or queue that is gone, succeeds (clean-up code
        // deletes a queue, then unbinds it); only an existing binding is
        // checked for access to its queue.
        check_not_default(b)?;
        let mut removed = Removed::default();
        let bound = self
            .bindings
            .get(&*b.source)
            .is_some_and(|list| list.iter().any(|(x, _)| x == b));
        if !bound {
            return Ok(removed);
        }
        if b.kind == DestinationKind::Queue {
            self.queue_for(&b.destination, conn)?;
        }
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
}

/// The default exchange's bindings are implicit: neither end of a binding
/// may be it (403).
fn check_not_default(b: &Binding) -> Result<(), AmqpError> {
    if b.source.is_empty() || (b.kind == DestinationKind::Exchange && b.destination.is_empty()) {
        return Err(AmqpError::access_refused(
            "operation not permitted on the default exchange",
        ));
    }
    Ok(())
}
