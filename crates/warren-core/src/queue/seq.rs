//! The order of a queue: one number per message, given at publish.
//!
//! Its own file so that both the in-memory state ([`super::state`]) and the
//! paged tail ([`super::paged`]) can name it without importing each other:
//! the state owns the tail, never the other way round.

/// A queue-local sequence number, increasing in publish order.
pub type Seq = u64;
