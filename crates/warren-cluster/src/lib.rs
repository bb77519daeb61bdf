//! # warren-cluster: Raft groups over gRPC
//!
//! - [`network`]: openraft's network for Warren: one gRPC channel per peer,
//!   shared by every group; requests carry their group id.
//! - [`service`]: the gRPC service that receives those RPCs and hands them to
//!   the local Raft instance of the named group.
//! - [`node`]: [`MetaNode`], this node's member of group 0: proposals
//!   (forwarded to the leader, answered once applied here), status,
//!   membership changes.
//! - [`bootstrap`]: forming group 0 from a static peer list.
//! - [`cluster_service`]: the server side of `proto/cluster.proto`.
//! - [`admin`]: the client side of `warren cluster status|add-node|remove-node`.
//! - [`pb`]: the code generated from `proto/raft.proto` and
//!   `proto/cluster.proto`.
//!
//! The openraft type configuration and the storage are `warren_store::raft`'s.

pub mod admin;
pub mod bootstrap;
pub mod cluster_service;
pub mod network;
pub mod node;
pub mod service;
pub mod stats;

/// Generated from `proto/raft.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("warren.raft");
    tonic::include_proto!("warren.cluster");
    /// Queue traffic between nodes (`proto/queues.proto`).
    pub mod queues {
        tonic::include_proto!("warren.queues");
    }
}

pub use cluster_service::ClusterService;
pub use network::Network;
pub use node::{MetaNode, NodeOptions, Timing};
pub use service::RaftService;

/// The Raft instance of the metadata group.
pub type MetaRaftNode = openraft::Raft<warren_store::raft::MetaRaft>;
