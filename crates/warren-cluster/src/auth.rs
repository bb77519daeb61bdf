//! Who may use the cluster port: the shared cluster secret, proved on every
//! call, and the cluster id, carried on every call once known.
//!
//! **The proof.** The secret (RabbitMQ's Erlang cookie plays this role) never
//! travels. Every outgoing call carries, in the `x-warren-auth` header,
//! `v1.<unix ms>.<nonce>.<mac>`: a fresh random 128-bit nonce and
//! `HMAC-SHA256(secret, "warren-cluster-v1" ‖ RPC path ‖ time ‖ nonce ‖
//! cluster id header)`. The receiver recomputes the MAC (compared in constant
//! time), accepts the time within [`WINDOW`] of its own clock, and remembers
//! the nonce so a captured header cannot be replayed: a nonce is kept for
//! twice the window after it was first seen (a header older than that is
//! stale anyway), in a cache bounded by [`NONCE_CACHE`] entries. The MAC is
//! checked before the cache is touched, so only holders of the secret can
//! fill it. One HMAC per call and no extra round trip: Raft heartbeats
//! (every 100 ms per peer) pay about a microsecond.
//!
//! **The cluster id.** Chosen once per cluster (a random 128-bit value
//! committed in group 0, [`warren_core::meta::Command::ChooseClusterId`]),
//! persisted by every node that applied it, sent in `x-warren-cluster` by
//! a node that knows it. A node that knows its id refuses calls that carry
//! another one (`PermissionDenied`), and Raft calls that carry none (a fresh
//! group that has not chosen its id yet, or a member that learns it a moment
//! later: `FailedPrecondition`, retried at the next heartbeat). A node
//! that knows no id yet (fresh, or being added) accepts the first leader
//! that reaches it. See docs/decisions.md.
//!
//! [`Signer`] is the client side (a tonic interceptor on every channel to a
//! peer), [`Verifier`] the server side (a tonic interceptor over every
//! service of the cluster port, after [`tag_path`] recorded the RPC's path).

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::codegen::http;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::{GrpcMethod, Request, Status};

use crate::error::ClusterError;

/// Header of the proof.
pub const AUTH_HEADER: &str = "x-warren-auth";
/// Header of the sender's cluster id (32 hex digits).
pub const CLUSTER_HEADER: &str = "x-warren-cluster";
/// How far a proof's time may be from the receiver's clock.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most nonces remembered; past it the oldest go and proofs older than
/// them are refused, so memory is bounded and replays still are refused.
pub const NONCE_CACHE: usize = 65_536;
/// Shortest secret accepted (RabbitMQ's generated cookies have 20 letters).
pub const MIN_SECRET_LEN: usize = 16;
/// Peers whose refusals are remembered for logging once each.
const LOGGED_PEERS: usize = 1024;
/// Prefix of the MAC'd text: a new scheme changes it.
const DOMAIN: &[u8] = b"warren-cluster-v1";
/// Paths that only members of a cluster send: they must carry its id.
const RAFT_PREFIX: &str = "/warren.raft.Raft/";

type HmacSha256 = Hmac<Sha256>;

/// The shared cluster secret. Its bytes are never printed.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// The secret from its text; surrounding whitespace (a file's final
    /// newline) is not part of it.
    pub fn new(text: impl AsRef<[u8]>) -> Result<Self, ClusterError> {
        let bytes = text.as_ref().trim_ascii();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(ClusterError::Secret(format!(
                "the cluster secret must have at least {MIN_SECRET_LEN} bytes, it has {}",
                bytes.len()
            )));
        }
        Ok(Self(bytes.into()))
    }

    /// The secret held in `path`.
    pub fn from_file(path: &Path) -> Result<Self, ClusterError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ClusterError::Secret(format!("reading {}: {e}", path.display())))?;
        Self::new(bytes).map_err(|e| ClusterError::Secret(format!("{}: {e}", path.display())))
    }

    /// The MAC of one call.
    fn mac(&self, path: &str, millis: u64, nonce: u128, cluster: &str) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        for part in [
            DOMAIN,
            path.as_bytes(),
            millis.to_string().as_bytes(),
            format!("{nonce:032x}").as_bytes(),
            cluster.as_bytes(),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }
}

/// The id of the cluster this node belongs to, once it knows it.
#[derive(Debug, Default)]
pub struct ClusterId(OnceLock<u128>);

