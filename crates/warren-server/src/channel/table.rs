//! The channels of one connection: opening, closing, and handing each frame
//! and queue event to its channel.
//!
//! A channel is opened by `channel.open` on a free number (530 above the
//! negotiated `channel_max`), closed by either side; a channel-level error
//! closes only it (`channel.close`, then frames are ignored until
//! `close-ok`), a connection-level one is returned to the connection.
//!
//! A channel whose metadata method runs (see [`super::in_flight`]) is busy:
//! its frames are parked until the method's answer is written, then
//! replayed in order.

use std::collections::HashMap;

use amq_protocol::protocol::{AMQPClass, basic, channel};
use warren_amqp::methods::{BASIC_PUBLISH, CHANNEL_OPEN, MethodId};
use warren_amqp::{Frame, FrameError};
use warren_core::confirms::ConfirmReply;
use warren_core::{AmqpError, ReplyCode};
use warren_queues::ConnEvent;

use super::ctx::ConnCtx;
use super::in_flight::{Finished, InFlight, PARK_HIGH_BYTES, PARK_HIGH_FRAMES};
use super::{Channel, reply};

/// An error that closes the whole connection, with the method it answers.
#[derive(Debug)]
pub struct ConnectionFault {
    /// The error.
    pub error: AmqpError,
    /// The (class, method) that caused it; (0, 0) when none.
    pub method: MethodId,
}

impl ConnectionFault {
    /// A fault caused by `method`.
    pub fn new(error: AmqpError, method: MethodId) -> Self {
        Self { error, method }
    }

    /// A frame the codec or the content assembler refused.
    pub fn frame(e: &FrameError) -> Self {
        let code = ReplyCode::from_code(e.reply_code()).unwrap_or(ReplyCode::FrameError);
        Self::new(AmqpError::new(code, e.to_string()), (0, 0))
    }
}

/// The open channels of a connection, by number.
#[derive(Debug)]
pub struct Channels {
    open: HashMap<u16, Channel>,
    channel_max: u16,
    /// Largest message body accepted.
    max_body: u64,
    scratch: Vec<ConfirmReply>,
    /// Metadata methods running beside the connection.
    in_flight: InFlight,
    /// Frames parked on busy channels, and what they weigh.
    parked_frames: usize,
    parked_bytes: usize,
}

impl Channels {
    /// No channel open yet.
    pub fn new(channel_max: u16, max_body: u64) -> Self {
        Self {
            open: HashMap::new(),
            channel_max,
            max_body,
            scratch: Vec::new(),
            in_flight: InFlight::default(),
            parked_frames: 0,
            parked_bytes: 0,
        }
    }

    /// Whether a metadata method runs.
    pub fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// The next metadata method to finish (cancel-safe; guard with
    /// [`Channels::has_in_flight`]).
    pub async fn next_finished(&mut self) -> Option<Finished> {
        self.in_flight.next().await
    }

    /// Waits for the metadata methods still running (before the
    /// connection's exclusive queues are dropped).
    pub async fn wait_in_flight(&mut self) {
        self.in_flight.wait_all().await;
    }

    /// Too much is parked on busy channels: stop reading the socket.
    pub fn parked_full(&self) -> bool {
        self.parked_frames > PARK_HIGH_FRAMES || self.parked_bytes > PARK_HIGH_BYTES
    }

    /// A metadata method finished: its channel answers (or fails), then
    /// takes the frames parked meanwhile.
    pub async fn on_finished(
        &mut self,
        f: Finished,
        ctx: &mut ConnCtx,
    ) -> Result<(), ConnectionFault> {
        let Some(channel) = self.open.get_mut(&f.channel) else {
            return Ok(());
        };
        if channel.key() != f.key {
            return Ok(());
        }
        channel.busy = false;
        if !channel.closing {
            match f.outcome.and_then(|done| channel.finish(done, ctx)) {
                Ok(()) => {}
                Err(e) if e.is_connection_level() => {
                    return Err(ConnectionFault::new(e, f.method));
                }
                Err(e) => fail(channel, e, f.method, ctx).await,
            }
        }
        self.replay(f.channel, ctx).await
    }

    /// Hands the frames parked on channel `ch` to it, until it is busy
    /// again or none is left.
    async fn replay(&mut self, ch: u16, ctx: &mut ConnCtx) -> Result<(), ConnectionFault> {
        loop {
            let Some(channel) = self.open.get_mut(&ch) else {
                return Ok(());
            };
            if channel.busy {
                return Ok(());
            }
            let Some((frame, weight)) = channel.parked.pop() else {
                return Ok(());
            };
            self.parked_frames -= 1;
            self.parked_bytes -= weight;
            self.on_frame(ch, frame, ctx).await?;
        }
    }

    /// Removes channel `ch` with whatever is parked on it.
    fn remove(&mut self, ch: u16) -> Option<Channel> {
        let c = self.open.remove(&ch)?;
        let (frames, bytes) = c.parked.totals();
        self.parked_frames -= frames;
        self.parked_bytes -= bytes;
        Some(c)
    }

