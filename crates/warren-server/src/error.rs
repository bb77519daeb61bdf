//! [`ServerError`]: why a node cannot start or keep running. Errors a
//! client causes are [`warren_core::AmqpError`]s and stay on its connection.

use warren_cluster::ClusterError;
use warren_core::AmqpError;
use warren_store::StoreError;

use crate::config::ConfigError;

/// A failure of the node itself.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is refused.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The store could not be opened, read or written.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The cluster layer could not start.
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// A listener could not be bound.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// A named listener could not be bound to its address.
    #[error("{what} listener on {addr}: {cause}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why not.
        cause: std::io::Error,
    },
    /// The metadata group refused the seed of an older single-node store.
    #[error("seeding the metadata group: {0}")]
    Seed(AmqpError),
}
