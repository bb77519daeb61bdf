//! [`ClusterError`]: what can go wrong in this crate, outside the gRPC
//! services (which answer with `tonic::Status`, converted here once).

use warren_core::NodeId;

/// Failures of the cluster layer. The large variants are boxed: the error
/// travels through every `?` of the cluster code.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Raft settings do not hold together.
    #[error("raft configuration: {0}")]
    Config(Box<openraft::ConfigError>),
    /// The Raft storage could not be opened or read.
    #[error("raft storage: {0}")]
    Storage(Box<openraft::StorageError<NodeId>>),
    /// The Raft instance stopped or failed.
    #[error("raft: {0}")]
    Raft(String),
    /// A peer could not be reached (or its address is not one).
    #[error("cannot reach {addr}: {cause}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// Why.
        cause: String,
    },
    /// The cluster secret could not be read or is too weak.
    #[error("cluster secret: {0}")]
    Secret(String),
    /// The TLS files could not be read or do not fit together.
    #[error("cluster TLS: {0}")]
    Tls(String),
    /// A node refused this cluster (another secret, or another cluster).
    #[error("{0}")]
    Refused(String),
    /// A peer answered the call with an error.
    #[error("{}", .0.message())]
    Remote(Box<tonic::Status>),
}

impl ClusterError {
    /// A failed Raft operation, described.
    pub fn raft(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        ClusterError::Raft(format!("{what}: {e}"))
    }
}

impl From<openraft::ConfigError> for ClusterError {
    fn from(e: openraft::ConfigError) -> Self {
        ClusterError::Config(Box::new(e))
    }
}

impl From<openraft::StorageError<NodeId>> for ClusterError {
    fn from(e: openraft::StorageError<NodeId>) -> Self {
        ClusterError::Storage(Box::new(e))
    }
}

impl From<openraft::error::Fatal<NodeId>> for ClusterError {
    fn from(e: openraft::error::Fatal<NodeId>) -> Self {
        ClusterError::Raft(e.to_string())
    }
}

impl From<tonic::Status> for ClusterError {
    fn from(s: tonic::Status) -> Self {
        ClusterError::Remote(Box::new(s))
    }
}

/// The gRPC answer for an error of a service's own work.
impl From<ClusterError> for tonic::Status {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Remote(s) => *s,
            ClusterError::Refused(_) => tonic::Status::failed_precondition(e.to_string()),
            ClusterError::Config(_)
            | ClusterError::Storage(_)
            | ClusterError::Secret(_)
            | ClusterError::Tls(_) => tonic::Status::internal(e.to_string()),
            ClusterError::Raft(_) | ClusterError::Unreachable { .. } => {
                tonic::Status::unavailable(e.to_string())
            }
        }
    }
}
