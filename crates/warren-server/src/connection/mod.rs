//! One client connection: a single task that reads frames, runs channel
//! methods, takes events from queues, and writes.
//!
//! The task `select!`s over the socket's read half, the write of pending output,
//! its event inbox, the metadata methods its channels started (they run as
//! tasks of their own, so one channel waiting on Raft does not stall the
//! others), a heartbeat tick, the memory alarm and shutdown. Each
//! wake-up handles everything available (all complete frames of a read, all
//! queued events) and the output of the whole wake-up goes out in one write.
//! A slow reader is handled with bounds, not buffers: while the write buffer is
//! over [`OUT_HIGH`] the task neither reads nor takes events, and the queues'
//! delivery credit stops them from dispatching more.

pub mod handshake;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, connection};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use warren_amqp::methods::{CONNECTION_CLASS, MethodId};
use warren_amqp::{Frame, FrameDecoder, encode};
use warren_core::{AmqpError, ReplyCode};
use warren_queues::ConnEvent;

use crate::broker::Broker;
use crate::channel::{Channels, ConnCtx, ConnectionFault, Finished, HOLD_FOR, HOLD_MAX_BYTES};

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
    Close(ConnectionFault),
    /// The client closed and got `close-ok`.
    Closed,
}

struct Connection {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    rbuf: BytesMut,
    written: usize,
    /// Wakes a write of deferrable deliveries (`ConnCtx::deferrable`)
    /// once they waited [`HOLD_FOR`]; armed while `holding`.
    hold: std::pin::Pin<Box<tokio::time::Sleep>>,
    holding: bool,
    decoder: FrameDecoder,
    channels: Channels,
    ctx: ConnCtx,
    events: mpsc::UnboundedReceiver<ConnEvent>,
    heartbeat: Duration,
    last_recv: Instant,
    last_send: Instant,
    blocked: watch::Receiver<bool>,
    /// Vhosts or users changed: this connection's may be gone.
    access: watch::Receiver<u64>,
    blocked_sent: bool,
    closing: Option<Instant>,
    /// A `basic.publish` read while the memory alarm was on: it waits, and
    /// the socket is not read, until the alarm clears (RabbitMQ's reader
    /// blocks the same way: at the next publish, so acks, commits,
    /// rollbacks and closes before it still go through).
    stashed: Option<Frame>,
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
    let mut decoder = FrameDecoder::new(broker.config().frame_max);
    let negotiated = tokio::select! {
        r = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            handshake::run(&mut stream, &mut rbuf, &mut out, &mut decoder, &broker, peer),
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
    let id = broker.ids().connection();
    let span = tracing::info_span!("conn", id, %peer, user = %n.user);
    let _e = span.enter();
    tracing::info!("connection opened");
    let (tx, rx) = mpsc::unbounded_channel();
    let (reader, writer) = stream.into_split();
    let blocked = broker.memory().subscribe();
    let access = broker.access_changes();
    let mut conn = Connection {
        reader,
        writer,
        rbuf,
        written: 0,
        hold: Box::pin(tokio::time::sleep(Duration::ZERO)),
        holding: false,
        decoder,
        channels: Channels::new(n.channel_max, broker.config().max_message_size),
        ctx: ConnCtx::new(
            id,
            broker.clone(),
            (n.user, n.vhost.as_str().into()),
            n.frame_max,
            out,
            tx,
            n.caps,
        ),
        events: rx,
        heartbeat: Duration::from_secs(n.heartbeat.into()),
        last_recv: Instant::now(),
        last_send: Instant::now(),
        blocked,
        access,
        blocked_sent: false,
        closing: None,
        stashed: None,
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
            let deferrable = self.ctx.deferrable.min(pending_out);
            // Only deliveries that may wait are pending, and not many:
            // wait (at most HOLD_FOR) for more to write with them.
            let hold = pending_out > 0 && pending_out == deferrable && deferrable < HOLD_MAX_BYTES;
            if pending_out == 0 {
                self.holding = false;
            }
            if hold && !self.holding {
                self.holding = true;
                self.hold.as_mut().reset(Instant::now() + HOLD_FOR);
            }
            let write_now = pending_out > 0 && !hold;
            let full = pending_out > OUT_HIGH;
            let throttled = self.ctx.throttled_by.clone();
            let can_read = !full
                && self.stashed.is_none()
                && throttled.is_none()
                && !self.channels.parked_full();
            let in_flight = self.channels.has_in_flight();
            let step = tokio::select! {
                biased;
                _ = token.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    let e = AmqpError::new(ReplyCode::ConnectionForced, "broker forced connection closure with reason 'shutdown'");
                    Err(Stop::Close(ConnectionFault::new(e, (0, 0))))
                }
                r = self.writer.write(&self.ctx.out[self.written..]), if write_now => match r {
                    Ok(n) => {
                        self.written += n;
                        // What is left (after a short write) goes at once.
                        self.ctx.deferrable = 0;
                        self.holding = false;
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
                f = self.channels.next_finished(), if in_flight && !full => match f {
                    Some(f) => self.on_finished(f).await,
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
                _ = &mut self.hold, if self.holding && hold => {
                    self.ctx.deferrable = 0;
                    Ok(())
                }
                _ = ticker.tick() => self.on_tick(can_read || throttled.is_some()),
                r = self.blocked.changed() => match r {
                    Ok(()) => self.on_alarm().await,
                    Err(_) => Ok(()),
                },
                Ok(()) = self.access.changed(), if self.closing.is_none() => self.still_allowed(),
            };
            match step {
                Ok(()) => {}
                Err(Stop::Drop(reason)) => return reason,
                Err(Stop::Closed) => {
                    self.flush_out().await;
                    return "closed by client".into();
                }
                Err(Stop::Close(ConnectionFault { error: e, method })) => {
                    if self.closing.is_some() {
                        continue;
                    }
                    tracing::info!(code = e.code.code(), text = %e.text, "closing connection");
                    self.channels.close_all(&mut self.ctx).await;
                    let close = connection::Close {
                        reply_code: e.code.code(),
                        reply_text: e.reply_text().as_str().into(),
                        class_id: method.0,
                        method_id: method.1,
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
        self.ctx.deferrable = 0;
    }

    /// Closes the connection (320, RabbitMQ's texts) when its vhost or its
    /// user was deleted, as RabbitMQ does at once.
    fn still_allowed(&self) -> Result<(), Stop> {
        let ctx = &self.ctx;
        match crate::broker::gone_reason(&ctx.broker, &ctx.vhost, &ctx.user) {
            Some(e) => Err(Stop::Close(ConnectionFault::new(e, (0, 0)))),
            None => Ok(()),
        }
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

    /// The memory alarm stops this connection (a publisher, not closing).
    fn mem_blocked(&self) -> bool {
        self.alarm() && self.ctx.has_published
    }

    /// The memory alarm is on (and the connection is not closing).
    fn alarm(&self) -> bool {
        *self.blocked.borrow() && self.closing.is_none()
    }

    /// The memory alarm was raised or cleared.
    async fn on_alarm(&mut self) -> Result<(), Stop> {
        self.notify_blocked();
        self.check_unfinished()?;
        if !self.alarm() && self.stashed.is_some() {
            // The publish that waited, and what was read behind it.
            return self.on_read().await;
        }
        Ok(())
    }

    /// While the alarm is on, a connection may finish the one publish it is
    /// sending (a client writes a message's frames together) but starts no
    /// other; publishes under way on several channels at once hold memory
    /// that only more reading would release, so the connection is closed
    /// (506), never left blocked holding them.
    fn check_unfinished(&self) -> Result<(), Stop> {
        if self.mem_blocked() && self.ctx.unfinished > 1 {
            let e = AmqpError::new(
                ReplyCode::ResourceError,
                format!(
                    "{} channels are in the middle of a publish ({} bytes held) while memory is over the high watermark",
                    self.ctx.unfinished, self.ctx.held
                ),
            );
            return close(e, (0, 0));
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
        self.ctx.report_held();
        self.ctx.flush().await;
        self.channels.write_confirms(&mut self.ctx).await;
        if self.ctx.has_published {
            self.notify_blocked();
        }
        result
    }

    async fn on_finished(&mut self, f: Finished) -> Result<(), Stop> {
        let result = self.channels.on_finished(f, &mut self.ctx).await;
        self.ctx.report_held();
        self.ctx.flush().await;
        self.channels.write_confirms(&mut self.ctx).await;
        result.map_err(Stop::Close)
    }

    async fn process_frames(&mut self) -> Result<(), Stop> {
        // Read once per burst (the watch takes a lock): a change during the
        // burst is acted on by `on_alarm` right after it.
        let alarm = self.alarm();
        loop {
            if alarm {
                self.check_unfinished()?;
            }
            let frame = match self.stashed.take() {
                Some(f) => f,
                None => match self.decoder.decode(&mut self.rbuf) {
                    Ok(Some(f)) => f,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(Stop::Close(ConnectionFault::frame(&e))),
                },
            };
            if alarm && starts_publish(&frame) {
                // It waits for the alarm to clear (`on_alarm`).
                self.ctx.has_published = true;
                self.notify_blocked();
                self.stashed = Some(frame);
                return Ok(());
            }
            self.on_frame(frame).await?;
        }
    }

    async fn on_events(&mut self, first: ConnEvent) -> Result<(), Stop> {
        self.channels.on_event(first, &mut self.ctx);
        for _ in 0..EVENT_BURST {
            match self.events.try_recv() {
                Ok(ev) => self.channels.on_event(ev, &mut self.ctx),
                Err(_) => break,
            }
        }
        self.ctx.flush().await;
        self.channels.write_confirms(&mut self.ctx).await;
        Ok(())
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
            Frame::Method(0, m) => close(
                AmqpError::new(ReplyCode::CommandInvalid, "unexpected method on channel 0"),
                (m.get_amqp_class_id(), m.get_amqp_method_id()),
            ),
            Frame::Header(0, _) | Frame::Body(0, _) => close(
                AmqpError::new(ReplyCode::UnexpectedFrame, "content frame on channel 0"),
                (0, 0),
            ),
            frame => self
                .channels
                .on_frame(ch, frame, &mut self.ctx)
                .await
                .map_err(Stop::Close),
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
                self.channels.close_all(&mut self.ctx).await;
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
                close(
                    AmqpError::new(ReplyCode::CommandInvalid, "unexpected connection method"),
                    (CONNECTION_CLASS, id),
                )
            }
        }
    }

    /// After the socket is gone: channels release their messages, exclusive
    /// queues are deleted (once no declaration of one can still commit).
    async fn cleanup(&mut self) {
        self.channels.wait_in_flight().await;
        self.channels.close_all(&mut self.ctx).await;
        self.ctx.release_held();
        let broker = self.ctx.broker.clone();
        broker.drop_connection(self.ctx.id).await;
    }
}

/// A `basic.publish` method: the frame the memory alarm stops a
/// connection at.
fn starts_publish(frame: &Frame) -> bool {
    matches!(
        frame,
        Frame::Method(
            _,
            AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(_))
        )
    )
}

/// Ends the connection with `connection.close` for `e`.
fn close(e: AmqpError, method: MethodId) -> Result<(), Stop> {
    Err(Stop::Close(ConnectionFault::new(e, method)))
}
