//! Channels: their life cycle, their state and the dispatch of their methods.
//!
//! - [`table`]: the channels of one connection: open, close, and each frame
//!   and queue event handed to its channel.
//! - [`ctx`]: what a connection's channels share (write buffer, broker, the
//!   burst of queue operations waiting to be sent).
//! - this file: one flat `match` maps each method to its handler (LavinMQ's
//!   `process_frame`); the handlers live in files by concept: [`publish`]
//!   (routing, mandatory returns), [`consume`] (consumers, deliveries, acks,
//!   get, qos), [`declare`] (exchanges, queues, bindings), [`modes`] (confirm
//!   and tx modes), [`reply_to`] (direct reply-to).
//!
//! Channels reach queues only through [`QueueHandle`], the same for every
//! queue type. Handlers return `AmqpError`; [`table`] turns a channel-level
//! code into `channel.close` and returns a connection-level one to the
//! connection.

mod consume;
mod ctx;
mod declare;
mod in_flight;
mod modes;
mod publish;
mod reply_to;
mod table;

pub use ctx::{ClientCaps, ConnCtx, HOLD_FOR, HOLD_MAX_BYTES};
use declare::BindMethod;
pub use in_flight::Finished;
pub use table::{Channels, ConnectionFault};
use warren_cluster::OpenChannel;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, basic, channel, confirm, exchange, queue, tx};
use warren_amqp::methods::MethodId;
use warren_amqp::{Inbound, encode};
use warren_core::confirms::{ConfirmReply, Confirms};
use warren_core::queue::{ChannelKey, ConsumerId};
use warren_core::{AmqpError, Name, QueueId, ReplyCode};
use warren_queues::{ChannelCredit, QueueHandle};

pub use modes::Mode;

use in_flight::{Done, Outcome, Parked, Work};

/// An unacked delivery of this channel.
#[derive(Clone, Copy, Debug)]
struct Unacked {
    queue: QueueId,
    seq: u64,
    /// Delivered to a consumer (counts against the channel's prefetch credit);
    /// false for `basic.get`.
    via_consumer: bool,
}

#[derive(Debug)]
struct ChannelConsumer {
    id: ConsumerId,
    queue: QueueHandle,
}

/// A channel of a connection.
#[derive(Debug)]
pub struct Channel {
    /// Channel number.
    pub id: u16,
    key: ChannelKey,
    /// Its entry among the node's open channels: closed when it drops.
    _open: OpenChannel,
    /// Content assembly state.
    pub assembler: warren_amqp::Assembler,
    /// We sent `channel.close` and wait for `close-ok`.
    pub closing: bool,
    mode: Mode,
    confirms: Confirms,
    next_tag: u64,
    unacked: BTreeMap<u64, Unacked>,
    consumers: HashMap<Name, ChannelConsumer>,
    /// The direct reply-to consumer, if the channel has one.
    reply: Option<warren_queues::reply_to::Registration>,
    /// `basic.qos` prefetch for consumers created from now on.
    prefetch: u16,
    credit: Arc<ChannelCredit>,
    /// The last queue declared, for the empty-name shortcut.
    last_queue: Option<Name>,
    /// Queues this channel consumed or got from (told when it closes).
    queues_used: HashMap<QueueId, QueueHandle>,
    /// Confirms changed since their replies were last written.
    confirms_dirty: bool,
    tx: modes::TxBuffer,
    /// A metadata method runs for this channel: frames wait in `parked`.
    busy: bool,
    parked: Parked,
    /// The metadata method the last handler deferred, for the table to
    /// start.
    started: Option<Work>,
}

/// Reply with a method on this channel.
fn reply(ctx: &mut ConnCtx, channel: u16, class: AMQPClass) -> Result<(), AmqpError> {
    encode::method(&mut ctx.out, channel, class)
        .map_err(|e| AmqpError::new(ReplyCode::InternalError, e.to_string()))
}

