//! The server side of `proto/cluster.proto`: proposals forwarded by other
//! nodes, status, membership changes.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use warren_core::meta::Command;
use warren_store::raft::META_GROUP;

use crate::live_channels::{LiveChannels, MAX_ASKED};
use crate::meta_node::MetaNode;
use crate::pb::cluster_server::{Cluster, ClusterServer};
use crate::pb::{
    AccessChange, AccessChangeReply, AccessList, AddNodeRequest, GroupElectRequest,
    GroupMembersRequest, ListAccessRequest, LiveChannelsReply, LiveChannelsRequest,
    MembershipReply, NodeStatus, PingReply, PingRequest, ProposeReply, ProposeRequest,
    QueueMembersReply, QueueMembersRequest, QueueStatusReply, QueueStatusRequest,
    RemoveNodeRequest, StatusRequest, WaitAppliedReply, WaitAppliedRequest,
};
use crate::queue_groups::QueueGroups;

/// Longest wait a peer may ask for (its request cannot pin a task longer).
const MAX_WAIT_APPLIED: Duration = Duration::from_secs(5);

/// Serves the cluster RPCs of this node.
#[derive(Clone, Debug)]
pub struct ClusterService {
    node: Arc<MetaNode>,
    queues: Arc<QueueGroups>,
    channels: Arc<LiveChannels>,
}

