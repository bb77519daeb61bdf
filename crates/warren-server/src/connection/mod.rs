//! One client connection: a single task that reads frames, runs channel
//! methods, takes events from queues, and writes.
//!
//! The task `select!`s over the socket's read half, the write of pending output,
//! its event inbox, a heartbeat tick, the memory alarm and shutdown. Each
//! wake-up handles everything available (all complete frames of a read, all
//! queued events) and the output of the whole wake-up goes out in one write.
//! A slow reader is handled with bounds, not buffers: while the write buffer is
//! over [`OUT_HIGH`] the task neither reads nor takes events, and the queues'
//! delivery credit stops them from dispatching more.

pub mod ctx;
pub mod events;
pub mod handshake;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, channel, connection};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use warren_amqp::{Frame, FrameDecoder, FrameError, encode};
use warren_core::confirms::ConfirmReply;
use warren_core::{AmqpError, ReplyCode};

use crate::broker::Broker;
use crate::channel::Channel;
use ctx::ConnCtx;
use events::ConnEvent;

/// Write-buffer size above which the connection stops producing more output.
const OUT_HIGH: usize = 1 << 20;
/// Most events handled per wake-up before writing.
const EVENT_BURST: usize = 1024;
/// Time a client has to complete the handshake (RabbitMQ's default).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time we wait for `close-ok` after sending `connection.close`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Initial read buffer; grows to a frame's size when needed.
const READ_BUF: usize = 8 * 1024;

/// Why the main loop stopped.
enum Stop {
    /// Socket closed or failed, heartbeat missed: nothing more to say.
    Drop(String),
    /// A connection-level error: send `connection.close`, await `close-ok`.
    Close(AmqpError, u16, u16),
    /// The client closed and got `close-ok`.
    Closed,
}

struct Connection {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    peer: SocketAddr,
    rbuf: BytesMut,
    written: usize,
    decoder: FrameDecoder,
    channels: HashMap<u16, Channel>,
    ctx: ConnCtx,
    events: mpsc::UnboundedReceiver<ConnEvent>,
    channel_max: u16,
    heartbeat: Duration,
    last_recv: Instant,
    last_send: Instant,
    blocked: watch::Receiver<bool>,
    blocked_sent: bool,
    closing: Option<Instant>,
    max_body: u64,
    scratch: Vec<ConfirmReply>,
}

/// Serves one accepted socket until it closes.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    token: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut rbuf = BytesMut::with_capacity(READ_BUF);
    let mut out = Vec::with_capacity(READ_BUF);
    let mut decoder = FrameDecoder::new(broker.config.frame_max);
    let negotiated = tokio::select! {
        r = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            handshake::run(&mut stream, &mut rbuf, &mut out, &mut decoder, &broker.config, peer),
        ) => r,
        _ = token.cancelled() => return,
    };
    let n = match negotiated {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            tracing::debug!(%peer, cause = %e, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            return;
        }
    };
    let id = broker.next_connection_id();
    let span = tracing::info_span!("conn", id, %peer, user = %n.user);
    let _e = span.enter();
    tracing::info!("connection opened");
    let (tx, rx) = mpsc::unbounded_channel();
    let (reader, writer) = stream.into_split();
    let blocked = broker.memory.subscribe();
    let mut conn = Connection {
        reader,
        writer,
        peer,
        rbuf,
        written: 0,
        decoder,
        channels: HashMap::new(),
        ctx: ConnCtx {
            id,
            broker: broker.clone(),
            user: n.user,
            frame_max: n.frame_max,
            out,
            events: tx,
            caps: n.caps,
            has_published: false,
            publishes: HashMap::new(),
            settles: HashMap::new(),
            throttled_by: None,
        },
        events: rx,
        channel_max: n.channel_max,
        heartbeat: Duration::from_secs(n.heartbeat.into()),
        last_recv: Instant::now(),
        last_send: Instant::now(),
        blocked,
        blocked_sent: false,
        closing: None,
        max_body: broker.config.max_message_size,
        scratch: Vec::new(),
    };
    drop(_e);
    let reason = conn.run(token).instrument_in(&span).await;
    let _e = span.enter();
    conn.cleanup().await;
    tracing::info!(reason, "connection closed");
}

