//! Consumers, deliveries, acknowledgements, `basic.get` and `basic.qos`.

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::AMQPValue;
use rand::Rng;
use warren_amqp::encode;
use warren_core::access::{Access, Resource};
use warren_core::queue::ConsumerSpec;
use warren_core::{AmqpError, Name, ReplyCode};
use warren_queues::DeliverEvent;
use warren_queues::api::Verdict;

use super::ctx::{ConnCtx, HOLD_IN_HAND};
use super::{Channel, ChannelConsumer, Mode, Unacked, reply};

fn internal(e: impl std::fmt::Display) -> AmqpError {
    AmqpError::new(ReplyCode::InternalError, e.to_string())
}

/// `amq.ctag-` / `amq.gen-` plus 22 random URL-safe characters, as RabbitMQ.
pub(crate) fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + 22);
    s.push_str(prefix);
    for _ in 0..22 {
        s.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    s
}

fn priority_arg(args: &amq_protocol::types::FieldTable) -> Result<i32, AmqpError> {
    Ok(match args.inner().get("x-priority") {
        None => 0,
        Some(AMQPValue::ShortShortInt(i)) => (*i).into(),
        Some(AMQPValue::ShortShortUInt(i)) => (*i).into(),
        Some(AMQPValue::ShortInt(i)) => (*i).into(),
        Some(AMQPValue::ShortUInt(i)) => (*i).into(),
        Some(AMQPValue::LongInt(i)) => *i,
        Some(AMQPValue::LongUInt(i)) => (*i).min(i32::MAX as u32) as i32,
        Some(AMQPValue::LongLongInt(i)) => (*i).clamp(i32::MIN as i64, i32::MAX as i64) as i32,
        Some(other) => {
            return Err(AmqpError::precondition(format!(
                "invalid arg 'x-priority': {other:?} is not an integer"
            )));
        }
    })
}

impl Channel {
    pub(super) fn qos(&mut self, q: basic::Qos, ctx: &mut ConnCtx) -> Result<(), AmqpError> {
        // RabbitMQ's reading of `global`: true is a limit shared by the channel's
        // consumers, false a limit for each consumer created from now on.
        if q.global {
            self.credit.set_limit(q.prefetch_count.into());
            self.wake_queues();
        } else {
            self.prefetch = q.prefetch_count;
        }
        reply(
            ctx,
            self.id,
            AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        )
    }

    /// Whether `tag` names a consumer of this channel, of a queue or of
    /// replies.
    pub(super) fn has_consumer(&self, tag: &str) -> bool {
        self.consumers.contains_key(tag) || self.reply.as_ref().is_some_and(|r| &**r.tag() == tag)
    }

    /// The tag of a new consumer: `requested`, or a generated one when it
    /// is empty; 530 if a consumer of this channel (of a queue or of
    /// replies) has it already.
    pub(super) fn new_consumer_tag(&self, requested: &str) -> Result<Name, AmqpError> {
        let tag: Name = if requested.is_empty() {
            generated_name("amq.ctag-").into()
        } else {
            requested.into()
        };
        if self.has_consumer(&tag) {
            return Err(AmqpError::new(
                ReplyCode::NotAllowed,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        Ok(tag)
    }

    pub(super) async fn consume(
        &mut self,
        c: basic::Consume,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        if c.queue.as_str() == warren_queues::reply_to::PSEUDO_QUEUE {
            return self.consume_reply(c, ctx);
        }
        let name = self.queue_name(c.queue.as_str())?;
        ctx.check(Access::Read, Resource::Queue(&name))?;
        let handle = ctx.broker.queue_handle(&ctx.vhost, &name, ctx.id)?;
        let tag = self.new_consumer_tag(c.consumer_tag.as_str())?;
        let id = ctx.broker.ids().consumer();
        let spec = ConsumerSpec {
            id,
            tag: tag.clone(),
            channel: self.key,
            prefetch: self.prefetch.into(),
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            priority: priority_arg(&c.arguments)?,
        };
        handle
            .consume(spec, ctx.events.clone(), self.credit.clone())
            .await?;
        self.queues_used.insert(handle.id(), handle.clone());
        self.consumers
            .insert(tag.clone(), ChannelConsumer { id, queue: handle });
        self.answer(
            ctx,
            c.nowait,
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                consumer_tag: tag.as_ref().into(),
            })),
        )
    }

