//! Exchanges, queues and bindings: the channel side of the metadata methods.
//!
//! Each handler checks what it can at once (names, the empty-name shortcut),
//! then hands the broker's part to [`Channel::defer`]: it runs beside the
//! connection (see [`super::in_flight`]) and its [`Done`] comes back as the
//! channel's reply.

use amq_protocol::protocol::{AMQPClass, exchange, queue};
use amq_protocol::types::{AMQPValue, FieldTable};
use warren_core::access::{Access, Resource};
use warren_core::binding::{Binding, DestinationKind};
use warren_core::vhost::{ExchangeDeclare, QueueDeclare};
use warren_core::{AmqpError, Name, ReplyCode};

use super::Channel;
use super::consume::generated_name;
use super::ctx::ConnCtx;
use super::in_flight::Done;
use super::reply_to;

/// The four binding methods: `queue.bind`, `queue.unbind`, `exchange.bind`
/// and `exchange.unbind`. They differ only in their destination's kind,
/// their direction and their reply.
#[derive(Debug)]
pub(super) enum BindMethod {
    /// `queue.bind`.
    QueueBind(queue::Bind),
    /// `queue.unbind` (it has no `nowait`).
    QueueUnbind(queue::Unbind),
    /// `exchange.bind`.
    ExchangeBind(exchange::Bind),
    /// `exchange.unbind`.
    ExchangeUnbind(exchange::Unbind),
}

impl Channel {
    pub(super) fn exchange_declare(
        &mut self,
        d: exchange::Declare,
        ctx: &ConnCtx,
    ) -> Result<(), AmqpError> {
        if !d.passive {
            let name = d.exchange.as_str();
            ctx.check(Access::Configure, Resource::Exchange(name))?;
            // As RabbitMQ: an alternate exchange is written to with what
            // is read from this one.
            if let Some(ae) = string_arg(&d.arguments, "alternate-exchange") {
                ctx.check(Access::Write, Resource::Exchange(ae))?;
                ctx.check(Access::Read, Resource::Exchange(name))?;
            }
        }
        let (broker, vhost) = (ctx.broker.clone(), ctx.vhost.clone());
        self.defer(async move {
            broker
                .declare_exchange(
                    &vhost,
                    &ExchangeDeclare {
                        name: d.exchange.as_str(),
                        kind: d.kind.as_str(),
                        passive: d.passive,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        arguments: &d.arguments,
                    },
                )
                .await?;
            Ok(Done::reply(
                d.nowait,
                AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
            ))
        });
        Ok(())
    }

    pub(super) fn exchange_delete(
        &mut self,
        d: exchange::Delete,
        ctx: &ConnCtx,
    ) -> Result<(), AmqpError> {
        ctx.check(Access::Configure, Resource::Exchange(d.exchange.as_str()))?;
        let (broker, vhost) = (ctx.broker.clone(), ctx.vhost.clone());
        self.defer(async move {
            match broker
                .delete_exchange(&vhost, d.exchange.as_str(), d.if_unused)
                .await
            {
                // Deleting a missing exchange succeeds in RabbitMQ 3.x and later.
                Err(e) if e.code == ReplyCode::NotFound => {}
                other => other?,
            }
            Ok(Done::reply(
                d.nowait,
                AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
            ))
        });
        Ok(())
    }

