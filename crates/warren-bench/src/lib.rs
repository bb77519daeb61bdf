//! # warren-bench: a PerfTest-like load generator for AMQP 0-9-1 brokers
//!
//! - [`args`]: the options (producers, consumers, sizes, confirms, queues, rates...).
//! - [`stats`]: counters and latency histograms, and the JSON [`stats::Summary`].
//! - [`error`]: [`BenchError`], why a run could not go on.
//! - [`run`]: declares the topology, runs producers and consumers, prints a
//!   progress line a second, and returns the summary.
//!
//! Each message carries the time it was published (nanoseconds since the run
//! started) and a sequence number in its first 16 bytes, so latency is
//! measured end to end within one process clock.

pub mod args;
pub mod error;
pub mod run;
pub mod stats;

pub use args::Args;
pub use error::BenchError;
pub use run::run;