impl ClusterService {
    /// The service of `node`, its quorum queue groups and its open channels.
    pub fn new(node: Arc<MetaNode>, queues: Arc<QueueGroups>, channels: Arc<LiveChannels>) -> Self {
        Self {
            node,
            queues,
            channels,
        }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> ClusterServer<Self> {
        ClusterServer::new(self)
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        let req = request.into_inner();
        meta_group(req.group)?;
        let cmd: Command = serde_json::from_slice(&req.command)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        match self.node.propose_as_leader(cmd).await {
            Ok(Some((index, applied))) => {
                let result = applied.0.ok_or_else(|| Status::internal("no outcome"))?;
                let outcome = serde_json::to_vec(&result)
                    .map_err(|e| Status::internal(format!("encoding outcome: {e}")))?;
                Ok(Response::new(ProposeReply { index, outcome }))
            }
            Ok(None) => Err(Status::failed_precondition("not the leader")),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<NodeStatus>, Status> {
        Ok(Response::new(self.node.status()))
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let req = request.into_inner();
        if req.id == 0 || req.addr.is_empty() {
            return Err(Status::invalid_argument(
                "a node needs a non-zero id and an address",
            ));
        }
        let members = self.node.add_node(req.id, req.addr).await?;
        Ok(Response::new(MembershipReply { members }))
    }

    async fn wait_applied(
        &self,
        request: Request<WaitAppliedRequest>,
    ) -> Result<Response<WaitAppliedReply>, Status> {
        let req = request.into_inner();
        meta_group(req.group)?;
        let limit = Duration::from_millis(req.timeout_ms).min(MAX_WAIT_APPLIED);
        let applied = self.node.wait_applied_for(req.index, limit).await;
        Ok(Response::new(WaitAppliedReply { applied }))
    }

    async fn queue_status(
        &self,
        _: Request<QueueStatusRequest>,
    ) -> Result<Response<QueueStatusReply>, Status> {
        let names: std::collections::HashMap<u64, String> = {
            let meta = self
                .node
                .meta()
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            meta.all_queues()
                .map(|(v, q)| {
                    let name = if v.name() == warren_core::meta::DEFAULT_VHOST {
                        q.name.to_string()
                    } else {
                        format!("{}/{}", v.name(), q.name)
                    };
                    (q.id, name)
                })
                .collect()
        };
        let reply = self
            .queues
            .status(|id| names.get(&id).cloned().unwrap_or_default());
        Ok(Response::new(reply))
    }

    async fn live_channels(
        &self,
        request: Request<LiveChannelsRequest>,
    ) -> Result<Response<LiveChannelsReply>, Status> {
        let ids = request.into_inner().ids;
        if ids.len() > MAX_ASKED {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_ASKED} channel ids per request"
            )));
        }
        Ok(Response::new(LiveChannelsReply {
            live: self.channels.alive(&ids),
        }))
    }

    async fn queue_members(
        &self,
        request: Request<QueueMembersRequest>,
    ) -> Result<Response<QueueMembersReply>, Status> {
        let req = request.into_inner();
        let change = req.change();
        let members = self
            .node
            .change_queue_members(
                &self.queues,
                &req.vhost,
                &req.queue,
                req.group,
                req.node,
                change,
            )
            .await?;
        Ok(Response::new(QueueMembersReply { members }))
    }

    async fn group_members(
        &self,
        request: Request<GroupMembersRequest>,
    ) -> Result<Response<QueueMembersReply>, Status> {
        let req = request.into_inner();
        let change = req.change();
        let members = self
            .queues
            .change_members(req.group, req.node, change, &req.addr)
            .await?;
        Ok(Response::new(QueueMembersReply { members }))
    }

    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply {
            incarnation: crate::peer_watch::incarnation(),
        }))
    }

    async fn change_access(
        &self,
        request: Request<AccessChange>,
    ) -> Result<Response<AccessChangeReply>, Status> {
        let cmd: Command = serde_json::from_slice(&request.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        if !matches!(
            cmd,
            Command::AddVhost { .. }
                | Command::DeleteVhost { .. }
                | Command::AddUser(_)
                | Command::DeleteUser { .. }
                | Command::SetPermissions(_)
                | Command::ClearPermissions { .. }
        ) {
            return Err(Status::invalid_argument(
                "only vhosts, users and permissions are changed here",
            ));
        }
        let result = self.node.propose(cmd).await;
        let outcome = serde_json::to_vec(&result)
            .map_err(|e| Status::internal(format!("encoding outcome: {e}")))?;
        Ok(Response::new(AccessChangeReply { outcome }))
    }

    async fn list_access(
        &self,
        _: Request<ListAccessRequest>,
    ) -> Result<Response<AccessList>, Status> {
        let (users, permissions, vhosts) = {
            let meta = self
                .node
                .meta()
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let a = meta.access();
            (
                serde_json::to_vec(&a.users().collect::<Vec<_>>()),
                serde_json::to_vec(&a.permissions().collect::<Vec<_>>()),
                serde_json::to_vec(&meta.vhost_names().collect::<Vec<_>>()),
            )
        };
        let encoding = |e: serde_json::Error| Status::internal(format!("encoding: {e}"));
        Ok(Response::new(AccessList {
            users: users.map_err(encoding)?,
            permissions: permissions.map_err(encoding)?,
            vhosts: vhosts.map_err(encoding)?,
        }))
    }

    async fn group_elect(
        &self,
        request: Request<GroupElectRequest>,
    ) -> Result<Response<QueueMembersReply>, Status> {
        self.queues.elect(request.into_inner().group).await?;
        Ok(Response::new(QueueMembersReply::default()))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let id = request.into_inner().id;
        // The leader removes it (others forward to it): the leader's
        // service moves the node's quorum queue replicas to the remaining
        // nodes, in the background (each waits for its new member).
        let leads = self.node.raft().metrics().borrow().current_leader == Some(self.node.id());
        let members = self.node.remove_node(id).await?;
        if leads {
            let (node, queues) = (self.node.clone(), self.queues.clone());
            tokio::spawn(async move { node.replace_replicas(&queues, id).await });
        }
        Ok(Response::new(MembershipReply { members }))
    }
}

/// Only group 0 takes proposals here (quorum queues' groups will too).
fn meta_group(group: u64) -> Result<(), Status> {
    if group == META_GROUP {
        Ok(())
    } else {
        Err(Status::not_found(format!("no group {group} here")))
    }
}