    pub(super) fn queue_declare(
        &mut self,
        d: queue::Declare,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        if reply_to::is_reply_name(d.queue.as_str()) {
            return self.declare_reply(&d, ctx);
        }
        let server_named = d.queue.as_str().is_empty() && !d.passive;
        let name: Name = if server_named {
            generated_name("amq.gen-").into()
        } else {
            self.queue_name(d.queue.as_str())?
        };
        if !d.passive {
            ctx.check(Access::Configure, Resource::Queue(&name))?;
            // As RabbitMQ: dead letters are read from this queue and
            // written to their exchange.
            if let Some(dlx) = string_arg(&d.arguments, "x-dead-letter-exchange") {
                ctx.check(Access::Read, Resource::Queue(&name))?;
                ctx.check(Access::Write, Resource::Exchange(dlx))?;
            }
        }
        let (broker, owner, vhost) = (ctx.broker.clone(), ctx.id, ctx.vhost.clone());
        self.defer(async move {
            let (def, messages, consumers) = broker
                .declare_queue(
                    &vhost,
                    &QueueDeclare {
                        name: &name,
                        passive: d.passive,
                        durable: d.durable,
                        exclusive: d.exclusive,
                        auto_delete: d.auto_delete,
                        arguments: &d.arguments,
                        owner,
                        server_named,
                        home: broker.home(),
                        replicas: &[],
                    },
                )
                .await?;
            let mut done = Done::reply(
                d.nowait,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: def.name.as_ref().into(),
                    message_count: messages,
                    consumer_count: consumers,
                })),
            );
            done.last_queue = Some(def.name);
            Ok(done)
        });
        Ok(())
    }

    pub(super) fn queue_purge(&mut self, p: queue::Purge, ctx: &ConnCtx) -> Result<(), AmqpError> {
        let name = self.queue_name(p.queue.as_str())?;
        ctx.check(Access::Read, Resource::Queue(&name))?;
        let (broker, conn, vhost) = (ctx.broker.clone(), ctx.id, ctx.vhost.clone());
        self.defer(async move {
            let n = broker.purge_queue(&vhost, &name, conn).await?;
            Ok(Done::reply(
                p.nowait,
                AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                    message_count: n,
                })),
            ))
        });
        Ok(())
    }

    pub(super) fn queue_delete(
        &mut self,
        d: queue::Delete,
        ctx: &ConnCtx,
    ) -> Result<(), AmqpError> {
        let name = self.queue_name(d.queue.as_str())?;
        ctx.check(Access::Configure, Resource::Queue(&name))?;
        let (broker, conn, vhost) = (ctx.broker.clone(), ctx.id, ctx.vhost.clone());
        self.defer(async move {
            let n = match broker
                .delete_queue(&vhost, &name, conn, d.if_unused, d.if_empty)
                .await
            {
                Ok(n) => n,
                // Deleting a missing queue succeeds in RabbitMQ 3.x and later.
                Err(e) if e.code == ReplyCode::NotFound => 0,
                Err(e) => return Err(e),
            };
            Ok(Done::reply(
                d.nowait,
                AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                    message_count: n,
                })),
            ))
        });
        Ok(())
    }

    /// One of the [`BindMethod`]s.
    pub(super) fn change_binding(&mut self, m: BindMethod, ctx: &ConnCtx) -> Result<(), AmqpError> {
        use BindMethod as M;
        let (source, destination, kind, key, arguments) = match &m {
            M::QueueBind(b) => (
                &b.exchange,
                &b.queue,
                DestinationKind::Queue,
                &b.routing_key,
                &b.arguments,
            ),
            M::QueueUnbind(b) => (
                &b.exchange,
                &b.queue,
                DestinationKind::Queue,
                &b.routing_key,
                &b.arguments,
            ),
            M::ExchangeBind(b) => (
                &b.source,
                &b.destination,
                DestinationKind::Exchange,
                &b.routing_key,
                &b.arguments,
            ),
            M::ExchangeUnbind(b) => (
                &b.source,
                &b.destination,
                DestinationKind::Exchange,
                &b.routing_key,
                &b.arguments,
            ),
        };
        let destination: Name = match kind {
            DestinationKind::Queue => self.queue_name(destination.as_str())?,
            DestinationKind::Exchange => destination.as_str().into(),
        };
        // As RabbitMQ: a binding is written to its destination and read
        // from its source, both ways (bind and unbind).
        let target = match kind {
            DestinationKind::Queue => Resource::Queue(&destination),
            DestinationKind::Exchange => Resource::Exchange(&destination),
        };
        ctx.check(Access::Write, target)?;
        ctx.check(Access::Read, Resource::Exchange(source.as_str()))?;
        let binding = Binding {
            source: source.as_str().into(),
            destination,
            kind,
            routing_key: key.as_str().to_owned(),
            arguments: arguments.clone(),
        };
        let (bind, nowait, ok) = match m {
            M::QueueBind(b) => (
                true,
                b.nowait,
                AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
            ),
            M::QueueUnbind(_) => (
                false,
                false,
                AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
            ),
            M::ExchangeBind(b) => (
                true,
                b.nowait,
                AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
            ),
            M::ExchangeUnbind(b) => (
                false,
                b.nowait,
                AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
            ),
        };
        let (broker, conn, vhost) = (ctx.broker.clone(), ctx.id, ctx.vhost.clone());
        self.defer(async move {
            broker.bind(&vhost, binding, conn, bind).await?;
            Ok(Done::reply(nowait, ok))
        });
        Ok(())
    }
}

/// A string argument (`alternate-exchange`, `x-dead-letter-exchange`) for
/// the permission checks; a value of another type is left to the
/// declaration's own checks (406).
fn string_arg<'a>(args: &'a FieldTable, key: &str) -> Option<&'a str> {
    match args.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}
