//! [`BenchError`]: why a run could not go on.

use std::time::Duration;

/// A failed benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The options do not fit together.
    #[error("bad arguments: {0}")]
    Args(&'static str),
    /// A queue argument is not `key=value`.
    #[error("--queue-arg '{0}' is not key=value")]
    QueueArg(String),
    /// The broker refused an operation, or the connection failed.
    #[error("{what}: {source}")]
    Amqp {
        /// What the run was doing.
        what: String,
        /// The client's error.
        source: lapin::Error,
    },
    /// The broker did not answer in time.
    #[error("{what}: no answer in {after:?}")]
    Timeout {
        /// What the run was doing.
        what: String,
        /// How long it waited.
        after: Duration,
    },
    /// A producer or consumer task panicked or was cancelled.
    #[error("{what} task: {source}")]
    Task {
        /// Which kind of task.
        what: &'static str,
        /// Why it ended.
        source: tokio::task::JoinError,
    },
    /// The JSON summary could not be written.
    #[error("writing the summary: {0}")]
    Output(String),
}

impl From<lapin::Error> for BenchError {
    /// A client error in the middle of a producer's or consumer's work.
    fn from(source: lapin::Error) -> Self {
        BenchError::Amqp {
            what: "running".into(),
            source,
        }
    }
}

/// Names what a client call was doing when it failed.
pub trait Doing<T> {
    /// The error, if any, says it happened while doing `what`.
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, BenchError>;
}

impl<T> Doing<T> for lapin::Result<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Amqp {
            what: what(),
            source,
        })
    }
}
