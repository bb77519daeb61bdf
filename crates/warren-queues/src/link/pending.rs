//! Requests a link waits on: what each expects back from the home node, and
//! how its waiter is answered, by the home's reply or by a broken link.

use tokio::sync::oneshot;
use warren_cluster::pb::queues as pb;
use warren_core::queue::Entry;
use warren_core::{AmqpError, Name, ReplyCode};

use super::wire::{error_from, message_from};
use crate::api::GetReply;

/// What a request waits for.
pub(super) enum Pending {
    /// A consume, with the consumer's (channel id, tag).
    Consume(oneshot::Sender<Result<(), AmqpError>>, (u64, Name)),
    Cancel(oneshot::Sender<()>),
    Get(oneshot::Sender<GetReply>),
    Count(oneshot::Sender<u32>),
    Status(oneshot::Sender<(u32, u32)>),
    CheckDelete(oneshot::Sender<Result<u32, AmqpError>>),
}

/// An answer of the home node this side cannot read.
fn bad_reply() -> AmqpError {
    AmqpError::new(
        ReplyCode::InternalError,
        "the queue's home node sent an unreadable answer",
    )
    .on_channel()
}

impl Pending {
    /// Answers the waiter with the home's `result`. A consume the home
    /// refused gives back its consumer's key: the link forgets it.
    pub(super) fn answer(self, result: Option<pb::reply::Result>) -> Option<(u64, Name)> {
        use pb::reply::Result as R;
        match self {
            Pending::Consume(tx, key) => {
                let out = match result {
                    Some(R::Error(e)) => Err(error_from(e)),
                    _ => Ok(()),
                };
                let refused = out.is_err().then_some(key);
                let _ = tx.send(out);
                return refused;
            }
            Pending::Cancel(tx) => {
                let _ = tx.send(());
            }
            Pending::Get(tx) => {
                let got = match result {
                    Some(R::Entry(e)) => match e.message.and_then(message_from) {
                        Some(msg) => Ok(Some((
                            Entry {
                                seq: e.seq,
                                msg,
                                redelivered: e.redelivered,
                            },
                            e.remaining,
                        ))),
                        None => Err(bad_reply()),
                    },
                    Some(R::Empty(_)) => Ok(None),
                    Some(R::Error(e)) => Err(error_from(e)),
                    _ => Err(bad_reply()),
                };
                let _ = tx.send(got);
            }
            Pending::Count(tx) => {
                let _ = tx.send(match result {
                    Some(R::Count(n)) => n,
                    _ => 0,
                });
            }
            Pending::Status(tx) => {
                let _ = tx.send(match result {
                    Some(R::Counts(c)) => (c.messages, c.consumers),
                    _ => (0, 0),
                });
            }
            Pending::CheckDelete(tx) => {
                let _ = tx.send(match result {
                    Some(R::Count(n)) => Ok(n),
                    Some(R::Error(e)) => Err(error_from(e)),
                    _ => Ok(0),
                });
            }
        }
        None
    }

    /// The link broke: a waiter that must hear of it gets `down()`; the
    /// others' senders are dropped, which their callers read as done.
    pub(super) fn fail(self, down: impl Fn() -> AmqpError) {
        match self {
            Pending::Consume(tx, _) => {
                let _ = tx.send(Err(down()));
            }
            Pending::CheckDelete(tx) => {
                let _ = tx.send(Err(down()));
            }
            Pending::Get(tx) => {
                let _ = tx.send(Err(down()));
            }
            Pending::Cancel(_) | Pending::Count(_) | Pending::Status(_) => {}
        }
    }
}
