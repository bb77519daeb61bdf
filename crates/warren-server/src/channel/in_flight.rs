//! Metadata methods in flight: a declare, delete, bind or purge runs as its
//! own task, beside the connection's, and its answer comes back here.
//!
//! A metadata change waits for Raft (a commit, then every voter applying
//! it), for as long as the proposal's timeout when the node is cut off from
//! the majority. Awaited inside the connection task, that wait would stall
//! every channel of the connection; RabbitMQ runs each channel in its own
//! process, so one channel's declare never holds up another's publishes.
//! Here the channel that started the method is *busy*: the frames that
//! arrive for it meanwhile are parked, in order, and replayed once its answer
//! is written (AMQP orders methods per channel), while the other channels go
//! on. Parked frames are bounded per connection ([`PARK_HIGH_BYTES`],
//! [`PARK_HIGH_FRAMES`]): beyond that, the connection stops reading its
//! socket until they drain.
//!
//! A method's task is never cancelled: the connection waits for the tasks
//! still running before it drops its exclusive queues, so a declaration of
//! an exclusive queue cannot commit after its owner's clean-up.

use std::collections::VecDeque;

use amq_protocol::protocol::AMQPClass;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use warren_amqp::Frame;
use warren_amqp::methods::MethodId;
use warren_core::queue::ChannelKey;
use warren_core::{AmqpError, Name, ReplyCode};

/// Parked bytes (of all channels of a connection) above which the
/// connection stops reading.
pub const PARK_HIGH_BYTES: usize = 4 << 20;
/// Parked frames above which the connection stops reading.
pub const PARK_HIGH_FRAMES: usize = 4096;
/// What a parked frame is counted as, beyond its body bytes.
const FRAME_OVERHEAD: usize = 64;

/// What a finished metadata method leaves to its channel.
#[derive(Debug, Default)]
pub struct Done {
    /// The reply to write (`None` for `nowait`).
    pub reply: Option<AMQPClass>,
    /// The queue the channel declared (the empty-name shortcut).
    pub last_queue: Option<Name>,
}

impl Done {
    /// `ok` as the reply, unless the client asked for none.
    pub fn reply(nowait: bool, ok: AMQPClass) -> Self {
        Self {
            reply: (!nowait).then_some(ok),
            last_queue: None,
        }
    }
}

/// The result of a metadata method.
pub type Outcome = Result<Done, AmqpError>;

/// The broker's part of a metadata method, not started yet.
pub struct Work(pub BoxFuture<'static, Outcome>);

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Work")
    }
}

/// A method whose task ended, with the channel opening it answers.
#[derive(Debug)]
pub struct Finished {
    /// The channel number.
    pub channel: u16,
    /// The opening of that channel.
    pub key: ChannelKey,
    /// The method (named in `channel.close` if it failed).
    pub method: MethodId,
    /// What it gave.
    pub outcome: Outcome,
}

/// The metadata methods of a connection still running.
#[derive(Default)]
pub struct InFlight {
    tasks: FuturesUnordered<BoxFuture<'static, Finished>>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

impl InFlight {
    /// Runs `method` of channel `key` as a task of its own.
    pub fn start(&mut self, key: ChannelKey, method: MethodId, work: Work) {
        let task = tokio::spawn(work.0);
        self.tasks.push(Box::pin(async move {
            let outcome = task.await.unwrap_or_else(|e| {
                Err(AmqpError::new(
                    ReplyCode::InternalError,
                    format!("a metadata method failed: {e}"),
                ))
            });
            Finished {
                channel: key.channel,
                key,
                method,
                outcome,
            }
        }));
    }

    /// Whether any method runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next method to finish (pending forever while none runs; the
    /// caller guards with [`InFlight::is_empty`]). Cancel-safe.
    pub async fn next(&mut self) -> Option<Finished> {
        self.tasks.next().await
    }

    /// Waits for every method still running.
    pub async fn wait_all(&mut self) {
        while self.tasks.next().await.is_some() {}
    }
}

/// Frames that arrived for a busy channel, in order.
#[derive(Debug, Default)]
pub struct Parked {
    frames: VecDeque<Frame>,
}

impl Parked {
    /// Keeps `frame`; returns what it counts for.
    pub fn push(&mut self, frame: Frame) -> usize {
        let size = weight(&frame);
        self.frames.push_back(frame);
        size
    }

    /// The oldest frame and what it counted for.
    pub fn pop(&mut self) -> Option<(Frame, usize)> {
        let frame = self.frames.pop_front()?;
        let size = weight(&frame);
        Some((frame, size))
    }

    /// Frames and their weight (when the channel goes with them).
    pub fn totals(&self) -> (usize, usize) {
        (self.frames.len(), self.frames.iter().map(weight).sum())
    }
}

fn weight(frame: &Frame) -> usize {
    match frame {
        Frame::Body(_, b) => b.len() + FRAME_OVERHEAD,
        _ => FRAME_OVERHEAD,
    }
}