    pub(super) async fn cancel(
        &mut self,
        c: basic::Cancel,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        if self.cancel_reply(&c, ctx)? {
            return Ok(());
        }
        if let Some(cons) = self.consumers.remove(c.consumer_tag.as_str()) {
            cons.queue.cancel(cons.id).await;
        }
        self.answer(
            ctx,
            c.nowait,
            AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                consumer_tag: c.consumer_tag,
            })),
        )
    }

    /// A message for one of this channel's consumers.
    pub fn on_deliver(&mut self, ev: DeliverEvent, ctx: &mut ConnCtx) {
        let live = !self.closing
            && if warren_queues::reply_to::is_link_id(ev.queue) {
                self.reply.as_ref().is_some_and(|r| *r.tag() == ev.tag)
            } else {
                self.consumers.contains_key(&ev.tag)
            };
        if !live {
            // Cancelled or closing meanwhile: hand an unacked message back.
            if ev.needs_ack
                && let Some(c) = self.queues_used.get(&ev.queue).cloned()
            {
                ctx.settle(&c, self.key, ev.seq, Verdict::Requeue);
            }
            ev.flow.release();
            return;
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let before = ctx.out.len();
        // If anything else waits in `out`, it goes now, and this with it.
        let may_wait = ev.needs_ack && self.unacked.len() >= HOLD_IN_HAND;
        if ev.needs_ack {
            self.unacked.insert(
                tag,
                Unacked {
                    queue: ev.queue,
                    seq: ev.seq,
                    via_consumer: true,
                },
            );
        }
        let res = encode::deliver(
            &mut ctx.out,
            self.id,
            &ev.tag,
            tag,
            ev.redelivered,
            &ev.msg.exchange,
            ev.msg.routing_key(),
        )
        .and_then(|_| {
            encode::content(
                &mut ctx.out,
                self.id,
                ev.msg.raw_properties(),
                ev.msg.body(),
                ctx.frame_max,
            )
        });
        if let Err(e) = res {
            tracing::error!(cause = %e, "could not encode a delivery");
        }
        if may_wait {
            ctx.deferrable += ctx.out.len() - before;
        }
        ev.flow.release();
    }

    /// The queue of a consumer is gone: forget the consumer and, if the client
    /// understands it, send `basic.cancel`.
    pub fn on_cancelled(&mut self, tag: Name, ctx: &mut ConnCtx) {
        if self.consumers.remove(&tag).is_none() || self.closing {
            return;
        }
        if ctx.caps.consumer_cancel_notify {
            let _ = reply(
                ctx,
                self.id,
                AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: tag.as_ref().into(),
                    nowait: true,
                })),
            );
        }
    }

    /// `basic.ack` (`requeue == None`), `basic.nack` and `basic.reject`.
    pub(super) fn ack(
        &mut self,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        let unknown = || AmqpError::precondition(format!("unknown delivery tag {tag}"));
        let all = multiple && tag == 0;
        if !all && !self.unacked.contains_key(&tag) {
            return Err(unknown());
        }
        if self.mode == Mode::Tx {
            self.tx.acks.push((tag, multiple, requeue));
            return Ok(());
        }
        self.apply_ack(tag, multiple, requeue, ctx);
        Ok(())
    }

    pub(super) fn apply_ack(
        &mut self,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
        ctx: &mut ConnCtx,
    ) {
        let taken: Vec<(u64, Unacked)> = if multiple {
            let upto = if tag == 0 { u64::MAX } else { tag };
            let keys: Vec<u64> = self.unacked.range(..=upto).map(|(k, _)| *k).collect();
            keys.into_iter()
                .filter_map(|k| self.unacked.remove(&k).map(|u| (k, u)))
                .collect()
        } else {
            self.unacked
                .remove(&tag)
                .map(|u| vec![(tag, u)])
                .unwrap_or_default()
        };
        let mut released = 0;
        for (_, u) in &taken {
            if u.via_consumer {
                released += 1;
            }
            if let Some(h) = self.queues_used.get(&u.queue) {
                let h = h.clone();
                let verdict = match requeue {
                    None => Verdict::Ack,
                    Some(true) => Verdict::Requeue,
                    Some(false) => Verdict::Reject,
                };
                ctx.settle(&h, self.key, u.seq, verdict);
            }
        }
        if self.credit.release(released) {
            self.wake_queues();
        }
    }

    pub(super) fn recover(
        &mut self,
        requeue: bool,
        sync: bool,
        ctx: &mut ConnCtx,
    ) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::new(ReplyCode::NotImplemented, "requeue=false"));
        }
        self.apply_ack(0, true, Some(true), ctx);
        if sync {
            reply(
                ctx,
                self.id,
                AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
            )?;
        }
        Ok(())
    }

    pub(super) async fn get(&mut self, g: basic::Get, ctx: &mut ConnCtx) -> Result<(), AmqpError> {
        let name = self.queue_name(g.queue.as_str())?;
        ctx.check(Access::Read, Resource::Queue(&name))?;
        let handle = ctx.broker.queue_handle(&ctx.vhost, &name, ctx.id)?;
        // Before the answer: a get that failed may still have taken a
        // message, which this channel's close then returns.
        self.queues_used.insert(handle.id(), handle.clone());
        let got = handle.get(self.key, g.no_ack).await?;
        let Some((entry, remaining)) = got else {
            return reply(
                ctx,
                self.id,
                AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
            );
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        if !g.no_ack {
            self.unacked.insert(
                tag,
                Unacked {
                    queue: handle.id(),
                    seq: entry.seq,
                    via_consumer: false,
                },
            );
        }
        let m = &entry.msg;
        encode::get_ok(
            &mut ctx.out,
            self.id,
            tag,
            entry.redelivered,
            &m.exchange,
            m.routing_key(),
            remaining,
        )
        .map_err(internal)?;
        encode::content(
            &mut ctx.out,
            self.id,
            m.raw_properties(),
            m.body(),
            ctx.frame_max,
        )
        .map_err(internal)
    }
}
