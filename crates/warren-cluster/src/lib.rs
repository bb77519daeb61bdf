//! # warren-cluster: Raft groups over gRPC
//!
//! - [`network`]: openraft's network for Warren: one gRPC channel per peer,
//!   shared by every group; requests carry their group id.
//! - [`service`]: the gRPC service that receives those RPCs and hands them to
//!   the local Raft instance of the named group.
//! - [`pb`]: the code generated from `proto/raft.proto`.
//!
//! The openraft type configuration and the storage are `warren_store::raft`'s.

pub mod network;
pub mod service;

/// Generated from `proto/raft.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("warren.raft");
}

pub use network::Network;
pub use service::RaftService;

/// The Raft instance of the metadata group.
pub type MetaRaftNode = openraft::Raft<warren_store::raft::MetaRaft>;
