//! What waits for a quorum queue's proposal, and how it is answered: the
//! leader acts on a committed proposal's replies ([`super::leader`]); a
//! proposal whose leader stepped down meanwhile answers its waiters itself
//! ([`Done::answer_alone`]): a committed publish confirmed, a failed one
//! nacked, a consume or get refused, never left unanswered.

use tokio::sync::oneshot;
use warren_core::queue::ChannelKey;
use warren_core::quorum::Reply;
use warren_core::{AmqpError, ReplyCode};
use warren_store::raft::queue::QueueResponse;

use crate::api::{ConnEvent, ConnTx, GetReply};

/// Who waits for one op of a proposal.
pub(super) enum Waiter {
    None,
    Confirm {
        conn: u64,
        tx: ConnTx,
        key: ChannelKey,
        seq: u64,
    },
    Consume(oneshot::Sender<Result<(), AmqpError>>),
    Cancel(oneshot::Sender<()>),
    Get {
        channel: ChannelKey,
        no_ack: bool,
        reply: oneshot::Sender<GetReply>,
    },
    Purge(oneshot::Sender<u32>),
}

/// A proposal's outcome, for the front that made it.
pub(crate) struct Done {
    /// The proposal's place among this leadership's proposals.
    pub(super) seq: u64,
    /// Enqueues the proposal carried.
    pub(super) enqueues: usize,
    pub(super) waiters: Vec<Waiter>,
    pub(super) result: Result<QueueResponse, String>,
}

impl Done {
    /// Answers the waiters without a front (it stepped down): confirms and
    /// replies only, no deliveries (the consumers attach to the next leader,
    /// which sends what they hold again).
    pub(super) fn answer_alone(self) {
        let ok = self.result.is_ok();
        let replies = match self.result {
            Ok(r) => r.replies,
            Err(_) => Vec::new(),
        };
        let mut confirms = Confirms::default();
        for (i, w) in self.waiters.into_iter().enumerate() {
            match w {
                Waiter::Confirm { conn, tx, key, seq } => confirms.add(conn, tx, key, seq),
                Waiter::Consume(r) => {
                    let _ = r.send(if ok { Ok(()) } else { Err(no_leader()) });
                }
                Waiter::Cancel(r) => {
                    let _ = r.send(());
                }
                // The dequeue may yet commit under the next leader: an
                // error, never "empty" (the closed channel returns what
                // it took unacked).
                Waiter::Get { reply, .. } => {
                    let _ = reply.send(Err(no_leader()));
                }
                Waiter::Purge(r) => {
                    let n = match replies.get(i) {
                        Some(Reply::Purged(n)) => *n as u32,
                        _ => 0,
                    };
                    let _ = r.send(n);
                }
                Waiter::None => {}
            }
        }
        confirms.send(ok);
    }
}

/// One connection's confirms: (its id, its events, [(channel, seq)]).
type ConnConfirms = (u64, ConnTx, Vec<(ChannelKey, u64)>);

/// Confirms gathered per connection.
#[derive(Default)]
pub(super) struct Confirms(Vec<ConnConfirms>);

impl Confirms {
    pub(super) fn add(&mut self, conn: u64, tx: ConnTx, key: ChannelKey, seq: u64) {
        match self.0.iter_mut().find(|(c, _, _)| *c == conn) {
            Some((_, _, list)) => list.push((key, seq)),
            None => self.0.push((conn, tx, vec![(key, seq)])),
        }
    }

    pub(super) fn send(self, ok: bool) {
        for (_, tx, confirms) in self.0 {
            let _ = tx.send(ConnEvent::Accepted { confirms, ok });
        }
    }
}

/// A dequeue applied without its body (never expected: the leader reads
/// the bodies of what it dequeues).
pub(super) fn no_body() -> AmqpError {
    AmqpError::new(
        ReplyCode::InternalError,
        "the quorum queue's leader could not read a message; try again",
    )
    .on_channel()
}

pub(super) fn no_leader() -> AmqpError {
    AmqpError::new(
        ReplyCode::InternalError,
        "the quorum queue's leader changed; try again",
    )
    .on_channel()
}
