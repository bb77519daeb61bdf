//! The one interface between channels and queues, whatever the queue's type.
//!
//! This is Warren's `rabbit_queue_type`: a channel holds a [`QueueHandle`]
//! and calls its methods (publish a batch, consume and cancel with credit,
//! settle, get, purge, delete, status); the queue answers and sends
//! [`ConnEvent`]s back (deliveries, confirms, cancellations). Behind a handle
//! is a mailbox, served by the queue's type: the classic actor at home
//! ([`crate::classic`]), or a proxy that carries the same messages to the
//! queue's home node ([`crate::link`]). Adding a type means serving this
//! mailbox; channel code does not change.
//!
//! - [`handle`]: [`QueueHandle`], the methods channels call.
//! - [`mailbox`]: [`QueueMsg`], what a queue's task receives, and how a queue
//!   that is not there answers it.
//! - [`events`]: [`ConnEvent`], what queues send to a connection.
//! - [`flow`]: credit between queues and connections (delivery windows,
//!   channel prefetch, publisher throttling).
//! - [`backlog`]: when a consumed queue throttles its publishers.
//! - [`dead_letters`]: what a queue hands to the node to dead-letter.
//!
//! This module is the crate's vocabulary: it imports nothing else of the
//! crate, and every other module builds on it.

pub mod backlog;
pub mod dead_letters;
pub mod events;
pub mod flow;
pub mod handle;
pub mod mailbox;

pub use backlog::Backlog;
pub use dead_letters::{DeadLetterTx, DeadLetters};
pub use events::{ConnEvent, ConnTx, DeliverEvent};
pub use flow::{ByteBudget, ChannelCredit, ConsumerFlow, DELIVERY_WINDOW, QueueFlow};
pub use handle::{Ending, QueueHandle};
pub use mailbox::{Absent, ConsumerLink, GetReply, PublishBatch, QueueMsg, Verdict};