trait InSpan: Sized {
    fn instrument_in(self, span: &tracing::Span) -> tracing::instrument::Instrumented<Self>;
}

impl<F: std::future::Future> InSpan for F {
    fn instrument_in(self, span: &tracing::Span) -> tracing::instrument::Instrumented<Self> {
        tracing::Instrument::instrument(self, span.clone())
    }
}

impl Connection {
    async fn run(&mut self, token: CancellationToken) -> String {
        let tick = if self.heartbeat.is_zero() {
            Duration::from_secs(1)
        } else {
            (self.heartbeat / 2).max(Duration::from_millis(500))
        };
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutting_down = false;
        loop {
            let pending_out = self.ctx.out.len() - self.written;
            let full = pending_out > OUT_HIGH;
            let mem_blocked =
                *self.blocked.borrow() && self.ctx.has_published && self.closing.is_none();
            let throttled = self.ctx.throttled_by.clone();
            let can_read = !full && !mem_blocked && throttled.is_none();
            let step = tokio::select! {
                biased;
                _ = token.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    Err(Stop::Close(
                        AmqpError::new(ReplyCode::ConnectionForced, "broker forced connection closure with reason 'shutdown'"),
                        0,
                        0,
                    ))
                }
                r = self.writer.write(&self.ctx.out[self.written..]), if pending_out > 0 => match r {
                    Ok(n) => {
                        self.written += n;
                        self.last_send = Instant::now();
                        if self.written == self.ctx.out.len() {
                            self.ctx.out.clear();
                            self.written = 0;
                        }
                        Ok(())
                    }
                    Err(e) => Err(Stop::Drop(format!("write failed: {e}"))),
                },
                ev = self.events.recv(), if !full => match ev {
                    Some(ev) => self.on_events(ev).await,
                    None => Ok(()),
                },
                r = self.reader.read_buf(&mut self.rbuf), if can_read => match r {
                    Ok(0) => Err(Stop::Drop("client closed the socket".into())),
                    Ok(_) => {
                        self.last_recv = Instant::now();
                        self.on_read().await
                    }
                    Err(e) => Err(Stop::Drop(format!("read failed: {e}"))),
                },
                _ = async { if let Some((f, until)) = &throttled { f.wait(*until).await } }, if throttled.is_some() => {
                    self.ctx.throttled_by = None;
                    Ok(())
                }
                _ = ticker.tick() => self.on_tick(can_read || throttled.is_some()),
                r = self.blocked.changed() => {
                    if r.is_ok() {
                        self.notify_blocked();
                    }
                    Ok(())
                }
            };
            match step {
                Ok(()) => {}
                Err(Stop::Drop(reason)) => return reason,
                Err(Stop::Closed) => {
                    self.flush_out().await;
                    return "closed by client".into();
                }
                Err(Stop::Close(e, class, method)) => {
                    if self.closing.is_some() {
                        continue;
                    }
                    tracing::info!(code = e.code.code(), text = %e.text, "closing connection");
                    self.cleanup_channels().await;
                    let close = connection::Close {
                        reply_code: e.code.code(),
                        reply_text: e.reply_text().as_str().into(),
                        class_id: class,
                        method_id: method,
                    };
                    let _ = encode::method(
                        &mut self.ctx.out,
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::Close(close)),
                    );
                    self.closing = Some(Instant::now() + CLOSE_TIMEOUT);
                }
            }
        }
    }

    async fn flush_out(&mut self) {
        let _ = tokio::time::timeout(
            CLOSE_TIMEOUT,
            self.writer.write_all(&self.ctx.out[self.written..]),
        )
        .await;
        self.ctx.out.clear();
        self.written = 0;
    }

    fn on_tick(&mut self, reading: bool) -> Result<(), Stop> {
        let now = Instant::now();
        if let Some(deadline) = self.closing
            && now >= deadline
        {
            return Err(Stop::Drop("no close-ok in time".into()));
        }
        if self.heartbeat.is_zero() {
            return Ok(());
        }
        if now.duration_since(self.last_send) >= self.heartbeat / 2
            && self.ctx.out.len() == self.written
        {
            encode::heartbeat(&mut self.ctx.out);
        }
        // While we deliberately do not read (memory alarm, full output), the
        // client's heartbeats wait in the socket; do not count that against it.
        if !reading {
            self.last_recv = now;
        }
        if now.duration_since(self.last_recv) > self.heartbeat * 2 {
            return Err(Stop::Drop(format!(
                "missed heartbeats from client, timeout: {}s",
                self.heartbeat.as_secs()
            )));
        }
        Ok(())
    }

    fn notify_blocked(&mut self) {
        if !self.ctx.caps.blocked || !self.ctx.has_published {
            return;
        }
        let blocked = *self.blocked.borrow();
        if blocked == self.blocked_sent {
            return;
        }
        self.blocked_sent = blocked;
        let m = if blocked {
            connection::AMQPMethod::Blocked(connection::Blocked {
                reason: "low on memory".into(),
            })
        } else {
            connection::AMQPMethod::Unblocked(connection::Unblocked {})
        };
        let _ = encode::method(&mut self.ctx.out, 0, AMQPClass::Connection(m));
    }

    async fn on_read(&mut self) -> Result<(), Stop> {
        let result = self.process_frames().await;
        self.ctx.flush().await;
        self.write_confirms();
        if self.ctx.has_published {
            self.notify_blocked();
        }
        result
    }

    async fn process_frames(&mut self) -> Result<(), Stop> {
        loop {
            let frame = match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(frame_error(&e)),
            };
            self.on_frame(frame).await?;
        }
    }

    async fn on_events(&mut self, first: ConnEvent) -> Result<(), Stop> {
        self.on_event(first);
        for _ in 0..EVENT_BURST {
            match self.events.try_recv() {
                Ok(ev) => self.on_event(ev),
                Err(_) => break,
            }
        }
        self.ctx.flush().await;
        self.write_confirms();
        Ok(())
    }

    fn on_event(&mut self, ev: ConnEvent) {
        match ev {
            // Events for an earlier opening of a channel number are stale:
            // the queue requeued that channel's messages when it closed.
            ConnEvent::Deliver(d) => match self.channels.get_mut(&d.channel.channel) {
                Some(ch) if ch.key() == d.channel => ch.on_deliver(d, &mut self.ctx),
                _ => d.flow.release(),
            },
            ConnEvent::Persisted { confirms, ok } => {
                for (key, seq) in confirms {
                    if let Some(c) = self.channels.get_mut(&key.channel)
                        && c.key() == key
                    {
                        c.on_persisted(seq, ok);
                    }
                }
            }
            ConnEvent::Cancelled { channel, tag } => {
                if let Some(c) = self.channels.get_mut(&channel.channel)
                    && c.key() == channel
                {
                    c.on_cancelled(tag, &mut self.ctx);
                }
            }
        }
    }

    fn write_confirms(&mut self) {
        for ch in self.channels.values_mut() {
            ch.write_confirms(&mut self.ctx, &mut self.scratch);
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), Stop> {
        let ch = frame.channel();
        if let Some(deadline) = self.closing {
            // Closing: only close-ok (or a crossing close) matters.
            let _ = deadline;
            return match frame {
                Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => {
                    Err(Stop::Drop("closed".into()))
                }
                Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(_))) => {
                    self.send_close_ok();
                    Err(Stop::Closed)
                }
                _ => Ok(()),
            };
        }
        match frame {
            Frame::Heartbeat => Ok(()),
            Frame::Method(0, AMQPClass::Connection(m)) => self.on_connection_method(m).await,
            Frame::Method(0, m) => Err(Stop::Close(
                AmqpError::new(ReplyCode::CommandInvalid, "unexpected method on channel 0"),
                m.get_amqp_class_id(),
                m.get_amqp_method_id(),
            )),
            Frame::Header(0, _) | Frame::Body(0, _) => Err(Stop::Close(
                AmqpError::new(ReplyCode::UnexpectedFrame, "content frame on channel 0"),
                0,
                0,
            )),
            frame => self.on_channel_frame(ch, frame).await,
        }
    }

    fn send_close_ok(&mut self) {
        let _ = encode::method(
            &mut self.ctx.out,
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        );
    }

    async fn on_connection_method(&mut self, m: connection::AMQPMethod) -> Result<(), Stop> {
        match m {
            connection::AMQPMethod::Close(c) => {
                tracing::debug!(
                    code = c.reply_code,
                    text = c.reply_text.as_str(),
                    "client closing"
                );
                self.cleanup_channels().await;
                self.send_close_ok();
                Err(Stop::Closed)
            }
            connection::AMQPMethod::UpdateSecret(_) => {
                let _ = encode::method(
                    &mut self.ctx.out,
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            connection::AMQPMethod::Blocked(_)
            | connection::AMQPMethod::Unblocked(_)
            | connection::AMQPMethod::CloseOk(_) => Ok(()),
            other => {
                let id = AMQPClass::Connection(other).get_amqp_method_id();
                Err(Stop::Close(
                    AmqpError::new(ReplyCode::CommandInvalid, "unexpected connection method"),
                    10,
                    id,
                ))
            }
        }
    }

    async fn on_channel_frame(&mut self, ch: u16, frame: Frame) -> Result<(), Stop> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return match frame {
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                    if ch > self.channel_max {
                        return Err(Stop::Close(
                            AmqpError::new(
                                ReplyCode::NotAllowed,
                                format!(
                                    "channel number {ch} exceeds the negotiated channel_max ({})",
                                    self.channel_max
                                ),
                            ),
                            20,
                            10,
                        ));
                    }
                    self.channels
                        .insert(ch, Channel::new(ch, self.ctx.broker.next_channel_id()));
                    let _ = encode::method(
                        &mut self.ctx.out,
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                    );
                    Ok(())
                }
                _ => Err(Stop::Close(
                    AmqpError::new(ReplyCode::ChannelError, "expected 'channel.open'"),
                    0,
                    0,
                )),
            };
        };
        if channel.closing {
            match frame {
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                    self.channels.remove(&ch);
                }
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                    self.channels.remove(&ch);
                    self.reply_channel_close_ok(ch);
                }
                _ => {}
            }
            return Ok(());
        }
        match frame {
            Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                return Err(Stop::Close(
                    AmqpError::new(ReplyCode::ChannelError, "second 'channel.open' seen"),
                    20,
                    10,
                ));
            }
            Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                if let Some(mut c) = self.channels.remove(&ch) {
                    c.cleanup(&mut self.ctx).await;
                }
                self.reply_channel_close_ok(ch);
                return Ok(());
            }
            Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => return Ok(()),
            _ => {}
        }
        let ids = match &frame {
            Frame::Method(_, m) => (m.get_amqp_class_id(), m.get_amqp_method_id()),
            _ => (60, 40),
        };
        let cmd = match channel.assembler.feed(frame, self.max_body) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return Ok(()),
            Err(e) => return Err(frame_error(&e)),
        };
        match channel.handle(cmd, &mut self.ctx).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_connection_level() => Err(Stop::Close(e, ids.0, ids.1)),
            Err(e) => {
                tracing::debug!(channel = ch, code = e.code.code(), text = %e.text, "channel error");
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.cleanup(&mut self.ctx).await;
                    c.closing = true;
                }
                let close = channel::Close {
                    reply_code: e.code.code(),
                    reply_text: e.reply_text().as_str().into(),
                    class_id: ids.0,
                    method_id: ids.1,
                };
                let _ = encode::method(
                    &mut self.ctx.out,
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::Close(close)),
                );
                Ok(())
            }
        }
    }

    fn reply_channel_close_ok(&mut self, ch: u16) {
        let _ = encode::method(
            &mut self.ctx.out,
            ch,
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
        );
    }

    async fn cleanup_channels(&mut self) {
        let mut chans: Vec<(u16, Channel)> = self.channels.drain().collect();
        chans.sort_by_key(|(id, _)| *id);
        for (_, mut c) in chans {
            c.cleanup(&mut self.ctx).await;
        }
    }

    /// After the socket is gone: channels release their messages, exclusive
    /// queues are deleted.
    async fn cleanup(&mut self) {
        self.cleanup_channels().await;
        let broker = self.ctx.broker.clone();
        broker.drop_connection(self.ctx.id).await;
        let _ = self.peer;
    }
}

fn frame_error(e: &FrameError) -> Stop {
    let code = match e.reply_code() {
        502 => ReplyCode::SyntaxError,
        505 => ReplyCode::UnexpectedFrame,
        540 => ReplyCode::NotImplemented,
        541 => ReplyCode::InternalError,
        _ => ReplyCode::FrameError,
    };
    Stop::Close(AmqpError::new(code, e.to_string()), 0, 0)
}