impl ClusterId {
    /// The id, if known.
    pub fn get(&self) -> Option<u128> {
        self.0.get().copied()
    }

    /// Records the id; false if another one was known already.
    pub fn set(&self, id: u128) -> bool {
        *self.0.get_or_init(|| id) == id
    }
}

/// An id as the header and the status report write it.
pub fn format_id(id: u128) -> String {
    format!("{id:032x}")
}

/// An id from its header form; `None` for anything else.
pub fn parse_id(s: &str) -> Option<u128> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The client side: adds the proof and the cluster id to every call.
#[derive(Clone, Debug, Default)]
pub struct Signer {
    secret: Option<ClusterSecret>,
    cluster: Arc<ClusterId>,
}

impl Signer {
    /// Signs with `secret` (none: calls go out bare, for a node with no
    /// cluster port and for tests of the Raft layer alone).
    pub fn new(secret: Option<ClusterSecret>, cluster: Arc<ClusterId>) -> Self {
        Self { secret, cluster }
    }
}

impl Interceptor for Signer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let cluster = self.cluster.get().map(format_id).unwrap_or_default();
        if !cluster.is_empty() {
            let v = MetadataValue::try_from(cluster.as_str())
                .map_err(|_| Status::internal("unencodable cluster id"))?;
            req.metadata_mut().insert(CLUSTER_HEADER, v);
        }
        let Some(secret) = &self.secret else {
            return Ok(req);
        };
        let path = req
            .extensions()
            .get::<GrpcMethod<'static>>()
            .map(|m| format!("/{}/{}", m.service(), m.method()))
            .ok_or_else(|| Status::internal("a cluster call without its method"))?;
        let millis = now_millis();
        let nonce: u128 = rand::random();
        let mac = secret.mac(&path, millis, nonce, &cluster).finalize();
        let proof = format!("v1.{millis}.{nonce:032x}.{}", hex(&mac.into_bytes()));
        let v = MetadataValue::try_from(proof.as_str())
            .map_err(|_| Status::internal("unencodable proof"))?;
        req.metadata_mut().insert(AUTH_HEADER, v);
        Ok(req)
    }
}

/// The RPC's path, recorded for the [`Verifier`] (tonic's interceptors see
/// headers and extensions, not the URI).
#[derive(Clone, Debug)]
pub struct RpcPath(pub String);

/// Records the path of a request as an [`RpcPath`] extension; the layer in
/// front of [`Verifier`].
pub fn tag_path<B>(mut req: http::Request<B>) -> http::Request<B> {
    let path = RpcPath(req.uri().path().to_owned());
    req.extensions_mut().insert(path);
    req
}

/// Why a call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Refusal {
    NoProof,
    Malformed,
    BadMac,
    Stale,
    Replayed,
    OtherCluster,
    NoClusterId,
}

impl Refusal {
    fn status(self, ours: u128, theirs: &str) -> Status {
        match self {
            Refusal::NoProof => Status::unauthenticated(
                "this cluster port needs the cluster secret (none was proved)",
            ),
            Refusal::Malformed => Status::unauthenticated("malformed cluster secret proof"),
            Refusal::BadMac => Status::unauthenticated("wrong cluster secret"),
            Refusal::Stale => Status::unauthenticated(format!(
                "cluster secret proof outside the {} s window: check the clocks",
                WINDOW.as_secs()
            )),
            Refusal::Replayed => Status::unauthenticated("cluster secret proof replayed"),
            Refusal::OtherCluster => Status::permission_denied(format!(
                "this node belongs to cluster {}, the call came from cluster {theirs}",
                format_id(ours)
            )),
            // Not PermissionDenied: a member that has just applied the id
            // may have signed a call a moment before it learnt it; it
            // retries at its next heartbeat instead of backing off.
            Refusal::NoClusterId => Status::failed_precondition(format!(
                "this node belongs to cluster {}; raft calls must name it",
                format_id(ours)
            )),
        }
    }
}

/// Nonces seen within the window, oldest first.
#[derive(Debug, Default)]
struct Nonces {
    seen: HashSet<u128>,
    order: VecDeque<(Instant, u128, u64)>,
    /// Proofs at or before this time are refused: a nonce of theirs may
    /// have been dropped early from a full cache.
    floor: u64,
}