    /// A frame for channel `ch` (not 0).
    pub async fn on_frame(
        &mut self,
        ch: u16,
        frame: Frame,
        ctx: &mut ConnCtx,
    ) -> Result<(), ConnectionFault> {
        let Some(channel) = self.open.get_mut(&ch) else {
            return self.open_channel(ch, frame, ctx);
        };
        if channel.closing {
            match frame {
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                    self.remove(ch);
                }
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                    self.remove(ch);
                    close_ok(ctx, ch);
                }
                _ => {}
            }
            return Ok(());
        }
        if channel.busy {
            self.parked_bytes += channel.parked.push(frame);
            self.parked_frames += 1;
            return Ok(());
        }
        match frame {
            Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                let e = AmqpError::new(ReplyCode::ChannelError, "second 'channel.open' seen");
                return Err(ConnectionFault::new(e, CHANNEL_OPEN));
            }
            Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                if let Some(mut c) = self.remove(ch) {
                    c.cleanup(ctx).await;
                }
                close_ok(ctx, ch);
                return Ok(());
            }
            Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => return Ok(()),
            _ => {}
        }
        let method = match &frame {
            Frame::Method(_, m) => (m.get_amqp_class_id(), m.get_amqp_method_id()),
            _ => BASIC_PUBLISH,
        };
        match &frame {
            Frame::Body(_, b) => ctx.held += b.len() as i64,
            // A publisher from its first method: the memory alarm stops it
            // also while its bodies are still arriving.
            Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Publish(_))) => {
                ctx.has_published = true;
            }
            _ => {}
        }
        let was_in_content = channel.assembler.in_content();
        let fed = channel.assembler.feed(frame, self.max_body);
        match (was_in_content, channel.assembler.in_content()) {
            (false, true) => ctx.unfinished += 1,
            (true, false) => ctx.unfinished = ctx.unfinished.saturating_sub(1),
            _ => {}
        }
        let cmd = match fed {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return Ok(()),
            Err(e) => return Err(ConnectionFault::frame(&e)),
        };
        match channel.handle(cmd, ctx).await {
            Ok(()) => {
                if let Some(work) = channel.started.take() {
                    channel.busy = true;
                    self.in_flight.start(channel.key(), method, work);
                }
                Ok(())
            }
            Err(e) if e.is_connection_level() => Err(ConnectionFault::new(e, method)),
            Err(e) => {
                fail(channel, e, method, ctx).await;
                Ok(())
            }
        }
    }

    /// The first frame on a channel number that is not open.
    fn open_channel(
        &mut self,
        ch: u16,
        frame: Frame,
        ctx: &mut ConnCtx,
    ) -> Result<(), ConnectionFault> {
        let Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Open(_))) = frame else {
            let e = AmqpError::new(ReplyCode::ChannelError, "expected 'channel.open'");
            return Err(ConnectionFault::new(e, (0, 0)));
        };
        if ch > self.channel_max {
            let e = AmqpError::new(
                ReplyCode::NotAllowed,
                format!(
                    "channel number {ch} exceeds the negotiated channel_max ({})",
                    self.channel_max
                ),
            );
            return Err(ConnectionFault::new(e, CHANNEL_OPEN));
        }
        self.open
            .insert(ch, Channel::new(ch, ctx.broker.open_channel()));
        let ok = AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {}));
        let _ = reply(ctx, ch, ok);
        Ok(())
    }

    /// An event from a queue. Events for an earlier opening of a channel
    /// number are stale: the queue requeued that channel's messages when it
    /// closed.
    pub fn on_event(&mut self, ev: ConnEvent, ctx: &mut ConnCtx) {
        match ev {
            ConnEvent::Deliver(d) => match self.open.get_mut(&d.channel.channel) {
                Some(ch) if ch.key() == d.channel => ch.on_deliver(d, ctx),
                _ => d.flow.release(),
            },
            ConnEvent::Accepted { confirms, ok } => {
                for (key, seq) in confirms {
                    if let Some(c) = self.open.get_mut(&key.channel)
                        && c.key() == key
                    {
                        c.on_accepted(seq, ok);
                    }
                }
            }
            ConnEvent::Cancelled { channel, tag } => {
                if let Some(c) = self.open.get_mut(&channel.channel)
                    && c.key() == channel
                {
                    c.on_cancelled(tag, ctx);
                }
            }
        }
    }

    /// Writes the confirms (and commit-oks) that became ready; a commit
    /// that cannot complete closes its channel.
    pub async fn write_confirms(&mut self, ctx: &mut ConnCtx) {
        for ch in self.open.values_mut() {
            if let Err((e, method)) = ch.write_confirms(ctx, &mut self.scratch) {
                fail(ch, e, method, ctx).await;
            }
        }
    }

    /// The connection is closing: every channel releases its consumers and
    /// unacked messages, in channel order.
    pub async fn close_all(&mut self, ctx: &mut ConnCtx) {
        let mut chans: Vec<(u16, Channel)> = self.open.drain().collect();
        chans.sort_by_key(|(id, _)| *id);
        self.parked_frames = 0;
        self.parked_bytes = 0;
        for (_, mut c) in chans {
            c.cleanup(ctx).await;
        }
    }
}

fn close_ok(ctx: &mut ConnCtx, ch: u16) {
    let ok = AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {}));
    let _ = reply(ctx, ch, ok);
}

/// A channel-level error: the channel releases what it holds, sends
/// `channel.close` answering `method`, and ignores everything until
/// `close-ok`.
async fn fail(channel: &mut Channel, e: AmqpError, method: MethodId, ctx: &mut ConnCtx) {
    let ch = channel.id;
    tracing::debug!(channel = ch, code = e.code.code(), text = %e.text, "channel error");
    channel.cleanup(ctx).await;
    channel.closing = true;
    let close = channel::Close {
        reply_code: e.code.code(),
        reply_text: e.reply_text().as_str().into(),
        class_id: method.0,
        method_id: method.1,
    };
    let _ = reply(
        ctx,
        ch,
        AMQPClass::Channel(channel::AMQPMethod::Close(close)),
    );
}
