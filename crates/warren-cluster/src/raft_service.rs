//! The server side of Raft RPCs: decode, hand to the group's Raft instance,
//! encode its `Result` (errors included, so the caller sees openraft's own
//! error, e.g. a higher vote). A snapshot chunk's bytes come raw beside the
//! JSON (see [`crate::raft_client`] for the sizes).

use std::sync::Arc;

use openraft::raft::InstallSnapshotRequest;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};
use warren_store::raft::{GroupId, META_GROUP, MetaRaft, QueueRaft};

use crate::MetaRaftNode;
use crate::pb::raft_server::Raft;
use crate::pb::{RaftReply, RaftRequest};
use crate::queue_groups::{QueueGroups, QueueRaftNode};
use crate::raft_client::MAX_RAFT_MESSAGE;
use crate::raft_wire::GroupWire;

/// Receives Raft RPCs for the groups of this node: group 0, and the quorum
/// queue groups that run here (created and removed at runtime).
#[derive(Clone)]
pub struct RaftService {
    meta: MetaRaftNode,
    queues: Arc<QueueGroups>,
}

/// The instance a request is for.
enum Target<'a> {
    Meta(&'a MetaRaftNode),
    Queue(QueueRaftNode),
}

impl RaftService {
    /// A service for group 0 and the node's queue groups.
    pub fn new(meta: MetaRaftNode, queues: Arc<QueueGroups>) -> Self {
        Self { meta, queues }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> crate::pb::raft_server::RaftServer<Self> {
        crate::pb::raft_server::RaftServer::new(self).max_decoding_message_size(MAX_RAFT_MESSAGE)
    }

    fn group(&self, id: GroupId) -> Result<Target<'_>, Status> {
        if id == META_GROUP {
            return Ok(Target::Meta(&self.meta));
        }
        self.queues
            .get(id)
            .map(|g| Target::Queue(g.raft))
            .ok_or_else(|| Status::not_found(format!("no raft group {id} on this node")))
    }
}

fn undecodable(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable raft request: {e}"))
}

fn decode<T: DeserializeOwned>(req: &RaftRequest) -> Result<T, Status> {
    serde_json::from_slice(&req.payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft request: {e}")))
}

fn reply<T: Serialize>(r: &T) -> Result<Response<RaftReply>, Status> {
    let payload =
        serde_json::to_vec(r).map_err(|e| Status::internal(format!("encoding reply: {e}")))?;
    Ok(Response::new(RaftReply { payload }))
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        match self.group(req.group)? {
            Target::Meta(raft) => {
                let rpc = MetaRaft::decode_append(&req.payload, &req.data).map_err(undecodable)?;
                reply(&raft.append_entries(rpc).await)
            }
            Target::Queue(raft) => {
                let rpc = QueueRaft::decode_append(&req.payload, &req.data).map_err(undecodable)?;
                reply(&raft.append_entries(rpc).await)
            }
        }
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        match self.group(req.group)? {
            Target::Meta(raft) => reply(&raft.vote(decode(&req)?).await),
            Target::Queue(raft) => reply(&raft.vote(decode(&req)?).await),
        }
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        match self.group(req.group)? {
            Target::Meta(raft) => {
                let mut rpc: InstallSnapshotRequest<MetaRaft> = decode(&req)?;
                // A peer of an earlier version sends the bytes inside the JSON.
                if !req.data.is_empty() {
                    rpc.data = req.data;
                }
                reply(&raft.install_snapshot(rpc).await)
            }
            Target::Queue(raft) => {
                let mut rpc: InstallSnapshotRequest<QueueRaft> = decode(&req)?;
                rpc.data = req.data;
                reply(&raft.install_snapshot(rpc).await)
            }
        }
    }
}
