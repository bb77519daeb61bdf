//! What a full queue does: `x-max-length` with `x-overflow`, as RabbitMQ's
//! classic and quorum queues have them (both types use this one rule).
//!
//! Only ready messages count; delivered, unacked ones do not. A publish that
//! would take the queue past its limit is either refused (`reject-publish`:
//! nacked under confirms, dropped otherwise) or taken, after which the
//! oldest ready messages go (`drop-head`, the default). A message that a
//! waiting consumer takes at once never counts: RabbitMQ delivers before it
//! enqueues, so the runtime dispatches before it drops.
//!
//! `reject-publish-dlx` refuses as `reject-publish` does; dead-lettering the
//! refused message is not built yet.

use super::args::QueueArgs;

/// What a queue at its `x-max-length` does with one more message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Overflow {
    /// Takes it and drops the oldest ready message.
    #[default]
    DropHead,
    /// Refuses it.
    RejectPublish,
    /// Refuses it (and would dead-letter it).
    RejectPublishDlx,
}

/// A queue's length limit, from its arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// `x-max-length`: ready messages at most.
    pub max_length: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
}

impl Limits {
    /// The limit `args` declare (none without `x-max-length`).
    pub fn of(args: &QueueArgs) -> Self {
        let overflow = match args.overflow.as_deref() {
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            _ => Overflow::DropHead,
        };
        Self {
            max_length: args.max_length,
            overflow,
        }
    }

    /// True when a publish to a queue holding `ready` messages is refused.
    pub fn refuses(&self, ready: usize) -> bool {
        self.overflow != Overflow::DropHead && self.max_length.is_some_and(|m| ready as u64 >= m)
    }

    /// How many of the oldest ready messages a queue holding `ready` drops.
    pub fn excess(&self, ready: usize) -> usize {
        match (self.overflow, self.max_length) {
            (Overflow::DropHead, Some(m)) => {
                usize::try_from((ready as u64).saturating_sub(m)).unwrap_or(usize::MAX)
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
#[path = "limits_test.rs"]
mod tests;