impl Channel {
    /// A freshly opened channel; `key_id` is node-unique for this opening.
    pub fn new(id: u16, open: OpenChannel) -> Self {
        Self {
            id,
            key: ChannelKey {
                id: open.id(),
                channel: id,
            },
            _open: open,
            assembler: Default::default(),
            closing: false,
            mode: Mode::Normal,
            confirms: Confirms::default(),
            next_tag: 1,
            unacked: BTreeMap::new(),
            consumers: HashMap::new(),
            reply: None,
            prefetch: 0,
            credit: Arc::new(ChannelCredit::default()),
            last_queue: None,
            queues_used: HashMap::new(),
            confirms_dirty: false,
            tx: Default::default(),
            busy: false,
            parked: Parked::default(),
            started: None,
        }
    }

    /// This opening of the channel.
    pub fn key(&self) -> ChannelKey {
        self.key
    }

    /// Handles one assembled method (with its content, for a publish).
    pub async fn handle(&mut self, cmd: Inbound, ctx: &mut ConnCtx) -> Result<(), AmqpError> {
        let m = match cmd {
            Inbound::Content(c) => return self.publish(*c, ctx),
            Inbound::Method(m) => m,
        };
        // Acks ride in the burst; anything else may observe queue state.
        if !matches!(
            m,
            AMQPClass::Basic(
                basic::AMQPMethod::Ack(_)
                    | basic::AMQPMethod::Nack(_)
                    | basic::AMQPMethod::Reject(_)
            )
        ) {
            ctx.flush().await;
        }
        let ch = self.id;
        use AMQPClass as C;
        match m {
            C::Channel(channel::AMQPMethod::Flow(f)) => self.flow(f.active, ctx),
            C::Exchange(exchange::AMQPMethod::Declare(d)) => self.exchange_declare(d, ctx),
            C::Exchange(exchange::AMQPMethod::Delete(d)) => self.exchange_delete(d, ctx),
            C::Exchange(exchange::AMQPMethod::Bind(b)) => {
                self.change_binding(BindMethod::ExchangeBind(b), ctx)
            }
            C::Exchange(exchange::AMQPMethod::Unbind(b)) => {
                self.change_binding(BindMethod::ExchangeUnbind(b), ctx)
            }
            C::Queue(queue::AMQPMethod::Declare(d)) => self.queue_declare(d, ctx),
            C::Queue(queue::AMQPMethod::Bind(b)) => {
                self.change_binding(BindMethod::QueueBind(b), ctx)
            }
            C::Queue(queue::AMQPMethod::Unbind(b)) => {
                self.change_binding(BindMethod::QueueUnbind(b), ctx)
            }
            C::Queue(queue::AMQPMethod::Purge(p)) => self.queue_purge(p, ctx),
            C::Queue(queue::AMQPMethod::Delete(d)) => self.queue_delete(d, ctx),
            C::Basic(basic::AMQPMethod::Qos(q)) => self.qos(q, ctx),
            C::Basic(basic::AMQPMethod::Consume(c)) => self.consume(c, ctx).await,
            C::Basic(basic::AMQPMethod::Cancel(c)) => self.cancel(c, ctx).await,
            C::Basic(basic::AMQPMethod::Get(g)) => self.get(g, ctx).await,
            C::Basic(basic::AMQPMethod::Ack(a)) => self.ack(a.delivery_tag, a.multiple, None, ctx),
            C::Basic(basic::AMQPMethod::Nack(n)) => {
                self.ack(n.delivery_tag, n.multiple, Some(n.requeue), ctx)
            }
            C::Basic(basic::AMQPMethod::Reject(r)) => {
                self.ack(r.delivery_tag, false, Some(r.requeue), ctx)
            }
            C::Basic(basic::AMQPMethod::Recover(r)) => self.recover(r.requeue, true, ctx),
            C::Basic(basic::AMQPMethod::RecoverAsync(r)) => self.recover(r.requeue, false, ctx),
            C::Confirm(confirm::AMQPMethod::Select(s)) => self.confirm_select(s.nowait, ctx),
            C::Tx(tx::AMQPMethod::Select(_)) => self.tx_select(ctx),
            C::Tx(tx::AMQPMethod::Commit(_)) => self.tx_commit(ctx).await,
            C::Tx(tx::AMQPMethod::Rollback(_)) => self.tx_rollback(ctx),
            C::Access(amq_protocol::protocol::access::AMQPMethod::Request(_)) => reply(
                ctx,
                ch,
                C::Access(amq_protocol::protocol::access::AMQPMethod::RequestOk(
                    amq_protocol::protocol::access::RequestOk {},
                )),
            ),
            other => Err(AmqpError::new(
                ReplyCode::CommandInvalid,
                format!(
                    "unexpected method {}.{} on channel {ch}",
                    other.get_amqp_class_id(),
                    other.get_amqp_method_id()
                ),
            )),
        }
    }

