//! Direct reply-to on a channel (see [`warren_queues::reply_to`]): the
//! reply consumer, the `reply_to` property rewritten on publish, replies
//! routed to their channel, and `queue.declare` of the pseudo-queue. Codes
//! and texts are RabbitMQ's.

use amq_protocol::protocol::{AMQPClass, basic, queue};
use rand::Rng;
use warren_amqp::Content;
use warren_core::message::MessageFlags;
use warren_core::{AmqpError, Message, ReplyCode};
use warren_queues::reply_to::{Address, Handed, PREFIX, PSEUDO_QUEUE, link_id};

use super::ctx::{ConnCtx, PendingPublish};
use super::{Channel, Mode, reply};

/// Whether `name` is the pseudo-queue or an address in it.
pub(super) fn is_reply_name(name: &str) -> bool {
    name == PSEUDO_QUEUE || name.starts_with(PREFIX)
}

impl Channel {
    /// `basic.consume` from `amq.rabbitmq.reply-to`.
    pub(super) fn consume_reply(
        &mut self,
        c: basic::Consume,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        let tag = self.new_consumer_tag(c.consumer_tag.as_str())?;
        if !c.no_ack {
            return Err(AmqpError::precondition("reply consumer cannot acknowledge"));
        }
        if self.reply.is_some() {
            return Err(AmqpError::precondition("reply consumer already set"));
        }
        let key: u128 = rand::rng().random();
        let registration =
            ctx.broker
                .replies()
                .register(self.key, tag.clone(), key, ctx.events.clone());
        self.reply = Some(registration);
        self.answer(
            ctx,
            c.nowait,
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                consumer_tag: tag.as_ref().into(),
            })),
        )
    }

    /// `basic.cancel` of the reply consumer, if `tag` is its: true when it
    /// was (and the answer is written).
    pub(super) fn cancel_reply(
        &mut self,
        c: &basic::Cancel,
        ctx: &mut ConnCtx,
    ) -> Result<bool, AmqpError> {
        let ours = self
            .reply
            .as_ref()
            .is_some_and(|r| &**r.tag() == c.consumer_tag.as_str());
        if !ours {
            return Ok(false);
        }
        self.reply = None;
        self.answer(
            ctx,
            c.nowait,
            AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                consumer_tag: c.consumer_tag.clone(),
            })),
        )?;
        Ok(true)
    }

    /// A publish whose `reply_to` is the pseudo-queue gets this channel's
    /// address there; without a reply consumer it is refused (406).
    pub(super) fn set_reply_to(&self, c: &mut Content) -> Result<(), AmqpError> {
        let asks = c
            .header
            .properties
            .reply_to()
            .as_ref()
            .is_some_and(|r| r.as_str() == PSEUDO_QUEUE);
        if !asks {
            return Ok(());
        }
        let Some(r) = &self.reply else {
            return Err(AmqpError::precondition(
                "fast reply consumer does not exist",
            ));
        };
        let name = r.address().name();
        let (raw, props) = warren_amqp::properties::with_reply_to(&c.header.raw_properties, &name)
            .ok_or_else(|| {
                AmqpError::new(ReplyCode::InternalError, "could not rewrite reply_to")
            })?;
        c.header.raw_properties = raw.into();
        c.header.properties = props;
        Ok(())
    }

    /// A publish to the default exchange with an address of the
    /// pseudo-queue as routing key: straight to that channel, here or
    /// through the link to its node. Confirmed at once, as RabbitMQ does
    /// (nothing stores a reply); returned under `mandatory` only when this
    /// node knows nobody takes it.
    pub(super) fn route_reply(
        &mut self,
        c: &Content,
        flags: MessageFlags,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        let rk = c.method.routing_key.as_str();
        let msg = Message::new(
            "".into(),
            rk,
            &c.header.raw_properties,
            c.body.iter().map(|b| &b[..]),
            flags,
        );
        if matches!(self.mode, Mode::Confirm | Mode::Tx) {
            self.confirms_dirty = true;
            self.confirms.publish(0);
        }
        let me = ctx.broker.config().node_id;
        let routed = match Address::parse(rk) {
            Some(a) if a.node() == me => {
                ctx.broker.replies().deliver(&a, msg.clone()) != Handed::NoConsumer
            }
            Some(a) => {
                let id = link_id(a.node());
                let route = match ctx.publishes.get(&id) {
                    Some(p) => Some(p.handle.clone()),
                    None => {
                        let node = ctx.broker.node().clone();
                        ctx.broker
                            .registry()
                            .reply_route(a.node(), || node.peer_addr(a.node()).is_some())
                    }
                };
                match route {
                    Some(handle) => {
                        ctx.publishes.entry(id).or_insert_with(|| PendingPublish {
                            handle,
                            items: Vec::new(),
                        });
                        ctx.enqueue(id, (msg.clone(), None));
                        true
                    }
                    None => false,
                }
            }
            None => false,
        };
        if !routed && c.method.mandatory {
            self.basic_return(&msg, "", rk, ctx)?;
        }
        Ok(())
    }

    /// `queue.declare` of the pseudo-queue (always there) or of an address
    /// in it (there while its consumer is): RabbitMQ answers both, passive
    /// or not, with 0 messages and 1 consumer.
    pub(super) fn declare_reply(
        &mut self,
        d: &queue::Declare,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        let name = d.queue.as_str();
        let exists = name == PSEUDO_QUEUE
            || Address::parse(name).is_some_and(|a| {
                if a.node() == ctx.broker.config().node_id {
                    ctx.broker.replies().exists(&a)
                } else {
                    // Its node answers for it: known only as a member.
                    ctx.broker.node().peer_addr(a.node()).is_some()
                }
            });
        if !exists {
            return Err(AmqpError::new(
                ReplyCode::NotFound,
                format!("no queue '{name}' in vhost '{}'", ctx.vhost),
            ));
        }
        self.last_queue = Some(name.into());
        if d.nowait {
            return Ok(());
        }
        reply(
            ctx,
            self.id,
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                queue: name.into(),
                message_count: 0,
                consumer_count: 1,
            })),
        )
    }
}
