//! Exchanges, queues and bindings: the channel side of the metadata methods.

use amq_protocol::protocol::{AMQPClass, exchange, queue};
use amq_protocol::types::FieldTable;
use warren_core::binding::{Binding, DestinationKind};
use warren_core::vhost::{ExchangeDeclare, QueueDeclare};
use warren_core::{AmqpError, Name};

use super::consume::generated_name;
use super::{Channel, reply};
use crate::connection::ctx::ConnCtx;

fn binding(
    source: &str,
    destination: Name,
    kind: DestinationKind,
    key: &str,
    arguments: FieldTable,
) -> Binding {
    Binding {
        source: source.into(),
        destination,
        kind,
        routing_key: key.to_owned(),
        arguments,
    }
}

impl Channel {
    pub(super) async fn exchange_declare(
        &mut self,
        d: exchange::Declare,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        ctx.broker
            .declare_exchange(&ExchangeDeclare {
                name: d.exchange.as_str(),
                kind: d.kind.as_str(),
                passive: d.passive,
                durable: d.durable,
                auto_delete: d.auto_delete,
                internal: d.internal,
                arguments: &d.arguments,
            })
            .await?;
        if d.nowait {
            return Ok(());
        }
        reply(
            ctx,
            self.id,
            AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
        )
    }

    pub(super) async fn exchange_delete(
        &mut self,
        d: exchange::Delete,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        match ctx
            .broker
            .delete_exchange(d.exchange.as_str(), d.if_unused)
            .await
        {
            // Deleting a missing exchange succeeds in RabbitMQ 3.x and later.
            Err(e) if e.code == warren_core::ReplyCode::NotFound => {}
            other => other?,
        }
        if d.nowait {
            return Ok(());
        }
        reply(
            ctx,
            self.id,
            AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
        )
    }

    pub(super) async fn exchange_bind(
        &mut self,
        b: exchange::Bind,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        let binding = binding(
            b.source.as_str(),
            b.destination.as_str().into(),
            DestinationKind::Exchange,
            b.routing_key.as_str(),
            b.arguments,
        );
        ctx.broker.bind(binding, ctx.id).await?;
        if b.nowait {
            return Ok(());
        }
        reply(
            ctx,
            self.id,
            AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
        )
    }

    pub(super) async fn exchange_unbind(
        &mut self,
        b: exchange::Unbind,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        let binding = binding(
            b.source.as_str(),
            b.destination.as_str().into(),
            DestinationKind::Exchange,
            b.routing_key.as_str(),
            b.arguments,
        );
        ctx.broker.unbind(&binding, ctx.id).await?;
        if b.nowait {
            return Ok(());
        }
        reply(
            ctx,
            self.id,
            AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
        )
    }

    pub(super) async fn queue_declare(
        &mut self,
        d: queue::Declare,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        let server_named = d.queue.as_str().is_empty() && !d.passive;
        let name: Name = if server_named {
            generated_name("amq.gen-").into()
        } else {
            self.queue_name(d.queue.as_str())?
        };
        let (def, messages, consumers) = ctx
            .broker
            .declare_queue(&QueueDeclare {
                name: &name,
                passive: d.passive,
                durable: d.durable,
                exclusive: d.exclusive,
                auto_delete: d.auto_delete,
                arguments: &d.arguments,
                owner: ctx.id,
                server_named,
                home: ctx.broker.home(),
            })
            .await?;
        self.last_queue = Some(def.name.clone());
        if d.nowait {
            return Ok(());
        }
        reply(
            ctx,
            self.id,
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                queue: def.name.as_ref().into(),
                message_count: messages,
                consumer_count: consumers,
            })),
        )
    }

    pub(super) async fn queue_bind(
        &mut self,
        b: queue::Bind,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        let binding = binding(
            b.exchange.as_str(),
            self.queue_name(b.queue.as_str())?,
            DestinationKind::Queue,
            b.routing_key.as_str(),
            b.arguments,
        );
        ctx.broker.bind(binding, ctx.id).await?;
        if b.nowait {
            return Ok(());
        }
        reply(
            ctx,
            self.id,
            AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
        )
    }

    pub(super) async fn queue_unbind(
        &mut self,
        b: queue::Unbind,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        let binding = binding(
            b.exchange.as_str(),
            self.queue_name(b.queue.as_str())?,
            DestinationKind::Queue,
            b.routing_key.as_str(),
            b.arguments,
        );
        ctx.broker.unbind(&binding, ctx.id).await?;
        reply(
            ctx,
            self.id,
            AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
        )
    }

    pub(super) async fn queue_purge(
        &mut self,
        p: queue::Purge,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        let name = self.queue_name(p.queue.as_str())?;
        let n = ctx.broker.purge_queue(&name, ctx.id).await?;
        if p.nowait {
            return Ok(());
        }
        reply(
            ctx,
            self.id,
            AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                message_count: n,
            })),
        )
    }

    pub(super) async fn queue_delete(
        &mut self,
        d: queue::Delete,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        let name = self.queue_name(d.queue.as_str())?;
        let n = match ctx
            .broker
            .delete_queue(&name, ctx.id, d.if_unused, d.if_empty)
            .await
        {
            Ok(n) => n,
            // Deleting a missing queue succeeds in RabbitMQ 3.x and later.
            Err(e) if e.code == warren_core::ReplyCode::NotFound => 0,
            Err(e) => return Err(e),
        };
        if d.nowait {
            return Ok(());
        }
        reply(
            ctx,
            self.id,
            AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                message_count: n,
            })),
        )
    }
}
