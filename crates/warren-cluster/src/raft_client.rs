//! The client side of Raft RPCs.
//!
//! openraft asks the factory for a client per target node; every client for a
//! node shares one tonic `Channel` (HTTP/2, multiplexed), so all groups talk to
//! a peer over one connection. A request is the group id plus openraft's own
//! request, serde-encoded; the reply is the remote `Result`, decoded back.
//!
//! Every call goes through the node's [`Signer`] (the cluster secret's proof
//! and the cluster id, see [`crate::auth`]), over TLS when it is configured.
//! A peer that refuses this node's secret or cluster id is logged once and
//! reported to openraft as unreachable with a growing backoff (1 s doubling
//! to 30 s): a configuration error is not retried at heartbeat pace.
//!
//! Sizes stay inside what a receiver accepts: a snapshot chunk's bytes go
//! raw beside the JSON (never as a JSON array of numbers), chunks are
//! [`SNAPSHOT_CHUNK`] long, and an AppendEntries request over
//! [`APPEND_BUDGET`] is not sent: openraft hears `PayloadTooLarge` with the
//! number of entries that would fit, and sends fewer.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use warren_store::raft::{GroupId, MetaRaft, NodeId};

use crate::auth::{Security, Signer};
use crate::raft_wire::GroupWire;

use crate::pb::RaftRequest;
use crate::pb::raft_client::RaftClient;

/// Bound on establishing a connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on every peer connection, idle or not: a peer that stopped
/// answering (SIGSTOP, a partition that drops packets) is noticed within
/// [`KEEPALIVE_INTERVAL`] + [`KEEPALIVE_TIMEOUT`], and its streams (queue
/// links) fail then, instead of when TCP gives up after minutes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a ping may go unanswered.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// openraft's pause after an unreachable peer (its own default).
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(500);
/// First pause after a peer refused this node's secret or cluster id.
const REFUSED_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest pause after refusals.
const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The largest AppendEntries request sent in one call, encoded.
pub const APPEND_BUDGET: usize = 4 << 20;
/// The largest Raft message a node accepts: the budget plus room for one
/// entry that is alone over it (entries are bounded by the AMQP frame size
/// of the method that made them).
pub const MAX_RAFT_MESSAGE: usize = 16 << 20;
/// The bytes of a snapshot sent per InstallSnapshot call.
pub const SNAPSHOT_CHUNK: u64 = 1 << 20;

/// A channel to a peer whose calls prove the cluster secret and carry the
/// cluster id.
pub type PeerChannel = InterceptedService<Channel, Signer>;

/// Channels to peers, by address, shared by every group's network factory
/// and by the cluster RPCs (forwarded proposals, status).
#[derive(Clone, Default, Debug)]
pub struct Network {
    group: GroupId,
    /// The address outgoing connections are made from (the node's own
    /// cluster address), so that cutting one address cuts all its links.
    local: Option<IpAddr>,
    security: Security,
    channels: Arc<Mutex<HashMap<String, PeerChannel>>>,
    /// Groups whose election a peer refused for holding a longer log.
    outranked: crate::peer_watch::Outranked,
}

impl Network {
    /// A network whose connections start from `local` (bind before connect)
    /// and prove `security`'s secret.
    pub fn new(local: Option<IpAddr>, security: Security) -> Self {
        Self {
            local,
            security,
            ..Self::default()
        }
    }

    /// The secret, TLS settings and cluster id calls go out with.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// The groups whose last election a peer with a longer log refused.
    pub fn outranked(&self) -> &crate::peer_watch::Outranked {
        &self.outranked
    }

    /// The network of `group`, sharing `self`'s channels.
    pub fn for_group(&self, group: GroupId) -> Self {
        Self {
            group,
            ..self.clone()
        }
    }

    /// The shared channel to `addr` (connected lazily).
    pub fn channel(&self, addr: &str) -> Result<PeerChannel, NetworkError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = self
            .security
            .endpoint(addr)
            .map_err(|e| NetworkError::new(&e))?
            .connect_timeout(CONNECT_TIMEOUT)
            .local_address(self.local)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = InterceptedService::new(endpoint.connect_lazy(), self.security.signer());
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

impl<C: GroupWire> RaftNetworkFactory<C> for Network {
    type Network = PeerClient<C>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            target,
            node: node.clone(),
            group: self.group,
            channel: self.channel(&node.addr),
            network: self.clone(),
            refused: false,
            group_type: PhantomData,
        }
    }
}

