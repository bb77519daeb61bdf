//! Exchanges of a vhost: declare (with RabbitMQ's equivalence rules), delete,
//! restore.
//!
//! A redeclare must match the existing exchange in type, flags and
//! `alternate-exchange`, so two clients never silently disagree about what an
//! exchange does; the predeclared `amq.*` and default exchanges are not theirs
//! to change.

use super::{Removed, VHost};
use crate::binding::DestinationKind;
use crate::exchange::{ExchangeDef, ExchangeKind};
use crate::{AMQPValue, AmqpError, FieldTable};

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

impl VHost {
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
            && !matches!(ae, AMQPValue::LongString(_) | AMQPValue::ShortString(_))
        {
            return Err(AmqpError::precondition(format!(
                "invalid arg 'alternate-exchange' for exchange '{}' in vhost '{}': {{unacceptable_type,{ae:?}}}",
                d.name, self.name
            )));
        }
        if let Some(existing) = self.exchanges.get(d.name) {
            return self
                .check_exchange_equivalent(&existing.def, d, kind)
                .map(|()| false);
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

    /// A redeclare of `e` must ask for what it is (406 naming the first
    /// difference otherwise).
    fn check_exchange_equivalent(
        &self,
        e: &ExchangeDef,
        d: &ExchangeDeclare<'_>,
        kind: ExchangeKind,
    ) -> Result<(), AmqpError> {
        let mismatch = |arg: &str, got: String, cur: String| {
            Err(self.inequivalent("exchange", d.name, arg, got, cur))
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
        if !crate::exchange::equivalent_arg(ae_new, ae_cur) {
            return mismatch(
                "alternate-exchange",
                format!("{ae_new:?}"),
                format!("{ae_cur:?}"),
            );
        }
        Ok(())
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
}