    /// Hands the broker's part of the current metadata method to the table,
    /// which runs it beside the connection (see [`in_flight`]).
    fn defer(&mut self, work: impl Future<Output = Outcome> + Send + 'static) {
        self.started = Some(Work(Box::pin(work)));
    }

    /// A deferred method finished well: its reply goes out.
    fn finish(&mut self, done: Done, ctx: &mut ConnCtx) -> Result<(), AmqpError> {
        if let Some(q) = done.last_queue {
            self.last_queue = Some(q);
        }
        match done.reply {
            Some(ok) => reply(ctx, self.id, ok),
            None => Ok(()),
        }
    }

    /// Answers with `ok` on this channel, unless the client asked for none.
    fn answer(&self, ctx: &mut ConnCtx, nowait: bool, ok: AMQPClass) -> Result<(), AmqpError> {
        if nowait {
            return Ok(());
        }
        reply(ctx, self.id, ok)
    }

    fn flow(&mut self, active: bool, ctx: &mut ConnCtx) -> Result<(), AmqpError> {
        self.credit.set_paused(!active);
        if active {
            self.wake_queues();
        }
        reply(
            ctx,
            self.id,
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active })),
        )
    }

    fn wake_queues(&self) {
        for c in self.consumers.values() {
            c.queue.wake();
        }
    }

    /// Resolves the empty queue name to the channel's last declared queue.
    fn queue_name(&self, name: &str) -> Result<Name, AmqpError> {
        if !name.is_empty() {
            return Ok(name.into());
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::new(ReplyCode::NotFound, "no previously declared queue"))
    }

    /// The channel is closing (either side): its consumers go and its unacked
    /// messages return to their queues, in their original order.
    pub async fn cleanup(&mut self, ctx: &mut ConnCtx) {
        // Acks already received are applied before the requeue.
        ctx.flush().await;
        for (_, h) in self.queues_used.drain() {
            h.channel_closed(self.key).await;
        }
        self.consumers.clear();
        self.reply = None;
        self.unacked.clear();
        // What it held outside queues is dropped with it.
        ctx.held -= (self.tx.bytes + self.assembler.received()) as i64;
        if self.assembler.in_content() {
            ctx.unfinished = ctx.unfinished.saturating_sub(1);
        }
        self.assembler = Default::default();
        self.tx = Default::default();
    }

    /// Writes confirm replies that became ready (or completes a pending
    /// commit). Fails when a commit cannot complete, with the method to name
    /// in `channel.close`.
    pub fn write_confirms(
        &mut self,
        ctx: &mut ConnCtx,
        scratch: &mut Vec<ConfirmReply>,
    ) -> Result<(), (AmqpError, MethodId)> {
        if !self.confirms_dirty {
            return Ok(());
        }
        self.confirms_dirty = false;
        scratch.clear();
        self.confirms.take_replies(scratch);
        match self.mode {
            Mode::Confirm => {
                for r in scratch.iter() {
                    let res = encode::confirm(&mut ctx.out, self.id, r.tag, r.multiple, r.ack);
                    if let Err(e) = res {
                        tracing::error!(cause = %e, "could not encode a confirm");
                    }
                }
                Ok(())
            }
            Mode::Tx => {
                self.tx.failed |= scratch.iter().any(|r| !r.ack);
                self.maybe_commit_ok(ctx)
            }
            Mode::Normal => Ok(()),
        }
    }

    /// A target queue took publish `seq` (`ok`), or could not.
    pub fn on_accepted(&mut self, seq: u64, ok: bool) {
        self.confirms.settle(seq, ok);
        self.confirms_dirty = true;
    }
}
