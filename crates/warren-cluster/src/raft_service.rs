//! The server side of Raft RPCs: decode, hand to the group's Raft instance,
//! encode its `Result` (errors included, so the caller sees openraft's own
//! error, e.g. a higher vote). A snapshot chunk's bytes come raw beside the
//! JSON (see [`crate::raft_client`] for the sizes).

use std::collections::HashMap;
use std::sync::Arc;

use openraft::raft::InstallSnapshotRequest;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};
use warren_store::raft::{GroupId, MetaRaft};

use crate::MetaRaftNode;
use crate::pb::raft_server::Raft;
use crate::pb::{RaftReply, RaftRequest};
use crate::raft_client::MAX_RAFT_MESSAGE;
use crate::raft_wire::GroupWire;

/// Receives Raft RPCs for the groups of this node.
#[derive(Clone, Default)]
pub struct RaftService {
    groups: Arc<HashMap<GroupId, MetaRaftNode>>,
}

impl RaftService {
    /// A service for these groups.
    pub fn new(groups: HashMap<GroupId, MetaRaftNode>) -> Self {
        Self {
            groups: Arc::new(groups),
        }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> crate::pb::raft_server::RaftServer<Self> {
        crate::pb::raft_server::RaftServer::new(self).max_decoding_message_size(MAX_RAFT_MESSAGE)
    }

    fn group(&self, id: GroupId) -> Result<&MetaRaftNode, Status> {
        self.groups
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("no raft group {id} on this node")))
    }
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
        let raft = self.group(req.group)?;
        let rpc = MetaRaft::decode_append(&req.payload, &req.data)
            .map_err(|e| Status::invalid_argument(format!("undecodable raft request: {e}")))?;
        reply(&raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        let raft = self.group(req.group)?;
        reply(&raft.vote(decode(&req)?).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        let raft = self.group(req.group)?;
        let mut rpc: InstallSnapshotRequest<MetaRaft> = decode(&req)?;
        // A peer of an earlier version sends the bytes inside the JSON.
        if !req.data.is_empty() {
            rpc.data = req.data;
        }
        reply(&raft.install_snapshot(rpc).await)
    }
}
