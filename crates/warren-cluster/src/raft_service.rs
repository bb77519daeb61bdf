//! The server side of Raft RPCs: decode, hand to the group's Raft instance,
//! encode its `Result` (errors included, so the caller sees openraft's own
//! error, e.g. a higher vote).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};
use warren_store::raft::GroupId;

use crate::MetaRaftNode;
use crate::pb::raft_server::Raft;
use crate::pb::{RaftReply, RaftRequest};

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
        crate::pb::raft_server::RaftServer::new(self)
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
        reply(&raft.append_entries(decode(&req)?).await)
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
        reply(&raft.install_snapshot(decode(&req)?).await)
    }
}
