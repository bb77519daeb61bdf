//! What a queue hands to its node's dead-letter publisher.
//!
//! A queue with `x-dead-letter-exchange` does not drop a message it
//! rejects, expires or overflows: it sends it here, and the node re-publishes
//! it to the dead-letter exchange with its `x-death` record (routing needs
//! the node's metadata, which queues do not hold). A persistent message of a
//! durable queue keeps its copy on the queue's disk until every queue it
//! was routed to has accepted it; the publisher deletes it then, so a crash
//! in between brings it back to its queue rather than losing it. A quorum
//! queue keeps its dead letters in its replicated state instead, and the
//! publisher tells it (`settle`) which it may forget.

use tokio::sync::mpsc;
use warren_core::dead_letter::Reason;
use warren_core::queue::state::Seq;
use warren_core::{Message, Name, QueueId};

/// Messages one queue dead-letters for one reason.
#[derive(Debug)]
pub struct DeadLetters {
    /// The queue's vhost.
    pub vhost: Name,
    /// The queue's name (its `x-death` entries name it).
    pub queue: Name,
    /// Its id (where the disk copies are).
    pub queue_id: QueueId,
    /// `x-dead-letter-exchange`.
    pub exchange: String,
    /// `x-dead-letter-routing-key`: replaces the messages' own keys.
    pub routing_key: Option<String>,
    /// Why.
    pub reason: Reason,
    /// Each message with its seq, and whether its copy on the queue's disk
    /// waits for the re-publish to be deleted (or, with `settle`, whether
    /// its queue waits to hear of it).
    pub messages: Vec<(Seq, Message, bool)>,
    /// Where the seqs of messages done with (accepted by every queue they
    /// were routed to, or routed nowhere) go, in place of deleting a copy
    /// on disk: a quorum queue's leader, which then proposes their removal.
    pub settle: Option<mpsc::UnboundedSender<Vec<Seq>>>,
}

/// Where queues send what they dead-letter (bounded: a queue that
/// dead-letters faster than the node re-publishes waits).
pub type DeadLetterTx = mpsc::Sender<DeadLetters>;