impl Nonces {
    /// Records `nonce`; false if it was seen (a replay) or is too old to
    /// tell.
    fn admit(&mut self, nonce: u128, millis: u64, now: Instant) -> bool {
        while let Some(&(at, n, _)) = self.order.front() {
            if now.duration_since(at) <= 2 * WINDOW {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&n);
        }
        if millis <= self.floor || !self.seen.insert(nonce) {
            return false;
        }
        self.order.push_back((now, nonce, millis));
        if self.order.len() > NONCE_CACHE
            && let Some((_, n, m)) = self.order.pop_front()
        {
            self.seen.remove(&n);
            self.floor = self.floor.max(m);
        }
        true
    }
}

/// Remembers what was logged, so each peer's refusal is logged once.
#[derive(Debug, Default)]
struct Once {
    any: AtomicBool,
    logged: Mutex<HashSet<(String, i32)>>,
}

impl Once {
    /// True the first time for (`peer`, `kind`).
    fn first(&self, peer: &str, kind: i32) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.len() >= LOGGED_PEERS {
            return false;
        }
        self.any.store(true, Ordering::Relaxed);
        logged.insert((peer.to_owned(), kind))
    }

    /// Forgets `peer`: its next refusal is logged again.
    fn forget(&self, peer: &str) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        logged.retain(|(p, _)| p != peer);
        self.any.store(!logged.is_empty(), Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct VerifierInner {
    secret: ClusterSecret,
    cluster: Arc<ClusterId>,
    nonces: Mutex<Nonces>,
    logged: Once,
}

/// The server side: checks the proof and the cluster id of every call.
#[derive(Clone, Debug)]
pub struct Verifier(Arc<VerifierInner>);

impl Verifier {
    /// Checks proofs of `secret` and the id in `cluster` (once known).
    pub fn new(secret: ClusterSecret, cluster: Arc<ClusterId>) -> Self {
        Self(Arc::new(VerifierInner {
            secret,
            cluster,
            nonces: Mutex::new(Nonces::default()),
            logged: Once::default(),
        }))
    }

    fn check(&self, path: &str, md: &MetadataMap) -> Result<(), Refusal> {
        let cluster = match md.get(CLUSTER_HEADER) {
            None => "",
            Some(v) => v.to_str().map_err(|_| Refusal::Malformed)?,
        };
        let proof = md
            .get(AUTH_HEADER)
            .ok_or(Refusal::NoProof)?
            .to_str()
            .map_err(|_| Refusal::Malformed)?;
        let mut parts = proof.split('.');
        let (Some("v1"), Some(millis), Some(nonce), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Refusal::Malformed);
        };
        let millis: u64 = millis.parse().map_err(|_| Refusal::Malformed)?;
        let nonce = parse_id(nonce).ok_or(Refusal::Malformed)?;
        let mac = unhex(mac).ok_or(Refusal::Malformed)?;
        self.0
            .secret
            .mac(path, millis, nonce, cluster)
            .verify_slice(&mac)
            .map_err(|_| Refusal::BadMac)?;
        if now_millis().abs_diff(millis) > u64::try_from(WINDOW.as_millis()).unwrap_or(u64::MAX) {
            return Err(Refusal::Stale);
        }
        let fresh = self
            .0
            .nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(nonce, millis, Instant::now());
        if !fresh {
            return Err(Refusal::Replayed);
        }
        let Some(ours) = self.0.cluster.get() else {
            // A fresh node: the first leader to reach it is its cluster's.
            return Ok(());
        };
        match parse_id(cluster) {
            Some(theirs) if theirs == ours => Ok(()),
            Some(_) => Err(Refusal::OtherCluster),
            None if !cluster.is_empty() => Err(Refusal::Malformed),
            None if path.starts_with(RAFT_PREFIX) => Err(Refusal::NoClusterId),
            None => Ok(()),
        }
    }
}

impl Interceptor for Verifier {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let path = req
            .extensions()
            .get::<RpcPath>()
            .map(|p| p.0.as_str())
            .unwrap_or_default();
        match self.check(path, req.metadata()) {
            Ok(()) => Ok(req),
            Err(refusal) => {
                let theirs = req
                    .metadata()
                    .get(CLUSTER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none");
                let status = refusal.status(self.0.cluster.get().unwrap_or(0), theirs);
                let peer = req
                    .remote_addr()
                    .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
                if refusal == Refusal::NoClusterId {
                    // Also the moment a new cluster chooses its id: quiet.
                    tracing::debug!(%peer, path, reason = status.message(), "refused a cluster call");
                } else if self.0.logged.first(&peer, refusal as i32) {
                    tracing::warn!(
                        %peer,
                        path,
                        reason = status.message(),
                        "refused a cluster call (logged once per peer)"
                    );
                }
                Err(status)
            }
        }
    }
}

