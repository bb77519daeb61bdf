//! Starting and stopping a node: cluster listener, metadata group, AMQP
//! listener, connection tasks, graceful shutdown.
//!
//! Start: open storage and Raft group 0, serve the cluster RPCs (peers must
//! reach this node to form the group), form or rejoin the group, and only
//! then listen for AMQP (as a RabbitMQ node waits for its metadata store).
//! Shutdown follows DESIGN.md: stop accepting, close every connection with
//! `connection.close` 320, wait (bounded) for the tasks, then stop Raft and
//! flush storage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_cluster::{ClusterService, LiveChannels, MetaNode, QueueGroups, RaftService};
use warren_queues::link::{LocalQueues, QueuesService};

use crate::broker::Broker;
use crate::config::Config;
use crate::error::ServerError;
use crate::http::{Readiness, Stage};

/// How long connections get to close before storage is flushed anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running node.
#[derive(Debug)]
pub struct Server {
    /// Where AMQP clients connect (the real port when 0 was asked).
    pub amqp_addr: SocketAddr,
    /// Where /health and /ready are served, if anywhere.
    pub http_addr: Option<SocketAddr>,
    /// The node's shared state.
    pub broker: Arc<Broker>,
    readiness: Arc<Readiness>,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Server {
    /// Opens storage, joins the metadata group, binds the AMQP listener and
    /// starts accepting.
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let readiness = Arc::new(Readiness::default());
        // Whatever was spawned stops if start fails or is abandoned.
        let stop_on_failure = token.clone().drop_guard();
        // HTTP first: a node waiting for its peers answers /health and says
        // in /ready what it waits for.
        let http_addr = match config.http_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| ServerError::Listen {
                        what: "HTTP (--http-listen; `off` disables it)",
                        addr,
                        cause: e,
                    })?;
                let http_addr = listener.local_addr()?;
                tracing::info!(%http_addr, "HTTP listening (/health, /ready)");
                let _ = std::fs::create_dir_all(&config.data_dir);
                let _ = std::fs::write(config.data_dir.join("http.addr"), http_addr.to_string());
                tracker.spawn(crate::http::serve(
                    listener,
                    readiness.clone(),
                    token.clone(),
                ));
                Some(http_addr)
            }
            None => None,
        };
        let broker = Broker::open(config).await?;
        readiness.attach(&broker);
        readiness.set(Stage::Joining);
        let config = broker.config();
        if let Some(addr) = config.cluster_listen {
            let listener = TcpListener::bind(addr).await?;
            let cluster_addr = listener.local_addr()?;
            tracing::info!(%cluster_addr, node = config.node_id, "cluster listening");
            let _ = std::fs::write(
                config.data_dir.join("cluster.addr"),
                cluster_addr.to_string(),
            );
            let node: Arc<dyn LocalQueues> = broker.clone();
            let queues = QueuesService::new(
                Arc::downgrade(&node),
                broker.ids().clone(),
                broker.memory().local_alarm(),
                broker.replies().clone(),
            );
            tracker.spawn(serve_cluster(
                listener,
                broker.node().clone(),
                broker.registry().groups().clone(),
                broker.channels().clone(),
                queues,
                token.clone(),
            ));
        }
        let node = broker.node().clone();
        let opts = broker.node_options().clone();
        tracker.spawn(until_cancelled(token.clone(), async move {
            warren_cluster::bootstrap::form_group(&node, &opts).await;
        }));
        tracker.spawn(until_cancelled(
            token.clone(),
            crate::broker::follow_applied(Arc::downgrade(&broker)),
        ));
        tracker.spawn(until_cancelled(
            token.clone(),
            crate::broker::watch_nodes(Arc::downgrade(&broker)),
        ));
        tracker.spawn(until_cancelled(
            token.clone(),
            warren_cluster::peer_watch::watch_peers(
                Arc::downgrade(broker.node()),
                Arc::downgrade(broker.registry().groups()),
            ),
        ));
        broker.join().await?;
        let config = broker.config();
        let listener = TcpListener::bind(config.amqp_listen).await?;
        let amqp_addr = listener.local_addr()?;
        tracker.spawn(accept_loop(
            listener,
            broker.clone(),
            token.clone(),
            tracker.clone(),
        ));
        tracing::info!(%amqp_addr, data_dir = %config.data_dir.display(), "AMQP listening");
        // Readiness for tools and tests that asked for port 0.
        let _ = std::fs::write(config.data_dir.join("amqp.addr"), amqp_addr.to_string());
        readiness.set(Stage::Serving);
        stop_on_failure.disarm();
        Ok(Self {
            amqp_addr,
            http_addr,
            broker,
            readiness,
            token,
            tracker,
        })
    }

    /// Graceful shutdown.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.readiness.set(Stage::Stopping);
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections did not close in time");
        }
        self.broker.stop().await;
        tracing::info!("stopped");
    }
}

/// Runs `f` until it ends or the node shuts down.
async fn until_cancelled(token: CancellationToken, f: impl Future<Output = ()>) {
    tokio::select! {
        _ = f => {}
        _ = token.cancelled() => {}
    }
}

/// Serves Raft and cluster RPCs until the token is cancelled.
async fn serve_cluster(
    listener: TcpListener,
    node: Arc<MetaNode>,
    groups: Arc<QueueGroups>,
    channels: Arc<LiveChannels>,
    queues: QueuesService,
    token: CancellationToken,
) {
    let raft = RaftService::new(node.raft().clone(), groups.clone()).into_server();
    let security = node.network().security().clone();
    let cluster = ClusterService::new(node, groups, channels).into_server();
    // Config refuses a cluster listener without a secret.
    let Some(verifier) = security.verifier() else {
        tracing::error!("no cluster secret: the cluster port stays closed");
        return;
    };
    // Pings both ways: a client node that stopped answering ends its queue
    // links here too (its channels are closed, unacked messages requeued).
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(warren_cluster::raft_client::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(warren_cluster::raft_client::KEEPALIVE_TIMEOUT));
    if let Some(tls) = security.tls() {
        builder = match builder.tls_config(tls.server_config()) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(cause = %e, "cluster TLS: the cluster port stays closed");
                return;
            }
        };
    }
    // Every call of every service proves the cluster secret and names the
    // cluster (warren_cluster::auth): the path is recorded first, for the
    // proof is bound to it.
    // Not a graceful shutdown: queue links are endless streams that a
    // graceful one would wait out. Dropping the server closes them.
    let server = builder
        .layer(tower::util::MapRequestLayer::new(
            warren_cluster::auth::tag_path::<tonic::body::Body>,
        ))
        .layer(tonic::service::InterceptorLayer::new(verifier))
        .add_service(raft)
        .add_service(cluster)
        .add_service(queues.into_server())
        .serve_with_incoming(
            // The builder's nodelay applies only to listeners it binds: set
            // it here, or small replies wait out Nagle and delayed ACKs.
            tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
                if let Ok(s) = &s {
                    let _ = s.set_nodelay(true);
                }
                s
            }),
        );
    let r = tokio::select! {
        r = server => r,
        _ = token.cancelled() => Ok(()),
    };
    if let Err(e) = r {
        tracing::error!(cause = %e, "cluster listener failed");
    }
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = token.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                tracker.spawn(crate::connection::serve(
                    stream,
                    peer,
                    broker.clone(),
                    token.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(cause = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
