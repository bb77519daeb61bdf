//! What a full queue does: `x-max-length` and `x-max-length-bytes` with
//! `x-overflow`, as RabbitMQ's classic and quorum queues have them (both
//! types use this one rule).
//!
//! Only ready messages count, and of them only their bodies' bytes;
//! delivered, unacked ones do not. A publish that would take the queue past
//! a limit is either refused (`reject-publish`: nacked under confirms,
//! dropped otherwise) or taken, after which the oldest ready messages go
//! until the queue is within both limits (`drop-head`, the default). A
//! message that a waiting consumer takes at once never counts: RabbitMQ
//! delivers before it enqueues, so the runtime dispatches before it drops.
//!
//! `reject-publish-dlx` refuses as `reject-publish` does; dead-lettering the
//! refused message is not built yet.

use super::args::QueueArgs;

/// What a queue at a limit does with one more message.
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

/// A queue's length limits, from its arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// `x-max-length`: ready messages at most.
    pub max_length: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-max-length-bytes`: body bytes of ready messages at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// What a queue holds ready, as a limit counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Messages.
    pub len: usize,
    /// Their bodies' bytes.
    pub bytes: u64,
}

impl Limits {
    /// The limits `args` declare (none without `x-max-length` or
    /// `x-max-length-bytes`).
    pub fn of(args: &QueueArgs) -> Self {
        let overflow = match args.overflow.as_deref() {
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            _ => Overflow::DropHead,
        };
        Self {
            max_length: args.max_length,
            overflow,
            max_bytes: args.max_length_bytes,
        }
    }

    /// True when a queue holding `ready` refuses one more message of `size`
    /// body bytes (RabbitMQ's `will_overflow`: `len + 1 > max` or
    /// `bytes + size > max_bytes`).
    pub fn refuses(&self, ready: Ready, size: u64) -> bool {
        self.overflow != Overflow::DropHead
            && (self.max_length.is_some_and(|m| ready.len as u64 >= m)
                || self
                    .max_bytes
                    .is_some_and(|m| ready.bytes.saturating_add(size) > m))
    }

    /// True when a queue holding `ready` is over a limit under `drop-head`:
    /// its oldest ready message goes (then ask again).
    pub fn over(&self, ready: Ready) -> bool {
        self.overflow == Overflow::DropHead
            && (self.max_length.is_some_and(|m| ready.len as u64 > m)
                || self.max_bytes.is_some_and(|m| ready.bytes > m))
    }
}

#[cfg(test)]
#[path = "limits_test.rs"]
mod tests;
