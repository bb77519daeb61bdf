//! # warren-cluster: Raft groups over gRPC
//!
//! - [`auth`]: the cluster secret's proof on every call (client and server
//!   interceptors) and the cluster id check.
//! - [`tls`]: optional mutual TLS on the cluster port.
//! - [`raft_client`]: the client side of Raft RPCs, openraft's network for
//!   Warren: one gRPC channel per peer, shared by every group; requests carry
//!   their group id.
//! - [`raft_service`]: the server side: receives those RPCs and hands them
//!   to the local Raft instance of the named group.
//! - [`raft_wire`]: [`raft_wire::GroupWire`], how each group type's
//!   AppendEntries travel (group 0 in openraft's JSON, quorum queues' entries
//!   in their binary log form).
//! - [`meta_node`]: [`MetaNode`], this node's member of group 0: proposals
//!   (forwarded to the leader, answered once applied here), status,
//!   membership changes, peer addresses.
//! - [`queue_groups`]: [`QueueGroups`], the Raft groups of the quorum queue
//!   replicas on this node, started from the replica set group 0 recorded
//!   and removed with every key when the queue goes.
//! - [`live_channels`]: [`LiveChannels`], the channels open on this node,
//!   which quorum queue leaders ask about to drop consumers that are gone.
//! - [`queue_members`]: adding a node to a quorum queue's replicas or
//!   removing one (group 0's record and the group's own membership).
//! - [`peer_watch`]: pings between nodes, and the elections of quorum
//!   queue groups they drive (the groups have no heartbeats of their own).
//! - [`bootstrap`]: forming group 0 from a static peer list.
//! - [`cluster_service`]: the server side of `proto/cluster.proto`.
//! - [`admin_client`]: the client side of `proto/cluster.proto` for
//!   `warren cluster status|add-node|remove-node`; [`admin_access`]: the
//!   same for `warren users|permissions`.
//! - [`stats`]: counters of queue traffic between nodes.
//! - [`error`]: [`ClusterError`], this crate's error.
//! - [`pb`]: the code generated from `proto/raft.proto`,
//!   `proto/cluster.proto` and `proto/queues.proto`.
//!
//! The openraft type configuration and the storage are `warren_store::raft`'s.

pub mod admin_access;
pub mod admin_client;
pub mod auth;
pub mod bootstrap;
pub mod cluster_service;
pub mod error;
pub mod live_channels;
pub mod meta_node;
pub mod peer_watch;
pub mod queue_groups;
pub mod queue_members;
pub mod raft_client;
pub mod raft_service;
pub mod raft_wire;
pub mod stats;
pub mod tls;

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

pub use auth::{ClusterSecret, Security};
pub use cluster_service::ClusterService;
pub use error::ClusterError;
pub use live_channels::{LiveChannels, OpenChannel};
pub use meta_node::{MetaNode, NodeOptions, Timing};
pub use queue_groups::{QueueGroup, QueueGroups, QueueRaftNode, QueueTiming};
pub use raft_client::{Network, PeerChannel};
pub use raft_service::RaftService;
pub use tls::{Tls, TlsFiles};

/// The Raft instance of the metadata group.
pub type MetaRaftNode = openraft::Raft<warren_store::raft::MetaRaft>;