/// The key under which TLS handshake failures are logged once per peer (no
/// gRPC code: the call never reached the peer's service).
const TLS_FAILURE: i32 = -1;

/// The cause of a failed call if it failed in the TLS handshake.
fn tls_failure(status: &Status) -> Option<String> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    let cause = crate::tls::describe(status);
    let lower = cause.to_ascii_lowercase();
    [
        "certificate",
        "handshake",
        "tls",
        "peer sent no certificates",
        "alert",
    ]
    .iter()
    .any(|w| lower.contains(w))
    .then_some(cause)
}

/// The caller's side of refusals: what a peer refused is logged once per
/// peer until a call to it succeeds again.
#[derive(Debug, Default)]
pub struct Refusals(Once);

impl Refusals {
    /// Whether `status` is a refusal of this node's secret or cluster id, or
    /// a failed TLS handshake (configuration errors: retrying soon will not
    /// help); logs the first one from each peer.
    pub fn note(&self, peer: &str, status: &Status) -> bool {
        let refused = matches!(
            status.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        );
        if refused {
            if self.0.first(peer, status.code() as i32) {
                tracing::warn!(
                    %peer,
                    reason = status.message(),
                    "a peer refused this node's cluster secret or cluster id (logged once per peer)"
                );
            }
            return true;
        }
        // A failed TLS handshake is a configuration error too (another CA,
        // an expired or misnamed certificate, a peer without TLS); tonic
        // reports it as an unavailable peer and the server side only logs it
        // at debug level, so this is where an operator hears of it, once.
        let Some(cause) = tls_failure(status) else {
            return false;
        };
        if self.0.first(peer, TLS_FAILURE) {
            tracing::warn!(
                %peer,
                %cause,
                "the TLS handshake with a peer failed (logged once per peer until a call succeeds)"
            );
        }
        true
    }

    /// A call to `peer` went through.
    pub fn cleared(&self, peer: &str) {
        self.0.forget(peer);
    }
}

/// Everything a node proves and checks on the cluster port.
#[derive(Clone, Debug, Default)]
pub struct Security {
    secret: Option<ClusterSecret>,
    tls: Option<crate::tls::Tls>,
    cluster: Arc<ClusterId>,
    refusals: Arc<Refusals>,
}

impl Security {
    /// A node's (or the admin tool's) security settings.
    pub fn new(secret: Option<ClusterSecret>, tls: Option<crate::tls::Tls>) -> Self {
        Self {
            secret,
            tls,
            ..Self::default()
        }
    }

    /// The cluster id this node knows.
    pub fn cluster_id(&self) -> &Arc<ClusterId> {
        &self.cluster
    }

    /// Whether a secret is set.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The interceptor for outgoing calls.
    pub fn signer(&self) -> Signer {
        Signer::new(self.secret.clone(), self.cluster.clone())
    }

    /// The interceptor for incoming calls (none without a secret).
    pub fn verifier(&self) -> Option<Verifier> {
        self.secret
            .clone()
            .map(|s| Verifier::new(s, self.cluster.clone()))
    }

    /// Mutual TLS, if configured.
    pub fn tls(&self) -> Option<&crate::tls::Tls> {
        self.tls.as_ref()
    }

    /// Refusals by peers, logged once each.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// An endpoint for `addr` (`host:port`): `https` with this node's
    /// certificate when TLS is on.
    pub fn endpoint(&self, addr: &str) -> Result<tonic::transport::Endpoint, ClusterError> {
        let unreachable = |e: tonic::transport::Error| ClusterError::Unreachable {
            addr: addr.to_owned(),
            cause: crate::tls::describe(&e),
        };
        match &self.tls {
            None => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(unreachable),
            Some(tls) => tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .map_err(unreachable)?
                .tls_config(tls.client_config())
                .map_err(unreachable),
        }
    }
}

#[cfg(test)]
#[path = "auth_test.rs"]
mod tests;