/// Raft RPCs to one peer for one group of type `C`.
pub struct PeerClient<C = MetaRaft> {
    target: NodeId,
    node: BasicNode,
    group: GroupId,
    channel: Result<PeerChannel, NetworkError>,
    network: Network,
    /// The last call was refused (secret or cluster id): back off longer.
    refused: bool,
    group_type: PhantomData<fn() -> C>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl<C> PeerClient<C> {
    /// Sends one encoded request (`data`: a snapshot chunk's bytes).
    async fn call<Resp, E>(
        &mut self,
        kind: Rpc,
        payload: Vec<u8>,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self.channel.clone().map_err(RPCError::Network)?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        let mut request = tonic::Request::new(RaftRequest {
            group: self.group,
            payload,
            data,
        });
        request.set_timeout(option.hard_ttl());
        crate::stats::add(&crate::stats::RAFT_RPCS, 1);
        let reply = match kind {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        }
        .map_err(|status| {
            let refusals = self.network.security.refusals();
            if refusals.note(&self.node.addr, &status) {
                self.refused = true;
                return RPCError::Unreachable(Unreachable::new(&status));
            }
            match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    RPCError::Unreachable(Unreachable::new(&status))
                }
                _ => RPCError::Network(NetworkError::new(&status)),
            }
        })?;
        if self.refused {
            self.refused = false;
            self.network.security.refusals().cleared(&self.node.addr);
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.into_inner().payload)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

/// openraft's request, serde-encoded.
fn encode<T: Serialize>(req: &T) -> Result<Vec<u8>, NetworkError> {
    serde_json::to_vec(req).map_err(|e| NetworkError::new(&e))
}

/// How many of `entries` entries fit [`APPEND_BUDGET`] when all of them
/// encode to `encoded` bytes; `None` when they all fit (or one alone does
/// not, and must go as it is).
fn entries_that_fit(entries: usize, encoded: usize) -> Option<u64> {
    if encoded <= APPEND_BUDGET || entries <= 1 {
        return None;
    }
    let fit = (entries as u128 * APPEND_BUDGET as u128 / encoded as u128) as u64;
    Some(fit.clamp(1, entries as u64 - 1))
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl<C: GroupWire> RaftNetwork<C> for PeerClient<C> {
    fn backoff(&self) -> Backoff {
        if !self.refused {
            return Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF));
        }
        Backoff::new(std::iter::successors(Some(REFUSED_BACKOFF_MIN), |d| {
            Some((*d * 2).min(REFUSED_BACKOFF_MAX))
        }))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let (payload, data) =
            C::encode_append(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let bytes = payload.len() + data.len();
        if let Some(fit) = entries_that_fit(rpc.entries.len(), bytes) {
            tracing::debug!(
                entries = rpc.entries.len(),
                bytes,
                fit,
                "append-entries over budget; openraft sends fewer"
            );
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit),
            ));
        }
        self.call(Rpc::Append, payload, data, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let mut rpc = rpc;
        let data = std::mem::take(&mut rpc.data);
        let payload = encode(&rpc).map_err(RPCError::Network)?;
        self.call(Rpc::Snapshot, payload, data, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let payload = encode(&rpc).map_err(RPCError::Network)?;
        let r: VoteResponse<NodeId> = self.call(Rpc::Vote, payload, Vec::new(), &option).await?;
        // This candidate cannot win while that peer lives: it stops calling
        // elections for a while and leaves the group to the peer.
        if !r.vote_granted && r.last_log_id > rpc.last_log_id {
            self.network.outranked.note(self.group);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_within_the_budget_go_as_they_are() {
        assert_eq!(entries_that_fit(300, APPEND_BUDGET), None);
        assert_eq!(entries_that_fit(1, APPEND_BUDGET * 3), None);
    }

    #[test]
    fn an_oversized_request_asks_for_a_share_that_fits() {
        assert_eq!(entries_that_fit(300, APPEND_BUDGET * 3), Some(100));
        assert_eq!(entries_that_fit(2, APPEND_BUDGET * 10), Some(1));
        // Just over: at least one entry fewer.
        assert_eq!(entries_that_fit(300, APPEND_BUDGET + 1), Some(299));
    }
}
