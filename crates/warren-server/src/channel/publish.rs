//! `basic.publish`: validate, route, hand to queues, return if unroutable.

use amq_protocol::protocol::{AMQPClass, basic};
use smallvec::SmallVec;
use warren_amqp::{Content, encode};
use warren_core::access::{Access, Resource};
use warren_core::message::MessageFlags;
use warren_core::queue::expiry;
use warren_core::{AmqpError, Message, Name, QueueId, ReplyCode};

use super::ctx::{ConnCtx, PendingPublish};
use super::{Channel, Mode, reply};

impl Channel {
    pub(super) fn publish(&mut self, mut c: Content, ctx: &mut ConnCtx) -> Result<(), AmqpError> {
        // Its body was counted as held while it arrived; queues count it now.
        ctx.held -= c.header.body_size as i64;
        if c.method.immediate {
            // RabbitMQ dropped `immediate` in 3.0 and refuses it the same way.
            return Err(AmqpError::new(ReplyCode::NotImplemented, "immediate=true"));
        }
        if let Some(uid) = c.header.properties.user_id()
            && uid.as_str() != ctx.user
        {
            return Err(AmqpError::precondition(format!(
                "user_id property set to '{}' but authenticated user was '{}'",
                uid.as_str(),
                ctx.user
            )));
        }
        self.set_reply_to(&mut c)?;
        ctx.has_published = true;
        if self.mode == Mode::Tx {
            // Checked at once, as RabbitMQ does (and again when routed).
            ctx.check(
                Access::Write,
                Resource::Exchange(c.method.exchange.as_str()),
            )?;
            // Checked at once, as RabbitMQ does; its clock starts at commit.
            if let Some(e) = c.header.properties.expiration() {
                expiry::parse_expiration(e.as_str())?;
            }
            // Held until commit or rollback.
            ctx.held += c.header.body_size as i64;
            self.tx.bytes += c.header.body_size;
            self.tx.publishes.push(c);
            return Ok(());
        }
        self.route(c, ctx)
    }

    /// Routes one message and adds it to the burst of each target queue.
    pub(super) fn route(&mut self, c: Content, ctx: &mut ConnCtx) -> Result<(), AmqpError> {
        let props = &c.header.properties;
        let persistent = *props.delivery_mode() == Some(2);
        // A per-message TTL starts at the publish (an invalid one closes the
        // channel with 406, as in RabbitMQ).
        let expires = match props.expiration() {
            Some(e) => {
                let ttl = expiry::parse_expiration(e.as_str())?;
                let at = expiry::deadline(warren_queues::clock::unix_ms(), ttl);
                std::num::NonZeroU64::new(at.max(1))
            }
            None => None,
        };
        let flags = MessageFlags {
            persistent,
            priority: props.priority().unwrap_or(0),
            expires,
        };
        if c.method.exchange.as_str().is_empty()
            && c.method
                .routing_key
                .as_str()
                .starts_with(warren_queues::reply_to::PREFIX)
        {
            ctx.check(Access::Write, Resource::Exchange(""))?;
            return self.route_reply(&c, flags, ctx);
        }
        let exchange = c.method.exchange.as_str();
        let routing_key = c.method.routing_key.as_str();
        let mut ids: SmallVec<[QueueId; 4]> = SmallVec::new();
        let exchange_name: Name;
        {
            let st = ctx.broker.read();
            st.check(
                &ctx.vhost,
                &ctx.user,
                Access::Write,
                Resource::Exchange(exchange),
            )?;
            let vhost = st.vhost(&ctx.vhost)?;
            vhost.route(exchange, routing_key, props.headers().as_ref(), &mut ids)?;
            exchange_name = vhost
                .exchange(exchange)
                .map(|e| e.name.clone())
                .unwrap_or_else(|| "".into());
            for id in &ids {
                if ctx.publishes.contains_key(id) {
                    continue;
                }
                if let Some(h) = st.queue(*id) {
                    let p = PendingPublish {
                        handle: h.clone(),
                        items: Vec::new(),
                    };
                    ctx.publishes.insert(*id, p);
                }
            }
        }
        let msg = Message::new(
            exchange_name,
            routing_key,
            &c.header.raw_properties,
            c.body.iter().map(|b| &b[..]),
            flags,
        );
        // Every target queue accepts the message on its own terms before the
        // publisher's confirm (DESIGN.md): enqueued, and written first if it
        // is persistent and the queue durable.
        let waits = ids.len() as u32;
        let seq = match self.mode {
            Mode::Confirm | Mode::Tx => {
                self.confirms_dirty = true;
                Some(self.confirms.publish(waits))
            }
            Mode::Normal => None,
        };
        if ids.is_empty() {
            if c.method.mandatory {
                self.basic_return(&msg, exchange, routing_key, ctx)?;
            }
            return Ok(());
        }
        let confirm = seq.map(|s| (self.key, s));
        for id in ids {
            ctx.enqueue(id, (msg.clone(), confirm));
        }
        Ok(())
    }

    pub(super) fn basic_return(
        &mut self,
        msg: &Message,
        exchange: &str,
        routing_key: &str,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        reply(
            ctx,
            self.id,
            AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: ReplyCode::NoRoute.code(),
                reply_text: "NO_ROUTE".into(),
                exchange: exchange.into(),
                routing_key: routing_key.into(),
            })),
        )?;
        encode::content(
            &mut ctx.out,
            self.id,
            msg.raw_properties(),
            msg.body(),
            ctx.frame_max,
        )
        .map_err(|e| AmqpError::new(ReplyCode::InternalError, e.to_string()))
    }
}
