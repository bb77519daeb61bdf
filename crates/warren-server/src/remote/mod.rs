//! Classic queues used from nodes other than their home.
//!
//! - [`link`]: the client side: proxies that make a remote queue look local,
//!   and one link task per home node that batches their traffic into one
//!   gRPC stream.
//! - [`home`]: the home side: the `Queues` service that hands that traffic
//!   to the queue actors.
//! - [`wire`]: conversions to and from `proto/queues.proto`.

pub mod home;
pub mod link;
pub mod wire;

pub use home::QueuesService;
