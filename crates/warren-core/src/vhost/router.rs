//! Routing a published message: from an exchange to the ids of its target
//! queues.
//!
//! Each exchange's own index finds its direct targets; this file follows
//! exchange-to-exchange bindings and alternate exchanges (tried only when an
//! exchange routed nowhere), cutting cycles and long chains so a bad topology
//! cannot loop.

use smallvec::SmallVec;

use super::{ExchangeEntry, VHost};
use crate::exchange::{Target, Targets};
use crate::{AmqpError, FieldTable, QueueId};

/// Most exchange-to-exchange hops a message may take; cycles are also cut.
const MAX_ROUTING_HOPS: usize = 32;

impl VHost {
    /// Routes a message published to `exchange`, appending the target queues'
    /// ids to `out` (sorted, without duplicates). A missing exchange is a 404,
    /// an internal one a 403, as in RabbitMQ.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut SmallVec<[QueueId; 4]>,
    ) -> Result<(), AmqpError> {
        self.route_as(false, exchange, routing_key, headers, out)
    }

    /// Routes as [`VHost::route`] does, for the broker itself: an internal
    /// exchange takes the message (RabbitMQ's dead-lettering publishes to
    /// one as to any other).
    pub fn route_internal(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut SmallVec<[QueueId; 4]>,
    ) -> Result<(), AmqpError> {
        self.route_as(true, exchange, routing_key, headers, out)
    }

    fn route_as(
        &self,
        broker: bool,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut SmallVec<[QueueId; 4]>,
    ) -> Result<(), AmqpError> {
        let e = self
            .exchanges
            .get(exchange)
            .ok_or_else(|| self.not_found("exchange", exchange))?;
        if e.def.internal && !broker {
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
        let mut visited: SmallVec<[&str; 8]> = SmallVec::new();
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
        out: &mut SmallVec<[QueueId; 4]>,
        visited: &mut SmallVec<[&'a str; 8]>,
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
}
